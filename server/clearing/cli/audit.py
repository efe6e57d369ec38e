"""`clearing audit list|verify`: the audit trail (docs/audit.md).

`audit list` calls AuditService.ListAuditEvents with the key (its platform's events only),
or, with `--platform NAME`, reads that platform's events from the database (the core's
operator);
`audit verify` recomputes every platform's hash chain (or one platform's) from the database
directly, as the core's operator (like `clearing verify --all`); exits 1 if a chain is
broken."""

from __future__ import annotations

import asyncio
import datetime as dt
import json

from clearing.cli.client import _client_options, _run
from clearing.config import Settings


def _time(text: str | None, name: str):
    from google.protobuf.timestamp_pb2 import Timestamp

    if not text:
        return None
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"{name}: not a time (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS][+HH:MM])") \
            from None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.timezone.utc)
    ts = Timestamp()
    ts.FromDatetime(at)
    return ts


def cmd_audit_list(args, settings: Settings) -> int:
    if args.platform:
        return _list_from_database(args, settings)
    from clearing_client import ClearingRpcError
    from clearing_client.v1 import audit_pb2 as pb

    request = pb.ListAuditEventsRequest(page_size=args.page_size, page_token=args.page_token or "",
                                        resource=args.resource or "", key_id=args.key_id or 0,
                                        method=args.method or "")
    for name, text in (("start_time", args.since), ("end_time", args.until)):
        ts = _time(text, "--" + ("since" if name == "start_time" else "until"))
        if ts is not None:
            getattr(request, name).CopyFrom(ts)

    async def call(client):
        import grpc

        try:
            return await client.audit.ListAuditEvents(request, metadata=client.metadata,
                                              timeout=args.timeout)
        except grpc.aio.AioRpcError as exc:
            raise ClearingRpcError.from_call(exc) from None

    return _run(args, settings, call)


def _list_from_database(args, settings: Settings) -> int:
    """The core's operator: a platform's events read from the database (no key)."""
    from clearing import audit, tenancy
    from clearing.cli.admin import _admin_connect
    from clearing.limits import PAGE_SIZE_MAX

    def when(text: str | None, name: str) -> dt.datetime | None:
        ts = _time(text, name)
        return None if ts is None else ts.ToDatetime(tzinfo=dt.timezone.utc)

    flt = audit.Filter(resource=args.resource or "", key_id=args.key_id or 0,
                       method=args.method or "", start=when(args.since, "--since"),
                       end=when(args.until, "--until"))
    limit = min(max(args.page_size, 1), PAGE_SIZE_MAX)

    async def go():
        conn = await _admin_connect(settings)
        try:
            pid = await tenancy.find_platform(conn, args.platform)
            if pid is None:
                raise SystemExit(f"no platform named {args.platform!r}")
            after = int(args.page_token or 0)
            return await audit.list_events(conn, pid, flt, after_event_id=after, limit=limit)
        finally:
            await conn.close()

    found = asyncio.run(go())
    print(json.dumps({"events": [{
        "event_id": e.event_id, "seq": e.seq, "key_id": e.key_id, "key_prefix": e.key_prefix,
        "roles": list(e.roles), "cert_subject": e.cert_subject, "method": e.method,
        "resource": e.resource, "before": e.before, "after": e.after,
        "request_id": e.request_id, "create_time": e.created_at.isoformat(),
        "hash": e.hash.hex()} for e in found],
        "next_page_token": str(found[-1].event_id) if len(found) == limit else ""}, indent=2,
        ensure_ascii=False))
    return 0


def cmd_audit_verify(args, settings: Settings) -> int:
    from dataclasses import asdict

    from clearing import audit, tenancy
    from clearing.cli.admin import _admin_connect

    async def go():
        conn = await _admin_connect(settings)
        try:
            pid = None
            if args.platform:
                pid = await tenancy.find_platform(conn, args.platform)
                if pid is None:
                    raise SystemExit(f"no platform named {args.platform!r}")
            return await audit.verify_on(conn, pid)
        finally:
            await conn.close()

    report = asyncio.run(go())
    print(json.dumps(asdict(report), indent=2))
    return 0 if report.ok else 1


def add_parser(sub) -> None:
    top = sub.add_parser("audit", help="the audit trail: list (API key), verify (database)")
    act = top.add_subparsers(dest="action", required=True)
    p = act.add_parser("list", help="the key's platform's audit events, oldest first")
    p.add_argument("--resource", help="kind:id (account:42), or a kind ending with ':'")
    p.add_argument("--key-id", type=int, help="only events made with this key")
    p.add_argument("--method", help="only events of this method (FreezeAccount...)")
    p.add_argument("--since", help="only events at or after this time (ISO 8601, UTC default)")
    p.add_argument("--until", help="only events before this time")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--page-token")
    p.add_argument("--platform", help="the core's operator: this platform's events, read from "
                                      "the database (CLEARING_DATABASE_URL) instead of the API")
    _client_options(p)
    p.set_defaults(func=cmd_audit_list)
    p = act.add_parser("verify", help="recompute the audit hash chains from the database "
                                      "(the core's operator); exits 1 if one is broken")
    p.add_argument("--platform", help="only this platform's chain (by name)")
    p.set_defaults(func=cmd_audit_verify)
