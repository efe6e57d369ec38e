"""`clearing split preview|create|get|release|cancel|refund|batch`: SplitService through the
clearing_client SDK (see `clearing.cli.client` for the key, the address and the output: the
response as JSON on stdout, `--field PATH` for one field of it).

The order of `preview` and `create` is given on the command line (amounts in major units of
`--currency`, converted exactly by clearing.money) or as JSON (`--json FILE`, `-` for stdin:
the clearing.v1.Order message with its proto field names, amounts in minor units as the
message has them). An error prints its status, its ErrorInfo reason and every field
violation on stderr (exit status 1); bad input on the command line is refused before any
call.

`split batch FILE`: see `clearing.cli.split_batch`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from clearing.cli.client import _client_options, _key, credentials_for, field_values
from clearing.cli.common import parse_minor
from clearing.config import Settings
from clearing.limits import SPLIT_BATCH_ATTEMPTS_MAX, SPLIT_BATCH_SIZE_MAX, DEFAULT_TIME_ZONE

if TYPE_CHECKING:
    from clearing_client import ClearingClient, ClearingRpcError

FUNDINGS = ("platform", "seller")
FORMATS = ("csv", "jsonl")
DEFAULT_BATCH_ID = "batch"
# The options of an order on the command line (none of them goes with --json; --currency has
# a default, so it is not checked).
ORDER_DESTS = ("order_id", "amount", "channel", "channel_fee", "channel_transaction_id",
               "rule_set", "tag", "attr", "party", "coupon", "paid_time", "memo")


class BadInput(Exception):
    """Input refused before anything is sent; the message names the option or column."""


# ---- the order from the command line, JSON or CSV ------------------------------------------

def _minor(text: str, currency: str, what: str) -> int:
    try:
        return parse_minor(text, currency)
    except ValueError as exc:
        raise BadInput(f"{what}: {exc}") from None


def _pairs(values, what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for text in values or ():
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise BadInput(f"{what}: expected KEY=VALUE, got {text!r}")
        if key in out:
            raise BadInput(f"{what}: {key!r} given twice")
        out[key] = value
    return out


def _coupon(text: str, currency: str, what: str):
    """ID:AMOUNT:FUNDING, e.g. C1:20.00:platform."""
    from clearing_client.v1 import split_pb2 as pb

    parts = text.split(":")
    if len(parts) != 3 or parts[2] not in FUNDINGS:
        raise BadInput(f"{what}: expected ID:AMOUNT:{'|'.join(FUNDINGS)}, got {text!r}")
    funding = pb.CouponFunding.Value(f"COUPON_FUNDING_{parts[2].upper()}")
    return pb.Coupon(coupon_id=parts[0], amount_minor=_minor(parts[1], currency, what),
                     funding=funding)


def _timestamp(text: str, what: str):
    from google.protobuf.timestamp_pb2 import Timestamp

    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadInput(f"{what}: not an ISO 8601 time: {text!r}") from None
    if when.tzinfo is None:
        raise BadInput(f"{what}: give the time's offset, e.g. {text}+08:00 or {text}Z")
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def _order(order_id: str, amount: str, currency: str, *, channel: str = "",
           channel_fee: str = "", channel_transaction_id: str = "", rule_set: str = "",
           paid_time: str = "", memo: str = "", tags=(), coupons=(),
           attributes: dict[str, str] | None = None, parties: dict[str, str] | None = None,
           names: dict[str, str] | None = None):
    """An Order from texts typed by people; `names` maps each argument to what the user
    calls it (an option or a column) for the messages."""
    from clearing_client.v1 import split_pb2 as pb

    n = {"amount": "--amount", "channel_fee": "--channel-fee", "coupons": "--coupon",
         "paid_time": "--paid-time", **(names or {})}
    order = pb.Order(order_id=order_id, amount_minor=_minor(amount, currency, n["amount"]),
                     currency_code=currency, channel=channel,
                     channel_transaction_id=channel_transaction_id, rule_set_name=rule_set,
                     memo=memo, tags=list(tags), attributes=attributes or {},
                     parties=parties or {},
                     coupons=[_coupon(c, currency, n["coupons"]) for c in coupons])
    if channel_fee:
        order.channel_fee_minor = _minor(channel_fee, currency, n["channel_fee"])
    if paid_time:
        order.paid_time.CopyFrom(_timestamp(paid_time, n["paid_time"]))
    return order


def _order_json(text: str, where: str):
    """An Order from its JSON (proto field names or their lowerCamel forms)."""
    from clearing_client.v1 import split_pb2 as pb
    from google.protobuf import json_format

    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{where}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{where}: not a JSON object (an Order message)")
    try:
        return json_format.ParseDict(doc, pb.Order())
    except json_format.ParseError as exc:
        # The first line says what; the next ones list every field of Order.
        raise BadInput(f"{where}: {str(exc).splitlines()[0]}") from None


def _order_of_args(args):
    if args.json:
        if any(getattr(args, dest) not in (None, []) for dest in ORDER_DESTS):
            raise BadInput("give the order either as --json or on the command line, not both")
        return _order_json(_read_text(args.json), args.json)
    if not args.order_id or args.amount is None:
        raise BadInput("give ORDER_ID and --amount (or the order as --json FILE)")
    return _order(args.order_id, args.amount, args.currency, channel=args.channel or "",
                  channel_fee=args.channel_fee or "", rule_set=args.rule_set or "",
                  channel_transaction_id=args.channel_transaction_id or "",
                  paid_time=args.paid_time or "", memo=args.memo or "", tags=args.tag or (),
                  coupons=args.coupon or (), attributes=_pairs(args.attr, "--attr"),
                  parties=_pairs(args.party, "--party"))


def _read_bytes(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    p = Path(path)
    if not p.is_file():
        raise BadInput(f"{path}: no such file")
    return p.read_bytes()


def _read_text(path: str) -> str:
    try:
        return _read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


# ---- calls -----------------------------------------------------------------------------------

def print_error(err: ClearingRpcError) -> None:
    """The status and its reason, then every field violation and metadata entry."""
    reason = f" {err.reason}" if err.reason and err.reason != err.code.name else ""
    print(f"error: {err.code.name}{reason}: {err.message}", file=sys.stderr)
    for v in err.violations:
        print(f"  {v.field}: {v.description}", file=sys.stderr)
    for key, value in sorted(err.metadata.items()):
        print(f"  {key} = {value}", file=sys.stderr)


def _client(args, settings: Settings, attempts_max: int) -> ClearingClient:
    try:
        from clearing_client import ClearingClient
    except ImportError:
        raise SystemExit("the client commands need the clearing_client package: "
                         "pip install clients/python") from None
    target = args.addr or settings.grpc_addr
    return ClearingClient(target, _key(args, settings), timeout_s=args.timeout,
                          attempts_max=attempts_max,
                          credentials=credentials_for(args, settings, target))


def _print(doc: dict, args) -> None:
    if args.field:
        for value in field_values(doc, args.field):
            print(value if not isinstance(value, (dict, list)) else json.dumps(value))
    else:
        print(json.dumps(doc, indent=2))


def _one_call(args, settings: Settings, method: str, request) -> int:
    """One attempt of a SplitService method (a failure is reported as it happened)."""
    from clearing_client import ClearingRpcError
    from google.protobuf import json_format

    async def go():
        async with _client(args, settings, attempts_max=1) as client:
            return await client.call(getattr(client.split, method), request)

    try:
        response = asyncio.run(go())
    except ClearingRpcError as err:
        print_error(err)
        return 1
    _print(json_format.MessageToDict(response, preserving_proto_field_name=True), args)
    return 0


def _request(args):
    """The method and the request of a one-call command."""
    from clearing_client.v1 import split_pb2 as pb

    rid = args.request_id or str(uuid.uuid4())
    a = args.action
    if a == "preview":
        counters = {k: _int(v, "--counter") for k, v in _pairs(args.counter, "--counter").items()}
        return "PreviewSplit", pb.PreviewSplitRequest(
            order=_order_of_args(args), rule_set_version=args.version,
            counter_overrides=counters)
    if a == "create":
        return "Split", pb.SplitRequest(request_id=rid, order=_order_of_args(args))
    if a == "get":
        if bool(args.order_id) == bool(args.split_id):
            raise BadInput("give ORDER_ID or --split-id")
        return "GetSplit", pb.GetSplitRequest(order_id=args.order_id or "",
                                              split_id=args.split_id or 0)
    if a == "list":
        return "ListSplits", _list_request(args)
    if a == "release":
        request = pb.ReleaseSplitRequest(request_id=rid, order_id=args.order_id,
                                         account_ids=args.account or (),
                                         reason=args.reason or "")
        if args.event is not None:
            request.event_name = args.event
        else:
            request.fraction_bps = args.fraction_bps
        if args.event_time:
            request.event_time.CopyFrom(_timestamp(args.event_time, "--event-time"))
        return "ReleaseSplit", request
    if a == "cancel":
        return "CancelSplit", pb.CancelSplitRequest(request_id=rid, order_id=args.order_id,
                                                    reason=args.reason)
    return "RefundSplit", pb.RefundSplitRequest(
        request_id=rid, order_id=args.order_id,
        amount_minor=_minor(args.amount, args.currency, "--amount"),
        currency_code=args.currency, refund_ref=args.refund_ref or "", reason=args.reason,
        shortfall_account_ref=args.shortfall_ref or "")


STATES = ("posted", "holding", "cancelled", "partly_refunded", "refunded")


def _day_or_time(text: str, what: str, zone: str, *, end: bool):
    """A Timestamp from YYYY-MM-DD (midnight in `zone`; for an end, the next midnight: the
    day is included) or an ISO 8601 time with its offset."""
    from zoneinfo import ZoneInfo

    try:
        day = dt.date.fromisoformat(text.strip()) if len(text.strip()) == 10 else None
    except ValueError:
        raise BadInput(f"{what}: not a date YYYY-MM-DD: {text!r}") from None
    if day is None:
        return _timestamp(text, what)
    from google.protobuf.timestamp_pb2 import Timestamp

    if end:
        day += dt.timedelta(days=1)
    stamp = Timestamp()
    stamp.FromDatetime(dt.datetime.combine(day, dt.time(0), ZoneInfo(zone)))
    return stamp


def _list_request(args):
    """ListSplits of `split list`: amounts in major units of --currency (CNY when not
    given), dates in the platform's time zone."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from clearing_client.v1 import split_pb2 as pb

    try:
        ZoneInfo(args.time_zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise BadInput(f"--time-zone: not an IANA time zone: {args.time_zone!r}") from None
    units = args.currency or "CNY"
    request = pb.ListSplitsRequest(
        page_size=args.page_size, page_token=args.page_token or "",
        account_id=args.account or 0, currency_code=args.currency or "",
        state=(pb.SplitStatus.Value(f"SPLIT_STATUS_{args.state.upper()}")
               if args.state else 0),
        amount_min_minor=(_minor(args.min_amount, units, "--min-amount")
                          if args.min_amount else 0),
        amount_max_minor=(_minor(args.max_amount, units, "--max-amount")
                          if args.max_amount else 0))
    if args.since:
        request.paid_time_start.CopyFrom(_day_or_time(args.since, "--from", args.time_zone,
                                                      end=False))
    if args.until:
        request.paid_time_end.CopyFrom(_day_or_time(args.until, "--to", args.time_zone,
                                                    end=True))
    return request


def _int(text: str, what: str, bits: int = 64) -> int:
    try:
        value = int(text)
    except ValueError:
        raise BadInput(f"{what}: not an integer: {text!r}") from None
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise BadInput(f"{what}: {text!r} is out of range")
    return value


def _typed(bits: int):
    """An argparse type: an integer that fits the field's int32 or int64."""
    def parse(text: str) -> int:
        try:
            return _int(text, "value", bits)
        except BadInput as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix("value: ")) from None
    parse.__name__ = f"int{bits}"
    return parse


