"""Invalid input on every LedgerService method: a clear INVALID_ARGUMENT, never INTERNAL,
and the ledger unchanged.

Every case builds one bad request against a small ledger (a CNY custodial account, a
funded CNY merchant with an open pending transfer and some frozen funds, a CNY shop, a
USD account and an empty spare account) and checks: status INVALID_ARGUMENT, an ErrorInfo
of domain clearing.v1 with an UPPER_SNAKE reason, BadRequest field paths naming the
offending fields, and balances, the account list and the VerifyLedger report exactly as
before. A request id used in a request that failed validation stays free for a valid
request afterwards, also after an error found by the ledger writer (a currency that is not
the accounts', an amount above what is pending): INVALID_ARGUMENT is never recorded as a
first response (clearing.idempotency).

VerifyLedger takes no input (VerifyLedgerRequest is empty), so it has no invalid case; it
is read before and after every case instead.
"""

from __future__ import annotations

import base64
import re
import secrets
from dataclasses import dataclass
from typing import Callable

import asyncpg
import grpc
import pytest

from clearing import values
from clearing.tenancy import create_platform
from clearing.v1 import ledger_pb2 as pb
from tests.support import Client, details, rid

pytestmark = pytest.mark.asyncio

INT64_MAX = 2**63 - 1
INT64_MIN = -2**63
INT32_MIN = -2**31
AMOUNT_MINOR_MAX = 10**15  # the per-request maximum (clearing.limits.AMOUNT_MINOR_MAX)
UPPER_SNAKE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*$")
UNKNOWN_ENUM = 99


# ---- the ledger every case runs against ---------------------------------------------------

@dataclass
class World:
    client: Client
    platform_id: int
    custodial: int
    merchant: int
    shop: int
    usd: int
    spare: int
    pending_id: int
    merchant_token: str  # a real next_page_token of the merchant's statement
    request_id: str      # the id the case's request carries (when the case is about another field)

    def ids(self) -> list[int]:
        return [self.custodial, self.merchant, self.shop, self.usd, self.spare]

    def create(self, **over) -> pb.CreateAccountRequest:
        return pb.CreateAccountRequest(**{
            "request_id": self.request_id, "external_ref": "new-account",
            "kind": pb.ACCOUNT_KIND_MERCHANT, "owner_type": pb.OWNER_TYPE_ENTERPRISE,
            "currency_code": "CNY", "display_name": "New", **over})

    def get(self, **over) -> pb.GetAccountRequest:
        return pb.GetAccountRequest(**{"account_id": self.merchant, **over})

    def list_accounts(self, **over) -> pb.ListAccountsRequest:
        return pb.ListAccountsRequest(**{"page_size": 10, **over})

    def freeze(self, **over) -> pb.FreezeAccountRequest:
        return pb.FreezeAccountRequest(**{
            "request_id": self.request_id, "account_id": self.merchant, "amount_minor": 10,
            "reason": "dispute", **over})

    def unfreeze(self, **over) -> pb.UnfreezeAccountRequest:
        return pb.UnfreezeAccountRequest(**{
            "request_id": self.request_id, "account_id": self.merchant, "amount_minor": 10,
            "reason": "resolved", **over})

    def close(self, **over) -> pb.CloseAccountRequest:
        return pb.CloseAccountRequest(**{
            "request_id": self.request_id, "account_id": self.spare, **over})

    def balance(self, **over) -> pb.GetBalanceRequest:
        return pb.GetBalanceRequest(**{"account_id": self.merchant, **over})

    def entries(self, **over) -> pb.ListEntriesRequest:
        return pb.ListEntriesRequest(**{"account_id": self.merchant, "page_size": 10, **over})

    def transfer(self, mode: int, /, **over) -> pb.TransferRequest:
        """A valid request of `mode` with fields replaced by `over` (which may set "mode")."""
        if mode in (pb.TRANSFER_MODE_POST_PENDING, pb.TRANSFER_MODE_VOID_PENDING):
            base = {"pending_transfer_id": self.pending_id,
                    "amount_minor": 10 if mode == pb.TRANSFER_MODE_POST_PENDING else 0}
        else:
            base = {"debit_account_id": self.merchant, "credit_account_id": self.shop,
                    "amount_minor": 10, "currency_code": "CNY"}
        return pb.TransferRequest(**{"request_id": self.request_id, "mode": mode,
                                     "memo": "order 1", **base, **over})

    def immediate(self, **over) -> pb.TransferRequest:
        return self.transfer(pb.TRANSFER_MODE_IMMEDIATE, **over)

    def pending(self, **over) -> pb.TransferRequest:
        return self.transfer(pb.TRANSFER_MODE_PENDING, **over)

    def post(self, **over) -> pb.TransferRequest:
        return self.transfer(pb.TRANSFER_MODE_POST_PENDING, **over)

    def void(self, **over) -> pb.TransferRequest:
        return self.transfer(pb.TRANSFER_MODE_VOID_PENDING, **over)


