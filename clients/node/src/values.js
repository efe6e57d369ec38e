// Values every method builds requests with.

import { randomUUID } from "node:crypto";

export function newRequestId() {
  return randomUUID();
}

/** An int64 field's value: a bigint, or a safe integer number. */
export function int64(value, name) {
  if (typeof value === "bigint") return value;
  if (Number.isSafeInteger(value)) return BigInt(value);
  throw new TypeError(`${name} must be a bigint or a safe integer, not ${value}`);
}
