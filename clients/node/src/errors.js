// Errors of the clearing core, decoded from the gRPC status: the code, the message, the
// google.rpc.ErrorInfo reason and metadata, and the google.rpc.BadRequest field violations
// (server/clearing/api/errors.py sends them). The names mirror the Python client's
// (clearing_client.ClearingRpcError, FieldViolation).

import { Code, ConnectError } from "@connectrpc/connect";
import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";

/** The ErrorInfo domain of the clearing core's reasons. */
export const DOMAIN = "clearing.v1";

/** gRPC status code names by number (connect's Code has the same numbers). */
const CODE_NAMES = Object.freeze([
  "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
  "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
  "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
  "UNAUTHENTICATED",
]);

/** The gRPC name of a status code ("INVALID_ARGUMENT" for 3). */
export function codeName(code) {
  return CODE_NAMES[code] ?? `CODE_${code}`;
}

/** Calls failing with these codes are sent again, with the same request (same request id). */
export const RETRYABLE_CODES = Object.freeze(new Set([
  Code.Unavailable, Code.ResourceExhausted, Code.Aborted, Code.DeadlineExceeded,
]));

/** A broken WatchEvents stream is opened again from its last event on these codes (the
 * Python client's WATCH_RESUMABLE_CODES): the retryable ones and CANCELLED. */
export const WATCH_RESUMABLE_CODES = Object.freeze(new Set([...RETRYABLE_CODES, Code.Canceled]));

/** A call whose connection was lost before its status came: connect-node reports the stream
 * Node closed as CANCELLED (an RST_STREAM CANCEL of its own making), where gRPC's own clients
 * report UNAVAILABLE. This client never cancels a call itself, so it is UNAVAILABLE here, and
 * retried (a write's retry carries the same request id: the server answers it once). */
function lostConnection(e) {
  return e.code === Code.Canceled && e.details.length === 0
    && e.rawMessage.startsWith("http/2 stream closed with error code CANCEL");
}

/** One field of a refused request (a BadRequest detail): its path and what is wrong. */
export class FieldViolation {
  constructor(field, description) {
    this.field = field;
    this.description = description;
    Object.freeze(this);
  }
}

/** A failed call, with the server's ErrorInfo reason and BadRequest field paths (`fields`;
 * `violations` has each path with its description). */
export class ClearingRpcError extends Error {
  constructor(code, message, { reason = "", metadata = {}, violations = [], cause } = {}) {
    super(`${codeName(code)} ${reason}: ${message}`, cause === undefined ? undefined : { cause });
    this.name = "ClearingRpcError";
    this.code = code;
    this.codeName = codeName(code);
    this.rawMessage = message;
    this.reason = reason;
    this.metadata = metadata;
    this.violations = violations;
    this.fields = violations.map((v) => v.field);
  }

  /** The error of a failed call (a ConnectError, or anything thrown by the transport). */
  static fromError(err) {
    const e = ConnectError.from(err);
    let reason = "";
    let metadata = {};
    for (const info of e.findDetails(ErrorInfoSchema)) {
      reason = info.reason;
      metadata = { ...info.metadata };
    }
    const violations = [];
    for (const bad of e.findDetails(BadRequestSchema)) {
      for (const v of bad.fieldViolations) {
        violations.push(new FieldViolation(v.field, v.description));
      }
    }
    return new ClearingRpcError(lostConnection(e) ? Code.Unavailable : e.code, e.rawMessage,
      { reason, metadata, violations, cause: err });
  }
}