async def _world(client: Client, platform_id: int) -> World:
    custodial = await client.open("custodial", kind=pb.ACCOUNT_KIND_CUSTODIAL)
    merchant = await client.open("merchant")
    shop = await client.open("shop")
    usd = await client.open("usd-merchant", currency="USD")
    spare = await client.open("spare")
    await client.transfer(custodial.account_id, merchant.account_id, 1000)
    held = await client.transfer(merchant.account_id, shop.account_id, 100,
                                 mode=pb.TRANSFER_MODE_PENDING)
    await client.call("FreezeAccount", pb.FreezeAccountRequest(
        request_id=rid(), account_id=merchant.account_id, amount_minor=50, reason="dispute"))
    page = await client.call("ListEntries", pb.ListEntriesRequest(
        account_id=merchant.account_id, page_size=1))
    assert page.next_page_token
    return World(client, platform_id, custodial.account_id, merchant.account_id,
                 shop.account_id, usd.account_id, spare.account_id, held.transfer_id,
                 page.next_page_token, rid())


@dataclass(frozen=True)
class Snapshot:
    balances: tuple
    accounts: tuple
    report: pb.VerifyLedgerResponse


async def _snapshot(w: World) -> Snapshot:
    balances = tuple([await w.client.balance(i) for i in w.ids()])
    accounts, token = [], ""
    while True:
        page = await w.client.call("ListAccounts", pb.ListAccountsRequest(
            page_size=1000, page_token=token))
        accounts += page.accounts
        token = page.next_page_token
        if not token:
            break
    return Snapshot(balances, tuple(accounts), await w.client.verify())


def _forged_token(kind: str, scope: int, after: int | str) -> str:
    """A token in the server's format (its check digest right), made up by the caller."""
    return values.encode_page_token(kind, scope, after)


async def _expect_invalid(client: Client, method: str, request, fields: tuple[str, ...],
                          reason: str = "INVALID_ARGUMENT") -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await client.call(method, request)
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (err.code(), err.details())
    got_reason, got_fields = details(err)  # asserts the ErrorInfo domain is clearing.v1
    assert UPPER_SNAKE.match(got_reason), got_reason
    assert got_reason == reason
    assert got_fields, "no BadRequest field violations"
    assert set(got_fields) == set(fields), got_fields
    assert got_fields[0] in err.details(), err.details()  # a message that names the field
    return err


# ---- the cases ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    method: str
    build: Callable[[World], object]
    fields: tuple[str, ...]
    reason: str = "INVALID_ARGUMENT"
    # Found by the ledger (writer or store) against the state, after validation; not
    # recorded either (INVALID_ARGUMENT never is): the id stays free.
    recorded: bool = False


def _request_id_cases(method: str, build: Callable[..., Callable[[World], object]]):
    return [
        pytest.param(Case(method, build(request_id=""), ("request_id",)),
                     id=f"{method}-request_id-empty"),
        pytest.param(Case(method, build(request_id="r" * 129), ("request_id",)),
                     id=f"{method}-request_id-129-chars"),
        pytest.param(Case(method, build(request_id="order\x07-1"), ("request_id",)),
                     id=f"{method}-request_id-non-printable"),
        pytest.param(Case(method, build(request_id="order\n1"), ("request_id",)),
                     id=f"{method}-request_id-newline"),
    ]


