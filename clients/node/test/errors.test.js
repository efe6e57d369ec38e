// Typed errors (the ErrorInfo reason, BadRequest field violations), deadlines, and retries
// of retryable failures with the same request id.

import assert from "node:assert/strict";
import net from "node:net";
import { after, before, test } from "node:test";

import {
  AccountKind, ClearingClient, ClearingRpcError, Code, ErrorReason, FieldViolation,
  RETRYABLE_CODES, newRequestId,
} from "../src/index.js";
import { ADDR, ADMIN_KEY, KEY, connect, ref } from "./support.js";

let c;
before(() => { c = connect(); });
after(() => c.close());

test("INVALID_ARGUMENT names every offending field (BadRequest)", async () => {
  const err = await c.transfer(1, 1, -5, "cny").then(() => null, (e) => e);
  assert.ok(err instanceof ClearingRpcError, `${err}`);
  assert.equal(err.code, Code.InvalidArgument);
  assert.equal(err.codeName, "INVALID_ARGUMENT");
  assert.equal(err.reason, ErrorReason[ErrorReason.INVALID_ARGUMENT]);
  for (const field of ["credit_account_id", "amount_minor", "currency_code"]) {
    assert.ok(err.fields.includes(field), `${field} in ${err.fields}`);
  }
  assert.deepEqual(err.violations.map((v) => v.field), err.fields);
  assert.ok(err.violations.every((v) => v instanceof FieldViolation && v.description));
  assert.match(err.message, /^INVALID_ARGUMENT INVALID_ARGUMENT: /);
});

test("a refusal carries its ErrorInfo reason: INSUFFICIENT_FUNDS", async () => {
  const poor = await c.createAccount(ref("POOR"), { kind: AccountKind.MERCHANT });
  const other = await c.createAccount(ref("OTHER"), { kind: AccountKind.MERCHANT });
  const err = await c.transfer(poor.accountId, other.accountId, 100, "CNY")
    .then(() => null, (e) => e);
  assert.ok(err instanceof ClearingRpcError, `${err}`);
  assert.equal(err.code, Code.FailedPrecondition);
  assert.equal(err.reason, "INSUFFICIENT_FUNDS");
  assert.deepEqual(err.fields, []);
});

test("an unknown key is UNAUTHENTICATED, API_KEY_INVALID, and not retried", async () => {
  const stranger = connect("not-a-key");
  try {
    const err = await stranger.listAccounts().then(() => null, (e) => e);
    assert.equal(err.code, Code.Unauthenticated);
    assert.equal(err.reason, ErrorReason[ErrorReason.API_KEY_INVALID]);
    assert.ok(!RETRYABLE_CODES.has(err.code));
  } finally {
    stranger.close();
  }
});

test("a deadline: DEADLINE_EXCEEDED once the attempts are spent", async () => {
  const hurried = connect(KEY, { timeoutMs: 1, attemptsMax: 2, backoffMs: 1 });
  try {
    const err = await hurried.verify().then(() => null, (e) => e);
    assert.ok(err instanceof ClearingRpcError, `${err}`);
    assert.equal(err.code, Code.DeadlineExceeded);
  } finally {
    hurried.close();
  }
});

test("nothing listening: UNAVAILABLE after attemptsMax attempts", async () => {
  const port = await freePort();
  const lost = new ClearingClient(`127.0.0.1:${port}`, KEY, { attemptsMax: 3, backoffMs: 5 });
  try {
    const started = Date.now();
    const err = await lost.listAccounts().then(() => null, (e) => e);
    assert.equal(err.code, Code.Unavailable);
    assert.ok(Date.now() - started < 5_000);
  } finally {
    lost.close();
  }
});

test("a reply lost on the way: the retry with the same request id is answered by the first"
  + " transfer (one transfer, money moved once)", async () => {
  const src = await c.createAccount(ref("RETRY_SRC"), { kind: AccountKind.CUSTODIAL });
  const dst = await c.createAccount(ref("RETRY_DST"), { kind: AccountKind.MERCHANT });
  const proxy = await lossyProxy(ADDR);
  const retrying = new ClearingClient(`127.0.0.1:${proxy.port}`, KEY, {
    attemptsMax: 5, backoffMs: 20, timeoutMs: 10_000,
  });
  try {
    const requestId = newRequestId();
    const t = await retrying.transfer(src.accountId, dst.accountId, 250, "CNY", { requestId });
    assert.equal(proxy.connections(), 2, "the first connection lost the reply; one retry");
    assert.equal(t.requestId, requestId);
    assert.equal((await c.balance(dst.accountId)).postedMinor, 250n);
    const entries = await c.listEntries(dst.accountId);
    assert.deepEqual(entries.entries.map((e) => e.transferId), [t.transferId]);
  } finally {
    retrying.close();
    proxy.close();
  }
});

test("an admin write's reply lost: the retry with the same request id makes one platform and"
  + " one key (the key's secret, shown once, was in the lost reply)", async () => {
  const admin = connect(ADMIN_KEY);
  const retrying = [];
  try {
    const calls = async (call) => {
      const proxy = await lossyProxy(ADDR);
      const client = new ClearingClient(`127.0.0.1:${proxy.port}`, ADMIN_KEY, {
        attemptsMax: 5, backoffMs: 20, timeoutMs: 10_000,
      });
      retrying.push(client, proxy);
      const out = await call(client);
      assert.equal(proxy.connections(), 2, "the first connection lost the reply; one retry");
      return out;
    };
    const name = ref("node-lost");
    const p = await calls((client) => client.createPlatform(name));
    assert.deepEqual(await admin.getPlatform(0n, { name }), p);
    const made = await calls((client) => client.createApiKey(p.platformId, ["gateway"]));
    assert.deepEqual([made.key, made.keyShownBefore], ["", true]);
    const keys = (await admin.listApiKeys(p.platformId)).apiKeys;
    assert.deepEqual(keys.map((k) => k.keyId), [made.apiKey.keyId]);
  } finally {
    admin.close();
    for (const x of retrying) x.close();
  }
});

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A TCP proxy to `target` whose first connection delivers the client's bytes to the server
 * but none of the server's back, and is cut LOSE_AFTER_MS after the client first wrote (the
 * server has answered by then); later connections are passed through. */
async function lossyProxy(target, loseAfterMs = 700) {
  const [host, port] = [target.slice(0, target.lastIndexOf(":")),
    Number(target.slice(target.lastIndexOf(":") + 1))];
  let count = 0;
  const sockets = new Set();
  const server = net.createServer((client) => {
    count += 1;
    const first = count === 1;
    const upstream = net.connect(port, host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => { sockets.delete(s); client.destroy(); upstream.destroy(); });
    }
    client.pipe(upstream);
    if (!first) {
      upstream.pipe(client);
      return;
    }
    upstream.on("data", () => {}); // read and drop the server's bytes
    client.once("data", () => {
      setTimeout(() => { client.destroy(); upstream.destroy(); }, loseAfterMs);
    });
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: server.address().port,
    connections: () => count,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
