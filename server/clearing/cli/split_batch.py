"""`split batch FILE` sends the orders of a CSV file (a header row; amounts in major units) or
of a JSON-lines file (one Order message a line) as SplitBatch calls, with a progress bar on
stderr, a summary of the failures by reason on stderr (and, one line each, in `--failures
PATH`), and exit status 1 if any order failed. Every order's request id is derived from the
order itself (and `--batch-id`), so running the same file again books nothing twice: each
order answers its first result.

Batch orders are parsed as `clearing.cli.split` parses one (its `_order`, `_order_json`), and
sent by its client; `clearing split batch` is dispatched there.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from clearing.cli.split import (BadInput, _client, _order, _order_json, _print, _read_text,
                                print_error)
from clearing.config import Settings
from clearing.limits import (SPLIT_BATCH_ATTEMPTS_MAX, SPLIT_BATCH_FILE_LINES_MAX,
                             SPLIT_BATCH_ID_LEN_MAX, SPLIT_BATCH_REQUEST_BYTES_MAX,
                             SPLIT_BATCH_SIZE_MAX)

if TYPE_CHECKING:
    from clearing_client import ClearingClient, ClearingRpcError
    from clearing_client.v1 import split_pb2

# CSV columns: the Order's fields (amounts in major units), then `attributes.KEY` and
# `parties.ROLE` columns, one per attribute or party role (an empty cell leaves it out).
CSV_COLUMNS = ("order_id", "amount", "currency", "channel", "channel_fee",
               "channel_transaction_id", "rule_set", "paid_time", "memo", "tags", "coupons")
CSV_REQUIRED = ("order_id", "amount")
CSV_LIST_SEPARATOR = ";"  # tags and coupons in one cell
# Input errors listed before the command gives up (the rest are counted).
ERRORS_SHOWN_MAX = 20
PROGRESS_WIDTH = 30


# ---- batch -----------------------------------------------------------------------------------

@dataclass
class Item:
    """One order of a batch file: its line (where its record starts) and request id."""

    line: int
    order: split_pb2.Order
    request_id: str = ""


@dataclass
class Failure:
    line: int
    order_id: str
    reason: str
    message: str


def _format_of(path: str, text: str, given: str | None) -> str:
    if given:
        return given
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "jsonl" if text.lstrip().startswith("{") else "csv"


def parse_csv(text: str, where: str, currency: str) -> tuple[list[Item], list[str]]:
    """The orders of a CSV file with a header row, and the problems found (each with its
    line number). Columns: CSV_COLUMNS, `attributes.KEY` and `parties.ROLE`."""
    items: list[Item] = []
    errors: list[str] = []
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    end = 0
    try:
        for row in reader:
            line, end = end + 1, reader.line_num
            if not any(cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                errors.extend(f"{where}:{line}: {e}" for e in _header_errors(header))
                if errors:
                    return [], errors
                continue
            if len(row) != len(header):
                missing = header[len(row):]
                errors.append(f"{where}:{line}: {len(row)} values, the header has "
                              f"{len(header)} columns" + (
                                  f" (missing: {', '.join(missing)})" if missing else ""))
                continue
            try:
                items.append(Item(line, _csv_order(dict(zip(header, row)), currency)))
            except BadInput as exc:
                errors.append(f"{where}:{line}: {exc}")
    except csv.Error as exc:
        errors.append(f"{where}:{reader.line_num}: {exc}")
    if header is None:
        errors.append(f"{where}: no header row")
    return items, errors


def _header_errors(header: list[str]) -> list[str]:
    errors = []
    for name, count in Counter(header).items():
        if count > 1:
            errors.append(f"column {name!r} given {count} times")
    for name in header:
        prefix, dot, rest = name.partition(".")
        if name not in CSV_COLUMNS and not (dot and rest and prefix in ("attributes",
                                                                        "parties")):
            errors.append(f"unknown column {name!r} (columns: {', '.join(CSV_COLUMNS)}, "
                          "attributes.KEY, parties.ROLE)")
    errors.extend(f"missing column {name!r}" for name in CSV_REQUIRED if name not in header)
    return errors


def _csv_order(cells: dict[str, str], currency: str):
    def cell(name: str) -> str:
        return cells.get(name, "").strip()

    def listed(name: str) -> list[str]:
        return [v.strip() for v in cell(name).split(CSV_LIST_SEPARATOR) if v.strip()]

    def keyed(prefix: str) -> dict[str, str]:
        return {k.partition(".")[2]: v.strip() for k, v in cells.items()
                if k.startswith(prefix + ".") and v.strip()}

    return _order(cell("order_id"), cell("amount"), cell("currency") or currency,
                  channel=cell("channel"), channel_fee=cell("channel_fee"),
                  channel_transaction_id=cell("channel_transaction_id"),
                  rule_set=cell("rule_set"), paid_time=cell("paid_time"), memo=cell("memo"),
                  tags=listed("tags"), coupons=listed("coupons"),
                  attributes=keyed("attributes"), parties=keyed("parties"),
                  names={"amount": "column amount", "channel_fee": "column channel_fee",
                         "coupons": "column coupons", "paid_time": "column paid_time"})


def parse_jsonl(text: str, where: str) -> tuple[list[Item], list[str]]:
    """The orders of a JSON-lines file (one Order message a line; blank lines skipped)."""
    items, errors = [], []
    for line, raw in enumerate(text.splitlines(), 1):
        if raw.strip():
            try:
                items.append(Item(line, _order_json(raw, f"{where}:{line}")))
            except BadInput as exc:
                errors.append(str(exc))
    return items, errors


def assign_request_ids(items: list[Item], batch_id: str) -> None:
    """Each order's request id: the batch id and a hash of the order (its deterministic
    bytes), so the same order in a re-run of the file (even edited, reordered or renamed)
    answers its first result. An order repeated in the file gets another id per repetition
    (`:2`, `:3`...): the server refuses it as the order already split, in any chunk."""
    seen: Counter[str] = Counter()
    for item in items:
        digest = hashlib.sha256(item.order.SerializeToString(deterministic=True)).hexdigest()
        seen[digest] += 1
        repeat = f":{seen[digest]}" if seen[digest] > 1 else ""
        item.request_id = f"{batch_id}:{digest[:40]}{repeat}"


def chunks(items: list[Item], size: int) -> list[list[Item]]:
    """Consecutive runs of at most `size` orders and SPLIT_BATCH_REQUEST_BYTES_MAX bytes."""
    from clearing_client.v1 import split_pb2 as pb

    out: list[list[Item]] = []
    current: list[Item] = []
    current_bytes = 0
    for item in items:
        size_bytes = pb.SplitRequest(request_id=item.request_id,
                                     order=item.order).ByteSize() + 8
        if current and (len(current) >= size
                        or current_bytes + size_bytes > SPLIT_BATCH_REQUEST_BYTES_MAX):
            out.append(current)
            current, current_bytes = [], 0
        current.append(item)
        current_bytes += size_bytes
    if current:
        out.append(current)
    return out


def _message(error) -> str:
    """A SplitError's message, with the field violations it does not already say."""
    extra = [f"{v.field}: {v.description}" for v in error.field_violations
             if f"{v.field}: {v.description}" not in error.message]
    return f"{error.message} ({'; '.join(extra)})" if extra else error.message