def _by(name: str, **fixed):
    """A builder factory: _by("freeze")(amount_minor=-1) -> lambda w: w.freeze(amount_minor=-1)."""
    def factory(**over):
        return lambda w: getattr(w, name)(**{**fixed, **over})
    return factory


def _id_cases(method: str, name: str, field: str, *, zero: bool = True):
    build = _by(name)
    values = ([("zero", 0)] if zero else []) + [("negative", -1), ("int64-min", INT64_MIN)]
    return [pytest.param(Case(method, build(**{field: value}), (field,)),
                         id=f"{method}-{field}-{label}") for label, value in values]


def _amount_cases(method: str, build, *, zero_is_invalid: bool = True):
    values = [("negative", -1), ("int64-min", INT64_MIN), ("int64-max", INT64_MAX),
              ("above-max", AMOUNT_MINOR_MAX + 1)]
    if zero_is_invalid:
        values.insert(0, ("zero", 0))
    return [pytest.param(Case(method, build(amount_minor=value), ("amount_minor",)),
                         id=f"{method}-amount-{label}") for label, value in values]


def _currency_cases(method: str, build, *, empty_is_invalid: bool = True):
    values = [("unknown-XXX", "XXX"), ("lower-case-cny", "cny"), ("two-letters", "CN"),
              ("with-space", "CNY "), ("digits", "156")]
    if empty_is_invalid:
        values.append(("empty", ""))
    return [pytest.param(Case(method, build(currency_code=value), ("currency_code",)),
                         id=f"{method}-currency-{label}") for label, value in values]


def _enum_cases(method: str, build, field: str, *, zero_is_invalid: bool = True):
    values = [("unknown-99", UNKNOWN_ENUM), ("negative", -1)]
    if zero_is_invalid:
        values.insert(0, ("unspecified", 0))
    return [pytest.param(Case(method, build(**{field: value}), (field,)),
                         id=f"{method}-{field}-{label}") for label, value in values]


def _page_cases(method: str, name: str):
    build = _by(name)
    return [
        pytest.param(Case(method, build(page_size=-1), ("page_size",)),
                     id=f"{method}-page_size-negative"),
        pytest.param(Case(method, build(page_size=1001), ("page_size",)),
                     id=f"{method}-page_size-1001"),
        pytest.param(Case(method, build(page_size=INT32_MIN), ("page_size",)),
                     id=f"{method}-page_size-int32-min"),
        pytest.param(Case(method, build(page_token="garbage"), ("page_token",)),
                     id=f"{method}-page_token-garbage"),
        pytest.param(Case(method, build(page_token="%%%not-base64%%%"), ("page_token",)),
                     id=f"{method}-page_token-not-base64"),
        pytest.param(Case(method, build(page_token="\u00e9t\u00e9"), ("page_token",)),
                     id=f"{method}-page_token-non-ascii"),
        pytest.param(Case(method, build(page_token=base64.urlsafe_b64encode(
            b"\xff\xfe\xfd").decode()), ("page_token",)),
                     id=f"{method}-page_token-not-utf8"),
    ]


