"""LedgerService: validation, then the ledger domain; protobuf stays in this layer."""

from __future__ import annotations

import asyncpg

from clearing import audit, idempotency
from clearing.api import convert, party, validate
from clearing.api.interceptor import principal
from clearing.api.replies import Reply, encode
from clearing.errors import Violations
from clearing.ledger import store, verify
from clearing.ledger.model import AccountKind, AccountStatus, Leg, Mode, OwnerType, Posting, Role
from clearing.ledger.writer import LedgerWriter
from clearing.limits import (ACCOUNT_REASON_LEN_MAX, DISPLAY_NAME_LEN_MAX, EXTERNAL_REF_LEN_MAX,
                             MEMO_LEN_MAX)
from clearing.v1 import ledger_pb2 as pb
from clearing.v1 import ledger_pb2_grpc

_SERVICE = "/clearing.v1.LedgerService/"
_OPERATOR = frozenset({Role.OPERATOR})
# Any platform key, a party key too (narrowed to its accounts: clearing.api.party).
_ANY = Role.ALL | {Role.PARTY}

# Roles allowed per method.
METHOD_ROLES: dict[str, frozenset[str]] = {
    _SERVICE + "CreateAccount": _OPERATOR,
    _SERVICE + "GetAccount": _ANY,
    _SERVICE + "ListAccounts": _ANY,
    _SERVICE + "FreezeAccount": _OPERATOR,
    _SERVICE + "UnfreezeAccount": _OPERATOR,
    _SERVICE + "CloseAccount": _OPERATOR,
    _SERVICE + "GetBalance": _ANY,
    _SERVICE + "ListEntries": _ANY,
    _SERVICE + "Transfer": frozenset({Role.OPERATOR, Role.GATEWAY}),
    _SERVICE + "VerifyLedger": _OPERATOR,
}