def cmd_split(args, settings: Settings) -> int:
    """`clearing split ...`."""
    try:
        if args.action == "batch":
            from clearing.cli.split_batch import cmd_batch  # it imports this module

            return cmd_batch(args, settings)
        method, request = _request(args)
    except BadInput as exc:
        raise SystemExit(f"error: {exc}") from None
    except ValueError as exc:  # an integer option out of its field's range
        raise SystemExit(f"error: {exc}") from None
    return _one_call(args, settings, method, request)


# ---- argument parsing ------------------------------------------------------------------------

def _order_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("order_id", nargs="?", help="the gateway's order id")
    p.add_argument("--json", metavar="FILE",
                   help="the order as JSON (the Order message; amounts in minor units), "
                        "'-' for stdin; instead of the options below")
    p.add_argument("--amount", help="what the buyer paid, major units, e.g. 850000.00")
    p.add_argument("--currency", default="CNY")
    p.add_argument("--channel", help="payment channel, e.g. WECHAT_PAY")
    p.add_argument("--channel-fee", help="the channel's fee withheld, major units")
    p.add_argument("--channel-txn", dest="channel_transaction_id",
                   help="the channel's transaction id")
    p.add_argument("--rule-set", help="the rule set (default: 'default')")
    p.add_argument("--tag", action="append", help="a tag (repeat)")
    p.add_argument("--attr", action="append", metavar="KEY=VALUE", help="an attribute (repeat)")
    p.add_argument("--party", action="append", metavar="ROLE=REF",
                   help="a party role's account external_ref (repeat)")
    p.add_argument("--coupon", action="append", metavar="ID:AMOUNT:platform|seller",
                   help="a coupon used, amount in major units (repeat)")
    p.add_argument("--paid-time", help="ISO 8601 with offset, e.g. 2026-01-20T10:00:00+08:00")
    p.add_argument("--memo")


