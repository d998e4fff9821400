/**
 * The programs' help, version and start-up errors: every bad value gives one
 * `error:` line on stderr, a non-zero status and no stack trace; and the
 * server's `--key-file` is created with mode 0600 and reused.
 *
 * Safety: every server here runs with `--no-multicast --bind 127.0.0.1` (or
 * a bad --bind that cannot bind), and every client either has a loopback
 * `--server` or a loopback `--group`, so even a flag that wrongly passed
 * validation could send nothing off this machine.
 *
 * @module
 */
import assert from "node:assert/strict";
import denoJson from "../../deno.json" with { type: "json" };
import { SERVER_FLAGS } from "../../lib/cli/server_flags.ts";
import { CLIENT_FLAGS } from "../../lib/cli/client_flags.ts";
import type { FlagSpecs } from "../../lib/cli/flags.ts";
import { RSA2048_PRIVATE_PKCS1_PEM } from "../fixtures/rsa_fixtures.ts";
import {
  assertNoStackTrace,
  CAN_RUN,
  FIXTURE_FINGERPRINT,
  LOOPBACK_SERVER,
  NO_RUN_REASON,
  Proc,
  SERVER_CONTROL_COMMANDS,
  startServer,
  withTempDir,
  writeFixtureKey,
} from "./_process.ts";

if (!CAN_RUN) console.log(`cli_errors_test.ts: ignored: ${NO_RUN_REASON}`);

/** Runs a program to its end; returns status, stdout lines and stderr. */
async function run(
  script: "server.ts" | "client.ts",
  args: readonly string[],
): Promise<{ code: number; stdout: string[]; stderr: string }> {
  const proc = Proc.deno(script, args);
  try {
    const status = await proc.exited(`${script} ${args.join(" ")} to exit`);
    return {
      code: status.code,
      stdout: proc.stdout.lines,
      stderr: proc.stderr,
    };
  } finally {
    await proc.kill();
  }
}

/**
 * Asserts the program refuses to start with exactly one stderr line that
 * starts with `error:` and matches `pattern`, nothing on stdout, a non-zero
 * status (`code` when given) and no stack trace.
 */
async function assertStartupError(
  script: "server.ts" | "client.ts",
  args: readonly string[],
  pattern: RegExp,
  code?: number,
): Promise<string> {
  const result = await run(script, args);
  const context = `${script} ${
    args.join(" ")
  }\nstatus ${result.code}\nstdout:\n${
    result.stdout.join("\n")
  }\nstderr:\n${result.stderr}`;
  assert.notEqual(result.code, 0, context);
  if (code !== undefined) assert.equal(result.code, code, context);
  assert.deepEqual(result.stdout, [], context);
  assertNoStackTrace(result.stderr);
  const lines = result.stderr.split("\n").filter((l) => l.length > 0);
  assert.equal(lines.length, 1, context);
  assert.ok(lines[0].startsWith("error: "), context);
  assert.match(lines[0], pattern, context);
  return lines[0];
}

/** Asserts `--help` output lists every flag, with its default when it has one. */
function assertHelpListsFlags(help: string, specs: FlagSpecs): void {
  const lines = help.split("\n");
  for (const [name, spec] of Object.entries(specs)) {
    const line = lines.find((l) => new RegExp(`^ +--${name}( |$)`).test(l));
    assert.ok(line, `--help lists --${name}:\n${help}`);
    if (spec.default !== undefined) {
      assert.ok(
        line.includes(`(default: ${spec.default})`),
        `--${name} shows its default ${spec.default}: ${line}`,
      );
    }
  }
}

/** Server flags that keep it on loopback, with a free UDP port and control port. */
const SAFE_SERVER = LOOPBACK_SERVER;
/** A loopback address where nothing answers: clients refused at start never send, and would only reach loopback anyway. */
const NOWHERE = "127.0.0.1:9";

