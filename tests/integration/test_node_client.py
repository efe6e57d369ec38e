"""The Node client (clients/node): its own tests (`node --test clients/node/test/`) run
against the real server of this session, as a fresh platform with a maker key (gateway and
operator) and an approver key, its payout fee set (4.00 to its PLAT_ORD account), and two
admin keys (PlatformService: clients/node/test/admin.test.js). Node and
the packages of clients/node (`npm ci`, run by `make venv`) are required: without them this
test fails, it does not skip (CI has Node)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil

import asyncpg
import pytest

from clearing.tenancy import create_admin_key
from clearing.v1 import ledger_pb2 as lpb
from clearing_client.webhooks import sign
from tests.payout_support import set_config
from tests.split_support import new_key
from tests.support import ROOT

pytestmark = [pytest.mark.timeout(180)]

NODE_DIR = ROOT / "clients" / "node"
NODE_TIMEOUT_S = 150.0
PAYOUT_FEE_MINOR = 400
# clients/node/test/*.test.js (Node 20's --test takes no patterns; a folder would run
# test/support.js as a test too)
TEST_FILES = sorted(str(p.relative_to(NODE_DIR)) for p in (NODE_DIR / "test").glob("*.test.js"))


async def _admin_keys(database_url: str) -> list[str]:
    """Two admin keys (PlatformService: clients/node/test/admin.test.js)."""
    conn = await asyncpg.connect(database_url)
    try:
        return [(await create_admin_key(conn, f"node-{secrets.token_hex(3)}"))[1]
                for _ in range(2)]
    finally:
        await conn.close()


async def test_node_client_against_the_server(running, client, platform, database_url):
    node = shutil.which("node")
    assert node, "node is not installed: the Node client's tests need Node 20 or later"
    assert (NODE_DIR / "node_modules" / "@connectrpc" / "connect-node").is_dir(), (
        "clients/node/node_modules is missing: run `make venv` (it runs `npm ci` there)")
    approver = await new_key(database_url, platform.platform_id, {"approver"})
    admin_keys = await _admin_keys(database_url)
    fee_account = await client.open("PLAT_ORD", kind=lpb.ACCOUNT_KIND_ORDINARY)
    await set_config(database_url, platform.platform_id, fee_fixed_minor=PAYOUT_FEE_MINOR,
                     fee_account_id=fee_account.account_id)
    body = b'{"seq": "1", "type": "account.frozen", "resource_id": "42"}'
    stamp = 1_800_000_000
    signed = sign("whsec_test", stamp, body)
    vector = {"secret": "whsec_test", "t": stamp, "body": body.decode(), "v1": signed,
              "header": f"t={stamp},v1={signed}"}
    env = {**os.environ, "CLEARING_ADDR": f"127.0.0.1:{running.port}",
           "CLEARING_WEBHOOK_VECTOR": json.dumps(vector),
           "CLEARING_KEY": platform.key, "CLEARING_APPROVER_KEY": approver,
           "CLEARING_ADMIN_KEY": admin_keys[0], "CLEARING_ADMIN_CHECKER_KEY": admin_keys[1],
           "CLEARING_PAYOUT_FEE_MINOR": str(PAYOUT_FEE_MINOR), "NO_COLOR": "1"}
    proc = await asyncio.create_subprocess_exec(
        node, "--test", "--test-reporter=spec", "--test-concurrency=4", *TEST_FILES, cwd=NODE_DIR, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        pytest.fail(f"node --test ran over {NODE_TIMEOUT_S} s:\n{out.decode()}")
    text = out.decode()
    assert proc.returncode == 0, f"node --test failed ({proc.returncode}):\n{text}"
    assert "ℹ fail 0" in text, text
    print(text)


# The Node client over mutual TLS against the core (issue 15: the clients connect over TLS):
# the development CA of `make run` made for this platform, a server requiring client
# certificates; the platform's key on its certificate is served, another platform's refused.
NODE_TLS_SCRIPT = """
import { ClearingClient, ClearingRpcError } from "./src/index.js";
const tls = { ca: process.env.TLS_CA, cert: process.env.TLS_CERT, key: process.env.TLS_KEY };
const ok = new ClearingClient(process.env.TLS_ADDR, process.env.KEY, { tls, attemptsMax: 1 });
const page = await ok.listAccounts();
console.log("accounts", page.accounts.length);
ok.close();
const other = new ClearingClient(process.env.TLS_ADDR, process.env.OTHER_KEY,
                                 { tls, attemptsMax: 1 });
try {
  await other.listAccounts();
  console.log("other: served");
} catch (e) {
  console.log("other:", e instanceof ClearingRpcError ? `${e.codeName} ${e.reason}` : String(e));
}
other.close();
"""


async def test_node_client_over_mutual_tls(database_url, redis_url, redis_prefix, platform,
                                           client, tmp_path):
    from clearing import server
    from clearing.config import TlsSettings
    from clearing.tls import ensure_dev_pki
    from tests.conftest import server_settings
    from tests.integration.test_tls import new_platform

    node = shutil.which("node")
    assert node, "node is not installed"
    await client.open("tls-seen")
    pki, _ = ensure_dev_pki(tmp_path / "tls", platform=platform.name)
    srv = await server.start(server_settings(
        database_url, redis_url, redis_prefix,
        tls=TlsSettings(cert=str(pki.server_cert), key=str(pki.server_key),
                        client_ca=str(pki.ca))), migrate=False)
    try:
        env = {**os.environ, "TLS_ADDR": f"127.0.0.1:{srv.port}", "TLS_CA": str(pki.ca),
               "TLS_CERT": str(pki.client_cert), "TLS_KEY": str(pki.client_key),
               "KEY": platform.key, "OTHER_KEY": (await new_platform(database_url))[1]}
        proc = await asyncio.create_subprocess_exec(
            node, "--input-type=module", "-e", NODE_TLS_SCRIPT, cwd=NODE_DIR, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), NODE_TIMEOUT_S)
    finally:
        await srv.stop()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "accounts 1" in text, text
    assert "other: PERMISSION_DENIED CLIENT_CERTIFICATE_PLATFORM_MISMATCH" in text, text
