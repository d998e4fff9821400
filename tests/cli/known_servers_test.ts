import assert from "node:assert/strict";
import { ConfigError } from "../../lib/errors.ts";
import {
  defaultKnownServersPath,
  formatKnownServer,
  KnownServers,
  parseKnownServers,
} from "../../lib/cli/known_servers.ts";

const KEY_A = "SHA256:" + "A".repeat(43);
const KEY_B = "SHA256:" + "B".repeat(42) + "/";
const PATH = "/home/u/.config/mcrelay/known_servers";

Deno.test({
  name:
    "parseKnownServers() reads HOST:PORT SHA256 lines with their line numbers, skipping blanks and comments",
  permissions: "none",
  fn() {
    const text =
      `# servers met\n127.0.0.1:5007 ${KEY_A}\n\n  [::1]:5007\t${KEY_B}  \n`;
    assert.deepEqual(parseKnownServers(text, PATH), [
      { server: "127.0.0.1:5007", fingerprint: KEY_A, line: 2 },
      { server: "[::1]:5007", fingerprint: KEY_B, line: 4 },
    ]);
    assert.equal(
      formatKnownServer("127.0.0.1:5007", KEY_A),
      `127.0.0.1:5007 ${KEY_A}\n`,
    );
    assert.deepEqual(
      parseKnownServers(formatKnownServer("10.0.0.1:1", KEY_B), PATH),
      [{ server: "10.0.0.1:1", fingerprint: KEY_B, line: 1 }],
    );
  },
});

Deno.test({
  name:
    "parseKnownServers() throws a ConfigError naming the file, the line and how to delete it",
  permissions: "none",
  fn() {
    for (
      const bad of [
        "127.0.0.1:5007",
        `127.0.0.1 ${KEY_A}`,
        `127.0.0.1:5007 SHA256:short`,
        `127.0.0.1:5007 ${KEY_A} extra`,
      ]
    ) {
      assert.throws(
        () => parseKnownServers(`# ok\n${bad}\n`, PATH),
        (error: unknown) =>
          error instanceof ConfigError &&
          error.message.includes(`Line 2 of the known-servers file ${PATH}`) &&
          error.message.includes(`sed -i '2d' ${PATH}`),
        bad,
      );
    }
  },
});

Deno.test({
  name:
    "KnownServers.check() accepts an unknown server and its recorded key, and refuses another key naming both keys, the file, the line and the fix",
  permissions: "none",
  fn() {
    const known = new KnownServers(
      PATH,
      `10.0.0.1:5007 ${KEY_B}\n127.0.0.1:5007 ${KEY_A}\n`,
    );
    assert.ok(known.has("127.0.0.1:5007"));
    assert.ok(!known.has("127.0.0.1:5008"));
    assert.equal(known.check("127.0.0.1:5008", KEY_B), undefined);
    assert.equal(known.check("127.0.0.1:5007", KEY_A), undefined);
    const refusal = known.check("127.0.0.1:5007", KEY_B);
    assert.ok(refusal);
    for (
      const part of [
        `The server at 127.0.0.1:5007 answered with key ${KEY_B}`,
        `${PATH} records ${KEY_A} for it (line 2)`,
        `sed -i '2d' ${PATH}`,
      ]
    ) {
      assert.ok(refusal.includes(part), `${part} in ${refusal}`);
    }
  },
});

Deno.test({
  name:
    "defaultKnownServersPath() uses XDG_CONFIG_HOME, else HOME/.config, else none",
  permissions: "none",
  fn() {
    const env = (vars: Record<string, string>) => (name: string) => vars[name];
    assert.equal(
      defaultKnownServersPath(env({ XDG_CONFIG_HOME: "/x", HOME: "/h" })),
      "/x/mcrelay/known_servers",
    );
    assert.equal(
      defaultKnownServersPath(env({ XDG_CONFIG_HOME: "", HOME: "/h" })),
      "/h/.config/mcrelay/known_servers",
    );
    assert.equal(defaultKnownServersPath(env({})), undefined);
  },
});
