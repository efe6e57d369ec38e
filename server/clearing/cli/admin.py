"""Admin commands. On the database directly (CLEARING_DATABASE_URL), no server needed:
`migrate`, `admin init` (an admin key: the bootstrap) and `verify --all`. Through the
server's PlatformService with an admin key (--admin-key, CLEARING_ADMIN_KEY or
--admin-key-file, default var/admin.key): platform create|get|list|payout-config|
approve-change|reject-change, keys create|list|revoke, calendar set|unset|list."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from clearing.config import Settings, client_admin_key

async def _admin_connect(settings: Settings):
    import asyncpg

    if not settings.database_url:
        raise SystemExit("CLEARING_DATABASE_URL is not set")
    return await asyncpg.connect(settings.database_url)


def cmd_migrate(args, settings: Settings) -> int:
    from clearing import db

    from clearing.api import split_upgrade

    import asyncpg

    from clearing import pods

    async def go() -> list[str]:
        conn = await _admin_connect(settings)
        try:
            applied = await db.migrate(conn)
            await split_upgrade.upgrade(conn)
        finally:
            await conn.close()
        for pod_id, dsn in sorted(settings.pod_dsns.items()):  # CLEARING_PODS: every pod
            conn = await asyncpg.connect(dsn)
            try:
                applied += [f"{name} (pod {pod_id})" for name in await db.migrate(conn)]
                await split_upgrade.upgrade(conn)
                await pods.claim(conn, pod_id)
            finally:
                await conn.close()
        return applied

    applied = asyncio.run(go())
    print("applied: " + ", ".join(applied) if applied else "schema is up to date")
    return 0


def cmd_admin_init(args, settings: Settings) -> int:
    """`clearing admin init`: make an admin key on the server host, straight in the
    database (the bootstrap: PlatformService needs an admin key to make anything), and
    write it to a file only its owner reads (default: $CLEARING_DATA_DIR/admin.key)."""
    from clearing import db
    from clearing.tenancy import create_admin_key

    out = Path(args.out) if args.out else settings.data_dir / "admin.key"
    if out.exists() and not args.force:
        raise SystemExit(f"{out} exists: give another --out, or --force to replace it")

    async def go() -> tuple[int, str]:
        conn = await _admin_connect(settings)
        try:
            await db.migrate(conn)
            return await create_admin_key(conn, args.name)
        finally:
            await conn.close()

    key_id, key = asyncio.run(go())
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(out, 0o600)
    print(f"admin key {key_id} ({key[:8]}, {args.name}) written to {out}")
    return 0


def cmd_admin_keys(args, settings: Settings) -> int:
    """`clearing admin list|revoke ID`: the admin keys, on the server host (the database)."""
    from clearing import tenancy

    async def go() -> int:
        conn = await _admin_connect(settings)
        try:
            if args.action == "revoke":
                done = await tenancy.revoke_admin_key(conn, args.admin_key_id)
                print(f"admin key {args.admin_key_id} "
                      + ("revoked" if done else "was revoked already (or does not exist)"))
                return 0
            print(f"{'id':>6}  {'name':<20}  {'prefix':<8}  {'created':<19}  "
                  f"{'last_used':<19}  revoked")
            for r in await tenancy.list_admin_keys(conn):
                when = [r[c].isoformat(timespec="seconds") if r[c] else "-"
                        for c in ("created_at", "last_used_at", "revoked_at")]
                print(f"{r['admin_key_id']:>6}  {r['name']:<20}  {r['key_prefix']:<8}  "
                      f"{when[0]:<19}  {when[1]:<19}  {when[2]}")
            return 0
        finally:
            await conn.close()

    return asyncio.run(go())


# ---- through PlatformService (an admin key) ------------------------------------------------

def _admin_key(args, settings: Settings) -> str:
    if args.admin_key:
        return args.admin_key
    if client_admin_key():
        return client_admin_key()
    path = Path(args.admin_key_file) if args.admin_key_file else settings.data_dir / "admin.key"
    if not path.exists():
        raise SystemExit(f"no admin key: pass --admin-key, set CLEARING_ADMIN_KEY, or create "
                         f"{path} (`clearing admin init` on the server host)")
    return path.read_text().strip()


def _admin_run(args, settings: Settings, work) -> int:
    """Run `work(client)` with a client of the server holding the admin key; an error of
    the server ends the command with its status and field violations."""
    from clearing_client import ClearingClient, ClearingRpcError

    from clearing.cli.client import credentials_for

    target = args.addr or settings.grpc_addr
    credentials = credentials_for(args, settings, target)

    async def go():
        async with ClearingClient(target, _admin_key(args, settings), timeout_s=args.timeout,
                                  attempts_max=1, credentials=credentials) as client:
            return await work(client)

    try:
        return asyncio.run(go()) or 0
    except ClearingRpcError as err:
        if err.violations:
            raise SystemExit("; ".join(f"{v.field}: {v.description}"
                                       for v in err.violations)) from None
        raise SystemExit(f"{err.code.name} {err.reason}: {err.message}") from None


async def _platform(client, name: str):
    """The platform named `name`, or the command ends."""
    from clearing_client import ClearingRpcError
    from clearing_client.v1 import platform_pb2 as pb

    from clearing.reasons import Reason

    try:
        return (await client.call(client.platform.GetPlatform,
                                  pb.GetPlatformRequest(name=name))).platform
    except ClearingRpcError as err:
        if err.reason == Reason.PLATFORM_NOT_FOUND:
            raise SystemExit(f"no platform named {name!r}") from None
        raise


def _roles(text: str) -> list[str]:
    return [r for r in text.split(",") if r]


def _request_id(args) -> str:
    import uuid

    return args.request_id or str(uuid.uuid4())


def _print_key(made) -> None:
    """The key of a CreateApiKey answer; a replay of the request id has none to show."""
    if made.key_shown_before:
        print(f"key {made.api_key.key_id} (prefix {made.api_key.key_prefix}) was made by the "
              "first run of this request id and shown then only; if it was lost, revoke it "
              "(keys revoke) and create another", file=sys.stderr)
        return
    print(made.key)


def cmd_platform_create(args, settings: Settings) -> int:
    """`clearing platform create NAME`: the platform and its first API key (shown once)."""
    from clearing_client import ClearingRpcError
    from clearing_client.v1 import platform_pb2 as pb

    request_id = _request_id(args)

    async def work(client) -> int:
        try:
            made = (await client.call(client.platform.CreatePlatform, pb.CreatePlatformRequest(
                name=args.name, request_id=request_id))).platform
        except ClearingRpcError as err:
            if err.code.name == "ALREADY_EXISTS":
                raise SystemExit(f"platform {args.name!r} already exists") from None
            raise
        key = await client.call(client.platform.CreateApiKey, pb.CreateApiKeyRequest(
            platform_id=made.platform_id, roles=_roles(args.roles),
            request_id=f"{request_id}/key"))
        print(f"platform {made.name} (id {made.platform_id}) created; its API key "
              "(shown once):")
        _print_key(key)
        return 0

    return _admin_run(args, settings, work)


def cmd_platform_list(args, settings: Settings) -> int:
    """`clearing platform list`: every platform (id, name, created)."""
    from clearing_client.v1 import platform_pb2 as pb

    async def work(client) -> int:
        token = ""
        while True:
            page = await client.call(client.platform.ListPlatforms, pb.ListPlatformsRequest(
                page_size=1000, page_token=token))
            for p in page.platforms:
                print(f"{p.platform_id:>6}  {p.name:<24}  "
                      f"{p.create_time.ToDatetime().isoformat(timespec='seconds')}")
            token = page.next_page_token
            if not token:
                return 0

    return _admin_run(args, settings, work)


def cmd_keys_create(args, settings: Settings) -> int:
    """`clearing keys create PLATFORM --roles R`: another key (printed once); with
    `--party-account ID` (repeated), a party key bound to those accounts."""
    from clearing_client.v1 import platform_pb2 as pb

    request_id = _request_id(args)
    party = args.party_account or []
    if not party and not args.roles:
        print("give --roles, or --party-account for a party key", file=sys.stderr)
        return 2

    async def work(client) -> int:
        platform = await _platform(client, args.platform)
        made = await client.call(client.platform.CreateApiKey, pb.CreateApiKeyRequest(
            platform_id=platform.platform_id, roles=_roles(args.roles or ""),
            party_account_ids=party, request_id=request_id))
        _print_key(made)
        return 0

    return _admin_run(args, settings, work)


def _when(msg, name: str) -> str:
    if not msg.HasField(name):
        return "-"
    return getattr(msg, name).ToDatetime().isoformat(timespec="seconds")


def _key_line(k) -> str:
    roles = (f"party:{','.join(map(str, k.party_account_ids))}" if k.party_account_ids
             else ",".join(k.roles))
    return (f"{k.key_id:>6}  {k.key_prefix:<8}  {roles:<24}  "
            f"{_when(k, 'create_time'):<19}  {_when(k, 'last_use_time'):<19}  "
            f"{_when(k, 'revoke_time')}")


_KEY_HEADER = (f"{'id':>6}  {'prefix':<8}  {'roles':<24}  {'created':<19}  {'last_used':<19}  "
               "revoked")


async def _all_keys(client, platform_id: int, key_prefix: str = "") -> list:
    from clearing_client.v1 import platform_pb2 as pb

    keys, token = [], ""
    while True:
        page = await client.call(client.platform.ListApiKeys, pb.ListApiKeysRequest(
            platform_id=platform_id, key_prefix=key_prefix, page_size=1000, page_token=token))
        keys += page.api_keys
        token = page.next_page_token
        if not token:
            return keys


def cmd_keys_list(args, settings: Settings) -> int:
    """`clearing keys list --platform P`: a platform's keys (never the keys themselves)."""

    async def work(client) -> int:
        platform = await _platform(client, args.platform)
        print(_KEY_HEADER)
        for k in await _all_keys(client, platform.platform_id):
            print(_key_line(k))
        return 0

    return _admin_run(args, settings, work)


