import assert from "node:assert/strict";
import {
  closestName,
  editDistance,
  type FlagSpecs,
  parseFlags,
} from "../../lib/cli/flags.ts";
import { ConfigError } from "../../lib/errors.ts";

const test = (name: string, fn: () => void) =>
  Deno.test({ name, permissions: "none", fn });

test("editDistance() counts insertions, deletions, substitutions and swaps", () => {
  assert.equal(editDistance("tcp-port", "tcp-port"), 0);
  assert.equal(editDistance("tcp-prot", "tcp-port"), 1); // swap
  assert.equal(editDistance("tcp-pot", "tcp-port"), 1); // insertion
  assert.equal(editDistance("tcpport", "tcp-port"), 1);
  assert.equal(editDistance("kex-file", "key-file"), 1); // substitution
  assert.equal(editDistance("", "abc"), 3);
  assert.equal(editDistance("abc", ""), 3);
});

test("closestName() suggests only a close name", () => {
  const names = ["tcp-port", "tcp-host", "port", "key-file", "key-bits"];
  assert.equal(closestName("tcp-prot", names), "tcp-port");
  assert.equal(closestName("key-flie", names), "key-file");
  assert.equal(closestName("prot", names), "port");
  assert.equal(closestName("frobnicate", names), undefined);
  assert.equal(closestName("xy", names), undefined);
});

test("parseFlags() names the flag meant in its error for a mistyped flag", () => {
  const specs: FlagSpecs = {
    "tcp-port": { type: "string", help: "control port" },
    json: { type: "boolean", help: "JSON" },
  };
  assert.throws(
    () => parseFlags(["--tcp-prot", "9000"], specs),
    (error: unknown) =>
      error instanceof ConfigError &&
      error.message ===
        "Unknown option '--tcp-prot': did you mean --tcp-port? (see --help)",
  );
  assert.throws(
    () => parseFlags(["--frobnicate"], specs),
    (error: unknown) =>
      error instanceof ConfigError &&
      error.message === "Unknown option '--frobnicate' (see --help)",
  );
});
