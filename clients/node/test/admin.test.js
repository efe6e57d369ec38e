// PlatformService through the client, with admin keys: a platform and its keys (a replay of
// the same request id answers the first result, the key not shown again), listed and revoked;
// a fee change refused to its maker, approved by the other admin key; a rejected one; the
// business calendar; a platform's key refused. Errors arrive as ClearingRpcError.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { AccountKind, ClearingRpcError, Code, platform } from "../src/index.js";
import { ADMIN_KEY, CHECKER_KEY, KEY, connect, ref } from "./support.js";

async function refused(promise, code, reason) {
  const err = await promise.then(() => null, (e) => e);
  assert.ok(err instanceof ClearingRpcError, `refused: ${err}`);
  assert.equal(err.code, code, String(err));
  assert.equal(err.reason, reason, String(err));
  return err;
}

describe("the admin API", () => {
  let admin;
  let checker;
  let made;
  let fees;

  before(() => {
    admin = connect(ADMIN_KEY);
    checker = connect(CHECKER_KEY);
  });
  after(() => {
    admin.close();
    checker.close();
  });

  test("a platform made (a retry answers it again), got and listed", async () => {
    const name = ref("node-admin");
    const requestId = `node-p-${name}`;
    made = await admin.createPlatform(name, { requestId });
    assert.equal(made.name, name);
    assert.equal(typeof made.platformId, "bigint");
    assert.deepEqual(await admin.createPlatform(name, { requestId }), made);
    await refused(admin.createPlatform(name), Code.AlreadyExists, "ALREADY_EXISTS");
    assert.deepEqual(await admin.getPlatform(made.platformId), made);
    assert.deepEqual(await admin.getPlatform(0n, { name }), made);
    await admin.createPlatform(`${name}-2`);  // two at least: a page of one has a next
    const page = await admin.listPlatforms({ pageSize: 1 });
    assert.equal(page.platforms.length, 1);
    assert.ok(page.nextPageToken);
  });

  test("keys: made once (the replay shows no key), listed, revoked", async () => {
    const requestId = `node-k-${made.platformId}`;
    const key = await admin.createApiKey(made.platformId, ["gateway", "operator"], { requestId });
    assert.ok(key.key.startsWith("ck_") && !key.keyShownBefore);
    const replay = await admin.createApiKey(made.platformId, ["gateway", "operator"],
      { requestId });
    assert.deepEqual([replay.apiKey.keyId, replay.key, replay.keyShownBefore],
      [key.apiKey.keyId, "", true]);
    const approverKey = await admin.createApiKey(made.platformId, ["approver"]);
    const listed = await admin.listApiKeys(made.platformId);
    assert.deepEqual(listed.apiKeys.map((k) => k.keyId),
      [key.apiKey.keyId, approverKey.apiKey.keyId]);
    assert.deepEqual((await admin.listApiKeys(0n, { keyPrefix: key.apiKey.keyPrefix }))
      .apiKeys.map((k) => k.keyId), [key.apiKey.keyId]);

    const c = connect(key.key);
    try {
      fees = (await c.createAccount("FEES", { kind: AccountKind.PLATFORM })).accountId;
    } finally {
      c.close();
    }
    const revoked = await admin.revokeApiKey(approverKey.apiKey.keyId);
    assert.ok(revoked.apiKey.revokeTime && !revoked.revokedBefore);
    assert.ok((await admin.revokeApiKey(approverKey.apiKey.keyId)).revokedBefore);
    const err = await refused(admin.createApiKey(made.platformId, ["root"]),
      Code.InvalidArgument, "INVALID_ARGUMENT");
    assert.deepEqual(err.fields, ["roles[0]"]);
  });

  test("a fee change: pending, refused to its maker, approved by the other admin key",
    async () => {
      const current = await admin.getPayoutConfig(made.platformId, "CNY");
      assert.equal(current.pendingChange, undefined);
      assert.equal(current.config.feeFixedMinor, 0n);
      const wanted = { ...current.config, feeFixedMinor: 300n, feeAccountId: fees };
      const requestId = `node-c-${made.platformId}`;
      const change = await admin.setPayoutConfig(wanted, { requestId });
      assert.equal(change.state, platform.PayoutConfigChangeState.PENDING);
      assert.equal((await admin.setPayoutConfig(wanted, { requestId })).changeId,
        change.changeId);
      await refused(admin.approvePayoutConfigChange(change.changeId), Code.PermissionDenied,
        "MAKER_CHECKER");
      const approved = await checker.approvePayoutConfigChange(change.changeId, { note: "ok" });
      assert.equal(approved.state, platform.PayoutConfigChangeState.APPROVED);
      assert.equal((await admin.getPayoutConfig(made.platformId, "CNY")).config.feeFixedMinor,
        300n);
      const again = await refused(checker.approvePayoutConfigChange(change.changeId),
        Code.FailedPrecondition, "PAYOUT_CONFIG_CHANGE_NOT_PENDING");
      assert.equal(again.metadata.state, "APPROVED");

      const second = await admin.setPayoutConfig({ ...wanted, feeFixedMinor: 500n });
      const rejected = await admin.rejectPayoutConfigChange(second.changeId, { note: "no" });
      assert.equal(rejected.state, platform.PayoutConfigChangeState.REJECTED);
      assert.equal((await admin.getPayoutConfig(made.platformId, "CNY")).config.feeFixedMinor,
        300n);
    });

  test("the business calendar set, read and set back", async () => {
    const { HOLIDAY, WORKDAY, UNSET } = platform.CalendarDayKind;
    try {
      const done = await admin.setBusinessCalendar([
        { day: new Date(Date.UTC(2096, 4, 1)), kind: HOLIDAY, note: "labour day" },
        { day: "2096-05-05", kind: WORKDAY }]);
      assert.deepEqual(done.map((d) => [d.day, d.kind, d.note]),
        [["2096-05-01", HOLIDAY, "labour day"], ["2096-05-05", WORKDAY, ""]]);
      const got = await admin.getBusinessCalendar("2096-04-30", "2096-05-31");
      assert.deepEqual(got.map((d) => d.day), ["2096-05-01", "2096-05-05"]);
      const err = await refused(admin.getBusinessCalendar("2096-02-30", "2096-05-31"),
        Code.InvalidArgument, "INVALID_ARGUMENT");
      assert.deepEqual(err.fields, ["start_day"]);
    } finally {
      await admin.setBusinessCalendar([{ day: "2096-05-01", kind: UNSET },
        { day: "2096-05-05", kind: UNSET }]);
    }
    assert.deepEqual(await admin.getBusinessCalendar("2096-04-30", "2096-05-31"), []);
  });

  test("a platform's key gets no admin call", async () => {
    const c = connect(KEY);
    try {
      await refused(c.listPlatforms(), Code.PermissionDenied, "ROLE_REQUIRED");
    } finally {
      c.close();
    }
  });
});