Deno.test({
  name:
    "server --help and client --help exit 0 and list every flag with its default",
  ignore: !CAN_RUN,
  async fn() {
    const server = await run("server.ts", ["--help"]);
    assert.equal(server.code, 0, server.stderr);
    assert.equal(server.stderr, "");
    const serverHelp = server.stdout.join("\n");
    assert.match(serverHelp, /^mcrelay server /);
    assertHelpListsFlags(serverHelp, SERVER_FLAGS);
    // The defaults protocol.md and the README promise, independently of the code.
    for (
      const [flag, value] of [
        ["group", "224.1.1.1"],
        ["port", "5007"],
        ["bind", "0.0.0.0"],
        ["tcp-host", "127.0.0.1"],
        ["tcp-port", "9999"],
        ["mtu", "1200"],
        ["client-timeout", "30"],
      ]
    ) {
      assert.match(
        serverHelp,
        new RegExp(
          `--${flag} .*\\(default: ${value.replaceAll(".", "\\.")}\\)`,
        ),
      );
    }
    for (
      const flag of [
        "no-multicast",
        "key-file",
        "compat",
        "json",
        "log-level",
        "help",
        "version",
      ]
    ) {
      assert.match(serverHelp, new RegExp(`^ +--${flag}( |$)`, "m"));
    }

    const client = await run("client.ts", ["--help"]);
    assert.equal(client.code, 0, client.stderr);
    assert.equal(client.stderr, "");
    const clientHelp = client.stdout.join("\n");
    assert.match(clientHelp, /^mcrelay client /);
    assertHelpListsFlags(clientHelp, CLIENT_FLAGS);
    for (
      const [flag, value] of [
        ["group", "224.1.1.1"],
        ["port", "5007"],
        ["tcp-port", "9000"],
        ["mtu", "1200"],
        ["keepalive", "10"],
      ]
    ) {
      assert.match(
        clientHelp,
        new RegExp(
          `--${flag} .*\\(default: ${value.replaceAll(".", "\\.")}\\)`,
        ),
      );
    }
    for (const flag of ["server", "fingerprint", "json", "help", "version"]) {
      assert.match(clientHelp, new RegExp(`^ +--${flag}( |$)`, "m"));
    }
    // Both list the commands they take once running.
    for (const command of ["/who", "/quit", "/help", "//text"]) {
      assert.match(clientHelp, new RegExp(`^ +${command} `, "m"), command);
    }
    for (const command of SERVER_CONTROL_COMMANDS) {
      assert.match(serverHelp, new RegExp(`^ +${command} `, "m"), command);
    }
  },
});

Deno.test({
  name: "server --version and client --version print the package version",
  ignore: !CAN_RUN,
  async fn() {
    for (
      const [script, name] of [["server.ts", "server"], [
        "client.ts",
        "client",
      ]] as const
    ) {
      const result = await run(script, ["--version"]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stderr, "");
      assert.deepEqual(result.stdout, [`mcrelay ${name} ${denoJson.version}`]);
    }
  },
});