def cmd_keys_revoke(args, settings: Settings) -> int:
    """`clearing keys revoke KEY_PREFIX_OR_ID`: revoke one key, named by its id, its prefix
    (as `keys list` and the logs show it; it must name one key) or the whole key. Every
    server refuses it (UNAUTHENTICATED) within a second."""
    from clearing_client.v1 import platform_pb2 as pb

    from clearing.tenancy import PREFIX_LEN

    which = args.key.strip()
    if not which:
        raise SystemExit("name a key: its id, its prefix or the key")

    async def work(client) -> int:
        if which.isdigit():
            key_id = int(which)
            if key_id > 2**63 - 1:
                raise SystemExit(f"no key matches {which!r}")
        else:
            found = await _all_keys(client, 0, which[:PREFIX_LEN])
            if not found:
                raise SystemExit(f"no key matches {which!r}")
            active = [k for k in found if not k.HasField("revoke_time")]
            if len(found) > 1 and len(active) != 1:
                lines = "\n".join(_key_line(k) for k in found)
                raise SystemExit(f"{which!r} names {len(found)} keys; give its id:\n"
                                 f"{_KEY_HEADER}\n{lines}")
            key_id = (active[0] if active else found[0]).key_id
        done = await client.call(client.platform.RevokeApiKey,
                                 pb.RevokeApiKeyRequest(key_id=key_id))
        key = done.api_key
        print(f"key {key.key_id} ({key.key_prefix}, platform {key.platform_id}) "
              + ("was revoked already" if done.revoked_before else "revoked"))
        return 0

    return _admin_run(args, settings, work)


