"""ReconciliationService's settlement and resolution methods (PostSettlement,
ProposeResolution, ApproveResolution, RejectResolution, GetResolution): validation and
conversion; the domain is `clearing.recon.settle` and `clearing.recon.resolve`."""

from __future__ import annotations

from clearing import audit
from clearing.api import split_validate, validate
from clearing.api.convert import timestamp
from clearing.api.interceptor import principal
from clearing.api.replies import encode
from clearing.errors import Violations
from clearing.limits import REVIEW_REASON_LEN_MAX
from clearing.recon import resolve, settle
from clearing.recon.model import (Resolution, ResolutionAction, ResolutionState, Run,
                                  Settlement)
from clearing.recon.service import ReconDeps
from clearing.v1 import reconciliation_pb2 as pb
from clearing.v1 import split_pb2


class ResolutionMethods:
    """The settlement and resolution RPCs (mixed into ReconciliationServicer, whose
    `_deps` they use; `run_message` converts a run)."""

    _deps: ReconDeps

    def run_message(self, r: Run) -> pb.ReconciliationRun:  # the servicer's
        raise NotImplementedError

    async def PostSettlement(self, request: pb.PostSettlementRequest,
                             context) -> pb.PostSettlementResponse:
        v = Violations()
        validate.request_id(v, request.request_id)
        validate.object_id(v, request.run_id, "run_id")
        v.raise_if_any()
        who = principal()
        return pb.PostSettlementResponse.FromString(await settle.post_settlement(
            self._deps, who.platform_id, who.key_id, request.request_id,
            validate.payload_hash("PostSettlement", request), request.run_id,
            lambda r: encode(pb.PostSettlementResponse(run=self.run_message(r))),
            actor=audit.Actor.of(who)))

    async def ProposeResolution(self, request: pb.ProposeResolutionRequest,
                                context) -> pb.ProposeResolutionResponse:
        v = Violations()
        validate.request_id(v, request.request_id)
        validate.object_id(v, request.discrepancy_id, "discrepancy_id")
        validate.enum(v, request.action, ResolutionAction, "action")
        validate.text(v, request.note, "note", length_max=REVIEW_REASON_LEN_MAX, required=True)
        refund = request.action == ResolutionAction.REFUND
        if refund:
            validate.amount(v, request.amount_minor)
        elif request.amount_minor:
            v.add("amount_minor", "must be 0 unless action is RESOLUTION_ACTION_REFUND")
        split_now = request.action == ResolutionAction.SPLIT_NOW
        if split_now and not request.HasField("order"):
            v.add("order", "required for RESOLUTION_ACTION_SPLIT_NOW: the order to split")
        elif split_now:
            split_validate.order_violations(v, request.order, self._deps.clock)
        elif request.HasField("order"):
            v.add("order", "only for RESOLUTION_ACTION_SPLIT_NOW")
        v.raise_if_any()
        who = principal()
        o = request.order
        proposal = resolve.Proposal(
            request.discrepancy_id, ResolutionAction(request.action), request.note,
            request.amount_minor, o.SerializeToString(deterministic=True) if split_now else None,
            resolve.OrderFacts(o.order_id, o.amount_minor, o.channel_fee_minor,
                               o.currency_code) if split_now else None)
        return pb.ProposeResolutionResponse.FromString(await resolve.propose(
            self._deps, who.platform_id, who.key_id, request.request_id,
            validate.payload_hash("ProposeResolution", request), proposal,
            lambda r: encode(pb.ProposeResolutionResponse(resolution=resolution(r))),
            actor=audit.Actor.of(who)))

    def _review_args(self, request, *, note_required: bool) -> None:
        v = Violations()
        validate.request_id(v, request.request_id)
        validate.object_id(v, request.resolution_id, "resolution_id")
        validate.text(v, request.note, "note", length_max=REVIEW_REASON_LEN_MAX,
                      required=note_required)
        v.raise_if_any()

    async def ApproveResolution(self, request: pb.ApproveResolutionRequest,
                                context) -> pb.ApproveResolutionResponse:
        self._review_args(request, note_required=False)
        who = principal()
        return pb.ApproveResolutionResponse.FromString(await resolve.approve(
            self._deps, who.platform_id, who.key_id, request.request_id,
            validate.payload_hash("ApproveResolution", request), request.resolution_id,
            request.note,
            lambda r: encode(pb.ApproveResolutionResponse(resolution=resolution(r))),
            actor=audit.Actor.of(who)))

    async def RejectResolution(self, request: pb.RejectResolutionRequest,
                               context) -> pb.RejectResolutionResponse:
        self._review_args(request, note_required=True)
        who = principal()
        return pb.RejectResolutionResponse.FromString(await resolve.reject(
            self._deps, who.platform_id, who.key_id, request.request_id,
            validate.payload_hash("RejectResolution", request), request.resolution_id,
            request.note,
            lambda r: encode(pb.RejectResolutionResponse(resolution=resolution(r))),
            actor=audit.Actor.of(who)))

    async def GetResolution(self, request: pb.GetResolutionRequest,
                            context) -> pb.GetResolutionResponse:
        v = Violations()
        validate.object_id(v, request.resolution_id, "resolution_id")
        v.raise_if_any()
        found = await resolve.get(self._deps, principal().platform_id, request.resolution_id)
        return pb.GetResolutionResponse(resolution=resolution(found))


# ---- conversion -----------------------------------------------------------------------------

def settlement(s: Settlement) -> pb.Settlement:
    return pb.Settlement(
        transfer_id=s.transfer_id, amount_minor=s.amount_minor,
        posted_before_minor=s.posted_before_minor, currency_code=s.currency_code,
        channel_clearing_account_id=s.channel_clearing_account_id,
        custodial_account_id=s.custodial_account_id, posting_request_id=s.posting_request_id,
        request_id=s.request_id, posted_by_key_id=s.key_id, create_time=timestamp(s.created_at))


def resolution(r: Resolution) -> pb.Resolution:
    msg = pb.Resolution(
        resolution_id=r.resolution_id, discrepancy_id=r.discrepancy_id, action=int(r.action),
        state=int(r.state), note=r.note, amount_minor=r.amount_minor,
        currency_code=r.currency_code, proposed_by_key_id=r.proposed_by_key_id,
        reviewed_by_key_id=r.reviewed_by_key_id, review_note=r.review_note,
        posting_request_id=("" if r.state is ResolutionState.REJECTED
                            else resolve.posting_request_id(r)),
        transfer_id=r.transfer_id, split_id=r.split_id,
        events=[pb.ResolutionEvent(step=int(e.step), key_id=e.key_id, request_id=e.request_id,
                                   note=e.note, transfer_id=e.transfer_id,
                                   create_time=timestamp(e.created_at)) for e in r.events],
        create_time=timestamp(r.created_at))
    if r.order_message is not None:
        msg.order.CopyFrom(split_pb2.Order.FromString(r.order_message))
    return msg