CREATE = _by("create")
CASES = [
    # CreateAccount
    *_request_id_cases("CreateAccount", CREATE),
    pytest.param(Case("CreateAccount", CREATE(external_ref=""), ("external_ref",)),
                 id="CreateAccount-external_ref-empty"),
    pytest.param(Case("CreateAccount", CREATE(external_ref="e" * 129), ("external_ref",)),
                 id="CreateAccount-external_ref-129-chars"),
    pytest.param(Case("CreateAccount", CREATE(display_name="d" * 129), ("display_name",)),
                 id="CreateAccount-display_name-129-chars"),
    pytest.param(Case("CreateAccount", CREATE(external_ref="shop\x001"), ("external_ref",)),
                 id="CreateAccount-external_ref-with-NUL"),
    pytest.param(Case("CreateAccount", CREATE(display_name="Shop\x00"), ("display_name",)),
                 id="CreateAccount-display_name-with-NUL"),
    *_enum_cases("CreateAccount", CREATE, "kind"),
    *_enum_cases("CreateAccount", CREATE, "owner_type"),
    *_currency_cases("CreateAccount", CREATE),
    pytest.param(Case("CreateAccount", CREATE(kind=0, owner_type=0, currency_code="",
                                              external_ref=""),
                      ("external_ref", "kind", "owner_type", "currency_code")),
                 id="CreateAccount-all-violations-at-once"),

    # GetAccount
    pytest.param(Case("GetAccount", lambda w: pb.GetAccountRequest(), ("account_id",)),
                 id="GetAccount-neither-account_id-nor-external_ref"),
    pytest.param(Case("GetAccount", _by("get")(external_ref="merchant"), ("account_id",)),
                 id="GetAccount-both-account_id-and-external_ref"),
    pytest.param(Case("GetAccount", _by("get")(account_id=-1), ("account_id",)),
                 id="GetAccount-account_id-negative"),
    pytest.param(Case("GetAccount", _by("get")(account_id=INT64_MIN), ("account_id",)),
                 id="GetAccount-account_id-int64-min"),
    pytest.param(Case("GetAccount", _by("get", account_id=0)(external_ref="e" * 129),
                      ("external_ref",)),
                 id="GetAccount-external_ref-129-chars"),
    pytest.param(Case("GetAccount", _by("get", account_id=0)(external_ref="merchant\x00"),
                      ("external_ref",)),
                 id="GetAccount-external_ref-with-NUL"),

    # ListAccounts
    *_page_cases("ListAccounts", "list_accounts"),
    *_enum_cases("ListAccounts", _by("list_accounts"), "kind", zero_is_invalid=False),
    *_enum_cases("ListAccounts", _by("list_accounts"), "status", zero_is_invalid=False),
    pytest.param(Case("ListAccounts", lambda w: w.list_accounts(page_token=w.merchant_token),
                      ("page_token",)),
                 id="ListAccounts-page_token-of-a-statement"),
    pytest.param(Case("ListAccounts", lambda w: w.list_accounts(
        page_token=_forged_token("accounts", w.platform_id, 2**64)), ("page_token",)),
                 id="ListAccounts-page_token-forged-position-overflows-int64"),
    pytest.param(Case("ListAccounts", lambda w: w.list_accounts(
        page_token=_forged_token("accounts", 2**64, 0)), ("page_token",)),
                 id="ListAccounts-page_token-forged-scope-overflows-int64"),
    *[pytest.param(Case("ListAccounts", lambda w, p=position: w.list_accounts(
        page_token=_forged_token("accounts", w.platform_id, p)), ("page_token",)),
                   id=f"ListAccounts-page_token-forged-position-{label}")
      for label, position in (("plus-sign", "+1"), ("space", " 1"), ("underscore", "1_0"),
                              ("leading-zero", "01"), ("arabic-digit", "\u0663"),
                              ("negative", -1), ("int64-max-plus-1", 2**63))],


    # FreezeAccount
    *_request_id_cases("FreezeAccount", _by("freeze")),
    *_id_cases("FreezeAccount", "freeze", "account_id"),
    *_amount_cases("FreezeAccount", _by("freeze"), zero_is_invalid=False),
    pytest.param(Case("FreezeAccount", _by("freeze")(reason=""), ("reason",)),
                 id="FreezeAccount-reason-empty"),
    pytest.param(Case("FreezeAccount", _by("freeze")(reason="r" * 257), ("reason",)),
                 id="FreezeAccount-reason-257-chars"),
    pytest.param(Case("FreezeAccount", _by("freeze")(reason="court\x00order"), ("reason",)),
                 id="FreezeAccount-reason-with-NUL"),

    # UnfreezeAccount
    *_request_id_cases("UnfreezeAccount", _by("unfreeze")),
    *_id_cases("UnfreezeAccount", "unfreeze", "account_id"),
    *_amount_cases("UnfreezeAccount", _by("unfreeze"), zero_is_invalid=False),
    pytest.param(Case("UnfreezeAccount", _by("unfreeze")(reason=""), ("reason",)),
                 id="UnfreezeAccount-reason-empty"),
    pytest.param(Case("UnfreezeAccount", _by("unfreeze")(reason="r" * 257), ("reason",)),
                 id="UnfreezeAccount-reason-257-chars"),
    pytest.param(Case("UnfreezeAccount", _by("unfreeze")(reason="court\x00order"), ("reason",)),
                 id="UnfreezeAccount-reason-with-NUL"),
    pytest.param(Case("UnfreezeAccount", _by("unfreeze")(amount_minor=51), ("amount_minor",),
                      reason="AMOUNT_EXCEEDS_FROZEN", recorded=True),
                 id="UnfreezeAccount-amount-above-frozen"),

    # CloseAccount
    *_request_id_cases("CloseAccount", _by("close")),
    *_id_cases("CloseAccount", "close", "account_id"),

    # GetBalance
    *_id_cases("GetBalance", "balance", "account_id"),

    # ListEntries
    *_id_cases("ListEntries", "entries", "account_id"),
    *_page_cases("ListEntries", "entries"),
    pytest.param(Case("ListEntries", lambda w: w.entries(account_id=w.shop,
                                                         page_token=w.merchant_token),
                      ("page_token",)),
                 id="ListEntries-page_token-of-another-accounts-statement"),
    pytest.param(Case("ListEntries", lambda w: w.entries(
        page_token=_forged_token("accounts", w.platform_id, 1)), ("page_token",)),
                 id="ListEntries-page_token-of-the-account-list"),
    pytest.param(Case("ListEntries", lambda w: w.entries(
        page_token=_forged_token("entries", w.merchant, 2**64)), ("page_token",)),
                 id="ListEntries-page_token-forged-position-overflows-int64"),
    *[pytest.param(Case("ListEntries", lambda w, n=cut: w.entries(
        page_token=w.merchant_token[:-n]), ("page_token",)),
                   id=f"ListEntries-page_token-truncated-by-{cut}") for cut in (1, 2, 3)],
    pytest.param(Case("ListEntries", lambda w: w.entries(
        page_token=w.merchant_token + "AA"), ("page_token",)),
                 id="ListEntries-page_token-extended"),

    # Transfer: every mode
    *_enum_cases("Transfer", _by("immediate"), "mode"),
    *_request_id_cases("Transfer", _by("immediate")),
    pytest.param(Case("Transfer", _by("immediate")(memo="m" * 257), ("memo",)),
                 id="Transfer-memo-257-chars"),
    pytest.param(Case("Transfer", _by("immediate")(memo="order\x001"), ("memo",)),
                 id="Transfer-memo-with-NUL"),
    pytest.param(Case("Transfer", _by("pending")(memo="order\x001"), ("memo",)),
                 id="Transfer-PENDING-memo-with-NUL"),
    pytest.param(Case("Transfer", _by("post")(memo="order\x001"), ("memo",)),
                 id="Transfer-POST_PENDING-memo-with-NUL"),

    *_amount_cases("Transfer-IMMEDIATE", _by("immediate")),
    *_currency_cases("Transfer-IMMEDIATE", _by("immediate")),
    *_id_cases("Transfer-IMMEDIATE", "immediate", "debit_account_id"),
    *_id_cases("Transfer-IMMEDIATE", "immediate", "credit_account_id"),
    pytest.param(Case("Transfer", lambda w: w.immediate(credit_account_id=w.merchant),
                      ("credit_account_id",)),
                 id="Transfer-IMMEDIATE-debit-equals-credit"),
    pytest.param(Case("Transfer", lambda w: w.immediate(pending_transfer_id=w.pending_id),
                      ("pending_transfer_id",)),
                 id="Transfer-IMMEDIATE-with-pending_transfer_id"),
    pytest.param(Case("Transfer", _by("immediate")(amount_minor=0, currency_code="",
                                                   debit_account_id=-1, memo="m" * 257),
                      ("amount_minor", "currency_code", "debit_account_id", "memo")),
                 id="Transfer-IMMEDIATE-all-violations-at-once"),
    pytest.param(Case("Transfer", _by("immediate")(currency_code="USD"), ("currency_code",),
                      reason="CURRENCY_MISMATCH", recorded=True),
                 id="Transfer-IMMEDIATE-CNY-accounts-USD-request"),
    pytest.param(Case("Transfer", lambda w: w.immediate(credit_account_id=w.usd),
                      ("currency_code",), reason="CURRENCY_MISMATCH", recorded=True),
                 id="Transfer-IMMEDIATE-CNY-account-to-USD-account-in-CNY"),
    pytest.param(Case("Transfer", lambda w: w.immediate(credit_account_id=w.usd,
                                                        currency_code="USD"),
                      ("currency_code",), reason="CURRENCY_MISMATCH", recorded=True),
                 id="Transfer-IMMEDIATE-CNY-account-to-USD-account-in-USD"),

    *_amount_cases("Transfer-PENDING", _by("pending")),
    *_currency_cases("Transfer-PENDING", _by("pending")),
    *_id_cases("Transfer-PENDING", "pending", "debit_account_id"),
    *_id_cases("Transfer-PENDING", "pending", "credit_account_id"),
    pytest.param(Case("Transfer", lambda w: w.pending(credit_account_id=w.merchant),
                      ("credit_account_id",)),
                 id="Transfer-PENDING-debit-equals-credit"),
    pytest.param(Case("Transfer", lambda w: w.pending(pending_transfer_id=w.pending_id),
                      ("pending_transfer_id",)),
                 id="Transfer-PENDING-with-pending_transfer_id"),
    pytest.param(Case("Transfer", _by("pending")(currency_code="USD"), ("currency_code",),
                      reason="CURRENCY_MISMATCH", recorded=True),
                 id="Transfer-PENDING-CNY-accounts-USD-request"),
    pytest.param(Case("Transfer", lambda w: w.pending(credit_account_id=w.usd),
                      ("currency_code",), reason="CURRENCY_MISMATCH", recorded=True),
                 id="Transfer-PENDING-CNY-account-to-USD-account"),

    *_amount_cases("Transfer-POST_PENDING", _by("post")),
    *_currency_cases("Transfer-POST_PENDING", _by("post"), empty_is_invalid=False),
    *_id_cases("Transfer-POST_PENDING", "post", "pending_transfer_id"),
    *_id_cases("Transfer-POST_PENDING", "post", "debit_account_id", zero=False),
    *_id_cases("Transfer-POST_PENDING", "post", "credit_account_id", zero=False),
    pytest.param(Case("Transfer", _by("post")(amount_minor=101), ("amount_minor",),
                      reason="AMOUNT_EXCEEDS_PENDING", recorded=True),
                 id="Transfer-POST_PENDING-amount-above-pending"),
    pytest.param(Case("Transfer", _by("post")(currency_code="USD"), ("currency_code",),
                      reason="CURRENCY_MISMATCH", recorded=True),
                 id="Transfer-POST_PENDING-currency-not-the-pending-transfers"),
    pytest.param(Case("Transfer", lambda w: w.post(debit_account_id=w.custodial),
                      ("debit_account_id",), recorded=True),
                 id="Transfer-POST_PENDING-debit-not-the-pending-transfers"),
    pytest.param(Case("Transfer", lambda w: w.post(credit_account_id=w.custodial),
                      ("credit_account_id",), recorded=True),
                 id="Transfer-POST_PENDING-credit-not-the-pending-transfers"),

    pytest.param(Case("Transfer", _by("void")(amount_minor=1), ("amount_minor",)),
                 id="Transfer-VOID_PENDING-with-amount"),
    pytest.param(Case("Transfer", _by("void")(amount_minor=-1), ("amount_minor",)),
                 id="Transfer-VOID_PENDING-amount-negative"),
    pytest.param(Case("Transfer", _by("void")(amount_minor=INT64_MAX), ("amount_minor",)),
                 id="Transfer-VOID_PENDING-amount-int64-max"),
    pytest.param(Case("Transfer", _by("void")(amount_minor=INT64_MIN), ("amount_minor",)),
                 id="Transfer-VOID_PENDING-amount-int64-min"),
    *_currency_cases("Transfer-VOID_PENDING", _by("void"), empty_is_invalid=False),
    *_id_cases("Transfer-VOID_PENDING", "void", "pending_transfer_id"),
    *_id_cases("Transfer-VOID_PENDING", "void", "debit_account_id", zero=False),
    *_id_cases("Transfer-VOID_PENDING", "void", "credit_account_id", zero=False),
    pytest.param(Case("Transfer", _by("void")(currency_code="USD"), ("currency_code",),
                      reason="CURRENCY_MISMATCH", recorded=True),
                 id="Transfer-VOID_PENDING-currency-not-the-pending-transfers"),
]


