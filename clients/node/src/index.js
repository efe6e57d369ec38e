// @clearing/client: a typed Node client of the clearing core (see README.md).
//
// The messages and service descriptors are in gen/ (generated from proto/clearing/v1 by
// `make proto`), also exported here by file: `ledger`, `split`, `ruleSet`, `payout`, `recon`,
// `report`, `risk`, `event`, `audit`, `platform`, `errors` (ErrorReason: the reasons of
// ErrorInfo).

export { ClearingClient, newRequestId, STATEMENT_CHUNK_BYTES } from "./client.js";
export {
  ClearingRpcError, FieldViolation, RETRYABLE_CODES, WATCH_RESUMABLE_CODES, DOMAIN, codeName,
} from "./errors.js";
export {
  SIGNATURE_HEADER, TOLERANCE_S, WebhookSignatureError, sign, verifySignature, verifyWebhook,
} from "./webhooks.js";
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
