"""PayoutService: validation and conversion; the payout domain is `clearing.payout`.

Full bank account numbers come in only through BindBankAccount and never go out: every
message built here carries the masked number.
"""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from clearing import audit
from clearing.api import party, payout_schedule, validate
from clearing.api.convert import timestamp
from clearing.api.interceptor import principal
from clearing.api.replies import encode
from clearing.errors import Violations
from clearing.ledger.model import Role
from clearing.limits import (ACCOUNT_NUMBER_LEN_MAX, ACCOUNT_NUMBER_LEN_MIN, BANK_CODE_LEN_MAX,
                             BANK_NAME_LEN_MAX, BRANCH_CODE_LEN, HOLDER_NAME_LEN_MAX,
                             PAYOUT_MEMO_LEN_MAX, REVIEW_REASON_LEN_MAX)
from clearing.payout import review, service
from clearing.payout.model import BankAccount, BankAccountType, BankTransfer, Payout, PayoutState
from clearing.payout.service import PayoutDeps
from clearing.v1 import payout_pb2 as pb
from clearing.v1 import payout_pb2_grpc

_SERVICE = "/clearing.v1.PayoutService/"
_OPERATOR = frozenset({Role.OPERATOR})
_APPROVER = frozenset({Role.APPROVER})
_READERS = frozenset({Role.OPERATOR, Role.APPROVER})
# At most this many state filters (there are 7 states).
STATES_FILTER_MAX = 7

# Roles allowed per method.
METHOD_ROLES: dict[str, frozenset[str]] = {
    _SERVICE + "BindBankAccount": _OPERATOR,
    _SERVICE + "SetPayoutSchedule": _OPERATOR,
    _SERVICE + "RequestPayout": _OPERATOR,
    _SERVICE + "GetPayout": _READERS | {Role.PARTY},
    _SERVICE + "ListPayouts": _READERS | {Role.PARTY},
    _SERVICE + "ApprovePayout": _APPROVER,
    _SERVICE + "RejectPayout": _APPROVER,
}


class PayoutServicer(payout_pb2_grpc.PayoutServiceServicer):
    """Bank accounts, payout requests, review and reads."""

    def __init__(self, deps: PayoutDeps) -> None:
        self._deps = deps

    async def BindBankAccount(self, request: pb.BindBankAccountRequest, context) -> pb.BindBankAccountResponse:
        v = Violations()
        validate.request_id(v, request.request_id)
        validate.object_id(v, request.account_id, "account_id")
        validate.text(v, request.bank_code, "bank_code", length_max=BANK_CODE_LEN_MAX,
                      required=True)
        validate.text(v, request.bank_name, "bank_name", length_max=BANK_NAME_LEN_MAX,
                      required=True)
        if request.branch_code and not (len(request.branch_code) == BRANCH_CODE_LEN
                                        and _digits(request.branch_code)):
            v.add("branch_code", f"must be {BRANCH_CODE_LEN} digits (a CNAPS code) or empty")
        number = request.account_number
        if not (ACCOUNT_NUMBER_LEN_MIN <= len(number) <= ACCOUNT_NUMBER_LEN_MAX
                and _digits(number)):
            v.add("account_number", f"must be {ACCOUNT_NUMBER_LEN_MIN} to "
                                    f"{ACCOUNT_NUMBER_LEN_MAX} digits")
        validate.text(v, request.holder_name, "holder_name", length_max=HOLDER_NAME_LEN_MAX,
                      required=True)
        validate.enum(v, request.account_type, BankAccountType, "account_type")
        v.raise_if_any()
        who = principal()
        return pb.BindBankAccountResponse.FromString(await service.bind_bank_account(
            self._deps, who.platform_id, request.request_id,
            validate.payload_hash("BindBankAccount", request),
            service.BindRequest(request.account_id, request.bank_code, request.bank_name,
                                request.branch_code, number, request.holder_name,
                                BankAccountType(request.account_type), request.kyc_verified),
            lambda b: encode(pb.BindBankAccountResponse(bank_account=bank_account(b))),
            actor=audit.Actor.of(who)))

    async def SetPayoutSchedule(self, request: pb.SetPayoutScheduleRequest, context) -> pb.SetPayoutScheduleResponse:
        return await payout_schedule.set_payout_schedule(self._deps, request, principal())

    async def RequestPayout(self, request: pb.RequestPayoutRequest, context) -> pb.RequestPayoutResponse:
        v = Violations()
        validate.request_id(v, request.request_id)
        validate.object_id(v, request.account_id, "account_id")
        validate.amount(v, request.amount_minor)
        validate.currency(v, request.currency_code)
        validate.text(v, request.memo, "memo", length_max=PAYOUT_MEMO_LEN_MAX)
        v.raise_if_any()
        who = principal()
        return pb.RequestPayoutResponse.FromString(await service.request_payout(
            self._deps, platform_id=who.platform_id, account_id=request.account_id,
            amount_minor=request.amount_minor, currency_code=request.currency_code,
            request_id=request.request_id, memo=request.memo, requested_key_id=who.key_id,
            payload_hash=validate.payload_hash("RequestPayout", request),
            encode=lambda p: encode(pb.RequestPayoutResponse(payout=payout(p)))))

    async def GetPayout(self, request: pb.GetPayoutRequest, context) -> pb.GetPayoutResponse:
        v = Violations()
        validate.object_id(v, request.payout_id, "payout_id")
        v.raise_if_any()
        who = principal()
        found = await service.get_payout(self._deps, who.platform_id, request.payout_id)
        party.check_payout(who, found.payout_id, found.account_id)
        return pb.GetPayoutResponse(payout=payout(
            found, service.waiting_reason(self._deps, found.state)))

    async def ListPayouts(self, request: pb.ListPayoutsRequest, context) -> pb.ListPayoutsResponse:
        v = Violations()
        size = validate.page_size(v, request.page_size)
        validate.object_id(v, request.account_id, "account_id", required=False)
        if len(request.states) > STATES_FILTER_MAX:
            v.add("states", f"at most {STATES_FILTER_MAX} states")
        for i, state in enumerate(request.states):
            validate.enum(v, state, PayoutState, f"states[{i}]")
        start = validate.timestamp(v, request, "start_time")
        end = validate.timestamp(v, request, "end_time")
        if start and end and end <= start:
            v.add("end_time", "must be after start_time")
        v.raise_if_any()
        who = principal()
        payouts, token = await service.list_payouts(
            self._deps, who.platform_id, page_size=size, page_token=request.page_token,
            account_id=request.account_id, states=sorted(set(request.states)), start=start,
            end=end, account_ids=party.scope(who))
        return pb.ListPayoutsResponse(payouts=[payout(p, service.waiting_reason(self._deps,
                                                                               p.state))
                                               for p in payouts],
                                      next_page_token=token)

    def _review_args(self, request, *, reason_required: bool) -> None:
        v = Violations()
        validate.request_id(v, request.request_id)
        validate.object_id(v, request.payout_id, "payout_id")
        validate.text(v, request.reason, "reason", length_max=REVIEW_REASON_LEN_MAX,
                      required=reason_required)
        v.raise_if_any()

    async def ApprovePayout(self, request: pb.ApprovePayoutRequest, context) -> pb.ApprovePayoutResponse:
        self._review_args(request, reason_required=False)
        who = principal()
        return pb.ApprovePayoutResponse.FromString(await review.approve_payout(
            self._deps, who.platform_id, who.key_id, request.request_id,
            validate.payload_hash("ApprovePayout", request), request.payout_id, request.reason,
            lambda p: encode(pb.ApprovePayoutResponse(payout=payout(p))),
            actor=audit.Actor.of(who)))

    async def RejectPayout(self, request: pb.RejectPayoutRequest, context) -> pb.RejectPayoutResponse:
        self._review_args(request, reason_required=True)
        who = principal()
        return pb.RejectPayoutResponse.FromString(await review.reject_payout(
            self._deps, who.platform_id, who.key_id, request.request_id,
            validate.payload_hash("RejectPayout", request), request.payout_id, request.reason,
            lambda p: encode(pb.RejectPayoutResponse(payout=payout(p))),
            actor=audit.Actor.of(who)))


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