def _method(case: Case) -> str:
    return case.method.split("-", 1)[0]


async def _valid_with(w: World, method: str, request_id: str):
    """A valid write of `method` under `request_id`."""
    c = w.client
    if method == "CreateAccount":
        return await c.call(method, w.create(request_id=request_id, external_ref="later"))
    if method == "FreezeAccount":
        return await c.call(method, w.freeze(request_id=request_id, amount_minor=1))
    if method == "UnfreezeAccount":
        return await c.call(method, w.unfreeze(request_id=request_id, amount_minor=1))
    if method == "CloseAccount":
        return await c.call(method, w.close(request_id=request_id))
    assert method == "Transfer"
    return await c.call(method, w.immediate(request_id=request_id, debit_account_id=w.custodial,
                                            credit_account_id=w.merchant, amount_minor=1))


@pytest.mark.parametrize("case", CASES)
async def test_invalid_input_is_invalid_argument_and_changes_nothing(client: Client, platform,
                                                                      case: Case):
    w = await _world(client, platform.platform_id)
    method = _method(case)
    request = case.build(w)
    before = await _snapshot(w)

    await _expect_invalid(client, method, request, case.fields, case.reason)
    assert await _snapshot(w) == before

    request_id = getattr(request, "request_id", None)
    if request_id is None or request_id != w.request_id:
        return  # a read, or the request id itself was the invalid field
    if case.recorded:  # found by the ledger: a retry is checked again, same answer
        await _expect_invalid(client, method, request, case.fields, case.reason)
        assert await _snapshot(w) == before
    # nothing was recorded: the request id is still free for a valid request
    await _valid_with(w, method, request_id)
    assert await _snapshot(w) != before


