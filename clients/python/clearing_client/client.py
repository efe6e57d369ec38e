"""The client: stubs for the services, bearer auth, retries with the same request.

Typed methods cover the calls the `clearing` command line makes (and more): they return
the resource when a response holds only it (an Account, a Transfer, a Payout, a RuleSet)
and the response otherwise (lists, with their next_page_token; VerifyLedger;
ActivateRuleSet). Every other method is one `call(client.<service>.<Method>, request)`.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import random
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clearing_client.v1 import ledger_pb2 as pb
from clearing_client.v1 import ledger_pb2_grpc, payout_pb2
from clearing_client.v1 import payout_pb2_grpc, rule_set_pb2, split_pb2, split_pb2_grpc
from clearing_client.v1 import audit_pb2_grpc
from clearing_client.v1 import reconciliation_pb2, reconciliation_pb2_grpc, risk_pb2_grpc
from clearing_client.v1 import report_pb2, report_pb2_grpc
from clearing_client.v1 import platform_pb2_grpc
from clearing_client.v1 import event_pb2, event_pb2_grpc
from clearing_client.admin import AdminMethods

# The chunk of a statement file per ImportStatement message (the server takes up to 1 MiB).
STATEMENT_CHUNK_BYTES = 256 * 1024
# Statuses after which `watch` opens its stream again (from the last event it yielded).
WATCH_RESUMABLE_CODES = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED,
    grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})
RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                             grpc.StatusCode.ABORTED, grpc.StatusCode.DEADLINE_EXCEEDED})


def new_request_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True)
class FieldViolation:
    """One field of a refused request (a BadRequest detail): its path and what is wrong."""

    field: str
    description: str


@dataclass
class ClearingRpcError(Exception):
    """A failed call, with the server's ErrorInfo reason and BadRequest field paths
    (`fields`; `violations` has each path with its description)."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    fields: list[str] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    violations: list[FieldViolation] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.code.name} {self.reason}: {self.message}"

    @classmethod
    def from_call(cls, err: grpc.aio.AioRpcError) -> "ClearingRpcError":
        out = cls(err.code(), err.details() or "")
        status = rpc_status.from_call(err)
        for detail in status.details if status else ():
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                out.reason, out.metadata = info.reason, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                out.fields = [v.field for v in bad.field_violations]
                out.violations = [FieldViolation(v.field, v.description)
                                  for v in bad.field_violations]
        return out