def add_parser(sub) -> None:
    """split preview|create|get|list|release|cancel|refund|batch."""
    split = sub.add_parser("split", help="split orders; release, cancel, refund splits"
                           ).add_subparsers(dest="action", required=True)
    p = split.add_parser("preview", help="a dry run: the legs Split would book (nothing "
                                         "stored)")
    _order_options(p)
    p.add_argument("--version", type=_typed(64), default=0,
                   help="the rule set's version (default: the active one)")
    p.add_argument("--counter", action="append", metavar="NAME=VALUE",
                   help="a counter value to assume (a count, or minor units; repeat)")
    p = split.add_parser("create", help="split a paid order (gateway key)")
    _order_options(p)
    p = split.add_parser("get", help="the split of an order, with its legs and history")
    p.add_argument("order_id", nargs="?")
    p.add_argument("--split-id", type=_typed(64), help="by split id instead of order id")
    p = split.add_parser("list", help="search the platform's splits, newest paid first "
                                      "(one page; pass --page-token for the next)")
    p.add_argument("--state", choices=STATES)
    p.add_argument("--from", dest="since", metavar="DATE|TIME",
                   help="paid on or after: YYYY-MM-DD (in --time-zone) or ISO 8601 with offset")
    p.add_argument("--to", dest="until", metavar="DATE|TIME",
                   help="paid up to: YYYY-MM-DD (that whole day included) or ISO 8601 with "
                        "offset (excluded)")
    p.add_argument("--time-zone", default=DEFAULT_TIME_ZONE,
                   help=f"of the dates (the platform's; default {DEFAULT_TIME_ZONE})")
    p.add_argument("--account", type=_typed(64), help="a leg credits this account id")
    p.add_argument("--min-amount", help="the order's amount at least, major units")
    p.add_argument("--max-amount", help="the order's amount at most, major units")
    p.add_argument("--currency", help="only this currency (and the amounts' unit; default CNY)")
    p.add_argument("--page-size", type=_typed(32), default=0, help="splits a page (default 100)")
    p.add_argument("--page-token", help="the previous page's next_page_token (same filters)")
    p = split.add_parser("release", help="post held legs: an event's steps or a fraction")
    p.add_argument("order_id")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--event", help="the event, e.g. SHIPPED")
    what.add_argument("--fraction-bps", type=_typed(32),
                      help="basis points of each held leg's original hold (10000: all)")
    p.add_argument("--account", type=_typed(64), action="append",
                   help="only legs credited to this account id (repeat)")
    p.add_argument("--event-time", help="when the event happened, ISO 8601 with offset")
    p.add_argument("--reason", help="for the audit trail")
    p = split.add_parser("cancel", help="void everything a split still holds")
    p.add_argument("order_id")
    p.add_argument("--reason", required=True)
    p = split.add_parser("refund", help="reverse a split, fully or in part")
    p.add_argument("order_id")
    p.add_argument("--amount", required=True, help="what the buyer gets back, major units")
    p.add_argument("--currency", default="CNY", help="the split's currency")
    p.add_argument("--reason", required=True)
    p.add_argument("--refund-ref", help="the gateway's refund reference")
    p.add_argument("--shortfall-ref", help="an account (external_ref) that covers what a "
                                           "receiver cannot pay back")
    p = split.add_parser("batch", help="split the orders of a CSV or JSON-lines file "
                                       "(SplitBatch calls)")
    p.add_argument("file", help="CSV with a header row (amounts in major units), or one "
                                "Order JSON a line; '-' for stdin")
    p.add_argument("--format", choices=FORMATS, help="default: by the file's suffix")
    p.add_argument("--currency", default="CNY", help="of CSV rows without a currency column")
    p.add_argument("--failures", metavar="PATH",
                   help="write the failed orders here (CSV: line, order_id, reason, message)")
    p.add_argument("--batch-size", type=int, default=SPLIT_BATCH_SIZE_MAX,
                   help=f"orders per SplitBatch call (1 to {SPLIT_BATCH_SIZE_MAX})")
    p.add_argument("--batch-id", default=DEFAULT_BATCH_ID,
                   help="prefix of the derived request ids; another one sends every order "
                        "anew (orders already split then answer ORDER_ALREADY_SPLIT)")
    p.add_argument("--attempts", type=int, default=5,
                   help="attempts per call on UNAVAILABLE or RESOURCE_EXHAUSTED (same ids; "
                        f"1 to {SPLIT_BATCH_ATTEMPTS_MAX})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    for sp in split.choices.values():
        _client_options(sp)
        sp.set_defaults(func=cmd_split)
    split.choices["batch"].set_defaults(timeout=60.0)