async def test_every_method_with_input_has_cases():
    service = pb.DESCRIPTOR.services_by_name["LedgerService"]
    covered = {_method(p.values[0]) for p in CASES}
    with_input = {m.name for m in service.methods if m.input_type.fields}
    assert with_input == covered
    assert {m.name for m in service.methods} - covered == {"VerifyLedger"}
    modes = {p.id.split("-")[1] for p in CASES if p.id.startswith("Transfer-")}
    assert {"IMMEDIATE", "PENDING", "POST_PENDING", "VOID_PENDING"} <= modes
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids))


# ---- beyond one request -------------------------------------------------------------------

async def test_many_invalid_requests_leave_the_ledger_unchanged(client: Client, platform):
    """All the cases in a row on one ledger; then the ids are still free."""
    w = await _world(client, platform.platform_id)
    before = await _snapshot(w)
    used: list[tuple[str, str]] = []
    for param in CASES:
        case: Case = param.values[0]
        if case.recorded or param.marks:
            continue
        w.request_id = rid()
        request = case.build(w)
        await _expect_invalid(client, _method(case), request, case.fields, case.reason)
        if getattr(request, "request_id", None) == w.request_id:
            used.append((_method(case), w.request_id))
    after = await _snapshot(w)
    assert after == before
    assert after.report.ok and after.report.chain_ok
    # none of the ids was burnt: each one still carries a valid request (one of its own
    # method per method, the rest a transfer: request ids are shared by all methods)
    rest = list(used)
    for method in ("CreateAccount", "FreezeAccount", "UnfreezeAccount", "CloseAccount",
                   "Transfer"):
        first = next(u for u in rest if u[0] == method)
        rest.remove(first)
        await _valid_with(w, method, first[1])
    for _, request_id in rest:
        await _valid_with(w, "Transfer", request_id)
    report = await client.verify()
    assert report.ok and report.transfer_count == before.report.transfer_count + len(used) - 4


