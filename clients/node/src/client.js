// The client: connect clients of the services over the gRPC protocol (HTTP/2), bearer auth,
// deadlines, retries with the same request, typed errors. The methods mirror the Python
// client's (clients/python/clearing_client/client.py) in camelCase; every other call is
// `client.call(client.<service>.<method>, request)`.

import { createReadStream, readFileSync, statSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";

import * as audit from "../gen/clearing/v1/audit_pb.js";
import * as event from "../gen/clearing/v1/event_pb.js";
import * as ledger from "../gen/clearing/v1/ledger_pb.js";
import * as payout from "../gen/clearing/v1/payout_pb.js";
import * as platform from "../gen/clearing/v1/platform_pb.js";
import * as recon from "../gen/clearing/v1/reconciliation_pb.js";
import * as report from "../gen/clearing/v1/report_pb.js";
import * as risk from "../gen/clearing/v1/risk_pb.js";
import * as split from "../gen/clearing/v1/split_pb.js";
import { adminMethods } from "./admin.js";
import { ClearingRpcError, RETRYABLE_CODES, WATCH_RESUMABLE_CODES } from "./errors.js";
import { int64, newRequestId } from "./values.js";

/** The chunk of a statement file per ImportStatement message (the server takes up to 1 MiB). */
export const STATEMENT_CHUNK_BYTES = 256 * 1024;

export { newRequestId };

function readPem(value) {
  if (value === undefined || value === null) return undefined;
  return value instanceof Uint8Array || value.includes("-----BEGIN") ? value : readFileSync(value);
}

/** The http2 options of a TLS connection: `ca`, `cert` and `key` are PEM text or buffers,
 * or the paths of PEM files; `serverName` overrides the name checked in the certificate. */
function tlsOptions(tls) {
  if (!tls) return {};
  const out = {};
  for (const k of ["ca", "cert", "key"]) {
    const pem = readPem(tls[k]);
    if (pem !== undefined) out[k] = pem;
  }
  if (tls.serverName) out.servername = tls.serverName;
  return out;
}

export class ClearingClient {
  /**
   * An asynchronous client of one platform (its API key).
   * @param {string} target "host:port" (or a URL: http://host:port, https://host:port)
   * @param {string} apiKey the platform's API key, sent as `authorization: Bearer <key>`
   */
  constructor(target, apiKey, {
    timeoutMs = 10_000, attemptsMax = 5, backoffMs = 50, backoffMaxMs = 2_000, tls,
  } = {}) {
    const scheme = tls ? "https" : "http";
    this.baseUrl = /^https?:\/\//.test(target) ? target : `${scheme}://${target}`;
    this.headers = { authorization: `Bearer ${apiKey}` };
    this.timeoutMs = timeoutMs;
    this.attemptsMax = attemptsMax;
    this.backoffMs = backoffMs;
    this.backoffMaxMs = backoffMaxMs;
    this.sessionManager = new Http2SessionManager(this.baseUrl, {}, tlsOptions(tls));
    this.transport = createGrpcTransport({
      baseUrl: this.baseUrl, sessionManager: this.sessionManager,
    });
    this.ledger = createClient(ledger.LedgerService, this.transport);
    this.split = createClient(split.SplitService, this.transport);
    this.payout = createClient(payout.PayoutService, this.transport);
    this.recon = createClient(recon.ReconciliationService, this.transport);
    this.report = createClient(report.ReportService, this.transport);
    this.risk = createClient(risk.RiskService, this.transport);
    this.events = createClient(event.EventService, this.transport);
    this.audit = createClient(audit.AuditService, this.transport);
    // PlatformService answers admin keys only (`clearing admin init`, var/admin.key).
    this.platform = createClient(platform.PlatformService, this.transport);
  }

  /**
   * The platform's events after `cursor` (a sequence number; 0: from the first kept), history
   * then live, for ever: `for await (const e of client.watch(lastSeq)) ...`. A broken stream
   * (the server restarts, the network drops, the stream fell too far behind:
   * RESOURCE_EXHAUSTED EVENT_CONSUMER_TOO_SLOW) is opened again from the last event yielded,
   * after a growing pause, so nothing is skipped or repeated. Keep the last `event.seq` you
   * processed durably and pass it after a restart. Errors retrying cannot fix (a pruned
   * cursor: OUT_OF_RANGE, a bad key) are thrown as ClearingRpcError. `signal` ends it.
   * The same as the Python client's `watch`.
   */
  async *watch(cursor = 0n, { types = [], reconnectMaxMs = 5_000, signal } = {}) {
    let at = int64(cursor, "cursor");
    let delay = this.backoffMs;
    while (!signal?.aborted) {
      try {
        const stream = this.events.watchEvents(
          create(event.WatchEventsRequestSchema, { cursor: at, types }),
          { headers: this.headers, signal });
        for await (const response of stream) {
          delay = this.backoffMs;
          for (const e of response.events) {
            at = e.seq;
            yield e;
          }
        }
      } catch (err) {
        if (signal?.aborted) return;
        const error = ClearingRpcError.fromError(err);
        if (!WATCH_RESUMABLE_CODES.has(error.code)) throw error;
      }
      await sleep(delay * (0.5 + Math.random()));
      delay = Math.min(delay * 2, reconnectMaxMs);
    }
  }

  /** A page of the platform's events after `cursor` (ListEvents; `nextCursor` continues). */
  listEvents(cursor = 0n, { types = [], pageSize = 0 } = {}) {
    return this.call(this.events.listEvents, create(event.ListEventsRequestSchema, {
      cursor: int64(cursor, "cursor"), types, pageSize,
    }));
  }

  /** Close the connection (calls in flight fail). */
  close() {
    this.sessionManager.abort();
  }

  [Symbol.asyncDispose]() {
    this.close();
    return Promise.resolve();
  }

  /** Call a unary or client-streaming method (e.g. `client.ledger.transfer`), retrying
   * retryable failures with the same request. Throws ClearingRpcError. (A server stream,
   * ExportReport, is the connect client's own call.) */
  call(method, request, { timeoutMs } = {}) {
    return this._attempts(method, () => request, timeoutMs);
  }

  /** Call `method` with `makeRequest()` (a message, or a fresh async iterable of messages for
   * a client stream) until it succeeds or fails for good. */
  async _attempts(method, makeRequest, timeoutMs) {
    let delay = this.backoffMs;
    for (let attempt = 1; ; attempt++) {
      try {
        return await method(makeRequest(), {
          headers: this.headers, timeoutMs: timeoutMs ?? this.timeoutMs,
        });
      } catch (err) {
        const error = ClearingRpcError.fromError(err);
        if (!RETRYABLE_CODES.has(error.code) || attempt >= this.attemptsMax) throw error;
      }
      await sleep(delay * (0.5 + Math.random()));
      delay = Math.min(delay * 2, this.backoffMaxMs);
    }
  }

  // ---- LedgerService ----------------------------------------------------------------------

  /** Open an account (`kind`: an AccountKind); allowNegative undefined: the kind's default. */
  async createAccount(externalRef, {
    kind, currencyCode = "CNY", ownerType = ledger.OwnerType.ENTERPRISE, displayName = "",
    allowNegative, requestId,
  } = {}) {
    const request = create(ledger.CreateAccountRequestSchema, {
      requestId: requestId || newRequestId(), externalRef, kind, ownerType, currencyCode,
      displayName, allowNegative,
    });
    return (await this.call(this.ledger.createAccount, request)).account;
  }

  /** One account, by id or by the platform's reference (`{ externalRef }`). */
  async getAccount(accountId = 0n, { externalRef = "" } = {}) {
    return (await this.call(this.ledger.getAccount, create(ledger.GetAccountRequestSchema, {
      accountId: int64(accountId, "accountId"), externalRef,
    }))).account;
  }

  /** A page of the platform's accounts (pageSize 0: the server's default). */
  listAccounts({ pageSize = 0, pageToken = "" } = {}) {
    return this.call(this.ledger.listAccounts,
      create(ledger.ListAccountsRequestSchema, { pageSize, pageToken }));
  }

  /** Freeze an amount of an account (amountMinor 0: the whole account). */
  async freezeAccount(accountId, { reason, amountMinor = 0n, requestId } = {}) {
    return (await this.call(this.ledger.freezeAccount, create(ledger.FreezeAccountRequestSchema, {
      requestId: requestId || newRequestId(), accountId: int64(accountId, "accountId"),
      amountMinor: int64(amountMinor, "amountMinor"), reason,
    }))).account;
  }

  /** Release a frozen amount (amountMinor 0: unfreeze the whole account). */
  async unfreezeAccount(accountId, { reason, amountMinor = 0n, requestId } = {}) {
    return (await this.call(this.ledger.unfreezeAccount,
      create(ledger.UnfreezeAccountRequestSchema, {
        requestId: requestId || newRequestId(), accountId: int64(accountId, "accountId"),
        amountMinor: int64(amountMinor, "amountMinor"), reason,
      }))).account;
  }

  /** Close an empty account. */
  async closeAccount(accountId, { requestId } = {}) {
    return (await this.call(this.ledger.closeAccount, create(ledger.CloseAccountRequestSchema, {
      requestId: requestId || newRequestId(), accountId: int64(accountId, "accountId"),
    }))).account;
  }

  /** Move amountMinor from the debit to the credit account (`mode`: a TransferMode;
   * TransferMode.PENDING holds it instead). */
  async transfer(debitAccountId, creditAccountId, amountMinor, currencyCode, {
    mode = ledger.TransferMode.IMMEDIATE, pendingTransferId = 0n, memo = "", requestId,
  } = {}) {
    return (await this.call(this.ledger.transfer, create(ledger.TransferRequestSchema, {
      requestId: requestId || newRequestId(),
      debitAccountId: int64(debitAccountId, "debitAccountId"),
      creditAccountId: int64(creditAccountId, "creditAccountId"),
      amountMinor: int64(amountMinor, "amountMinor"), currencyCode, mode,
      pendingTransferId: int64(pendingTransferId, "pendingTransferId"), memo,
    }))).transfer;
  }

  /** Post amountMinor of a pending transfer (the rest stays held). */
  async postPending(pendingTransferId, amountMinor, { requestId } = {}) {
    return (await this.call(this.ledger.transfer, create(ledger.TransferRequestSchema, {
      requestId: requestId || newRequestId(), mode: ledger.TransferMode.POST_PENDING,
      pendingTransferId: int64(pendingTransferId, "pendingTransferId"),
      amountMinor: int64(amountMinor, "amountMinor"),
    }))).transfer;
  }

  /** Void what remains of a pending transfer. */
  async voidPending(pendingTransferId, { requestId } = {}) {
    return (await this.call(this.ledger.transfer, create(ledger.TransferRequestSchema, {
      requestId: requestId || newRequestId(), mode: ledger.TransferMode.VOID_PENDING,
      pendingTransferId: int64(pendingTransferId, "pendingTransferId"),
    }))).transfer;
  }

  /** An account's balances. */
  async balance(accountId) {
    return (await this.call(this.ledger.getBalance, create(ledger.GetBalanceRequestSchema, {
      accountId: int64(accountId, "accountId"),
    }))).balance;
  }

  /** A page of an account's statement, newest first. */
  listEntries(accountId, { pageSize = 0, pageToken = "" } = {}) {
    return this.call(this.ledger.listEntries, create(ledger.ListEntriesRequestSchema, {
      accountId: int64(accountId, "accountId"), pageSize, pageToken,
    }));
  }

  /** The platform's trial balance and the hash chain. */
  verify() {
    return this.call(this.ledger.verifyLedger, create(ledger.VerifyLedgerRequestSchema));
  }

  // ---- SplitService: rule sets ------------------------------------------------------------

  /** File a new version of a rule set (a RuleSet or its init object; validateOnly: check it,
   * store nothing). */
  async publishRuleSet(ruleSet, { validateOnly = false, requestId } = {}) {
    return (await this.call(this.split.publishRuleSet, create(split.PublishRuleSetRequestSchema, {
      requestId: requestId || newRequestId(), ruleSet, validateOnly,
    }))).ruleSet;
  }

  /** Activate a version (an approver's key, not its publisher's); contentSha256 and
   * expectedActiveVersion, when given, must match what the server holds. */
  activateRuleSet(ruleSetName, ruleSetVersion, {
    contentSha256 = "", expectedActiveVersion, comment = "", requestId,
  } = {}) {
    return this.call(this.split.activateRuleSet, create(split.ActivateRuleSetRequestSchema, {
      requestId: requestId || newRequestId(), ruleSetName,
      ruleSetVersion: int64(ruleSetVersion, "ruleSetVersion"), contentSha256, comment,
      expectedActiveVersion: expectedActiveVersion === undefined
        ? undefined : int64(expectedActiveVersion, "expectedActiveVersion"),
    }));
  }

  /** Backtest a version that is not active on the rule set's recorded orders of the last
   * `days` days (0: 7), the most recent `orderCountMax` (0: the server's maximum). A backtest
   * of many orders takes seconds: pass a `timeoutMs` that fits. */
  simulateRuleSet(ruleSetName, ruleSetVersion, { days = 0, orderCountMax = 0n, timeoutMs } = {}) {
    return this.call(this.split.simulateRuleSet, create(split.SimulateRuleSetRequestSchema, {
      ruleSetName, ruleSetVersion: int64(ruleSetVersion, "ruleSetVersion"), days,
      orderCountMax: int64(orderCountMax, "orderCountMax"),
    }), { timeoutMs });
  }

  /** One version of a rule set (0: the active one). */
  async getRuleSet(ruleSetName, ruleSetVersion = 0n) {
    return (await this.call(this.split.getRuleSet, create(split.GetRuleSetRequestSchema, {
      ruleSetName, ruleSetVersion: int64(ruleSetVersion, "ruleSetVersion"),
    }))).ruleSet;
  }

  /** A page of rule-set versions by name, newest first (`status`: only those). */
  listRuleSets({ ruleSetName = "", pageSize = 0, pageToken = "", includeRules = false,
    status = 0 } = {}) {
    return this.call(this.split.listRuleSets, create(split.ListRuleSetsRequestSchema, {
      pageSize, pageToken, ruleSetName, status, includeRules,
    }));
  }

  // ---- SplitService: splits (not yet in the Python client) --------------------------------

  /** What a split of `order` (an Order init object) would be, written nowhere. */
  async previewSplit(order, { ruleSetVersion = 0n, counterOverrides = {} } = {}) {
    return (await this.call(this.split.previewSplit, create(split.PreviewSplitRequestSchema, {
      order, ruleSetVersion: int64(ruleSetVersion, "ruleSetVersion"), counterOverrides,
    }))).split;
  }

  /** Split a paid order by its rule set. The same requestId answers the first split. */
  async splitOrder(order, { requestId } = {}) {
    return (await this.call(this.split.split, create(split.SplitRequestSchema, {
      requestId: requestId || newRequestId(), order,
    }))).split;
  }

  /** One split, by the order's id or the split's id (`{ splitId }`). */
  async getSplit(orderId = "", { splitId = 0n } = {}) {
    return (await this.call(this.split.getSplit, create(split.GetSplitRequestSchema, {
      orderId, splitId: int64(splitId, "splitId"),
    }))).split;
  }

  /**
   * A page of the platform's splits, newest paid first. Every filter given applies: a
   * SplitStatus (`state`), paid times in [paidTimeStart, paidTimeEnd) (Dates), a leg's
   * credited account, amounts in [amountMinMinor, amountMaxMinor], a currency. A page may be
   * short; the listing ends when `nextPageToken` is empty. Pass the same filters with the token.
   */
  listSplits({ state = 0, paidTimeStart, paidTimeEnd, accountId = 0n, amountMinMinor = 0n,
    amountMaxMinor = 0n, currencyCode = "", pageSize = 0, pageToken = "" } = {}) {
    return this.call(this.split.listSplits, create(split.ListSplitsRequestSchema, {
      pageSize, pageToken, state, accountId: int64(accountId, "accountId"),
      amountMinMinor: int64(amountMinMinor, "amountMinMinor"),
      amountMaxMinor: int64(amountMaxMinor, "amountMaxMinor"), currencyCode,
      paidTimeStart: paidTimeStart === undefined ? undefined : timestampFromDate(paidTimeStart),
      paidTimeEnd: paidTimeEnd === undefined ? undefined : timestampFromDate(paidTimeEnd),
    }));
  }

  /** Release held legs of a split: on an event (`eventName`) or a fraction (`fractionBps`),
   * of the given accounts only (`accountIds`) when given. */
  releaseSplit(orderId, { eventName, fractionBps, accountIds = [], requestId } = {}) {
    const release = eventName !== undefined ? { case: "eventName", value: eventName }
      : fractionBps !== undefined ? { case: "fractionBps", value: fractionBps } : undefined;
    return this.call(this.split.releaseSplit, create(split.ReleaseSplitRequestSchema, {
      requestId: requestId || newRequestId(), orderId, release,
      accountIds: accountIds.map((id) => int64(id, "accountIds")),
    }));
  }

  /** Cancel a split whose money is all still held. */
  async cancelSplit(orderId, { reason, requestId } = {}) {
    return (await this.call(this.split.cancelSplit, create(split.CancelSplitRequestSchema, {
      requestId: requestId || newRequestId(), orderId, reason,
    }))).split;
  }

  /** Refund amountMinor of a split order (`refundRef`: the refund's reference). */
  refundSplit(orderId, amountMinor, currencyCode, { refundRef = "", reason = "", requestId } = {}) {
    return this.call(this.split.refundSplit, create(split.RefundSplitRequestSchema, {
      requestId: requestId || newRequestId(), orderId,
      amountMinor: int64(amountMinor, "amountMinor"), currencyCode, refundRef, reason,
    }));
  }

  // ---- PayoutService ----------------------------------------------------------------------

  /** Bind a bank account to an account (`accountType`: a BankAccountType). */
  async bindBankAccount(accountId, {
    bankCode, bankName, accountNumber, holderName, accountType, branchCode = "",
    kycVerified = false, requestId,
  } = {}) {
    return (await this.call(this.payout.bindBankAccount,
      create(payout.BindBankAccountRequestSchema, {
        requestId: requestId || newRequestId(), accountId: int64(accountId, "accountId"),
        bankCode, bankName, branchCode, accountNumber, holderName, accountType, kycVerified,
      }))).bankAccount;
  }

  /** Pay amountMinor (fee included) of an account out to its bound bank account. */
  async requestPayout(accountId, amountMinor, currencyCode, { memo = "", requestId } = {}) {
    return (await this.call(this.payout.requestPayout, create(payout.RequestPayoutRequestSchema, {
      requestId: requestId || newRequestId(), accountId: int64(accountId, "accountId"),
      amountMinor: int64(amountMinor, "amountMinor"), currencyCode, memo,
    }))).payout;
  }

  /** One payout with its bank transfers. */
  async getPayout(payoutId) {
    return (await this.call(this.payout.getPayout, create(payout.GetPayoutRequestSchema, {
      payoutId: int64(payoutId, "payoutId"),
    }))).payout;
  }

  /** A page of payouts, newest first (accountId 0: all; `states`: PayoutStates). */
  listPayouts({ accountId = 0n, states = [], pageSize = 0, pageToken = "" } = {}) {
    return this.call(this.payout.listPayouts, create(payout.ListPayoutsRequestSchema, {
      pageSize, pageToken, accountId: int64(accountId, "accountId"), states,
    }));
  }

  /** Approve a payout under review (an approver's key). */
  async approvePayout(payoutId, { reason = "", requestId } = {}) {
    return (await this.call(this.payout.approvePayout, create(payout.ApprovePayoutRequestSchema, {
      requestId: requestId || newRequestId(), payoutId: int64(payoutId, "payoutId"), reason,
    }))).payout;
  }

  /** Reject a payout under review (an approver's key): what was not paid goes back. */
  async rejectPayout(payoutId, { reason, requestId } = {}) {
    return (await this.call(this.payout.rejectPayout, create(payout.RejectPayoutRequestSchema, {
      requestId: requestId || newRequestId(), payoutId: int64(payoutId, "payoutId"), reason,
    }))).payout;
  }

  // ---- ReconciliationService --------------------------------------------------------------

  /** Upload a statement file (read in chunks, never whole) and reconcile it; its run.
   * `progress(sentBytes, sizeBytes)` is called after each chunk. A retry sends the file again
   * with the same request id: the server answers the first run. */
  importStatement(path, {
    channel, settlementDate, statementFormat = recon.StatementFormat.CANONICAL,
    chunkBytes = STATEMENT_CHUNK_BYTES, progress, requestId, timeoutMs,
  } = {}) {
    const header = create(recon.StatementHeaderSchema, {
      requestId: requestId || newRequestId(), channel, settlementDate, format: statementFormat,
    });
    const sizeBytes = statSync(path).size;
    async function* messages() {
      yield create(recon.ImportStatementRequestSchema, {
        content: { case: "header", value: header },
      });
      let sent = 0;
      for await (const chunk of createReadStream(path, { highWaterMark: chunkBytes })) {
        sent += chunk.length;
        yield create(recon.ImportStatementRequestSchema, {
          content: { case: "chunk", value: new Uint8Array(chunk) },
        });
        if (progress) progress(sent, sizeBytes);
      }
    }
    return this._attempts(this.recon.importStatement, messages, timeoutMs);
  }

  /** One reconciliation run with its totals per class. */
  async getReconciliationRun(runId) {
    return (await this.call(this.recon.getReconciliationRun,
      create(recon.GetReconciliationRunRequestSchema, { runId: int64(runId, "runId") }))).run;
  }

  /** A page of runs, newest first (of one channel and/or day when given). */
  listReconciliationRuns({ channel = "", settlementDate = "", pageSize = 0, pageToken = "" } = {}) {
    return this.call(this.recon.listReconciliationRuns,
      create(recon.ListReconciliationRunsRequestSchema, {
        channel, settlementDate, pageSize, pageToken,
      }));
  }

  /** Book the channel's money of a run's statement (an operator's key); the run with its
   * settlement. */
  async postSettlement(runId, { requestId } = {}) {
    return (await this.call(this.recon.postSettlement, create(recon.PostSettlementRequestSchema, {
      requestId: requestId || newRequestId(), runId: int64(runId, "runId"),
    }))).run;
  }

  /** Propose how to resolve a discrepancy (an operator's key; `action`: a ResolutionAction;
   * `order`: SPLIT_NOW's Order). */
  async proposeResolution(discrepancyId, action, {
    note, amountMinor = 0n, order, requestId,
  } = {}) {
    return (await this.call(this.recon.proposeResolution,
      create(recon.ProposeResolutionRequestSchema, {
        requestId: requestId || newRequestId(),
        discrepancyId: int64(discrepancyId, "discrepancyId"), action, note,
        amountMinor: int64(amountMinor, "amountMinor"), order,
      }))).resolution;
  }

  /** Approve and carry out a proposed resolution (another key, an approver's). */
  async approveResolution(resolutionId, { note = "", requestId } = {}) {
    return (await this.call(this.recon.approveResolution,
      create(recon.ApproveResolutionRequestSchema, {
        requestId: requestId || newRequestId(),
        resolutionId: int64(resolutionId, "resolutionId"), note,
      }))).resolution;
  }

  /** Reject a proposed resolution (another key, an approver's): its discrepancy is OPEN
   * again. */
  async rejectResolution(resolutionId, { note, requestId } = {}) {
    return (await this.call(this.recon.rejectResolution,
      create(recon.RejectResolutionRequestSchema, {
        requestId: requestId || newRequestId(),
        resolutionId: int64(resolutionId, "resolutionId"), note,
      }))).resolution;
  }

  /** One resolution with its every step. */
  async getResolution(resolutionId) {
    return (await this.call(this.recon.getResolution, create(recon.GetResolutionRequestSchema, {
      resolutionId: int64(resolutionId, "resolutionId"),
    }))).resolution;
  }

  /** A page of discrepancies, oldest first (`classes`: ReconciliationClasses, `states`:
   * DiscrepancyStates). */
  listDiscrepancies({ runId = 0n, classes = [], states = [], pageSize = 0, pageToken = "" } = {}) {
    return this.call(this.recon.listDiscrepancies, create(recon.ListDiscrepanciesRequestSchema, {
      runId: int64(runId, "runId"), classes, states, pageSize, pageToken,
    }));
  }

  // ---- vouchers (ReportService) -----------------------------------------------------------

  /** A voucher (its PDF and record), named by exactly one id; the first request for a split,
   * action or payout issues its voucher. */
  getVoucher({ voucherId = 0n, splitId = 0n, splitActionId = 0n, payoutId = 0n } = {}) {
    return this.call(this.report.getVoucher, create(report.GetVoucherRequestSchema, {
      voucherId: int64(voucherId, "voucherId"), splitId: int64(splitId, "splitId"),
      splitActionId: int64(splitActionId, "splitActionId"), payoutId: int64(payoutId, "payoutId"),
    }));
  }

  /** Verify a voucher, by id or as its PDF file: `valid`, and every problem found. */
  verifyVoucher({ voucherId = 0n, pdf = new Uint8Array() } = {}) {
    return this.call(this.report.verifyVoucher, create(report.VerifyVoucherRequestSchema, {
      voucherId: int64(voucherId, "voucherId"), pdf,
    }));
  }
}

// PlatformService (admin keys): createPlatform, createApiKey, setPayoutConfig, ... (admin.js).
Object.assign(ClearingClient.prototype, adminMethods);
