// README.md's example, run as written (as a module inside this package, so that
// "@clearing/client" resolves to it) against the test server.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { test } from "node:test";

import { ADDR, KEY } from "./support.js";

const PACKAGE = fileURLToPath(new URL("..", import.meta.url));
const MARK = "<!-- run by clients/node/test/readme.test.js -->";

function example() {
  const text = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  const at = text.indexOf(MARK);
  assert.ok(at >= 0, `README.md has no block marked ${MARK}`);
  const block = /^```js\n([\s\S]*?)^```/m.exec(text.slice(at + MARK.length));
  assert.ok(block, "no js block after the mark");
  return block[1];
}

test("README.md's example runs and prints what the README says", async () => {
  const run = () => promisify(execFile)(process.execPath,
    ["--input-type=module", "--eval", example()],
    { cwd: PACKAGE, env: { ...process.env, CLEARING_ADDR: ADDR, CLEARING_KEY: KEY },
      timeout: 30_000 });
  const first = await run();
  assert.match(first.stdout, /^transfer \d+: 1470 fen to README_MERCHANT$/m);
  assert.match(first.stdout, /^README_MERCHANT posted 1470$/m);
  assert.match(first.stdout,
    /^refused: INVALID_ARGUMENT INVALID_ARGUMENT amount_minor,currency_code$/m);
  // rerunnable: the accounts are found, the second transfer adds up
  const second = await run();
  assert.match(second.stdout, /^README_MERCHANT posted 2940$/m);
});