Deno.test({
  name:
    "server: each bad flag value gives one 'error:' line, a non-zero status and no stack trace",
  ignore: !CAN_RUN,
  async fn(t) {
    const cases: [string, string[], RegExp][] = [
      [
        "a --bind that is not an IP",
        [
          "--no-multicast",
          "--port",
          "0",
          "--tcp-port",
          "0",
          "--bind",
          "300.1.2.3",
        ],
        /--bind "300\.1\.2\.3" is not an IP address/,
      ],
      [
        "a --metrics that is no address to listen on",
        [...SAFE_SERVER, "--metrics", "localhost:http"],
        /--metrics "localhost:http" is not an address to listen on: give PORT \(on 127\.0\.0\.1\), IPv4:PORT or \[IPv6\]:PORT/,
      ],
      [
        "a --metrics port out of range",
        [...SAFE_SERVER, "--metrics", "127.0.0.1:70000"],
        /--metrics "70000" is not a port/,
      ],
      [
        "a --group that is not multicast",
        [...SAFE_SERVER, "--group", "127.0.0.1"],
        /--group "127\.0\.0\.1" is not an IPv4 multicast group/,
      ],
      [
        "--port 70000",
        [
          "--no-multicast",
          "--bind",
          "127.0.0.1",
          "--tcp-port",
          "0",
          "--port",
          "70000",
        ],
        /--port "70000" is not a port/,
      ],
      [
        "--port abc",
        [
          "--no-multicast",
          "--bind",
          "127.0.0.1",
          "--tcp-port",
          "0",
          "--port",
          "abc",
        ],
        /--port "abc" is not a port/,
      ],
      [
        "--tcp-port -1",
        [
          "--no-multicast",
          "--bind",
          "127.0.0.1",
          "--port",
          "0",
          "--tcp-port=-1",
        ],
        /--tcp-port "-1" is not a port/,
      ],
      [
        "an unknown flag",
        [...SAFE_SERVER, "--frobnicate"],
        /--frobnicate/,
      ],
      [
        "a flag without its value",
        [...SAFE_SERVER, "--mtu"],
        /--mtu/,
      ],
      [
        "a stray argument",
        [...SAFE_SERVER, "extra"],
        /extra/,
      ],
      [
        "--log-level loud",
        [...SAFE_SERVER, "--log-level", "loud"],
        /--log-level "loud" is not one of debug, info, warn, error/,
      ],
      [
        "--mtu 100",
        [...SAFE_SERVER, "--mtu", "100"],
        /--mtu "100" is out of range/,
      ],
      [
        "a control port off loopback without a token",
        [...SAFE_SERVER, "--tcp-host", "0.0.0.0"],
        /--tcp-host 0\.0\.0\.0 is not a loopback address.*--control-token/,
      ],
      [
        "--rsa-sched-idle without --allow-ffi",
        [...SAFE_SERVER, "--rsa-sched-idle"],
        /--rsa-sched-idle: .*--allow-ffi.*server:sched-idle/,
      ],
      [
        "--udp-batch-syscalls without --allow-ffi",
        [...SAFE_SERVER, "--udp-batch-syscalls"],
        /--udp-batch-syscalls: .*--allow-ffi.*server:mmsg/,
      ],
      [
        "--nats without --cluster-key-file",
        [...SAFE_SERVER, "--nats", "nats://127.0.0.1:9"],
        /--nats needs --cluster-key-file PATH/,
      ],
      [
        "--cluster-key-file without --nats",
        [...SAFE_SERVER, "--cluster-key-file", "cluster.key"],
        /--cluster-key-file needs --nats URL/,
      ],
      [
        "a cluster name that is no subject token",
        [
          ...SAFE_SERVER,
          "--nats",
          "nats://127.0.0.1:9",
          "--cluster-key-file",
          "cluster.key",
          "--cluster",
          "a.b",
        ],
        /cluster name "a\.b": use 1-64 letters, digits/,
      ],
      [
        "--nats with --profile basic",
        [
          ...SAFE_SERVER,
          "--profile",
          "basic",
          "--nats",
          "nats://127.0.0.1:9",
        ],
        /--profile basic .* cannot federate/,
      ],
      [
        "a mistyped flag: the flag meant is suggested",
        [...SAFE_SERVER, "--key-flie", "server.pem"],
        /^error: Unknown option '--key-flie': did you mean --key-file\? \(see --help\)$/,
      ],
      [
        "--key-file of a special file: no advice to lift the sandbox",
        [...SAFE_SERVER, "--key-file", "/proc/version"],
        /^error: Cannot read key file \/proc\/version: Deno lets mcrelay read ordinary files only, .*give the path of an ordinary file[^]*$(?<!allow-all.*)/,
      ],
    ];
    for (const [what, args, pattern] of cases) {
      await t.step(what, async () => {
        await assertStartupError("server.ts", args, pattern, 2);
      });
    }
  },
});