class LedgerServicer(ledger_pb2_grpc.LedgerServiceServicer):
    """Accounts, balances, statements, transfers and verification."""

    def __init__(self, pool: asyncpg.Pool, writer: LedgerWriter) -> None:
        self._pool = pool
        self._writer = writer

    # ---- accounts ---------------------------------------------------------------------

    async def CreateAccount(self, request: pb.CreateAccountRequest, context) -> pb.CreateAccountResponse:
        v = Violations()
        validate.request_id(v, request.request_id)
        validate.text(v, request.external_ref, "external_ref", length_max=EXTERNAL_REF_LEN_MAX,
                      required=True)
        validate.enum(v, request.kind, AccountKind, "kind")
        validate.enum(v, request.owner_type, OwnerType, "owner_type")
        validate.currency(v, request.currency_code)
        validate.text(v, request.display_name, "display_name", length_max=DISPLAY_NAME_LEN_MAX)
        v.raise_if_any()
        who = principal()
        kind = AccountKind(request.kind)
        allow_negative = (request.allow_negative if request.HasField("allow_negative")
                          else kind is AccountKind.CUSTODIAL)

        async def op(conn) -> bytes:
            account_id = await store.insert_account(
                conn, who.platform_id, request.external_ref, kind,
                OwnerType(request.owner_type), request.currency_code, allow_negative,
                request.display_name)
            account = await store.get_account(conn, who.platform_id, account_id=account_id)
            return encode(pb.CreateAccountResponse(account=convert.account(account)))

        return pb.CreateAccountResponse.FromString(await idempotency.run(
            self._pool, who.platform_id, request.request_id, "CreateAccount",
            validate.payload_hash("CreateAccount", request), op))

    async def GetAccount(self, request: pb.GetAccountRequest, context) -> pb.GetAccountResponse:
        v = Violations()
        if bool(request.account_id) == bool(request.external_ref):
            v.add("account_id", "set exactly one of account_id and external_ref")
        validate.object_id(v, request.account_id, "account_id", required=False)
        validate.text(v, request.external_ref, "external_ref", length_max=EXTERNAL_REF_LEN_MAX)
        v.raise_if_any()
        who = principal()
        async with self._pool.acquire() as conn:
            account = await store.get_account(conn, who.platform_id,
                                              account_id=request.account_id,
                                              external_ref=request.external_ref)
        party.check_account(who, account.account_id,
                            request.external_ref or request.account_id)
        return pb.GetAccountResponse(account=convert.account(account))

    async def ListAccounts(self, request: pb.ListAccountsRequest, context) -> pb.ListAccountsResponse:
        v = Violations()
        size = validate.page_size(v, request.page_size)
        validate.enum(v, request.kind, AccountKind, "kind", required=False)
        validate.enum(v, request.status, AccountStatus, "status", required=False)
        v.raise_if_any()
        who = principal()
        async with self._pool.acquire() as conn:
            accounts, token = await store.list_accounts(
                conn, who.platform_id, page_size=size, page_token=request.page_token,
                kind=request.kind, status=request.status, account_ids=party.scope(who))
        return pb.ListAccountsResponse(accounts=[convert.account(a) for a in accounts],
                                       next_page_token=token)

    def _freeze_args(self, request, v: Violations) -> None:
        validate.request_id(v, request.request_id)
        validate.object_id(v, request.account_id, "account_id")
        validate.amount_or_zero(v, request.amount_minor)
        validate.text(v, request.reason, "reason", length_max=ACCOUNT_REASON_LEN_MAX, required=True)
        v.raise_if_any()

    async def _account_op(self, request, method: str, response_cls, action) -> object:
        """An account operation once per request id; answers its first response (the
        account as the operation left it)."""
        who = principal()

        async def op(conn) -> bytes:
            account_id = await action(conn, who)
            account = await store.get_account(conn, who.platform_id, account_id=account_id)
            return encode(response_cls(account=convert.account(account)))

        return response_cls.FromString(await idempotency.run(
            self._pool, who.platform_id, request.request_id, method,
            validate.payload_hash(method, request), op))

    async def FreezeAccount(self, request: pb.FreezeAccountRequest, context) -> pb.FreezeAccountResponse:
        self._freeze_args(request, Violations())
        return await self._account_op(
            request, "FreezeAccount", pb.FreezeAccountResponse,
            lambda conn, who: store.freeze(conn, who, request.account_id,
                                           request.amount_minor, request.reason))

    async def UnfreezeAccount(self, request: pb.UnfreezeAccountRequest, context) -> pb.UnfreezeAccountResponse:
        self._freeze_args(request, Violations())
        return await self._account_op(
            request, "UnfreezeAccount", pb.UnfreezeAccountResponse,
            lambda conn, who: store.unfreeze(conn, who, request.account_id,
                                             request.amount_minor, request.reason))

    async def CloseAccount(self, request: pb.CloseAccountRequest, context) -> pb.CloseAccountResponse:
        v = Violations()
        validate.request_id(v, request.request_id)
        validate.object_id(v, request.account_id, "account_id")
        v.raise_if_any()
        return await self._account_op(
            request, "CloseAccount", pb.CloseAccountResponse,
            lambda conn, who: store.close(conn, who, request.account_id))

    # ---- balances and statements ------------------------------------------------------

    async def GetBalance(self, request: pb.GetBalanceRequest, context) -> pb.GetBalanceResponse:
        v = Violations()
        validate.object_id(v, request.account_id, "account_id")
        v.raise_if_any()
        who = principal()
        party.check_account(who, request.account_id)
        async with self._pool.acquire() as conn:
            account = await store.get_account(conn, who.platform_id,
                                              account_id=request.account_id)
        return pb.GetBalanceResponse(balance=convert.balance(account.balance))

    async def ListEntries(self, request: pb.ListEntriesRequest, context) -> pb.ListEntriesResponse:
        v = Violations()
        validate.object_id(v, request.account_id, "account_id")
        size = validate.page_size(v, request.page_size)
        v.raise_if_any()
        who = principal()
        party.check_account(who, request.account_id)
        async with self._pool.acquire() as conn:
            entries, token = await store.list_entries(
                conn, who.platform_id, request.account_id, page_size=size,
                page_token=request.page_token)
        return pb.ListEntriesResponse(entries=[convert.entry(r, s) for r, s in entries],
                                      next_page_token=token)

    # ---- transfers --------------------------------------------------------------------

    async def Transfer(self, request: pb.TransferRequest, context) -> pb.TransferResponse:
        leg = _transfer_leg(request)
        reply = Reply(lambda records: pb.TransferResponse(transfer=convert.transfer(records[0])))
        who = principal()
        posting = Posting(who.platform_id, request.request_id, "Transfer",
                          validate.payload_hash("Transfer", request), (leg,), respond=reply,
                          sink=audit.SINK_NAME, attachment=audit.Actor.of(who))
        return reply.answer(await self._writer.submit(posting), pb.TransferResponse)

    async def VerifyLedger(self, request: pb.VerifyLedgerRequest, context) -> pb.VerifyLedgerResponse:
        pid = principal().platform_id
        report = await verify.verify(self._pool, pid)
        trail = await audit.verify(self._pool, pid)
        return pb.VerifyLedgerResponse(
            ok=report.ok and trail.ok, account_count=report.account_count,
            totals=[pb.CurrencyTotals(
                currency_code=t.currency_code, debits_posted_minor=t.debits_posted,
                credits_posted_minor=t.credits_posted, debits_pending_minor=t.debits_pending,
                credits_pending_minor=t.credits_pending, balanced=t.balanced)
                for t in report.totals],
            mismatched_account_ids=report.mismatched_account_ids, chain_ok=report.chain_ok,
            batch_count=report.batch_count, transfer_count=report.transfer_count,
            first_bad_batch_seq=report.first_bad_batch_seq, audit_chain_ok=trail.ok,
            audit_event_count=trail.event_count, first_bad_audit_seq=trail.first_bad_seq)


def _transfer_leg(request: pb.TransferRequest) -> Leg:
    v = Violations()
    validate.request_id(v, request.request_id)
    validate.enum(v, request.mode, Mode, "mode")
    validate.text(v, request.memo, "memo", length_max=MEMO_LEN_MAX)
    mode = request.mode
    if mode in (Mode.IMMEDIATE, Mode.PENDING):
        validate.object_id(v, request.debit_account_id, "debit_account_id")
        validate.object_id(v, request.credit_account_id, "credit_account_id")
        if request.debit_account_id and request.debit_account_id == request.credit_account_id:
            v.add("credit_account_id", "must differ from debit_account_id")
        validate.amount(v, request.amount_minor)
        validate.currency(v, request.currency_code)
        if request.pending_transfer_id:
            v.add("pending_transfer_id", "only for POST_PENDING and VOID_PENDING")
    elif mode in (Mode.POST_PENDING, Mode.VOID_PENDING):
        validate.object_id(v, request.pending_transfer_id, "pending_transfer_id")
        validate.object_id(v, request.debit_account_id, "debit_account_id", required=False)
        validate.object_id(v, request.credit_account_id, "credit_account_id", required=False)
        validate.currency(v, request.currency_code, required=False)
        if mode == Mode.POST_PENDING:
            validate.amount(v, request.amount_minor)
        elif request.amount_minor != 0:
            v.add("amount_minor", "must be 0: VOID_PENDING voids all that remains")
    v.raise_if_any()
    return Leg(request.debit_account_id, request.credit_account_id, request.amount_minor,
               request.currency_code, Mode(mode), request.pending_transfer_id, request.memo)
