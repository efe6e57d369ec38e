// Events (EventService) through the client: watch() replays the platform's history then
// follows live, resumes after its stream breaks without skipping or repeating an event, and
// listEvents pages; webhook signatures verified as the server and the Python client make
// them (a vector signed by clearing_client.webhooks, given by the pytest that runs these).

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import {
  AccountKind, sign, verifySignature, verifyWebhook, WebhookSignatureError,
} from "../src/index.js";
import { connect, ref } from "./support.js";

/** The first `n` events of `gen` matching `keep`, or fail after `ms`. */
async function take(gen, n, keep, ms = 20_000) {
  const out = [];
  const timer = setTimeout(() => gen.return(undefined), ms);
  try {
    for await (const e of gen) {
      if (keep(e)) out.push(e);
      if (out.length >= n) break;
    }
  } finally {
    clearTimeout(timer);
  }
  assert.equal(out.length, n, `only ${out.length} of ${n} events came within ${ms} ms`);
  return out;
}

describe("events", () => {
  test("watch: history, then live, in order; listEvents pages the same feed", async (t) => {
    const c = connect();
    t.after(() => c.close());
    const account = await c.createAccount(ref("watched"), { kind: AccountKind.MERCHANT });
    const id = String(account.accountId);
    await c.freezeAccount(account.accountId, { reason: "first" });
    const mine = (e) => e.resourceId === id;
    const history = await take(c.watch(0n, { types: ["account.frozen"] }), 1, mine);
    assert.equal(history[0].type, "account.frozen");
    assert.equal(history[0].resource.case, "account");
    assert.equal(history[0].resource.value.accountId, account.accountId);
    // live: from the frozen event on, the unfreeze arrives next on the stream
    const live = c.watch(history[0].seq, { types: ["account.unfrozen", "account.frozen"] });
    const next = take(live, 1, mine);
    await c.unfreezeAccount(account.accountId, { reason: "second" });
    const [unfrozen] = await next;
    assert.equal(unfrozen.type, "account.unfrozen");
    assert.ok(unfrozen.seq > history[0].seq);
    const page = await c.listEvents(history[0].seq - 1n, { pageSize: 1 });
    assert.equal(page.events.length, 1);
    assert.equal(page.events[0].seq, history[0].seq);
    assert.equal(page.nextCursor, history[0].seq);
  });

  test("watch stops when its signal aborts", async (t) => {
    const c = connect();
    t.after(() => c.close());
    const stop = new AbortController();
    const gen = c.watch(0n, { signal: stop.signal, types: ["risk_event.opened"] });
    const done = gen.next();
    setTimeout(() => stop.abort(), 200);
    assert.deepEqual(await done, { value: undefined, done: true });
  });
});

describe("webhook signatures", () => {
  const vector = JSON.parse(process.env.CLEARING_WEBHOOK_VECTOR ?? "null");

  test("a delivery signed by the Python client's sign() verifies, byte for byte", () => {
    assert.ok(vector, "CLEARING_WEBHOOK_VECTOR is not set (run through pytest)");
    assert.equal(sign(vector.secret, vector.t, vector.body), vector.v1);
    const event = verifyWebhook(vector.body, vector.header, vector.secret,
      { nowS: vector.t + 10 });
    assert.deepEqual(event, JSON.parse(vector.body));
  });

  test("a rotation: either secret verifies; a wrong secret, an edited body, an old "
    + "timestamp and a malformed header are refused", () => {
    const body = JSON.stringify({ seq: "7", type: "split.committed" });
    const t = 1_800_000_000;
    const header = `t=${t},v1=${sign("new", t, body)},v1=${sign("old", t, body)}`;
    assert.equal(verifySignature(body, header, "old", { nowS: t }), t);
    assert.equal(verifySignature(body, header, ["x", "new"], { nowS: t }), t);
    assert.throws(() => verifySignature(body, header, "wrong", { nowS: t }),
      WebhookSignatureError);
    assert.throws(() => verifySignature(body.replace("7", "8"), header, "new", { nowS: t }),
      WebhookSignatureError);
    assert.throws(() => verifySignature(body, header, "new", { nowS: t + 301 }),
      /outside the tolerance/);
    assert.equal(verifySignature(body, header, "new", { nowS: t + 301, toleranceS: 0 }), t);
    for (const bad of ["", "t=abc,v1=00", `t=${t}`, "v1=00"]) {
      assert.throws(() => verifySignature(body, bad, "new", { nowS: t }), /malformed/);
    }
  });
});
