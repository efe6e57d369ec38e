"""`clearing recon import|import-payouts|runs|discrepancies|settle|propose|approve|reject|
resolution|bank-file`: ReconciliationService through the
clearing_client SDK (see `clearing.cli.client` for the key, the address and the output: the
response as JSON on stdout). `recon import` shows its progress and the run's counts per
class on stderr. `recon bank-file` writes the bank simulator's payout result file of a day
from its books, on the database directly (no server)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from clearing.cli.client import _client_options, _enum, _run
from clearing.cli.common import minor
from clearing.config import Settings

FORMATS = ("canonical", "wechat")
CLASSES = ("missing_split", "missing_in_statement", "amount_mismatch", "fee_mismatch",
           "currency_mismatch", "duplicate", "split_ledger_mismatch", "payout_bank_mismatch",
           "missing_in_bank_file", "unknown_bank_transfer", "status_mismatch")
# The bank named in a payout result file's `bank` column (the simulator's by default).
BANK_DEFAULT = "BANKSIM"
STATES = ("open", "resolved", "resolution_proposed")
ACTIONS = ("split_now", "refund", "write_off", "accept")
PROGRESS_WIDTH = 30


def _progress(sent_bytes: int, size_bytes: int) -> None:
    """A progress bar on stderr (one line, redrawn)."""
    done = PROGRESS_WIDTH * sent_bytes // max(size_bytes, 1)
    sys.stderr.write(f"\r[{'#' * done}{'.' * (PROGRESS_WIDTH - done)}] "
                     f"{sent_bytes}/{size_bytes} bytes")
    if sent_bytes >= size_bytes:
        sys.stderr.write("\n")
    sys.stderr.flush()


def summary(run) -> str:
    """A run's counts per class and its funds against information, for people."""
    from clearing_client.v1 import reconciliation_pb2 as pb

    lines = [f"run {run.run_id}: {run.statement.line_count} lines of {run.statement.channel} "
             f"{run.statement.settlement_date}"]
    for t in run.class_totals:
        name = pb.ReconciliationClass.Name(t.reconciliation_class).removeprefix(
            "RECONCILIATION_CLASS_")
        lines.append(f"  {name:22} {t.item_count:>9}  amount {t.amount_minor:>15}  "
                     f"difference {t.difference_minor:>13}")
    lines.append(f"  statement settled {run.statement_settled_minor}, splits "
                 f"{run.split_settled_minor}, difference {run.difference_minor}, explained "
                 f"{run.explained_minor}")
    return "\n".join(lines)


def cmd_bank_file(args, settings: Settings) -> int:
    """`clearing recon bank-file`: the bank simulator's payout result file of a day, from
    its books on the database (CLEARING_DATABASE_URL), to --out or stdout."""
    import asyncio
    import datetime as dt

    import asyncpg

    from clearing.clock import Clock
    from clearing.dev.bank_file import payout_result_file

    if not settings.database_url:
        raise SystemExit("CLEARING_DATABASE_URL is not set")
    try:
        day = dt.date.fromisoformat(args.date)
    except ValueError:
        raise SystemExit(f"--date: not a date YYYY-MM-DD: {args.date!r}") from None

    async def go() -> bytes:
        conn = await asyncpg.connect(settings.database_url)
        try:
            ids = None
            if args.platform:
                ids = [r["payout_id"] for r in await conn.fetch(
                    "SELECT payout_id FROM payouts p JOIN platforms USING (platform_id)"
                    " WHERE name = $1", args.platform)]
            return await payout_result_file(conn, Clock(), day, currency_code=args.currency,
                                            payout_ids=ids)
        finally:
            await conn.close()

    data = asyncio.run(go())
    if args.out:
        Path(args.out).write_bytes(data)
    else:
        sys.stdout.write(data.decode())
    return 0


def cmd_recon(args, settings: Settings) -> int:
    """`clearing recon ...`."""
    from clearing_client.v1 import reconciliation_pb2 as pb

    if args.action == "bank-file":
        return cmd_bank_file(args, settings)
    if args.action in ("import", "import-payouts"):
        path = Path(args.file)
        if not path.is_file():
            raise SystemExit(f"{path}: no such file")
        if args.action == "import":
            fmt = _enum(pb.StatementFormat, "STATEMENT_FORMAT", args.format)
            channel = args.channel
        else:
            fmt, channel = pb.STATEMENT_FORMAT_BANK_PAYOUTS, args.bank
        rid = args.request_id or str(uuid.uuid4())

        async def call(client):
            response = await client.import_statement(
                path, channel=channel, settlement_date=args.date, statement_format=fmt,
                progress=None if args.quiet else _progress, request_id=rid)
            print(("replayed: " if response.replayed else "") + summary(response.run),
                  file=sys.stderr)
            return response
    elif args.action == "runs":
        async def call(client):
            return await client.list_reconciliation_runs(
                channel=args.channel or "", settlement_date=args.date or "",
                page_size=args.page_size, page_token=args.page_token or "")
    elif args.action in RESOLUTION_COMMANDS:
        call = RESOLUTION_COMMANDS[args.action](args)
    else:
        classes = [_enum(pb.ReconciliationClass, "RECONCILIATION_CLASS", c)
                   for c in args.cls or ()]
        states = [_enum(pb.DiscrepancyState, "DISCREPANCY_STATE", s) for s in args.state or ()]

        async def call(client):
            return await client.list_discrepancies(
                run_id=args.run or 0, classes=classes, states=states,
                page_size=args.page_size, page_token=args.page_token or "")
    return _run(args, settings, call)


