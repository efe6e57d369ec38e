// What the tests share: the server and keys given by tests/integration/test_node_client.py.

import { randomUUID } from "node:crypto";

import { ClearingClient } from "../src/index.js";

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run these tests through pytest `
    + "tests/integration/test_node_client.py (it starts the server)");
  return value;
}

export const ADDR = env("CLEARING_ADDR");
export const KEY = env("CLEARING_KEY");
export const APPROVER_KEY = env("CLEARING_APPROVER_KEY");
export const PAYOUT_FEE_MINOR = BigInt(process.env.CLEARING_PAYOUT_FEE_MINOR ?? "0");

/** A client of the test platform (the maker's key unless another is given). */
export function connect(key = KEY, options = {}) {
  return new ClearingClient(ADDR, key, { timeoutMs: 15_000, ...options });
}

/** A reference unique to this run, so that the tests share one platform. */
export function ref(prefix) {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

/** Two admin keys of the server (PlatformService): a fee change's maker and its checker. */
export const ADMIN_KEY = env("CLEARING_ADMIN_KEY");
export const CHECKER_KEY = env("CLEARING_ADMIN_CHECKER_KEY");
