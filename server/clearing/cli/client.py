"""Client commands: calls to a server (--addr, else CLEARING_GRPC_ADDR) with a platform's
key (--key, CLEARING_API_KEY or --key-file, default var/demo.key), over TLS with the CA and
client certificate of --tls-ca/--tls-cert/--tls-key (default: var/tls/ from `make run`;
`credentials_for` says the rest), made through the
clearing_client SDK (clients/python); each prints the response as JSON with the proto's
field names, or the error and its field violations on stderr (exit status 1).

A command makes one attempt (attempts_max=1): --timeout is its deadline, and a failure is
reported as it happened; the SDK's retries with the same request id are for programs.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from clearing.cli.common import minor
from clearing.config import Settings, client_api_key, client_tls

if TYPE_CHECKING:
    from google.protobuf.message import Message

    from clearing_client import ClearingClient, ClearingRpcError

Call = Callable[["ClearingClient"], Awaitable["Message"]]


def _key(args, settings: Settings) -> str:
    if args.key:
        return args.key
    if client_api_key():
        return client_api_key()
    path = Path(args.key_file) if args.key_file else settings.data_dir / "demo.key"
    if not path.exists():
        raise SystemExit(f"no API key: pass --key, set CLEARING_API_KEY, or create {path}")
    return path.read_text().strip()


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def credentials_for(args, settings: Settings, target: str):
    """The connection's TLS credentials, None for plaintext. Options first, then the
    CLEARING_CLIENT_TLS_* variables, then the development CA of `make run` (<data
    dir>/tls) when it is there; with none of them, TLS with the system's roots, except to
    a loopback address (a development server's key never leaves the machine), which is
    reached in plaintext. --plaintext (CLEARING_CLIENT_PLAINTEXT=1) turns TLS off."""
    from clearing.tls import CA_CERT, CLIENT_CERT, CLIENT_KEY, DEV_TLS_DIR
    from clearing_client import tls_credentials

    env = client_tls()
    if getattr(args, "plaintext", False) or env.plaintext:
        return None
    ca = getattr(args, "tls_ca", None) or env.ca
    cert = getattr(args, "tls_cert", None) or env.cert
    key = getattr(args, "tls_key", None) or env.key
    dev = settings.data_dir / DEV_TLS_DIR
    if ca is None and (dev / CA_CERT).exists():
        ca = str(dev / CA_CERT)
        if cert is None and (dev / CLIENT_CERT).exists() and (dev / CLIENT_KEY).exists():
            cert, key = str(dev / CLIENT_CERT), str(dev / CLIENT_KEY)
    if ca is None and cert is None and target.rpartition(":")[0] in LOOPBACK_HOSTS:
        return None
    try:
        return tls_credentials(ca, cert, key)
    except (OSError, ValueError) as exc:
        raise SystemExit(f"TLS: {exc}") from None


def _print_error(err: ClearingRpcError) -> None:
    """The status, then every field violation of a BadRequest detail (one per line)."""
    print(f"error: {err.code.name}: {err.message}", file=sys.stderr)
    for v in err.violations:
        print(f"  {v.field}: {v.description}", file=sys.stderr)


def _run(args, settings: Settings, call: Call) -> int:
    """Make `call` with a client of the server and the key; print its response."""
    from google.protobuf import json_format

    try:
        from clearing_client import ClearingClient, ClearingRpcError
    except ImportError:
        raise SystemExit("the client commands need the clearing_client package: "
                         "pip install clients/python") from None

    target = args.addr or settings.grpc_addr
    credentials = credentials_for(args, settings, target)

    async def go() -> Message:
        async with ClearingClient(target, _key(args, settings), timeout_s=args.timeout,
                                  attempts_max=1, credentials=credentials) as client:
            return await call(client)

    try:
        response = asyncio.run(go())
    except ClearingRpcError as err:
        _print_error(err)
        return 1
    if getattr(args, "field", None):
        doc = json_format.MessageToDict(response, preserving_proto_field_name=True)
        for value in field_values(doc, args.field):
            print(value)
        return 0
    print(json_format.MessageToJson(response, preserving_proto_field_name=True,
                                    use_integers_for_enums=False))
    return 0


def field_values(doc, path: str) -> list:
    """The values at a dotted path of a response as JSON (`--field`): a list on the way is
    followed into each of its items, so `discrepancies.discrepancy_id` gives every id, in
    order. A missing field gives nothing (proto3 leaves out zero values)."""
    values = [doc]
    for name in path.split("."):
        found = []
        for value in values:
            items = value if isinstance(value, list) else [value]
            found.extend(item[name] for item in items
                         if isinstance(item, dict) and name in item)
        values = found
    return [v for value in values for v in (value if isinstance(value, list) else [value])]


def _enum(enum_type, prefix: str, value: str) -> int:
    return enum_type.Value(f"{prefix}_{value.upper()}")


async def _account_id(client: ClearingClient, ref: str | None, account_id: int | None) -> int:
    if account_id:
        return account_id
    if not ref:
        raise SystemExit("give an account id or --*-ref")
    from clearing_client import ClearingRpcError

    try:
        return (await client.get_account(external_ref=ref)).account_id
    except ClearingRpcError as err:
        raise SystemExit(f"account {ref!r}: {err.code.name}: {err.message}") from None


def cmd_client(args, settings: Settings) -> int:
    """accounts ..., balance, entries, transfer, post, void, verify: LedgerService."""
    from clearing_client.v1 import ledger_pb2 as pb

    rid = args.request_id or str(uuid.uuid4())
    c = args.command
    if c == "verify" and args.all:
        from clearing.cli.admin import cmd_verify_all

        return cmd_verify_all(args, settings)
    if c == "accounts":
        return _run(args, settings, _accounts_call(args, rid))
    if c == "balance":
        async def call(client):
            return pb.GetBalanceResponse(balance=await client.balance(args.account_id))
    elif c == "entries":
        async def call(client):
            return await client.list_entries(args.account_id, page_size=args.page_size,
                                             page_token=args.page_token or "")
    elif c == "transfer":
        amount = minor(args.amount, args.currency)
        mode = pb.TRANSFER_MODE_PENDING if args.pending else pb.TRANSFER_MODE_IMMEDIATE

        async def call(client):
            debit = await _account_id(client, args.from_ref, args.from_id)
            credit = await _account_id(client, args.to_ref, args.to_id)
            return pb.TransferResponse(transfer=await client.transfer(
                debit, credit, amount, args.currency, mode=mode, memo=args.memo or "",
                request_id=rid))
    elif c == "post":
        amount = minor(args.amount, args.currency)

        async def call(client):
            return pb.TransferResponse(transfer=await client.post_pending(
                args.pending_id, amount, request_id=rid))
    elif c == "void":
        async def call(client):
            return pb.TransferResponse(transfer=await client.void_pending(
                args.pending_id, request_id=rid))
    elif c == "verify":
        async def call(client):
            return await client.verify()
    else:
        raise SystemExit(f"unknown command {c}")
    return _run(args, settings, call)


def _accounts_call(args, rid: str) -> Call:
    from clearing_client.v1 import ledger_pb2 as pb

    a = args.action
    if a == "create":
        kind = _enum(pb.AccountKind, "ACCOUNT_KIND", args.kind)
        owner = _enum(pb.OwnerType, "OWNER_TYPE", args.owner)

        async def call(client):
            return pb.CreateAccountResponse(account=await client.create_account(
                args.ref, kind=kind, currency_code=args.currency, owner_type=owner,
                display_name=args.name or "", allow_negative=True if args.allow_negative else None,
                request_id=rid))
    elif a == "list":
        async def call(client):
            return await client.list_accounts(page_size=args.page_size,
                                              page_token=args.page_token or "")
    elif a == "get":
        by_id = args.account.isdigit()

        async def call(client):
            return pb.GetAccountResponse(account=await client.get_account(
                int(args.account) if by_id else 0, external_ref="" if by_id else args.account))
    elif a in ("freeze", "unfreeze"):
        amount = minor(args.amount, args.currency) if args.amount else 0
        response = pb.FreezeAccountResponse if a == "freeze" else pb.UnfreezeAccountResponse

        async def call(client):
            method = client.freeze_account if a == "freeze" else client.unfreeze_account
            return response(account=await method(args.account_id, amount_minor=amount,
                                                 reason=args.reason, request_id=rid))
    else:
        async def call(client):
            return pb.CloseAccountResponse(account=await client.close_account(
                args.account_id, request_id=rid))
    return call


def cmd_rules(args, settings: Settings) -> int:
    """`clearing rules publish|activate|backtest|list|get`: SplitService's rule-set
    methods."""
    from clearing_client.v1 import split_pb2 as pb

    rid = args.request_id or str(uuid.uuid4())
    if args.action == "publish":
        from clearing.errors import InvalidArgument
        from clearing.api.rules_proto import rule_set_proto_from_yaml

        try:
            rule_set = rule_set_proto_from_yaml(Path(args.file).read_bytes())
        except InvalidArgument as exc:
            raise SystemExit("\n".join(f"{args.file}: {v.field}: {v.description}"
                                        for v in exc.violations)) from None

        async def call(client):
            return pb.PublishRuleSetResponse(rule_set=await client.publish_rule_set(
                rule_set, validate_only=args.validate_only, request_id=rid))
    elif args.action == "activate":
        async def call(client):
            return await client.activate_rule_set(
                args.name, args.version, content_sha256=args.sha256 or "",
                expected_active_version=args.expected_active, comment=args.comment or "",
                request_id=rid)
    elif args.action == "backtest":
        async def call(client):
            return await client.simulate_rule_set(
                args.name, args.version, days=args.days, order_count_max=args.orders_max)
    elif args.action == "get":
        async def call(client):
            return pb.GetRuleSetResponse(rule_set=await client.get_rule_set(args.name,
                                                                            args.version))
    else:
        async def call(client):
            return await client.list_rule_sets(
                rule_set_name=args.name or "", page_size=args.page_size,
                page_token=args.page_token or "", include_rules=args.include_rules)
    return _run(args, settings, call)


def cmd_payouts(args, settings: Settings) -> int:
    """`clearing payouts ...`: PayoutService. Amounts in major units."""
    from clearing_client.v1 import payout_pb2 as pb

    rid = args.request_id or str(uuid.uuid4())
    a = args.action
    if a == "bind":
        account_type = _enum(pb.BankAccountType, "BANK_ACCOUNT_TYPE", args.type)

        async def call(client):
            return pb.BindBankAccountResponse(bank_account=await client.bind_bank_account(
                args.account_id, bank_code=args.bank_code, bank_name=args.bank_name,
                branch_code=args.branch_code or "", account_number=args.number,
                holder_name=args.holder, account_type=account_type,
                kyc_verified=args.kyc_verified, request_id=rid))
    elif a == "request":
        amount = minor(args.amount, args.currency)

        async def call(client):
            return pb.RequestPayoutResponse(payout=await client.request_payout(
                args.account_id, amount, args.currency, memo=args.memo or "", request_id=rid))
    elif a == "get":
        async def call(client):
            return pb.GetPayoutResponse(payout=await client.get_payout(args.payout_id))
    elif a == "list":
        states = [_enum(pb.PayoutState, "PAYOUT_STATE", s) for s in args.state or ()]

        async def call(client):
            return await client.list_payouts(account_id=args.account or 0, states=states,
                                             page_size=args.page_size,
                                             page_token=args.page_token or "")
    elif a == "approve":
        async def call(client):
            return pb.ApprovePayoutResponse(payout=await client.approve_payout(
                args.payout_id, reason=args.reason or "", request_id=rid))
    else:
        async def call(client):
            return pb.RejectPayoutResponse(payout=await client.reject_payout(
                args.payout_id, reason=args.reason or "", request_id=rid))
    return _run(args, settings, call)


# ---- argument parsing --------------------------------------------------------------------

def _client_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--addr", help="server address (default: CLEARING_GRPC_ADDR)")
    tls_options(p)
    p.add_argument("--key", help="API key (default: CLEARING_API_KEY or --key-file)")
    p.add_argument("--key-file", help="file holding the API key (default: var/demo.key)")
    p.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    p.add_argument("--field", help="print only this field of the response, one value a line "
                   "(a dotted path; lists are followed: runs.run_id)")


def tls_options(p: argparse.ArgumentParser) -> None:
    """--tls-ca, --tls-cert, --tls-key, --plaintext (read by credentials_for)."""
    p.add_argument("--tls-ca", help="CA of the server's certificate (default: "
                   "CLEARING_CLIENT_TLS_CA, else var/tls/ca.pem when present)")
    p.add_argument("--tls-cert", help="client certificate for mutual TLS (default: "
                   "CLEARING_CLIENT_TLS_CERT, else var/tls/client.pem when present)")
    p.add_argument("--tls-key", help="its private key (default: CLEARING_CLIENT_TLS_KEY, "
                   "else var/tls/client.key)")
    p.add_argument("--plaintext", action="store_true",
                   help="no TLS (a server allowing plaintext; CLEARING_CLIENT_PLAINTEXT=1)")


def add_parsers(sub) -> None:
    """accounts, balance, entries, transfer, post, void, verify, rules."""
    acc = sub.add_parser("accounts", help="accounts").add_subparsers(dest="action", required=True)
    p = acc.add_parser("create", help="open an account")
    p.add_argument("--ref", required=True, help="your reference, unique per platform")
    p.add_argument("--kind", required=True, choices=[
        "custodial", "platform", "merchant", "ordinary", "fee", "marketing", "functional"])
    p.add_argument("--owner", required=True, choices=["enterprise", "individual"])
    p.add_argument("--currency", default="CNY")
    p.add_argument("--name")
    p.add_argument("--allow-negative", action="store_true")
    p = acc.add_parser("list", help="list accounts")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token")
    p = acc.add_parser("get", help="one account, by id or reference")
    p.add_argument("account")
    for action in ("freeze", "unfreeze"):
        p = acc.add_parser(action, help=f"{action} an account or an amount of it")
        p.add_argument("account_id", type=int)
        p.add_argument("--amount", help="major units; omit for the whole account")
        p.add_argument("--currency", default="CNY")
        p.add_argument("--reason", required=True)
    p = acc.add_parser("close", help="close an empty account")
    p.add_argument("account_id", type=int)
    for sp in acc.choices.values():
        _client_options(sp)
        sp.set_defaults(func=cmd_client)

    p = sub.add_parser("balance", help="balances of an account")
    p.add_argument("account_id", type=int)
    p = sub.add_parser("entries", help="statement of an account")
    p.add_argument("account_id", type=int)
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token")
    p = sub.add_parser("transfer", help="move money between two accounts")
    p.add_argument("--from", dest="from_id", type=int, help="debit account id")
    p.add_argument("--from-ref", help="debit account reference")
    p.add_argument("--to", dest="to_id", type=int, help="credit account id")
    p.add_argument("--to-ref", help="credit account reference")
    p.add_argument("--amount", required=True, help="major units, e.g. 12.34")
    p.add_argument("--currency", default="CNY")
    p.add_argument("--pending", action="store_true", help="hold instead of posting")
    p.add_argument("--memo")
    p = sub.add_parser("post", help="post (part of) a pending transfer")
    p.add_argument("pending_id", type=int)
    p.add_argument("--amount", required=True)
    p.add_argument("--currency", default="CNY")
    p = sub.add_parser("void", help="void what remains of a pending transfer")
    p.add_argument("pending_id", type=int)
    p = sub.add_parser("verify", help="trial balance and hash chain (the key's platform)")
    p.add_argument("--all", action="store_true",
                   help="the whole system, read from CLEARING_DATABASE_URL (no key needed)")
    for name in ("balance", "entries", "transfer", "post", "void", "verify"):
        _client_options(sub.choices[name])
        sub.choices[name].set_defaults(func=cmd_client)
    _rules_parser(sub)


def _rules_parser(sub) -> None:
    rules = sub.add_parser("rules", help="split rule sets").add_subparsers(
        dest="action", required=True)
    p = rules.add_parser("publish", help="file a new version from a YAML file (operator)")
    p.add_argument("file", help="the rule set in YAML (the RuleSet message's fields)")
    p.add_argument("--validate-only", action="store_true", help="validate, store nothing")
    p = rules.add_parser("activate", help="activate a version (approver; not its publisher)")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--sha256", help="the content_sha256 you reviewed")
    p.add_argument("--expected-active", type=int, help="the version you expect active (0: none)")
    p.add_argument("--comment", help="note for the audit trail")
    p = rules.add_parser("backtest", help="re-evaluate recent orders with a version that is"
                                          " not active (operator or approver; writes nothing)")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--days", type=int, default=7, help="orders paid in the last DAYS days"
                                                       " (1 to 31, default 7)")
    p.add_argument("--orders-max", type=int, default=0,
                   help="at most this many orders, the most recent first (0: 2,000,000)")
    p = rules.add_parser("get", help="one version (0 or omitted: the active one)")
    p.add_argument("name")
    p.add_argument("version", type=int, nargs="?", default=0)
    p = rules.add_parser("list", help="versions by name, newest first")
    p.add_argument("--name", help="only this rule set")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token")
    p.add_argument("--include-rules", action="store_true")
    for sp in rules.choices.values():
        _client_options(sp)
        sp.set_defaults(func=cmd_rules)
    rules.choices["backtest"].set_defaults(timeout=300.0)  # 2,000,000 orders take ~2 min


def add_payouts_parser(sub) -> None:
    """payouts bind|request|get|list|approve|reject."""
    pay = sub.add_parser("payouts", help="payouts to bank accounts").add_subparsers(
        dest="action", required=True)
    p = pay.add_parser("bind", help="bind a bank account to an account (operator)")
    p.add_argument("account_id", type=int)
    p.add_argument("--bank-code", required=True)
    p.add_argument("--bank-name", required=True)
    p.add_argument("--branch-code")
    p.add_argument("--number", required=True, help="the full account number (never shown)")
    p.add_argument("--holder", required=True)
    p.add_argument("--type", required=True, choices=["corporate", "personal"])
    p.add_argument("--kyc-verified", action="store_true")
    p = pay.add_parser("request", help="pay an account's funds out (operator)")
    p.add_argument("account_id", type=int)
    p.add_argument("--amount", required=True, help="major units, fee included")
    p.add_argument("--currency", default="CNY")
    p.add_argument("--memo")
    p = pay.add_parser("get", help="one payout with its bank transfers")
    p.add_argument("payout_id", type=int)
    p = pay.add_parser("list", help="payouts, newest first")
    p.add_argument("--account", type=int)
    p.add_argument("--state", action="append", choices=[
        "pending_review", "queued", "submitted", "succeeded", "failed", "manual_review"])
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token")
    for action in ("approve", "reject"):
        p = pay.add_parser(action, help=f"{action} a payout under review (approver key)")
        p.add_argument("payout_id", type=int)
        p.add_argument("--reason", required=action == "reject")
    for sp in pay.choices.values():
        _client_options(sp)
        sp.set_defaults(func=cmd_payouts)
