// Types of @clearing/client (src/index.js, src/client.js, src/errors.js).

import type { Client, Code } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type * as ledger from "../gen/clearing/v1/ledger_pb.js";
import type * as split from "../gen/clearing/v1/split_pb.js";
import type * as ruleSet from "../gen/clearing/v1/rule_set_pb.js";
import type * as payout from "../gen/clearing/v1/payout_pb.js";
import type * as recon from "../gen/clearing/v1/reconciliation_pb.js";
import type * as report from "../gen/clearing/v1/report_pb.js";
import type * as risk from "../gen/clearing/v1/risk_pb.js";
import type * as event from "../gen/clearing/v1/event_pb.js";
import type * as audit from "../gen/clearing/v1/audit_pb.js";
import type * as platform from "../gen/clearing/v1/platform_pb.js";

export { Code } from "@connectrpc/connect";
export { create } from "@bufbuild/protobuf";
export { AccountKind, OwnerType, TransferMode } from "../gen/clearing/v1/ledger_pb.js";
export { ErrorReason } from "../gen/clearing/v1/errors_pb.js";
export * as ledger from "../gen/clearing/v1/ledger_pb.js";
export * as split from "../gen/clearing/v1/split_pb.js";
export * as ruleSet from "../gen/clearing/v1/rule_set_pb.js";
export * as payout from "../gen/clearing/v1/payout_pb.js";
export * as recon from "../gen/clearing/v1/reconciliation_pb.js";
export * as report from "../gen/clearing/v1/report_pb.js";
export * as risk from "../gen/clearing/v1/risk_pb.js";
export * as errors from "../gen/clearing/v1/errors_pb.js";
export * as event from "../gen/clearing/v1/event_pb.js";
export * as audit from "../gen/clearing/v1/audit_pb.js";
export * as platform from "../gen/clearing/v1/platform_pb.js";

/** An int64 value: a bigint, or a safe integer number. Results carry bigints. */
export type Int64 = bigint | number;

export declare const DOMAIN: "clearing.v1";
export declare const STATEMENT_CHUNK_BYTES: number;
/** UNAVAILABLE, RESOURCE_EXHAUSTED, ABORTED, DEADLINE_EXCEEDED: retried with the same request. */
export declare const RETRYABLE_CODES: ReadonlySet<Code>;
/** The retryable codes and CANCELLED: a broken WatchEvents stream is opened again. */
export declare const WATCH_RESUMABLE_CODES: ReadonlySet<Code>;

export declare const SIGNATURE_HEADER: "Clearing-Signature";
export declare const TOLERANCE_S: number;
/** The delivery is not signed by the given secret(s), or is too old. */
export declare class WebhookSignatureError extends Error {}
/** The v1 signature (hex) of `body` at `timestamp` under `secret`. */
export declare function sign(secret: string, timestamp: number, body: string | Uint8Array): string;
/** The delivery's timestamp if signed by one of `secrets` and recent; else throws. */
export declare function verifySignature(body: string | Uint8Array, header: string,
  secrets: string | string[], options?: { toleranceS?: number; nowS?: number }): number;
/** verifySignature, then the event parsed from the JSON body. */
export declare function verifyWebhook(body: string | Uint8Array, header: string,
  secrets: string | string[], options?: { toleranceS?: number; nowS?: number }): unknown;
export declare function newRequestId(): string;
/** The gRPC name of a status code ("INVALID_ARGUMENT" for 3). */
export declare function codeName(code: Code): string;

/** One field of a refused request (a BadRequest detail): its path and what is wrong. */
export declare class FieldViolation {
  constructor(field: string, description: string);
  readonly field: string;
  readonly description: string;
}

/** A failed call, with the server's ErrorInfo reason and BadRequest field paths. */
export declare class ClearingRpcError extends Error {
  constructor(code: Code, message: string, options?: {
    reason?: string; metadata?: Record<string, string>; violations?: FieldViolation[];
    cause?: unknown;
  });
  /** The status code (connect's Code: the gRPC code's number). */
  readonly code: Code;
  /** The gRPC name of the code, e.g. "INVALID_ARGUMENT". */
  readonly codeName: string;
  /** The status message as the server sent it. */
  readonly rawMessage: string;
  /** The ErrorInfo reason: the name of an ErrorReason, e.g. "INSUFFICIENT_FUNDS". */
  readonly reason: string;
  readonly metadata: Record<string, string>;
  /** The BadRequest field paths. */
  readonly fields: string[];
  readonly violations: FieldViolation[];
  static fromError(err: unknown): ClearingRpcError;
}

export interface TlsOptions {
  /** PEM text or buffer, or the path of a PEM file: the CA that signed the server's certificate. */
  ca?: string | Uint8Array;
  /** The client's certificate and key (mutual TLS), PEM or paths. */
  cert?: string | Uint8Array;
  key?: string | Uint8Array;
  /** The name checked in the server's certificate (default: the target's host). */
  serverName?: string;
}