# ---- conversion -----------------------------------------------------------------------------

def _ts(value: dt.datetime | None) -> Timestamp | None:
    return None if value is None else timestamp(value)


def bank_account(b: BankAccount) -> pb.BankAccount:
    return pb.BankAccount(
        bank_account_id=b.bank_account_id, account_id=b.account_id, bank_code=b.bank_code,
        bank_name=b.bank_name, branch_code=b.branch_code,
        masked_account_number=b.masked_number, holder_name=b.holder_name,
        account_type=int(b.account_type), kyc_verified=b.kyc_verified, status=int(b.status),
        create_time=timestamp(b.created_at), replace_time=_ts(b.replaced_at))


def bank_transfer(t: BankTransfer) -> pb.BankTransfer:
    return pb.BankTransfer(
        bank_transfer_id=t.bank_transfer_id, sequence=t.sequence, amount_minor=t.amount_minor,
        currency_code=t.currency_code, idempotency_key=t.idempotency_key, state=int(t.state),
        attempt_count=t.attempt_count,
        attempts=[pb.BankTransferAttempt(
            attempt_number=a.attempt_number, idempotency_key=a.idempotency_key,
            state=int(a.state), bank_reference=a.bank_reference, failure_code=a.failure_code,
            failure_message=a.failure_message, submit_time=timestamp(a.submitted_at),
            finish_time=_ts(a.finished_at)) for a in t.attempts],
        next_attempt_time=_ts(t.next_attempt_at), create_time=timestamp(t.created_at),
        finish_time=_ts(t.finished_at))


def payout(p: Payout, waiting_reason: str = "") -> pb.Payout:
    return pb.Payout(
        payout_id=p.payout_id, request_id=p.request_id, account_id=p.account_id,
        external_ref=p.external_ref, bank_account_id=p.bank_account_id,
        masked_account_number=p.masked_number, currency_code=p.currency_code,
        amount_minor=p.amount_minor, fee_minor=p.fee_minor, net_amount_minor=p.net_minor,
        paid_minor=p.paid_minor, state=int(p.state), origin=int(p.origin),
        transfers=[bank_transfer(t) for t in p.transfers], review_required=p.review_required,
        requested_by=p.requested_by, reviewed_by=p.reviewed_by, review_reason=p.review_reason,
        failure_reason=p.failure_reason, failure_message=p.failure_message,
        hold_transfer_id=p.hold_transfer_id, fee_account_id=p.fee_account_id, memo=p.memo,
        create_time=timestamp(p.created_at), update_time=timestamp(p.updated_at),
        review_time=_ts(p.review_at), finish_time=_ts(p.finished_at),
        waiting_reason=waiting_reason)