def cmd_verify_all(args, settings: Settings) -> int:
    """`clearing verify --all`: every platform's accounts and rows and the whole hash chain,
    read from the database directly (VerifyLedger shows a platform only its own). With
    CLEARING_PODS, every pod's too: the home pod's figures at the top, each other pod's
    under "pods"; ok only if every pod is."""
    import json
    from dataclasses import asdict

    import asyncpg

    from clearing import audit
    from clearing.ledger import verify

    async def one(conn) -> dict:
        report, trail = await verify.verify_on(conn, None), await audit.verify_on(conn, None)
        doc = {"ok": report.ok and trail.ok, **asdict(report), "audit": asdict(trail)}
        for t in doc["totals"]:
            t["balanced"] = t["debits_posted"] == t["credits_posted"] and (
                t["debits_pending"] == t["credits_pending"])
        return doc

    async def go() -> dict:
        conn = await _admin_connect(settings)
        try:
            doc = await one(conn)
        finally:
            await conn.close()
        pods = {}
        for pod_id, dsn in sorted(settings.pod_dsns.items()):
            conn = await asyncpg.connect(dsn)
            try:
                pods[str(pod_id)] = await one(conn)
            finally:
                await conn.close()
        if pods:
            doc["pods"] = pods
            doc["ok"] = doc["ok"] and all(p["ok"] for p in pods.values())
        return doc

    doc = asyncio.run(go())
    print(json.dumps(doc, indent=2))
    return 0 if doc["ok"] else 1