async def test_page_token_of_another_platform_is_invalid(client: Client, channel,
                                                        database_url, platform):
    conn = await asyncpg.connect(database_url)
    try:
        _, key = await create_platform(conn, f"p_{secrets.token_hex(6)}",
                                       frozenset({"operator"}))
    finally:
        await conn.close()
    other = Client(channel, key)
    theirs = [await other.open(ref) for ref in ("a", "b")]
    foreign = await other.call("ListAccounts", pb.ListAccountsRequest(page_size=1))
    assert foreign.next_page_token
    w = await _world(client, platform.platform_id)
    before = await _snapshot(w)
    await _expect_invalid(client, "ListAccounts", pb.ListAccountsRequest(
        page_token=foreign.next_page_token), ("page_token",))
    # a statement token of this platform is refused on the other platform's statement
    await _expect_invalid(other, "ListEntries", pb.ListEntriesRequest(
        account_id=theirs[0].account_id, page_token=w.merchant_token), ("page_token",))
    assert await _snapshot(w) == before


async def test_unparseable_request_is_invalid_argument(client: Client, channel):
    good = pb.GetAccountRequest(external_ref="ab").SerializeToString()
    raw = channel.unary_unary("/clearing.v1.LedgerService/GetAccount",
                              request_serializer=lambda b: b, response_deserializer=lambda b: b)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await raw(good.replace(b"ab", b"\xff\xfe"), metadata=client.metadata, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert details(caught.value)[0] == "MALFORMED_REQUEST"


async def test_limits_themselves_are_accepted(client: Client, platform):
    """The bounds are inclusive: 128/256 characters, AMOUNT_MINOR_MAX, page_size 1000."""
    w = await _world(client, platform.platform_id)
    acct = (await client.call("CreateAccount", w.create(
        request_id="r" * 128, external_ref="e" * 128, display_name="d" * 128))).account
    assert acct.external_ref == "e" * 128 and acct.display_name == "d" * 128
    got = await client.call("GetAccount", pb.GetAccountRequest(external_ref="e" * 128))
    assert got.account.account_id == acct.account_id
    t = await client.call("Transfer", w.immediate(
        request_id=rid(), debit_account_id=w.custodial, credit_account_id=acct.account_id,
        amount_minor=AMOUNT_MINOR_MAX, memo="m" * 256))
    assert t.transfer.amount_minor == AMOUNT_MINOR_MAX and t.transfer.memo == "m" * 256
    frozen = await client.call("FreezeAccount", w.freeze(
        request_id=rid(), account_id=acct.account_id, amount_minor=AMOUNT_MINOR_MAX,
        reason="r" * 256))
    assert frozen.account.balance.frozen_minor == AMOUNT_MINOR_MAX
    await client.call("UnfreezeAccount", w.unfreeze(
        request_id=rid(), account_id=acct.account_id, amount_minor=AMOUNT_MINOR_MAX,
        reason="r" * 256))
    page = await client.call("ListAccounts", pb.ListAccountsRequest(page_size=1000))
    assert len(page.accounts) == 6
    entries = await client.call("ListEntries", pb.ListEntriesRequest(
        account_id=acct.account_id, page_size=1000))
    assert [e.amount_minor for e in entries.entries] == [AMOUNT_MINOR_MAX]
    assert (await client.verify()).ok