def _progress(done: int, total: int, failed: int) -> None:
    """A progress bar on stderr (one line, redrawn)."""
    filled = PROGRESS_WIDTH * done // max(total, 1)
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (PROGRESS_WIDTH - filled)}] "
                     f"{done}/{total} orders, {failed} failed")
    if done >= total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _load(args) -> list[Item]:
    text = _read_text(args.file)
    where = "stdin" if args.file == "-" else args.file
    if text.count("\n") > SPLIT_BATCH_FILE_LINES_MAX:
        raise BadInput(f"{where}: more than {SPLIT_BATCH_FILE_LINES_MAX} lines: split the file")
    fmt = _format_of(args.file, text, args.format)
    if fmt == "csv":
        items, errors = parse_csv(text, where, args.currency)
    else:
        items, errors = parse_jsonl(text, where)
    if errors:
        shown = errors[:ERRORS_SHOWN_MAX]
        more = len(errors) - len(shown)
        raise BadInput("\n".join(shown + ([f"... and {more} more"] if more else []))
                       + "\nnothing was sent")
    if not items:
        raise BadInput(f"{where}: no orders")
    return items


@dataclass
class BatchRun:
    """What a batch did so far."""

    items: list[Item]
    split_count: int = 0
    sent_count: int = 0  # orders answered one by one
    failures: list[Failure] = field(default_factory=list)
    call_error: ClearingRpcError | None = None
    unanswered_count: int = 0  # orders of the call refused whole

    @property
    def not_sent_count(self) -> int:
        return len(self.items) - self.sent_count - self.unanswered_count