def _settle(args):
    from clearing_client.v1 import reconciliation_pb2 as pb

    async def call(client):
        return pb.PostSettlementResponse(run=await client.post_settlement(
            args.run_id, request_id=args.request_id))
    return call


def _order(path: str | None):
    """SPLIT_NOW's order: a JSON file of the Order message (as SplitService takes it)."""
    if path is None:
        return None
    from clearing_client.v1 import split_pb2
    from google.protobuf import json_format

    return json_format.Parse(Path(path).read_text("utf-8"), split_pb2.Order())


def _propose(args):
    from clearing_client.v1 import reconciliation_pb2 as pb

    action = _enum(pb.ResolutionAction, "RESOLUTION_ACTION", args.resolution_action)
    amount = minor(args.amount, args.currency) if args.amount else 0
    order = _order(args.order)

    async def call(client):
        return pb.ProposeResolutionResponse(resolution=await client.propose_resolution(
            args.discrepancy_id, action, note=args.note, amount_minor=amount, order=order,
            request_id=args.request_id))
    return call


def _review(args):
    from clearing_client.v1 import reconciliation_pb2 as pb

    async def call(client):
        if args.action == "approve":
            return pb.ApproveResolutionResponse(resolution=await client.approve_resolution(
                args.resolution_id, note=args.note or "", request_id=args.request_id))
        return pb.RejectResolutionResponse(resolution=await client.reject_resolution(
            args.resolution_id, note=args.note, request_id=args.request_id))
    return call


def _resolution(args):
    from clearing_client.v1 import reconciliation_pb2 as pb

    async def call(client):
        return pb.GetResolutionResponse(resolution=await client.get_resolution(
            args.resolution_id))
    return call


RESOLUTION_COMMANDS = {"settle": _settle, "propose": _propose, "approve": _review,
                       "reject": _review, "resolution": _resolution}


def _add_resolution_parsers(recon) -> None:
    p = recon.add_parser("settle", help="book a run's statement: channel clearing -> "
                                        "custodial (operator)")
    p.add_argument("run_id", type=int)
    p = recon.add_parser("propose", help="propose a resolution of a discrepancy (operator)")
    p.add_argument("discrepancy_id", type=int)
    p.add_argument("--action", dest="resolution_action", required=True, choices=ACTIONS)
    p.add_argument("--note", required=True, help="why")
    p.add_argument("--amount", help="refund: major units, e.g. 12.34")
    p.add_argument("--currency", default="CNY", help="of --amount")
    p.add_argument("--order", help="split_now: a JSON file of the Order to split")
    for action in ("approve", "reject"):
        p = recon.add_parser(action, help=f"{action} a proposed resolution (approver key, "
                                          "not the proposer's)")
        p.add_argument("resolution_id", type=int)
        p.add_argument("--note", required=action == "reject")
    p = recon.add_parser("resolution", help="one resolution with its every step")
    p.add_argument("resolution_id", type=int)


def add_parser(sub) -> None:
    """recon import|import-payouts|runs|discrepancies|settle|propose|approve|reject|
    resolution|bank-file."""
    recon = sub.add_parser("recon", help="channel statements and reconciliation").add_subparsers(
        dest="action", required=True)
    p = recon.add_parser("import", help="import a statement file and reconcile it (operator)")
    p.add_argument("file", help="the statement (CSV, or gzip of it)")
    p.add_argument("--channel", required=True, help="the channel, as orders name it")
    p.add_argument("--date", required=True, help="the statement's day, YYYY-MM-DD")
    p.add_argument("--format", choices=FORMATS, default="canonical")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = recon.add_parser("import-payouts",
                         help="import a bank's payout result file and reconcile it (operator)")
    p.add_argument("file", help="the bank's payout result file (CSV, or gzip of it)")
    p.add_argument("--date", required=True, help="the file's value date, YYYY-MM-DD")
    p.add_argument("--bank", default=BANK_DEFAULT, help="the bank the file names")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = recon.add_parser("runs", help="reconciliation runs, newest first")
    p.add_argument("--channel")
    p.add_argument("--date", help="YYYY-MM-DD")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token")
    p = recon.add_parser("discrepancies", help="discrepancies, oldest first")
    p.add_argument("--run", type=int, help="only this run's")
    p.add_argument("--class", dest="cls", action="append", choices=CLASSES)
    p.add_argument("--state", action="append", choices=STATES)
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token")
    _add_resolution_parsers(recon)
    for sp in recon.choices.values():
        _client_options(sp)
        sp.set_defaults(func=cmd_recon)
    p = recon.add_parser("bank-file", help="the bank simulator's payout result file of a day"
                                           " (on the database directly; dev stack)")
    p.add_argument("--date", required=True, help="the day, YYYY-MM-DD (Asia/Shanghai)")
    p.add_argument("--currency", default="CNY")
    p.add_argument("--platform", help="only this platform's payouts (its name)")
    p.add_argument("--out", help="write the file here (default: stdout)")
    p.set_defaults(func=cmd_recon)