Deno.test({
  name:
    "client: each bad flag value gives one 'error:' line, a non-zero status and no stack trace",
  ignore: !CAN_RUN,
  async fn(t) {
    const base = ["--server", NOWHERE, "--tcp-port", "0"];
    const cases: [string, string[], RegExp][] = [
      [
        "a --group that is not multicast (no --server)",
        ["--tcp-port", "0", "--group", "127.0.0.1"],
        /--group "127\.0\.0\.1" is not an IPv4 multicast group/,
      ],
      [
        "--port 70000",
        [...base, "--port", "70000"],
        /--port "70000" is not a port/,
      ],
      ["--port abc", [...base, "--port", "abc"], /--port "abc" is not a port/],
      [
        "--port 0",
        [...base, "--port", "0"],
        /--port "0" is not a port: give a number from 1/,
      ],
      [
        "a --server without a port",
        ["--tcp-port", "0", "--server", "127.0.0.1"],
        /--server "127\.0\.0\.1" is not an address/,
      ],
      [
        "a malformed --fingerprint",
        [...base, "--fingerprint", "MD5:00:11"],
        /--fingerprint "MD5:00:11" is not a key fingerprint/,
      ],
      [
        "a control port off loopback without a token",
        [...base, "--tcp-host", "0.0.0.0"],
        /--tcp-host 0\.0\.0\.0 is not a loopback address.*--control-token/,
      ],
      ["an unknown flag", [...base, "--frobnicate"], /--frobnicate/],
      [
        "a mistyped flag: the flag meant is suggested",
        [...base, "--tcp-prot", "0"],
        /Unknown option '--tcp-prot': did you mean --tcp-port\?/,
      ],
      [
        "a host name in --server: the text says which forms work",
        ["--tcp-port", "0", "--server", "relay.example:5007"],
        /is not an address: give IPv4:PORT, \[IPv6\]:PORT or localhost:PORT/,
      ],
      [
        "--profile nope",
        [...base, "--profile", "nope"],
        /--profile "nope" is not one of/,
      ],
      [
        "--count 0",
        [...base, "--count", "0"],
        /--count "0" is out of range: give a whole number from 1/,
      ],
      [
        "--connect-timeout abc",
        [...base, "--connect-timeout", "abc"],
        /--connect-timeout "abc" is not a duration: give seconds from 1/,
      ],
      [
        "a --file that does not exist",
        [...base, "--file", "/nonexistent/message.txt"],
        /--file "\/nonexistent\/message\.txt" cannot be read .*: give a readable file/,
      ],
      [
        "--known-servers with --no-known-servers",
        [...base, "--known-servers", "/tmp/x", "--no-known-servers"],
        /--known-servers and --no-known-servers contradict each other/,
      ],
    ];
    for (const [what, args, pattern] of cases) {
      await t.step(what, async () => {
        await assertStartupError("client.ts", args, pattern, 2);
      });
    }
  },
});

Deno.test({
  name:
    "client: a --file over 32 KiB, or a known-servers file with a bad line, is refused with one line and status 2",
  ignore: !CAN_RUN,
  async fn() {
    await withTempDir(async (dir) => {
      const base = ["--server", NOWHERE, "--tcp-port", "0"];
      const large = `${dir}/large.txt`;
      await Deno.writeTextFile(large, "x".repeat(32 * 1024 + 1));
      await assertStartupError(
        "client.ts",
        [...base, "--file", large],
        /is 32769 bytes: one message holds at most 32768 bytes; split it/,
        2,
      );
      const known = `${dir}/known_servers`;
      await Deno.writeTextFile(known, "127.0.0.1:5007 SHA256:nope\n");
      const line = await assertStartupError(
        "client.ts",
        [...base, "--known-servers", known],
        /Line 1 of the known-servers file .* is not "HOST:PORT SHA256:\.\.\.": fix or delete it/,
        2,
      );
      assert.ok(line.includes(`sed -i '1d' ${known}`), line);
    });
  },
});

Deno.test({
  name:
    "server --key-file: a file others can read, or one that holds no PKCS#8 RSA key, is refused with one line",
  ignore: !CAN_RUN,
  async fn() {
    await withTempDir(async (dir) => {
      const open = await writeFixtureKey(dir, "open.pem");
      await Deno.chmod(open, 0o644);
      const line = await assertStartupError(
        "server.ts",
        [...SAFE_SERVER, "--key-file", open],
        /chmod 600/,
        2,
      );
      assert.match(line, /mode 644/);
      assert.ok(line.includes(open), line);

      const notKey = `${dir}/not_a_key.pem`;
      await Deno.writeTextFile(notKey, "this is not a key\n", { mode: 0o600 });
      await assertStartupError(
        "server.ts",
        [...SAFE_SERVER, "--key-file", notKey],
        /does not hold an RSA private key in PKCS#8 PEM/,
        2,
      );

      const pkcs1 = `${dir}/pkcs1.pem`;
      await Deno.writeTextFile(pkcs1, RSA2048_PRIVATE_PKCS1_PEM, {
        mode: 0o600,
      });
      await assertStartupError(
        "server.ts",
        [...SAFE_SERVER, "--key-file", pkcs1],
        /does not hold an RSA private key in PKCS#8 PEM/,
        2,
      );

      // Neither refusal touched the files.
      assert.equal(await Deno.readTextFile(notKey), "this is not a key\n");
    });
  },
});

