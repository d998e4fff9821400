import assert from "node:assert/strict";
import { ConfigError } from "../../lib/errors.ts";
import { parseToml } from "../../lib/cli/toml.ts";
import { configFlagValues, parseConfigText } from "../../lib/cli/config.ts";
import { type FlagSpecs, parseFlags } from "../../lib/cli/flags.ts";
import { SERVER_FLAGS } from "../../lib/cli/server_flags.ts";
import { CLIENT_FLAGS } from "../../lib/cli/client_flags.ts";

function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

/** The values of a TOML text, key by key. */
function values(text: string): Record<string, unknown> {
  return Object.fromEntries(
    [...parseToml(text, "t.toml")].map(([k, { value }]) => [k, value]),
  );
}

/** Asserts `fn` throws a ConfigError whose message matches `pattern`. */
function assertConfigError(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof ConfigError, String(error));
    assert.match(error.message, pattern);
    return true;
  });
}

test("parseToml() reads strings, numbers, booleans and arrays, with comments and blank lines", () => {
  const text = [
    "# the relay",
    "",
    'bind = "127.0.0.1"   # loopback only',
    "port = 5007",
    "mtu = 1_200",
    "client-timeout = 0.5",
    "no-multicast = true",
    "compat = false",
    "nats = ['nats://a:4222', \"nats://b:4222\",]",
    "empty = []",
    "\"quoted key\" = 'C:\\path\\no escapes'",
    "big = 9007199254740991",
    "negative = -3",
    "exp = 1e3",
  ].join("\n");
  assert.deepEqual(values(text), {
    bind: "127.0.0.1",
    port: 5007,
    mtu: 1200,
    "client-timeout": 0.5,
    "no-multicast": true,
    compat: false,
    nats: ["nats://a:4222", "nats://b:4222"],
    empty: [],
    "quoted key": "C:\\path\\no escapes",
    big: 9007199254740991,
    negative: -3,
    exp: 1000,
  });
});

test("parseToml() decodes the escapes of basic strings and keeps '#' inside strings", () => {
  assert.deepEqual(
    values(
      'a = "tab\\there \\"q\\" back\\\\slash \\u00e9\\U0001F600 #not a comment"',
    ),
    { a: 'tab\there "q" back\\slash \u00e9\u{1F600} #not a comment' },
  );
});

test("parseToml() accepts CRLF line ends and a byte-order mark, and gives each key's line", () => {
  const entries = parseToml("\uFEFFa = 1\r\n\r\nb = 'x'\r\n", "t.toml");
  assert.deepEqual([...entries], [
    ["a", { value: 1, line: 1 }],
    ["b", { value: "x", line: 3 }],
  ]);
});

test("parseToml() refuses what is outside the subset, naming the file and line", () => {
  const cases: [string, RegExp][] = [
    ["a = 1\n[server]", /^t\.toml:2: tables are not used/],
    ["a.b = 1", /^t\.toml:1: dotted keys are not used/],
    ['a = """x"""', /^t\.toml:1: multi-line strings are not used/],
    ["a = '''x'''", /^t\.toml:1: multi-line strings are not used/],
    ["a = { b = 1 }", /^t\.toml:1: inline tables are not used/],
    ["a = [1,\n2]", /^t\.toml:1: an array must close on its line/],
    ["a = 1979-05-27", /^t\.toml:1: 1979-05-27 is not a value/],
    ["a = 007", /^t\.toml:1: 007 is not a value/],
    ["a = yes", /^t\.toml:1: yes is not a value: quote strings/],
    ["a = ", /^t\.toml:1: a value is missing after =/],
    ["a = 1 2", /^t\.toml:1: unexpected text after the value of a: 2/],
    ['a = "open', /^t\.toml:1: a string is not closed/],
    ["a = 'open", /^t\.toml:1: a string is not closed/],
    ['a = "\\q"', /^t\.toml:1: \\q is not an escape/],
    ['a = "\\uD800"', /^t\.toml:1: \\uD800 is not a Unicode scalar value/],
    ['a = "bell\x07"', /^t\.toml:1: a string holds a control character/],
    ["a 1", /^t\.toml:1: expected "=" after the key a/],
    ["= 1", /^t\.toml:1: expected a key/],
    ['"" = 1', /^t\.toml:1: a key cannot be empty/],
    ["a = 9007199254740992", /^t\.toml:1: 9007199254740992 is too large/],
    ["a = 1\n\na = 2", /^t\.toml:3: a is given twice \(first on line 1\)/],
    ["a = [1 2]", /^t\.toml:1: expected "," or "\]" in the array/],
  ];
  for (const [text, pattern] of cases) {
    assertConfigError(() => parseToml(text, "t.toml"), pattern);
  }
});