export interface ClientOptions {
  /** The deadline of each attempt (default 10 000 ms). */
  timeoutMs?: number;
  /** Attempts of a call failing with a retryable code (default 5). */
  attemptsMax?: number;
  /** The first wait between attempts, doubled up to backoffMaxMs, with jitter (50, 2 000). */
  backoffMs?: number;
  backoffMaxMs?: number;
  /** TLS to the server (https); plaintext when absent. */
  tls?: TlsOptions;
}

interface Writes { requestId?: string }
interface Page { pageSize?: number; pageToken?: string }
type UnaryMethod<I, O> = (request: I, options?: object) => Promise<O>;

export declare class ClearingClient {
  /** target: "host:port" or a URL (http://host:port, https://host:port). */
  constructor(target: string, apiKey: string, options?: ClientOptions);
  readonly baseUrl: string;
  readonly timeoutMs: number;
  readonly attemptsMax: number;
  readonly ledger: Client<typeof ledger.LedgerService>;
  readonly split: Client<typeof split.SplitService>;
  readonly payout: Client<typeof payout.PayoutService>;
  readonly recon: Client<typeof recon.ReconciliationService>;
  readonly report: Client<typeof report.ReportService>;
  readonly risk: Client<typeof risk.RiskService>;
  readonly events: Client<typeof event.EventService>;
  readonly audit: Client<typeof audit.AuditService>;
  /** PlatformService: admin keys only. */
  readonly platform: Client<typeof platform.PlatformService>;
  close(): void;
  /** The platform's events after `cursor`, history then live, resumed after a broken stream
   * from the last event yielded; `signal` ends it. */
  watch(cursor?: Int64, options?: { types?: string[]; reconnectMaxMs?: number;
    signal?: AbortSignal }): AsyncGenerator<event.Event, void, undefined>;
  /** A page of the platform's events after `cursor` (ListEvents). */
  listEvents(cursor?: Int64, options?: { types?: string[]; pageSize?: number }):
    Promise<event.ListEventsResponse>;
  [Symbol.asyncDispose](): Promise<void>;
  /** Call a unary client method (e.g. `client.ledger.transfer`) with retries; throws
   * ClearingRpcError. (A server stream is the connect client's own call.) */
  call<I, O>(method: UnaryMethod<I, O>, request: I, options?: { timeoutMs?: number }): Promise<O>;

  // LedgerService
  createAccount(externalRef: string, options: Writes & {
    kind: ledger.AccountKind; currencyCode?: string; ownerType?: ledger.OwnerType;
    displayName?: string; allowNegative?: boolean;
  }): Promise<ledger.Account>;
  getAccount(accountId?: Int64, options?: { externalRef?: string }): Promise<ledger.Account>;
  listAccounts(options?: Page): Promise<ledger.ListAccountsResponse>;
  freezeAccount(accountId: Int64, options: Writes & { reason: string; amountMinor?: Int64 }):
    Promise<ledger.Account>;
  unfreezeAccount(accountId: Int64, options: Writes & { reason: string; amountMinor?: Int64 }):
    Promise<ledger.Account>;
  closeAccount(accountId: Int64, options?: Writes): Promise<ledger.Account>;
  transfer(debitAccountId: Int64, creditAccountId: Int64, amountMinor: Int64,
    currencyCode: string, options?: Writes & {
      mode?: ledger.TransferMode; pendingTransferId?: Int64; memo?: string;
    }): Promise<ledger.Transfer>;
  postPending(pendingTransferId: Int64, amountMinor: Int64, options?: Writes):
    Promise<ledger.Transfer>;
  voidPending(pendingTransferId: Int64, options?: Writes): Promise<ledger.Transfer>;
  balance(accountId: Int64): Promise<ledger.Balance>;
  listEntries(accountId: Int64, options?: Page): Promise<ledger.ListEntriesResponse>;
  verify(): Promise<ledger.VerifyLedgerResponse>;

  // SplitService: rule sets
  publishRuleSet(message: MessageInitShape<typeof ruleSet.RuleSetSchema>,
    options?: Writes & { validateOnly?: boolean }): Promise<ruleSet.RuleSet>;
  activateRuleSet(ruleSetName: string, ruleSetVersion: Int64, options?: Writes & {
    contentSha256?: string; expectedActiveVersion?: Int64; comment?: string;
  }): Promise<split.ActivateRuleSetResponse>;
  simulateRuleSet(ruleSetName: string, ruleSetVersion: Int64, options?: {
    days?: number; orderCountMax?: Int64; timeoutMs?: number;
  }): Promise<split.SimulateRuleSetResponse>;
  getRuleSet(ruleSetName: string, ruleSetVersion?: Int64): Promise<ruleSet.RuleSet>;
  listRuleSets(options?: Page & {
    ruleSetName?: string; includeRules?: boolean; status?: ruleSet.RuleSetStatus;
  }): Promise<split.ListRuleSetsResponse>;