# ---- argument parsing --------------------------------------------------------------------

def _admin_options(p) -> None:
    from clearing.cli.client import tls_options

    p.add_argument("--addr", help="server address (default: CLEARING_GRPC_ADDR)")
    tls_options(p)
    p.add_argument("--admin-key", help="admin key (default: CLEARING_ADMIN_KEY or "
                                       "--admin-key-file)")
    p.add_argument("--admin-key-file", help="file holding the admin key (default: "
                                            "var/admin.key, written by `make run`)")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")


def add_parsers(sub) -> None:
    """migrate, admin init, platform create|list|payout-config|approve-change|reject-change,
    keys create|list|revoke."""
    sub.add_parser("migrate", help="apply schema migrations").set_defaults(func=cmd_migrate)
    admin = sub.add_parser("admin", help="admin keys (on the server host)").add_subparsers(
        dest="action", required=True)
    p = admin.add_parser("init", help="make an admin key in the database and write it to a "
                                      "file (default var/admin.key)")
    p.add_argument("--name", default="admin", help="whose key it is (records name it)")
    p.add_argument("--out", help="the file (0600) to write the key to")
    p.add_argument("--force", action="store_true", help="replace the file if it exists")
    p.set_defaults(func=cmd_admin_init)
    admin.add_parser("list", help="the admin keys (never the keys)").set_defaults(
        func=cmd_admin_keys)
    p = admin.add_parser("revoke", help="revoke an admin key: refused within 1 s")
    p.add_argument("admin_key_id", type=int)
    p.set_defaults(func=cmd_admin_keys)

    plat = sub.add_parser("platform", help="platforms (tenants), through PlatformService"
                          ).add_subparsers(dest="action", required=True)
    p = plat.add_parser("create", help="create a platform and print its first API key")
    p.add_argument("name")
    p.add_argument("--roles", default="gateway,operator", help="comma-separated roles")
    p.add_argument("--request-id", help="idempotency key, at most 124 characters (default: a "
                   "new UUID); its key's is REQUEST_ID/key")
    p.set_defaults(func=cmd_platform_create)
    p = plat.add_parser("list", help="every platform: id, name, created")
    p.set_defaults(func=cmd_platform_list)
    from clearing.cli.payout_config import _payout_config_parser, cmd_config_decision

    _payout_config_parser(plat)
    for action, what in (("approve-change", "approve a pending payout configuration change "
                                            "(another admin key than its maker's)"),
                         ("reject-change", "reject a pending payout configuration change")):
        p = plat.add_parser(action, help=what)
        p.add_argument("change_id", type=int)
        p.add_argument("--note")
        p.set_defaults(func=cmd_config_decision)
    for p in plat.choices.values():
        _admin_options(p)

    keys = sub.add_parser("keys", help="API keys, through PlatformService").add_subparsers(
        dest="action", required=True)
    p = keys.add_parser("create", help="create another key for a platform")
    p.add_argument("platform")
    p.add_argument("--roles", help="comma-separated: gateway,operator,approver")
    p.add_argument("--party-account", type=int, action="append", metavar="ACCOUNT_ID",
                   help="a party key (read-only, role party) bound to this account of the "
                        "platform; repeat for each of the party's accounts")
    p.add_argument("--request-id", help="idempotency key (default: a new UUID)")
    p.set_defaults(func=cmd_keys_create)
    p = keys.add_parser("list", help="a platform's keys (prefix, roles, created, last used, "
                                     "revoked)")
    p.add_argument("--platform", required=True)
    p.set_defaults(func=cmd_keys_list)
    p = keys.add_parser("revoke", help="revoke a key: every server refuses it within 1 s")
    p.add_argument("key", metavar="KEY_PREFIX_OR_ID",
                   help="the key's id, its prefix (as `keys list` shows it) or the key")
    p.set_defaults(func=cmd_keys_revoke)
    for p in keys.choices.values():
        _admin_options(p)
