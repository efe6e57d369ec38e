// The typed layer's .d.ts files, checked by the TypeScript compiler (node_modules, a
// dependency of protoc-gen-es) on test/types/usage.ts; no server needed.

import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { test } from "node:test";
import { promisify } from "node:util";

test("the .d.ts files type a TypeScript caller's code (tsc --noEmit --strict)", async () => {
  const tsc = createRequire(import.meta.url).resolve("typescript/bin/tsc");
  const project = fileURLToPath(new URL("types/tsconfig.json", import.meta.url));
  const result = await promisify(execFile)(process.execPath, [tsc, "-p", project],
    { timeout: 60_000 }).then(() => null, (err) => err);
  assert.equal(result, null, `tsc failed:\n${result?.stdout}${result?.stderr}`);
});