  // SplitService: splits
  previewSplit(order: MessageInitShape<typeof split.OrderSchema>, options?: {
    ruleSetVersion?: Int64; counterOverrides?: Record<string, bigint>;
  }): Promise<split.Split>;
  splitOrder(order: MessageInitShape<typeof split.OrderSchema>, options?: Writes):
    Promise<split.Split>;
  getSplit(orderId?: string, options?: { splitId?: Int64 }): Promise<split.Split>;
  listSplits(options?: Page & {
    state?: split.SplitStatus; paidTimeStart?: Date; paidTimeEnd?: Date; accountId?: Int64;
    amountMinMinor?: Int64; amountMaxMinor?: Int64; currencyCode?: string;
  }): Promise<split.ListSplitsResponse>;
  releaseSplit(orderId: string, options?: Writes & {
    eventName?: string; fractionBps?: number; accountIds?: Int64[];
  }): Promise<split.ReleaseSplitResponse>;
  cancelSplit(orderId: string, options: Writes & { reason: string }): Promise<split.Split>;
  refundSplit(orderId: string, amountMinor: Int64, currencyCode: string, options?: Writes & {
    refundRef?: string; reason?: string;
  }): Promise<split.RefundSplitResponse>;

  // PayoutService
  bindBankAccount(accountId: Int64, options: Writes & {
    bankCode: string; bankName: string; accountNumber: string; holderName: string;
    accountType: payout.BankAccountType; branchCode?: string; kycVerified?: boolean;
  }): Promise<payout.BankAccount>;
  requestPayout(accountId: Int64, amountMinor: Int64, currencyCode: string,
    options?: Writes & { memo?: string }): Promise<payout.Payout>;
  getPayout(payoutId: Int64): Promise<payout.Payout>;
  listPayouts(options?: Page & { accountId?: Int64; states?: payout.PayoutState[] }):
    Promise<payout.ListPayoutsResponse>;
  approvePayout(payoutId: Int64, options?: Writes & { reason?: string }): Promise<payout.Payout>;
  rejectPayout(payoutId: Int64, options: Writes & { reason: string }): Promise<payout.Payout>;

  // ReconciliationService
  importStatement(path: string, options: Writes & {
    channel: string; settlementDate: string; statementFormat?: recon.StatementFormat;
    chunkBytes?: number; progress?: (sentBytes: number, sizeBytes: number) => void;
    timeoutMs?: number;
  }): Promise<recon.ImportStatementResponse>;
  getReconciliationRun(runId: Int64): Promise<recon.ReconciliationRun>;
  listReconciliationRuns(options?: Page & { channel?: string; settlementDate?: string }):
    Promise<recon.ListReconciliationRunsResponse>;
  postSettlement(runId: Int64, options?: Writes): Promise<recon.ReconciliationRun>;
  proposeResolution(discrepancyId: Int64, action: recon.ResolutionAction, options: Writes & {
    note: string; amountMinor?: Int64; order?: MessageInitShape<typeof split.OrderSchema>;
  }): Promise<recon.Resolution>;
  approveResolution(resolutionId: Int64, options?: Writes & { note?: string }):
    Promise<recon.Resolution>;
  rejectResolution(resolutionId: Int64, options: Writes & { note: string }):
    Promise<recon.Resolution>;
  getResolution(resolutionId: Int64): Promise<recon.Resolution>;
  listDiscrepancies(options?: Page & {
    runId?: Int64; classes?: recon.ReconciliationClass[]; states?: recon.DiscrepancyState[];
  }): Promise<recon.ListDiscrepanciesResponse>;

  // PlatformService (admin keys only)
  createPlatform(name: string, options?: Writes): Promise<platform.Platform>;
  getPlatform(platformId?: Int64, options?: { name?: string }): Promise<platform.Platform>;
  listPlatforms(options?: Page): Promise<platform.ListPlatformsResponse>;
  createApiKey(platformId: Int64, roles: string[], options?: Writes):
    Promise<platform.CreateApiKeyResponse>;
  listApiKeys(platformId?: Int64, options?: Page & { keyPrefix?: string }):
    Promise<platform.ListApiKeysResponse>;
  revokeApiKey(keyId: Int64): Promise<platform.RevokeApiKeyResponse>;
  getPayoutConfig(platformId: Int64, currencyCode: string):
    Promise<platform.GetPayoutConfigResponse>;
  setPayoutConfig(config: MessageInitShape<typeof platform.PayoutConfigSchema>,
    options?: Writes): Promise<platform.PayoutConfigChange>;
  approvePayoutConfigChange(changeId: Int64, options?: { note?: string }):
    Promise<platform.PayoutConfigChange>;
  rejectPayoutConfigChange(changeId: Int64, options?: { note?: string }):
    Promise<platform.PayoutConfigChange>;
  getBusinessCalendar(startDay: string | Date, endDay: string | Date):
    Promise<platform.CalendarDay[]>;
  setBusinessCalendar(days: Array<{ day: string | Date; kind: platform.CalendarDayKind;
    note?: string }>): Promise<platform.CalendarDay[]>;

  // ReportService: vouchers
  getVoucher(options: {
    voucherId?: Int64; splitId?: Int64; splitActionId?: Int64; payoutId?: Int64;
  }): Promise<report.GetVoucherResponse>;
  verifyVoucher(options: { voucherId?: Int64; pdf?: Uint8Array }):
    Promise<report.VerifyVoucherResponse>;
}