Deno.test({
  name:
    "a UDP port or control port in use, or an address not on this machine, gives one 'error:' line naming the address, the flag and the fix, and status 1",
  ignore: !CAN_RUN,
  async fn() {
    await withTempDir(async (dir) => {
      const keyFile = await writeFixtureKey(dir);
      const udp = Deno.listenDatagram({
        transport: "udp",
        hostname: "127.0.0.1",
        port: 0,
      });
      try {
        const port = (udp.addr as Deno.NetAddr).port;
        await assertStartupError(
          "server.ts",
          [
            "--no-multicast",
            "--bind",
            "127.0.0.1",
            "--tcp-port",
            "0",
            "--key-file",
            keyFile,
            "--port",
            String(port),
          ],
          new RegExp(
            `^error: UDP port 127\\.0\\.0\\.1:${port} is in use: choose another with --port, or 0 for a free one$`,
          ),
          1,
        );
      } finally {
        udp.close();
      }

      const tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const controlInUse = new RegExp(
        `^error: control port 127\\.0\\.0\\.1:${tcp.addr.port} is in use: choose another with --tcp-port, or 0 for a free one$`,
      );
      try {
        await assertStartupError(
          "server.ts",
          [
            "--no-multicast",
            "--bind",
            "127.0.0.1",
            "--port",
            "0",
            "--key-file",
            keyFile,
            "--tcp-port",
            String(tcp.addr.port),
          ],
          controlInUse,
          1,
        );
        await assertStartupError(
          "client.ts",
          ["--server", NOWHERE, "--tcp-port", String(tcp.addr.port)],
          controlInUse,
          1,
        );
        await assertStartupError(
          "server.ts",
          [
            ...SAFE_SERVER,
            "--key-file",
            keyFile,
            "--metrics",
            `127.0.0.1:${tcp.addr.port}`,
          ],
          new RegExp(
            `^error: metrics port 127\\.0\\.0\\.1:${tcp.addr.port} is in use: choose another with --metrics, or 0 for a free one$`,
          ),
          1,
        );
      } finally {
        tcp.close();
      }

      // 192.0.2.1 (TEST-NET-1) is no address of this machine: nothing is
      // bound, nothing sent. (The last --bind given wins.)
      await assertStartupError(
        "server.ts",
        [...SAFE_SERVER, "--key-file", keyFile, "--bind", "192.0.2.1"],
        /^error: UDP port 192\.0\.2\.1:0 cannot be bound: 192\.0\.2\.1 is not an address of this machine; choose one of its addresses with --bind, or 0\.0\.0\.0 for all$/,
        1,
      );
    });
  },
});

