// TLS options of the constructor (the server of this repository speaks plaintext): a local
// HTTP/2 TLS server that asks for a client certificate and answers every call with a gRPC
// status naming the peer it saw. No server of the clearing core needed.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import http2 from "node:http2";
import { after, before, test } from "node:test";

import { ClearingClient, ClearingRpcError, Code } from "../src/index.js";

const dir = new URL("tls/", import.meta.url);
const file = (name) => new URL(name, dir).pathname;
let server;
let port;

before(async () => {
  server = http2.createSecureServer({
    key: readFileSync(file("server.key")), cert: readFileSync(file("server.pem")),
    ca: readFileSync(file("ca.pem")), requestCert: true, rejectUnauthorized: true,
  });
  server.on("stream", (stream, headers) => {
    const peer = stream.session.socket.getPeerCertificate().subject?.CN ?? "";
    stream.respond({
      ":status": 200, "content-type": "application/grpc", "grpc-status": String(Code.Unimplemented),
      "grpc-message": `peer ${peer}, ${headers.authorization}`,
    }, { endStream: true });
  });
  server.on("sessionError", () => {});
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  port = server.address().port;
});
after(() => server.close());

test("mutual TLS: the CA, the client certificate and key from files", async () => {
  const c = new ClearingClient(`localhost:${port}`, "the-key", {
    attemptsMax: 1, tls: { ca: file("ca.pem"), cert: file("client.pem"), key: file("client.key") },
  });
  try {
    assert.equal(c.baseUrl, `https://localhost:${port}`);
    const err = await c.listAccounts().then(() => null, (e) => e);
    assert.ok(err instanceof ClearingRpcError, `${err}`);
    assert.equal(err.code, Code.Unimplemented);
    assert.equal(err.rawMessage, "peer node-client-test, Bearer the-key");
  } finally {
    c.close();
  }
});

test("TLS with PEM text and a server name other than the address", async () => {
  const c = new ClearingClient(`127.0.0.1:${port}`, "k", {
    attemptsMax: 1, tls: {
      ca: readFileSync(file("ca.pem"), "utf8"), cert: readFileSync(file("client.pem")),
      key: readFileSync(file("client.key"), "utf8"), serverName: "localhost",
    },
  });
  try {
    const err = await c.verify().then(() => null, (e) => e);
    assert.equal(err.code, Code.Unimplemented, `${err}`);
  } finally {
    c.close();
  }
});

test("a server certificate no trusted CA signed is refused, not retried: INTERNAL",
  async () => {
  const c = new ClearingClient(`localhost:${port}`, "k", { attemptsMax: 2, backoffMs: 1, tls: {} });
  try {
    const err = await c.listAccounts().then(() => null, (e) => e);
    assert.ok(err instanceof ClearingRpcError, `${err}`);
    assert.equal(err.code, Code.Internal);
    assert.match(err.rawMessage, /certificate/i);
  } finally {
    c.close();
  }
});
