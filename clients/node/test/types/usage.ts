// Compiled (never run) by test/types.test.js: the .d.ts files type what a TypeScript caller
// writes, and refuse what it must not.
import {
  AccountKind, ClearingClient, ClearingRpcError, Code, ErrorReason, FieldViolation, create,
  payout, platform, ruleSet, split,
} from "@clearing/client";

export async function usage(): Promise<bigint[]> {
  const c = new ClearingClient("127.0.0.1:50051", "key", {
    timeoutMs: 5_000, attemptsMax: 3, tls: { ca: "ca.pem", cert: "client.pem", key: "client.key" },
  });
  const account = await c.createAccount("M_1", { kind: AccountKind.MERCHANT });
  const accountId: bigint = account.accountId;
  const t = await c.transfer(accountId, 2, 3n, "CNY", { memo: "m", requestId: "r" });
  const order = create(split.OrderSchema, { orderId: "o", amountMinor: 1n });
  const s = await c.splitOrder({ ...order, parties: { merchant: "M_1" } });
  const page: split.ListSplitsResponse = await c.listSplits({
    state: split.SplitStatus.HOLDING, paidTimeStart: new Date(), accountId, amountMinMinor: 1,
    pageSize: 10, pageToken: "",
  });
  const next: string = page.nextPageToken;
  const published = await c.publishRuleSet({
    name: "x", rules: [{ shares: [{ type: ruleSet.ShareType.REMAINDER }] }],
  });
  const activated = await c.activateRuleSet(published.name, published.version);
  const p = await c.requestPayout(accountId, 100, "CNY");
  const state: payout.PayoutState = p.state;
  const balance = await c.call(c.ledger.getBalance, { accountId }, { timeoutMs: 100 });
  try {
    await c.verify();
  } catch (err) {
    if (err instanceof ClearingRpcError && err.code === Code.InvalidArgument) {
      const v: FieldViolation[] = err.violations;
      const fields: string[] = err.fields;
      console.log(v, fields, err.reason === ErrorReason[ErrorReason.INVALID_ARGUMENT]);
    }
  }
  const made = await c.createApiKey(1n, ["gateway"], { requestId: "k" });
  const secret: string = made.key;
  const change = await c.setPayoutConfig({ platformId: 1n, currencyCode: "CNY", feeBps: 3 });
  const days: platform.CalendarDay[] = await c.setBusinessCalendar([
    { day: new Date(), kind: platform.CalendarDayKind.HOLIDAY, note: "n" }]);
  console.log(secret, change.state, days);
  // @ts-expect-error a platform id is an integer
  await c.getPayoutConfig("1", "CNY");
  // @ts-expect-error an account's kind is required
  await c.createAccount("M_2", {});
  // @ts-expect-error amounts are integers (bigint or number), not text
  await c.transfer(1, 2, "3", "CNY");
  c.close();
  return [t.transferId, s.splitId, activated.previousActiveVersion, balance.balance?.postedMinor
    ?? 0n, BigInt(state)];
}