async def _send(client: ClearingClient, run: BatchRun, calls: list[list[Item]], batch_id: str,
                quiet: bool) -> None:
    """The calls one after the other; the first call refused whole ends the batch."""
    from clearing_client import ClearingRpcError
    from clearing_client.v1 import split_pb2 as pb

    for call in calls:
        ids = "\n".join(item.request_id for item in call)
        request = pb.SplitBatchRequest(
            request_id=f"{batch_id}:calls:{hashlib.sha256(ids.encode()).hexdigest()[:40]}",
            requests=[pb.SplitRequest(request_id=i.request_id, order=i.order) for i in call])
        try:
            response = await client.call(client.split.SplitBatch, request)
        except ClearingRpcError as err:
            run.call_error, run.unanswered_count = err, len(call)
            run.failures.extend(Failure(i.line, i.order.order_id, err.reason or err.code.name,
                                        err.message) for i in call)
            return
        for item, outcome in zip(call, response.outcomes):
            if outcome.WhichOneof("result") == "split":
                run.split_count += 1
            else:
                run.failures.append(Failure(item.line, item.order.order_id,
                                            outcome.error.reason, _message(outcome.error)))
        run.sent_count += len(call)
        if not quiet:
            _progress(run.sent_count, len(run.items), len(run.failures))


def _report(run: BatchRun, calls: list[list[Item]], failures_out, args) -> int:
    """The failures file, the summary by reason on stderr, the counts as JSON on stdout."""
    if run.call_error is not None:
        if not args.quiet and run.sent_count:
            sys.stderr.write("\n")
        print_error(run.call_error)
    run.failures.sort(key=lambda f: f.line)
    by_reason = Counter(f.reason for f in run.failures)
    if failures_out is not None:
        writer = csv.writer(failures_out, lineterminator="\n")
        writer.writerow(["line", "order_id", "reason", "message"])
        writer.writerows([f.line, f.order_id, f.reason, f.message] for f in run.failures)
        failures_out.close()
    lines = [f"{len(run.items)} orders: {run.split_count} split, {len(run.failures)} failed"
             + (f", {run.not_sent_count} not sent" if run.not_sent_count else "")]
    lines += [f"  {reason:32} {count:>7}" for reason, count in
              sorted(by_reason.items(), key=lambda rc: (-rc[1], rc[0]))]
    if run.failures and failures_out is not None:
        lines.append(f"failures: {args.failures}")
    print("\n".join(lines), file=sys.stderr)
    _print({"order_count": len(run.items), "split_count": run.split_count,
            "failed_count": len(run.failures), "not_sent_count": run.not_sent_count,
            "call_count": len(calls), "failed_by_reason": dict(sorted(by_reason.items()))},
           args)
    return 1 if run.failures or run.not_sent_count else 0


def cmd_batch(args, settings: Settings) -> int:
    """`clearing split batch FILE`: SplitBatch calls of at most --batch-size orders."""
    if not 1 <= args.batch_size <= SPLIT_BATCH_SIZE_MAX:
        raise BadInput(f"--batch-size: 1 to {SPLIT_BATCH_SIZE_MAX}")
    if not 1 <= args.attempts <= SPLIT_BATCH_ATTEMPTS_MAX:
        raise BadInput(f"--attempts: 1 to {SPLIT_BATCH_ATTEMPTS_MAX}")
    if not args.batch_id or len(args.batch_id) > SPLIT_BATCH_ID_LEN_MAX:
        raise BadInput(f"--batch-id: 1 to {SPLIT_BATCH_ID_LEN_MAX} characters")
    items = _load(args)
    assign_request_ids(items, args.batch_id)
    calls = chunks(items, args.batch_size)
    try:  # opened first: a path that cannot be written fails before anything is booked
        failures_out = (open(args.failures, "w", newline="", encoding="utf-8")
                        if args.failures else None)
    except OSError as exc:
        raise BadInput(f"--failures: {exc.strerror}: {args.failures}") from None
    run = BatchRun(items)

    async def go() -> None:
        # Retrying is safe: every order and every call carries the same request id again.
        async with _client(args, settings, attempts_max=args.attempts) as client:
            await _send(client, run, calls, args.batch_id, args.quiet)

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        print(f"\ninterrupted after {run.sent_count} of {len(items)} orders: run the same "
              "file again to finish (orders sent answer their first result)", file=sys.stderr)
        return 130
    return _report(run, calls, failures_out, args)
