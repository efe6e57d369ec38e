// The client's operations against the real server, in the order a platform meets them:
// accounts, a transfer, a rule set published (maker) and activated (approver), a split and
// its replay, a payout.

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import {
  AccountKind, ClearingRpcError, Code, ErrorReason, newRequestId, payout, ruleSet, split,
} from "../src/index.js";
import { APPROVER_KEY, PAYOUT_FEE_MINOR, connect, ref } from "./support.js";

const MERCHANT = ref("M_10086");
// The seed's ledger walk-through: 4.00 to the platform's functional account, the rest to the
// merchant (tests/unit/rules/test_examples.py LEDGER_WALK).
const RULE_SET = {
  name: ref("default"), currencyCode: "CNY", partyRoles: ["merchant"],
  rules: [{
    ruleName: "service-fee-then-merchant", priority: 1,
    fees: [{ label: "service_fee", fixedMinor: 400n, accountRef: "PLAT_FUNC" }],
    shares: [{
      label: "merchant", type: ruleSet.ShareType.REMAINDER,
      receiver: { target: { case: "partyRole", value: "merchant" } },
    }],
  }],
};

describe("a platform's day", () => {
  let c;
  let approver;
  const ids = {};

  before(() => {
    c = connect();
    approver = connect(APPROVER_KEY);
  });
  after(() => {
    c.close();
    approver.close();
  });

  test("accounts: create, get by id and by reference, list", async () => {
    const custodial = await c.createAccount(ref("CUSTODIAL"), { kind: AccountKind.CUSTODIAL });
    const functional = await c.createAccount("PLAT_FUNC", { kind: AccountKind.FUNCTIONAL });
    const merchant = await c.createAccount(MERCHANT, {
      kind: AccountKind.MERCHANT, displayName: "Merchant 10086",
    });
    Object.assign(ids, {
      custodial: custodial.accountId, functional: functional.accountId,
      merchant: merchant.accountId,
    });
    assert.equal(typeof merchant.accountId, "bigint");
    assert.equal(merchant.currencyCode, "CNY");
    assert.equal(merchant.kind, AccountKind.MERCHANT);
    assert.equal((await c.getAccount(merchant.accountId)).externalRef, MERCHANT);
    assert.equal((await c.getAccount(0n, { externalRef: MERCHANT })).accountId,
      merchant.accountId);
    const seen = [];
    let pageToken = "";
    do {
      const page = await c.listAccounts({ pageSize: 2, pageToken });
      assert.ok(page.accounts.length <= 2);
      seen.push(...page.accounts.map((a) => a.accountId));
      pageToken = page.nextPageToken;
    } while (pageToken);
    for (const id of Object.values(ids)) assert.ok(seen.includes(id), `account ${id} listed`);
  });

  test("a transfer, its replay (same request id: one transfer) and the balances", async () => {
    const requestId = newRequestId();
    const t = await c.transfer(ids.custodial, ids.merchant, 1470, "CNY", {
      requestId, memo: "node",
    });
    assert.equal(t.amountMinor, 1470n);
    const again = await c.transfer(ids.custodial, ids.merchant, 1470n, "CNY", {
      requestId, memo: "node",
    });
    assert.equal(again.transferId, t.transferId);
    assert.equal((await c.balance(ids.merchant)).postedMinor, 1470n);
    assert.equal((await c.balance(ids.custodial)).postedMinor, -1470n);
    const entries = await c.listEntries(ids.merchant);
    assert.deepEqual(entries.entries.map((e) => e.transferId), [t.transferId]);
    // back, so that the split below starts from zero
    await c.transfer(ids.merchant, ids.custodial, 1470, "CNY");
  });

  test("a rule set: published by the maker, activated by the approver only", async () => {
    const checked = await c.publishRuleSet(RULE_SET, { validateOnly: true });
    assert.equal(checked.version, 0n);
    const published = await c.publishRuleSet(RULE_SET);
    assert.equal(published.name, RULE_SET.name);
    assert.ok(published.version >= 1n);
    await assert.rejects(c.activateRuleSet(published.name, published.version),
      (err) => err instanceof ClearingRpcError && err.code === Code.PermissionDenied
        && err.reason === ErrorReason[ErrorReason.ROLE_REQUIRED]);
    const activated = await approver.activateRuleSet(published.name, published.version, {
      comment: "node client test",
    });
    assert.equal(activated.ruleSet.version, published.version);
    assert.equal(activated.ruleSet.status, ruleSet.RuleSetStatus.ACTIVE);
    assert.equal((await c.getRuleSet(RULE_SET.name)).version, published.version);
    const listed = await c.listRuleSets({ ruleSetName: RULE_SET.name });
    assert.deepEqual(listed.ruleSets.map((r) => r.version), [published.version]);
  });

  test("a split and its replay: the same request id answers the same split", async () => {
    const order = {
      orderId: ref("ORD"), amountMinor: 100_000n, currencyCode: "CNY", channel: "WECHAT_PAY",
      channelFeeMinor: 600n, ruleSetName: RULE_SET.name, parties: { merchant: MERCHANT },
    };
    const preview = await c.previewSplit(order);
    assert.equal(preview.netAmountMinor, 99_400n);
    const requestId = newRequestId();
    const first = await c.splitOrder(order, { requestId });
    const replay = await c.splitOrder(order, { requestId });
    assert.equal(replay.splitId, first.splitId);
    assert.deepEqual(replay.legs.map((l) => [l.externalRef, l.amountMinor]),
      first.legs.map((l) => [l.externalRef, l.amountMinor]));
    assert.deepEqual(first.legs.map((l) => [l.externalRef, l.amountMinor]),
      [["PLAT_FUNC", 400n], [MERCHANT, 99_000n]]);
    assert.equal((await c.getSplit(order.orderId)).splitId, first.splitId);
    const found = await c.listSplits({ accountId: ids.merchant, amountMinMinor: 100_000n,
      amountMaxMinor: 100_000n, state: split.SplitStatus.POSTED, currencyCode: "CNY",
      paidTimeEnd: new Date(Date.now() + 60_000) });
    assert.ok(found.splits.some((s) => s.splitId === first.splitId));
    const none = await c.listSplits({ paidTimeStart: new Date(Date.now() + 60_000) });
    assert.deepEqual(none.splits, []);
    assert.equal((await c.balance(ids.merchant)).postedMinor, 99_000n);
    assert.equal((await c.balance(ids.functional)).postedMinor, 400n);
  });

  test("a payout: bank account bound, paid out with the fee, bank transfers succeeded",
    async () => {
      const bank = await c.bindBankAccount(ids.merchant, {
        bankCode: "ICBC", bankName: "Industrial and Commercial Bank of China",
        accountNumber: "6225880212341234", holderName: "Merchant 10086 Co.",
        accountType: payout.BankAccountType.CORPORATE, kycVerified: true,
      });
      assert.ok(bank.bankAccountId > 0n);
      const requested = await c.requestPayout(ids.merchant, 99_000, "CNY", { memo: "node" });
      assert.equal(requested.amountMinor, 99_000n);
      assert.equal(requested.feeMinor, PAYOUT_FEE_MINOR);
      assert.equal(requested.netAmountMinor, 99_000n - PAYOUT_FEE_MINOR);
      let done = requested;
      for (let i = 0; i < 400 && done.state !== payout.PayoutState.SUCCEEDED; i++) {
        await sleep(50);
        done = await c.getPayout(requested.payoutId);
      }
      assert.equal(done.state, payout.PayoutState.SUCCEEDED, `payout stuck in ${done.state}`);
      assert.equal(done.paidMinor, 99_000n - PAYOUT_FEE_MINOR);
      assert.deepEqual(done.transfers.map((t) => [t.amountMinor, t.state]),
        [[99_000n - PAYOUT_FEE_MINOR, payout.BankTransferState.SUCCEEDED]]);
      const listed = await c.listPayouts({ accountId: ids.merchant });
      assert.deepEqual(listed.payouts.map((p) => p.payoutId), [requested.payoutId]);
      assert.equal((await c.balance(ids.merchant)).postedMinor, 0n);
      const report = await c.verify();
      assert.ok(report.ok && report.chainOk);
    });

  test("another split: read by its id, refunded; release and cancel reach their calls",
    async () => {
      const order = {
        orderId: ref("ORD"), amountMinor: 10_000n, currencyCode: "CNY", channel: "ALIPAY",
        ruleSetName: RULE_SET.name, parties: { merchant: MERCHANT },
      };
      const done = await c.splitOrder(order);
      assert.equal((await c.getSplit("", { splitId: done.splitId })).orderId, order.orderId);
      const refunded = await c.refundSplit(order.orderId, 1_000, "CNY", {
        refundRef: "R1", reason: "returned",
      });
      assert.equal(refunded.action.amountMinor, 1_000n);
      // nothing of this split is held: refused, with a reason
      for (const call of [
        () => c.releaseSplit(order.orderId, { fractionBps: 10_000 }),
        () => c.releaseSplit(order.orderId, { eventName: "DELIVERED" }),
        () => c.cancelSplit(order.orderId, { reason: "test" }),
      ]) {
        await assert.rejects(call(), (err) => err instanceof ClearingRpcError
          && err.code === Code.FailedPrecondition && err.reason !== "");
      }
    });
});
