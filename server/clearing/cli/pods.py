"""`clearing pods list|move`: the PostgreSQL pods (docs/scaling.md "Platform pods"), on the
databases directly (CLEARING_DATABASE_URL is pod 0, CLEARING_PODS the others); no server
needed, the running servers follow the routing table within a second."""

from __future__ import annotations

import asyncio

from clearing.config import Settings


def add_parser(sub) -> None:
    pods = sub.add_parser("pods", help="PostgreSQL pods: where each platform's ledger lives"
                          ).add_subparsers(dest="action", required=True)
    p = pods.add_parser("list", help="the platforms that live outside pod 0, and the pods")
    p.set_defaults(func=cmd_list)
    p = pods.add_parser("move", help="move a platform's ledger to another pod (offline for "
                                     "that platform: its calls are refused while it moves)")
    p.add_argument("platform", help="the platform's name or id")
    p.add_argument("--to", type=int, required=True, help="the target pod's id")
    p.add_argument("--settle-s", type=float, default=None,
                   help="seconds waited for calls routed before the move began (default 5)")
    p.set_defaults(func=cmd_move)


def _dsns(settings: Settings) -> dict[int, str]:
    if not settings.database_url:
        raise SystemExit("CLEARING_DATABASE_URL is not set")
    return {0: settings.database_url, **settings.pod_dsns}


def cmd_list(args, settings: Settings) -> int:
    import asyncpg

    async def go() -> None:
        dsns = _dsns(settings)
        home = await asyncpg.connect(dsns[0])
        try:
            rows = await home.fetch(
                "SELECT p.platform_id, p.name, r.pod_id, r.moving FROM platform_pods r"
                " JOIN platforms p USING (platform_id) ORDER BY p.platform_id")
        finally:
            await home.close()
        print("pods: " + ", ".join(str(i) for i in sorted(dsns)) + " (others: pod 0)")
        for r in rows:
            note = " (moving)" if r["moving"] else ""
            print(f"{r['platform_id']}\t{r['name']}\tpod {r['pod_id']}{note}")

    asyncio.run(go())
    return 0


def cmd_move(args, settings: Settings) -> int:
    import asyncpg

    from clearing import pods_move
    from clearing.tenancy import find_platform

    async def go() -> int:
        dsns = _dsns(settings)
        home = await asyncpg.connect(dsns[0])
        try:
            platform_id = int(args.platform) if args.platform.isdigit() \
                else await find_platform(home, args.platform)
            if platform_id is None:
                raise SystemExit(f"no platform named {args.platform!r}")
            settle = pods_move.SETTLE_S_DEFAULT if args.settle_s is None else args.settle_s
            try:
                moved = await pods_move.move(home, dsns, platform_id, args.to, settle_s=settle)
            except pods_move.MoveError as exc:
                print(f"not moved: {exc}")
                return 1
        finally:
            await home.close()
        copied = ", ".join(f"{t} {n}" for t, n in moved.rows.items() if n)
        print(f"platform {platform_id} moved from pod {moved.source} to pod {moved.target}: "
              f"{copied}; {moved.batches} journal batches chained; verified: "
              f"{moved.report.account_count} accounts, {moved.report.transfer_count} "
              "transfers, the same totals on both pods")
        return 0

    return asyncio.run(go())