test("parseConfigText() reads JSON for *.json and TOML otherwise, to the same entries", () => {
  const toml = parseConfigText(
    'port = 5007\nnats = ["nats://a:4222"]\ncompat = true',
    "s.toml",
  );
  const json = parseConfigText(
    '{"port": 5007, "nats": ["nats://a:4222"], "compat": true}',
    "s.JSON",
  );
  assert.deepEqual(
    [...json].map(([k, e]) => [k, e.value]),
    [...toml].map(([k, e]) => [k, e.value]),
  );
  assertConfigError(
    () => parseConfigText("{", "s.json"),
    /^s\.json: not valid JSON/,
  );
  assertConfigError(
    () => parseConfigText("[1]", "s.json"),
    /^s\.json: expected one JSON object of keys/,
  );
  assertConfigError(
    () => parseConfigText('{"a": {"b": 1}}', "s.json"),
    /^s\.json: a must be a string, a number, true\/false or an array/,
  );
  assertConfigError(
    () => parseConfigText('{"a": null}', "s.json"),
    /^s\.json: a must be/,
  );
});

const SPECS: FlagSpecs = {
  port: { type: "string", default: "5007", help: "" },
  nats: { type: "string", help: "" },
  "no-multicast": { type: "boolean", help: "" },
  config: { type: "string", help: "" },
  help: { type: "boolean", help: "" },
};

test("configFlagValues() gives flag values: decimal strings, arrays joined with ',', booleans", () => {
  const entries = parseConfigText(
    'port = 6000\nnats = ["nats://a:4222", "nats://b:4222"]\nno-multicast = true',
    "s.toml",
  );
  assert.deepEqual(configFlagValues(entries, SPECS, "s.toml"), {
    port: "6000",
    nats: "nats://a:4222,nats://b:4222",
    "no-multicast": true,
  });
});

test("configFlagValues() refuses unknown keys, --config/--help, and values of the wrong kind", () => {
  const cases: [string, RegExp][] = [
    ["prot = 1", /^s\.toml:1: unknown key prot: the keys are the flags/],
    ["config = 'x'", /^s\.toml:1: unknown key config/],
    ["help = true", /^s\.toml:1: unknown key help/],
    [
      "no-multicast = 1",
      /^s\.toml:1: no-multicast is a switch: write no-multicast = true or no-multicast = false/,
    ],
    ["port = true", /^s\.toml:1: port takes a value, e.g. port = "5007"/],
  ];
  for (const [text, pattern] of cases) {
    assertConfigError(
      () => configFlagValues(parseToml(text, "s.toml"), SPECS, "s.toml"),
      pattern,
    );
  }
  assertConfigError(
    () =>
      configFlagValues(
        parseConfigText('{"toString": 1}', "s.json"),
        SPECS,
        "s.json",
      ),
    /^s\.json: unknown key toString/,
  );
});

test("parseFlags() with a config file's values: the command line wins, the file beats the defaults", () => {
  const file = { port: "6000", nats: "nats://a:4222", "no-multicast": true };
  assert.deepEqual(parseFlags(["--port", "7000"], SPECS, file), {
    port: "7000",
    nats: "nats://a:4222",
    "no-multicast": true,
    config: undefined,
    help: undefined,
  });
  assert.equal(parseFlags([], SPECS, {}).port, "5007");
});

test("every server and client flag but --config, --help and --version is a config key", () => {
  for (const specs of [SERVER_FLAGS, CLIENT_FLAGS]) {
    for (const [name, spec] of Object.entries(specs)) {
      const text = spec.type === "boolean" ? `${name} = true` : `${name} = "x"`;
      const take = () =>
        configFlagValues(parseToml(text, "c.toml"), specs, "c.toml");
      if (["config", "help", "version"].includes(name)) {
        assertConfigError(take, /unknown key/);
      } else {
        assert.deepEqual(take(), {
          [name]: spec.type === "boolean" ? true : "x",
        });
      }
    }
  }
});
