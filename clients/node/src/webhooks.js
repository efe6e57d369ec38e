// Verifying the clearing core's webhook deliveries (docs/events.md), as the Python client's
// clearing_client.webhooks does. Each delivery is an HTTP POST whose body is the Event as
// JSON, with the header
//
//     Clearing-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>]
//
// each v1 the HMAC-SHA256, under one of the endpoint's valid secrets, of "<t>.<body>" (the raw
// body bytes); two v1 values come while a rotated-out secret is still valid. Verify the raw
// body before parsing it, and refuse old timestamps (replays):
//
//     const event = verifyWebhook(rawBody, req.headers["clearing-signature"], secret);

import { createHmac, timingSafeEqual } from "node:crypto";

export const SIGNATURE_HEADER = "Clearing-Signature";
export const TOLERANCE_S = 300;

/** The delivery is not signed by the given secret(s), or is too old. */
export class WebhookSignatureError extends Error {
  constructor(message) {
    super(message);
    this.name = "WebhookSignatureError";
  }
}

function parse(header) {
  let stamp = null;
  const sigs = [];
  for (const part of String(header ?? "").split(",")) {
    const at = part.indexOf("=");
    if (at < 0) continue;
    const key = part.slice(0, at).trim();
    const value = part.slice(at + 1).trim();
    if (key === "t" && /^[0-9]+$/.test(value)) stamp = Number(value);
    else if (key === "v1" && value) sigs.push(value);
  }
  if (stamp === null || sigs.length === 0) {
    throw new WebhookSignatureError("malformed Clearing-Signature header");
  }
  return { stamp, sigs };
}

function bytes(body) {
  return typeof body === "string" ? Buffer.from(body, "utf8") : Buffer.from(body);
}

/** The v1 signature of `body` at `timestamp` under `secret` (hex). */
export function sign(secret, timestamp, body) {
  return createHmac("sha256", secret).update(`${timestamp}.`).update(bytes(body)).digest("hex");
}

/** The delivery's timestamp if one of its v1 signatures is `body` signed by one of `secrets`
 * (a string or an array) and the timestamp is within `toleranceS` of `nowS` (0: no age check);
 * else throws WebhookSignatureError. */
export function verifySignature(body, header, secrets, {
  toleranceS = TOLERANCE_S, nowS = Date.now() / 1000,
} = {}) {
  const { stamp, sigs } = parse(header);
  if (toleranceS && Math.abs(nowS - stamp) > toleranceS) {
    throw new WebhookSignatureError(`timestamp ${stamp} outside the tolerance`);
  }
  for (const secret of typeof secrets === "string" ? [secrets] : secrets) {
    const expected = Buffer.from(sign(secret, stamp, body), "utf8");
    for (const s of sigs) {
      const given = Buffer.from(s, "utf8");
      if (given.length === expected.length && timingSafeEqual(given, expected)) return stamp;
    }
  }
  throw new WebhookSignatureError("no valid signature for the given secret(s)");
}

/** verifySignature, then the event: the body parsed as JSON (the Event message in the proto3
 * JSON mapping, field names as in the .proto). */
export function verifyWebhook(body, header, secrets, options = {}) {
  verifySignature(body, header, secrets, options);
  return JSON.parse(bytes(body).toString("utf8"));
}