def tls_credentials(ca_file: str | os.PathLike | None = None,
                    cert_file: str | os.PathLike | None = None,
                    key_file: str | os.PathLike | None = None) -> grpc.ChannelCredentials:
    """TLS channel credentials from PEM files: the CA that signed the server's certificate
    (None: the system's roots) and, for mutual TLS, the client certificate and its key.
    `make run` writes them under var/tls/: ca.pem, client.pem, client.key."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("a client certificate and its key go together")

    def read(path: str | os.PathLike | None) -> bytes | None:
        if path is None:
            return None
        with open(path, "rb") as f:
            return f.read()

    return grpc.ssl_channel_credentials(root_certificates=read(ca_file),
                                        private_key=read(key_file),
                                        certificate_chain=read(cert_file))


class ClearingClient(AdminMethods):
    """An asyncio client of one platform (its API key).

    With an admin key, it calls PlatformService (clearing_client.admin: create_platform,
    create_api_key, set_payout_config, ...). The connection is TLS when `credentials` are given (`tls_credentials(ca_file, ...)`),
    plaintext otherwise (a server accepts plaintext only when told to, for development)."""

    def __init__(self, target: str, api_key: str, *, timeout_s: float = 10.0,
                 attempts_max: int = 5, backoff_s: float = 0.05, backoff_max_s: float = 2.0,
                 channel: grpc.aio.Channel | None = None,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self._own_channel = channel is None
        if channel is None:
            channel = (grpc.aio.secure_channel(target, credentials) if credentials is not None
                       else grpc.aio.insecure_channel(target))
        self.channel = channel
        self.metadata = (("authorization", f"Bearer {api_key}"),)
        self.timeout_s = timeout_s
        self.attempts_max = attempts_max
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.ledger = ledger_pb2_grpc.LedgerServiceStub(self.channel)
        self.split = split_pb2_grpc.SplitServiceStub(self.channel)
        self.payout = payout_pb2_grpc.PayoutServiceStub(self.channel)
        self.recon = reconciliation_pb2_grpc.ReconciliationServiceStub(self.channel)
        self.report = report_pb2_grpc.ReportServiceStub(self.channel)
        self.risk = risk_pb2_grpc.RiskServiceStub(self.channel)
        # PlatformService answers admin keys only (`clearing admin init`, var/admin.key).
        self.platform = platform_pb2_grpc.PlatformServiceStub(self.channel)
        self.audit = audit_pb2_grpc.AuditServiceStub(self.channel)
        self.events = event_pb2_grpc.EventServiceStub(self.channel)

    async def __aenter__(self) -> "ClearingClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_channel:
            await self.channel.close()

    async def call(self, method, request, *, timeout_s: float | None = None):
        """Call a stub method (e.g. `client.ledger.Transfer`), retrying retryable failures
        with the same request. Raises ClearingRpcError."""
        return await self._attempts(method, lambda: request, timeout_s)

    async def _attempts(self, method, make_request, timeout_s: float | None):
        """Call `method` with `make_request()` (a message, or a fresh iterator of messages
        for a client stream) until it succeeds or fails for good."""
        delay = self.backoff_s
        for attempt in range(1, self.attempts_max + 1):
            try:
                return await method(make_request(), metadata=self.metadata,
                                    timeout=timeout_s or self.timeout_s)
            except grpc.aio.AioRpcError as err:
                if err.code() not in RETRYABLE_CODES or attempt == self.attempts_max:
                    raise ClearingRpcError.from_call(err) from None
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, self.backoff_max_s)
        raise AssertionError("unreachable")

    # ---- LedgerService ------------------------------------------------------------------

    async def create_account(self, external_ref: str, *, kind: int, currency_code: str = "CNY",
                             owner_type: int = pb.OWNER_TYPE_ENTERPRISE,
                             display_name: str = "", allow_negative: bool | None = None,
                             request_id: str | None = None) -> pb.Account:
        """Open an account (`kind`: an AccountKind); allow_negative None: the kind's default."""
        request = pb.CreateAccountRequest(
            request_id=request_id or new_request_id(), external_ref=external_ref, kind=kind,
            owner_type=owner_type, currency_code=currency_code, display_name=display_name)
        if allow_negative is not None:
            request.allow_negative = allow_negative
        return (await self.call(self.ledger.CreateAccount, request)).account

    async def get_account(self, account_id: int = 0, *, external_ref: str = "") -> pb.Account:
        """One account, by id or by the platform's reference."""
        return (await self.call(self.ledger.GetAccount, pb.GetAccountRequest(
            account_id=account_id, external_ref=external_ref))).account

    async def list_accounts(self, *, page_size: int = 0,
                            page_token: str = "") -> pb.ListAccountsResponse:
        """A page of the platform's accounts (page_size 0: the server's default)."""
        return await self.call(self.ledger.ListAccounts, pb.ListAccountsRequest(
            page_size=page_size, page_token=page_token))

    async def freeze_account(self, account_id: int, *, reason: str, amount_minor: int = 0,
                             request_id: str | None = None) -> pb.Account:
        """Freeze an amount of an account (amount_minor 0: the whole account)."""
        return (await self.call(self.ledger.FreezeAccount, pb.FreezeAccountRequest(
            request_id=request_id or new_request_id(), account_id=account_id,
            amount_minor=amount_minor, reason=reason))).account

    async def unfreeze_account(self, account_id: int, *, reason: str, amount_minor: int = 0,
                               request_id: str | None = None) -> pb.Account:
        """Release a frozen amount (amount_minor 0: unfreeze the whole account)."""
        return (await self.call(self.ledger.UnfreezeAccount, pb.UnfreezeAccountRequest(
            request_id=request_id or new_request_id(), account_id=account_id,
            amount_minor=amount_minor, reason=reason))).account

    async def close_account(self, account_id: int, *,
                            request_id: str | None = None) -> pb.Account:
        """Close an empty account."""
        return (await self.call(self.ledger.CloseAccount, pb.CloseAccountRequest(
            request_id=request_id or new_request_id(), account_id=account_id))).account

    async def transfer(self, debit_account_id: int, credit_account_id: int, amount_minor: int,
                       currency_code: str, *, mode: int = pb.TRANSFER_MODE_IMMEDIATE,
                       pending_transfer_id: int = 0, memo: str = "",
                       request_id: str | None = None) -> pb.Transfer:
        """Move amount_minor from the debit to the credit account (`mode`: a TransferMode;
        TRANSFER_MODE_PENDING holds it instead)."""
        request = pb.TransferRequest(
            request_id=request_id or new_request_id(), debit_account_id=debit_account_id,
            credit_account_id=credit_account_id, amount_minor=amount_minor,
            currency_code=currency_code, mode=mode, pending_transfer_id=pending_transfer_id,
            memo=memo)
        return (await self.call(self.ledger.Transfer, request)).transfer

    async def post_pending(self, pending_transfer_id: int, amount_minor: int, *,
                           request_id: str | None = None) -> pb.Transfer:
        """Post amount_minor of a pending transfer (the rest stays held)."""
        return (await self.call(self.ledger.Transfer, pb.TransferRequest(
            request_id=request_id or new_request_id(), mode=pb.TRANSFER_MODE_POST_PENDING,
            pending_transfer_id=pending_transfer_id, amount_minor=amount_minor))).transfer

    async def void_pending(self, pending_transfer_id: int, *,
                           request_id: str | None = None) -> pb.Transfer:
        """Void what remains of a pending transfer."""
        return (await self.call(self.ledger.Transfer, pb.TransferRequest(
            request_id=request_id or new_request_id(), mode=pb.TRANSFER_MODE_VOID_PENDING,
            pending_transfer_id=pending_transfer_id))).transfer

    async def balance(self, account_id: int) -> pb.Balance:
        """An account's balances."""
        return (await self.call(self.ledger.GetBalance,
                                pb.GetBalanceRequest(account_id=account_id))).balance

    async def list_entries(self, account_id: int, *, page_size: int = 0,
                           page_token: str = "") -> pb.ListEntriesResponse:
        """A page of an account's statement, newest first."""
        return await self.call(self.ledger.ListEntries, pb.ListEntriesRequest(
            account_id=account_id, page_size=page_size, page_token=page_token))

    async def verify(self) -> pb.VerifyLedgerResponse:
        """The platform's trial balance and the hash chain."""
        return await self.call(self.ledger.VerifyLedger, pb.VerifyLedgerRequest())

    # ---- SplitService: rule sets ---------------------------------------------------------

    async def publish_rule_set(self, rule_set: rule_set_pb2.RuleSet, *,
                               validate_only: bool = False,
                               request_id: str | None = None) -> rule_set_pb2.RuleSet:
        """File a new version of a rule set (validate_only: check it, store nothing)."""
        return (await self.call(self.split.PublishRuleSet, split_pb2.PublishRuleSetRequest(
            request_id=request_id or new_request_id(), rule_set=rule_set,
            validate_only=validate_only))).rule_set

    async def activate_rule_set(self, rule_set_name: str, rule_set_version: int, *,
                                content_sha256: str = "",
                                expected_active_version: int | None = None,
                                comment: str = "", request_id: str | None = None,
                                ) -> split_pb2.ActivateRuleSetResponse:
        """Activate a version (an approver's key, not its publisher's); content_sha256 and
        expected_active_version, when given, must match what the server holds."""
        request = split_pb2.ActivateRuleSetRequest(
            request_id=request_id or new_request_id(), rule_set_name=rule_set_name,
            rule_set_version=rule_set_version, content_sha256=content_sha256, comment=comment)
        if expected_active_version is not None:
            request.expected_active_version = expected_active_version
        return await self.call(self.split.ActivateRuleSet, request)

    async def simulate_rule_set(self, rule_set_name: str, rule_set_version: int, *,
                                days: int = 0, order_count_max: int = 0,
                                timeout_s: float | None = None,
                                ) -> split_pb2.SimulateRuleSetResponse:
        """Backtest a version that is not active on the rule set's recorded orders of the
        last `days` days (0: 7), the most recent `order_count_max` (0: the server's
        maximum); nothing is written. A backtest of many orders takes seconds: pass a
        `timeout_s` that fits."""
        return await self.call(self.split.SimulateRuleSet, split_pb2.SimulateRuleSetRequest(
            rule_set_name=rule_set_name, rule_set_version=rule_set_version, days=days,
            order_count_max=order_count_max), timeout_s=timeout_s)

    async def get_rule_set(self, rule_set_name: str,
                           rule_set_version: int = 0) -> rule_set_pb2.RuleSet:
        """One version of a rule set (0: the active one)."""
        return (await self.call(self.split.GetRuleSet, split_pb2.GetRuleSetRequest(
            rule_set_name=rule_set_name, rule_set_version=rule_set_version))).rule_set

    async def list_rule_sets(self, *, rule_set_name: str = "", page_size: int = 0,
                             page_token: str = "", include_rules: bool = False,
                             status: int = rule_set_pb2.RULE_SET_STATUS_UNSPECIFIED,
                             ) -> split_pb2.ListRuleSetsResponse:
        """A page of rule-set versions by name, newest first (`status`: only those)."""
        return await self.call(self.split.ListRuleSets, split_pb2.ListRuleSetsRequest(
            page_size=page_size, page_token=page_token, rule_set_name=rule_set_name,
            status=status, include_rules=include_rules))

    # ---- SplitService: splits (the Node client's previewSplit ... refundSplit) -------------

    async def preview_split(self, order: split_pb2.Order, *, rule_set_version: int = 0,
                            counter_overrides: dict[str, int] | None = None) -> split_pb2.Split:
        """What a split of `order` would be, written nowhere (rule_set_version 0: the
        active version)."""
        return (await self.call(self.split.PreviewSplit, split_pb2.PreviewSplitRequest(
            order=order, rule_set_version=rule_set_version,
            counter_overrides=counter_overrides or {}))).split

    async def split_order(self, order: split_pb2.Order, *,
                          request_id: str | None = None) -> split_pb2.Split:
        """Split a paid order by its rule set. The same request id answers the first split."""
        return (await self.call(self.split.Split, split_pb2.SplitRequest(
            request_id=request_id or new_request_id(), order=order))).split

    async def get_split(self, order_id: str = "", *, split_id: int = 0) -> split_pb2.Split:
        """One split, by the order's id or the split's id."""
        return (await self.call(self.split.GetSplit, split_pb2.GetSplitRequest(
            order_id=order_id, split_id=split_id))).split

    async def list_splits(self, *, state: int = split_pb2.SPLIT_STATUS_UNSPECIFIED,
                          paid_time_start: datetime.datetime | None = None,
                          paid_time_end: datetime.datetime | None = None,
                          account_id: int = 0, amount_min_minor: int = 0,
                          amount_max_minor: int = 0, currency_code: str = "",
                          page_size: int = 0,
                          page_token: str = "") -> split_pb2.ListSplitsResponse:
        """A page of the platform's splits, newest paid first. Every filter given applies:
        a SplitStatus, paid times in [paid_time_start, paid_time_end) (aware datetimes), a
        leg's credited account, amounts in [amount_min_minor, amount_max_minor], a currency.
        A page may be short (a page walks at most 10,000 splits); the listing ends when
        `next_page_token` is empty. Pass the same filters with the token."""
        request = split_pb2.ListSplitsRequest(
            page_size=page_size, page_token=page_token, state=state, account_id=account_id,
            amount_min_minor=amount_min_minor, amount_max_minor=amount_max_minor,
            currency_code=currency_code)
        if paid_time_start is not None:
            request.paid_time_start.FromDatetime(paid_time_start)
        if paid_time_end is not None:
            request.paid_time_end.FromDatetime(paid_time_end)
        return await self.call(self.split.ListSplits, request)

    async def release_split(self, order_id: str, *, event_name: str | None = None,
                            fraction_bps: int | None = None, account_ids: Iterable[int] = (),
                            request_id: str | None = None) -> split_pb2.ReleaseSplitResponse:
        """Release held legs of a split: on an event (`event_name`) or a fraction
        (`fraction_bps`), of the given accounts only (`account_ids`) when given."""
        request = split_pb2.ReleaseSplitRequest(request_id=request_id or new_request_id(),
                                                order_id=order_id, account_ids=list(account_ids))
        if event_name is not None:
            request.event_name = event_name
        elif fraction_bps is not None:
            request.fraction_bps = fraction_bps
        return await self.call(self.split.ReleaseSplit, request)

    async def cancel_split(self, order_id: str, *, reason: str,
                           request_id: str | None = None) -> split_pb2.Split:
        """Cancel a split whose money is all still held."""
        return (await self.call(self.split.CancelSplit, split_pb2.CancelSplitRequest(
            request_id=request_id or new_request_id(), order_id=order_id,
            reason=reason))).split

    async def refund_split(self, order_id: str, amount_minor: int, currency_code: str, *,
                           refund_ref: str = "", reason: str = "",
                           request_id: str | None = None) -> split_pb2.RefundSplitResponse:
        """Refund amount_minor of a split order (`refund_ref`: the refund's reference)."""
        return await self.call(self.split.RefundSplit, split_pb2.RefundSplitRequest(
            request_id=request_id or new_request_id(), order_id=order_id,
            amount_minor=amount_minor, currency_code=currency_code, refund_ref=refund_ref,
            reason=reason))

    # ---- PayoutService -------------------------------------------------------------------

    async def bind_bank_account(self, account_id: int, *, bank_code: str, bank_name: str,
                                account_number: str, holder_name: str, account_type: int,
                                branch_code: str = "", kyc_verified: bool = False,
                                request_id: str | None = None) -> payout_pb2.BankAccount:
        """Bind a bank account to an account (`account_type`: a BankAccountType)."""
        return (await self.call(self.payout.BindBankAccount, payout_pb2.BindBankAccountRequest(
            request_id=request_id or new_request_id(), account_id=account_id,
            bank_code=bank_code, bank_name=bank_name, branch_code=branch_code,
            account_number=account_number, holder_name=holder_name,
            account_type=account_type, kyc_verified=kyc_verified))).bank_account

    async def request_payout(self, account_id: int, amount_minor: int, currency_code: str, *,
                             memo: str = "", request_id: str | None = None) -> payout_pb2.Payout:
        """Pay amount_minor (fee included) of an account out to its bound bank account."""
        return (await self.call(self.payout.RequestPayout, payout_pb2.RequestPayoutRequest(
            request_id=request_id or new_request_id(), account_id=account_id,
            amount_minor=amount_minor, currency_code=currency_code, memo=memo))).payout

    async def get_payout(self, payout_id: int) -> payout_pb2.Payout:
        """One payout with its bank transfers."""
        return (await self.call(self.payout.GetPayout,
                                payout_pb2.GetPayoutRequest(payout_id=payout_id))).payout

    async def list_payouts(self, *, account_id: int = 0, states: Iterable[int] = (),
                           page_size: int = 0,
                           page_token: str = "") -> payout_pb2.ListPayoutsResponse:
        """A page of payouts, newest first (account_id 0: all; `states`: PayoutStates)."""
        return await self.call(self.payout.ListPayouts, payout_pb2.ListPayoutsRequest(
            page_size=page_size, page_token=page_token, account_id=account_id,
            states=list(states)))

    async def approve_payout(self, payout_id: int, *, reason: str = "",
                             request_id: str | None = None) -> payout_pb2.Payout:
        """Approve a payout under review (an approver's key)."""
        return (await self.call(self.payout.ApprovePayout, payout_pb2.ApprovePayoutRequest(
            request_id=request_id or new_request_id(), payout_id=payout_id,
            reason=reason))).payout

    async def reject_payout(self, payout_id: int, *, reason: str,
                            request_id: str | None = None) -> payout_pb2.Payout:
        """Reject a payout under review (an approver's key): what was not paid goes back."""
        return (await self.call(self.payout.RejectPayout, payout_pb2.RejectPayoutRequest(
            request_id=request_id or new_request_id(), payout_id=payout_id,
            reason=reason))).payout

    # ---- ReconciliationService -------------------------------------------------------------

    async def import_statement(self, path: str | os.PathLike, *, channel: str,
                               settlement_date: str,
                               statement_format: int = reconciliation_pb2.STATEMENT_FORMAT_CANONICAL,
                               chunk_bytes: int = STATEMENT_CHUNK_BYTES,
                               progress: Callable[[int, int], None] | None = None,
                               request_id: str | None = None, timeout_s: float | None = None,
                               ) -> reconciliation_pb2.ImportStatementResponse:
        """Upload a statement file (read in chunks, never whole) and reconcile it; its run.
        `progress(sent_bytes, size_bytes)` is called after each chunk. A retry sends the file
        again with the same request id: the server answers the first run."""
        header = reconciliation_pb2.StatementHeader(
            request_id=request_id or new_request_id(), channel=channel,
            settlement_date=settlement_date, format=statement_format)
        size_bytes = os.path.getsize(path)

        def messages():
            yield reconciliation_pb2.ImportStatementRequest(header=header)
            sent = 0
            with open(path, "rb") as f:
                while chunk := f.read(chunk_bytes):
                    sent += len(chunk)
                    yield reconciliation_pb2.ImportStatementRequest(chunk=chunk)
                    if progress is not None:
                        progress(sent, size_bytes)

        return await self._attempts(self.recon.ImportStatement, messages, timeout_s)

    async def get_reconciliation_run(self, run_id: int) -> reconciliation_pb2.ReconciliationRun:
        """One reconciliation run with its totals per class."""
        return (await self.call(self.recon.GetReconciliationRun,
                                reconciliation_pb2.GetReconciliationRunRequest(
                                    run_id=run_id))).run

    async def list_reconciliation_runs(self, *, channel: str = "", settlement_date: str = "",
                                       page_size: int = 0, page_token: str = "",
                                       ) -> reconciliation_pb2.ListReconciliationRunsResponse:
        """A page of runs, newest first (of one channel and/or day when given)."""
        return await self.call(self.recon.ListReconciliationRuns,
                               reconciliation_pb2.ListReconciliationRunsRequest(
                                   channel=channel, settlement_date=settlement_date,
                                   page_size=page_size, page_token=page_token))

    async def post_settlement(self, run_id: int, *, request_id: str | None = None,
                              ) -> reconciliation_pb2.ReconciliationRun:
        """Book the channel's money of a run's statement (an operator's key); the run with
        its settlement."""
        return (await self.call(self.recon.PostSettlement,
                                reconciliation_pb2.PostSettlementRequest(
                                    request_id=request_id or new_request_id(),
                                    run_id=run_id))).run

    async def propose_resolution(self, discrepancy_id: int, action: int, *, note: str,
                                 amount_minor: int = 0, order=None,
                                 request_id: str | None = None,
                                 ) -> reconciliation_pb2.Resolution:
        """Propose how to resolve a discrepancy (an operator's key; `action`: a
        ResolutionAction; `order`: SPLIT_NOW's split_pb2.Order)."""
        return (await self.call(self.recon.ProposeResolution,
                                reconciliation_pb2.ProposeResolutionRequest(
                                    request_id=request_id or new_request_id(),
                                    discrepancy_id=discrepancy_id, action=action, note=note,
                                    amount_minor=amount_minor, order=order))).resolution

    async def approve_resolution(self, resolution_id: int, *, note: str = "",
                                 request_id: str | None = None,
                                 ) -> reconciliation_pb2.Resolution:
        """Approve and carry out a proposed resolution (another key, an approver's)."""
        return (await self.call(self.recon.ApproveResolution,
                                reconciliation_pb2.ApproveResolutionRequest(
                                    request_id=request_id or new_request_id(),
                                    resolution_id=resolution_id, note=note))).resolution

    async def reject_resolution(self, resolution_id: int, *, note: str,
                                request_id: str | None = None,
                                ) -> reconciliation_pb2.Resolution:
        """Reject a proposed resolution (another key, an approver's): its discrepancy is
        OPEN again."""
        return (await self.call(self.recon.RejectResolution,
                                reconciliation_pb2.RejectResolutionRequest(
                                    request_id=request_id or new_request_id(),
                                    resolution_id=resolution_id, note=note))).resolution

    async def get_resolution(self, resolution_id: int) -> reconciliation_pb2.Resolution:
        """One resolution with its every step."""
        return (await self.call(self.recon.GetResolution,
                                reconciliation_pb2.GetResolutionRequest(
                                    resolution_id=resolution_id))).resolution

    async def list_discrepancies(self, *, run_id: int = 0, classes: Iterable[int] = (),
                                 states: Iterable[int] = (), page_size: int = 0,
                                 page_token: str = "",
                                 ) -> reconciliation_pb2.ListDiscrepanciesResponse:
        """A page of discrepancies, oldest first (`classes`: ReconciliationClasses,
        `states`: DiscrepancyStates)."""
        return await self.call(self.recon.ListDiscrepancies,
                               reconciliation_pb2.ListDiscrepanciesRequest(
                                   run_id=run_id, classes=list(classes), states=list(states),
                                   page_size=page_size, page_token=page_token))

    # ---- vouchers (ReportService) ----------------------------------------------------------

    async def get_voucher(self, *, voucher_id: int = 0, split_id: int = 0,
                          split_action_id: int = 0, payout_id: int = 0,
                          ) -> report_pb2.GetVoucherResponse:
        """A voucher (its PDF and record), named by exactly one id; the first request for a
        split, action or payout issues its voucher."""
        return await self.call(self.report.GetVoucher, report_pb2.GetVoucherRequest(
            voucher_id=voucher_id, split_id=split_id, split_action_id=split_action_id,
            payout_id=payout_id))

    async def verify_voucher(self, *, voucher_id: int = 0,
                             pdf: bytes = b"") -> report_pb2.VerifyVoucherResponse:
        """Verify a voucher, by id or as its PDF file: `valid`, and every problem found."""
        return await self.call(self.report.VerifyVoucher, report_pb2.VerifyVoucherRequest(
            voucher_id=voucher_id, pdf=pdf))

    # ---- events (EventService) -------------------------------------------------------------

    async def list_events(self, cursor: int = 0, *, types: Iterable[str] = (),
                          page_size: int = 0) -> event_pb2.ListEventsResponse:
        """A page of the platform's events after `cursor`, oldest first."""
        return await self.call(self.events.ListEvents, event_pb2.ListEventsRequest(
            cursor=cursor, types=list(types), page_size=page_size))

    async def watch(self, cursor: int = 0, *, types: Iterable[str] = (),
                    reconnect_max_s: float = 5.0) -> AsyncIterator[event_pb2.Event]:
        """The platform's events after `cursor`, history then live, for ever. A broken
        stream (the server restarts, the network drops, the stream fell too far behind:
        RESOURCE_EXHAUSTED EVENT_CONSUMER_TOO_SLOW) is opened again from the last event
        yielded, after a growing pause, so nothing is skipped or repeated. Keep the last
        `event.seq` you processed durably and pass it as `cursor` after a restart. Errors
        that retrying cannot fix (a pruned cursor: OUT_OF_RANGE, a bad key) are raised as
        ClearingRpcError."""
        kinds = list(types)
        delay = self.backoff_s
        while True:
            stream = self.events.WatchEvents(
                event_pb2.WatchEventsRequest(cursor=cursor, types=kinds),
                metadata=self.metadata)
            try:
                async for response in stream:
                    delay = self.backoff_s
                    for event in response.events:
                        cursor = event.seq
                        yield event
            except grpc.aio.AioRpcError as err:
                if err.code() not in WATCH_RESUMABLE_CODES:
                    raise ClearingRpcError.from_call(err) from None
            finally:
                stream.cancel()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, reconnect_max_s)