Deno.test({
  name:
    "server --key-file: a missing file is generated with mode 0600 and reused on the next start (same fingerprint)",
  ignore: !CAN_RUN,
  async fn() {
    await withTempDir(async (dir) => {
      const keyFile = `${dir}/generated.pem`;
      const args = [...LOOPBACK_SERVER, "--key-file", keyFile];

      const first = await startServer(args);
      try {
        first.proc.signal("SIGTERM");
        assert.equal((await first.proc.exited()).code, 0, first.proc.stderr);
      } finally {
        await first.proc.kill();
      }
      const firstEvents = first.proc.stdout.lines.map((l) => JSON.parse(l));
      assert.ok(
        firstEvents.some((e) =>
          e.event === "key_created" && e.path === keyFile
        ),
        first.proc.stdout.lines.join("\n"),
      );
      assert.ok(!firstEvents.some((e) => e.event === "ephemeral_key"));
      const info = await Deno.stat(keyFile);
      assert.equal(info.mode! & 0o777, 0o600);
      const pem = await Deno.readTextFile(keyFile);
      assert.match(pem, /^-----BEGIN PRIVATE KEY-----\n/);

      const second = await startServer(args);
      try {
        assert.equal(second.fingerprint, first.fingerprint);
        second.proc.signal("SIGTERM");
        assert.equal((await second.proc.exited()).code, 0, second.proc.stderr);
      } finally {
        await second.proc.kill();
      }
      const secondEvents = second.proc.stdout.lines.map((l) => JSON.parse(l));
      assert.ok(!secondEvents.some((e) => e.event === "key_created"));
      assert.equal(await Deno.readTextFile(keyFile), pem, "the file is kept");
      assert.equal((await Deno.stat(keyFile)).mode! & 0o777, 0o600);

      // The fixture key gives the fingerprint openssl computed.
      const fixture = await startServer([
        ...LOOPBACK_SERVER,
        "--key-file",
        await writeFixtureKey(dir),
      ]);
      await fixture.proc.kill();
      assert.equal(fixture.fingerprint, FIXTURE_FINGERPRINT);
    });
  },
});

Deno.test({
  name:
    "server --nats: a cluster key file is made with mode 0600; one readable by others or holding no key is refused; an unreachable NATS is named",
  ignore: !CAN_RUN,
  async fn() {
    await withTempDir(async (dir) => {
      const path = `${dir}/cluster.key`;
      // Nothing listens on port 9 of loopback: the start fails at once, after
      // the key file was made.
      const nowhere = [
        ...SAFE_SERVER,
        "--nats",
        "nats://127.0.0.1:9",
        "--cluster-key-file",
        path,
      ];
      await assertStartupError(
        "server.ts",
        nowhere,
        /Cannot reach NATS at nats:\/\/127\.0\.0\.1:9: .*start nats-server there or fix --nats/,
      );
      const made = await Deno.stat(path);
      assert.equal(made.mode! & 0o777, 0o600);
      assert.match(await Deno.readTextFile(path), /^[A-Za-z0-9_-]{43}=\n$/);

      await Deno.chmod(path, 0o644);
      await assertStartupError(
        "server.ts",
        nowhere,
        /Cluster key file .* is readable by others \(mode 644\): run "chmod 600/,
      );
      await Deno.writeTextFile(path, "not a key\n", { mode: 0o600 });
      await Deno.chmod(path, 0o600);
      await assertStartupError(
        "server.ts",
        nowhere,
        /Cluster key file .* does not hold one Fernet key/,
      );
    });
  },
});

Deno.test({
  name:
    "--config: a missing file, an unknown key, a malformed line and a control token others can read each give one 'error:' line naming the file",
  ignore: !CAN_RUN,
  async fn() {
    await withTempDir(async (dir) => {
      const missing = `${dir}/none.toml`;
      await assertStartupError(
        "server.ts",
        [...SAFE_SERVER, "--config", missing],
        /^error: Cannot read config file .*none\.toml: .*: give --config the path of a TOML or JSON file$/,
        2,
      );
      const unknown = `${dir}/unknown.toml`;
      await Deno.writeTextFile(unknown, "port = 0\nprot = 1\n");
      await assertStartupError(
        "server.ts",
        [...SAFE_SERVER, "--config", unknown],
        /^error: .*unknown\.toml:2: unknown key prot: the keys are the flags of --help without "--"/,
        2,
      );
      const malformed = `${dir}/client.toml`;
      await Deno.writeTextFile(malformed, "server = 127.0.0.1:9\n");
      await assertStartupError(
        "client.ts",
        ["--config", malformed],
        /^error: .*client\.toml:1: 127\.0\.0\.1:9 is not a value: quote strings/,
        2,
      );
      const secret = `${dir}/secret.json`;
      await Deno.writeTextFile(secret, '{"control-token": "s3cret"}');
      await Deno.chmod(secret, 0o644);
      await assertStartupError(
        "client.ts",
        ["--server", NOWHERE, "--config", secret],
        /^error: Config file .*secret\.json holds control-token and is readable by others \(mode 644\): run "chmod 600 .*", or remove the key and set MCRELAY_CONTROL_TOKEN/,
        2,
      );
    });
  },
});
