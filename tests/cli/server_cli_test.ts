/**
 * `server.ts` as a program: its first line, its control port commands, the
 * live log on several control connections, and a control connection that
 * never reads. Every server runs with `--no-multicast --bind 127.0.0.1`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  CAN_RUN,
  type ClientInfo,
  closeAll,
  ControlClient,
  jsonWith,
  killAll,
  LOOPBACK_SERVER,
  NO_RUN_REASON,
  parseJson,
  Proc,
  SERVER_CONTROL_COMMANDS,
  type ServerInfo,
  splitHostPort,
  startClient,
  startServer,
} from "./_process.ts";
import { VERSION } from "../../lib/version.ts";

if (!CAN_RUN) console.log(`server_cli_test.ts: ignored: ${NO_RUN_REASON}`);

const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}$/;
const LOOPBACK_ADDRESS = /^127\.0\.0\.1:(\d+)$/;

/** Asserts `address` is 127.0.0.1 with a port from 1 to 65535. */
function assertLoopbackAddress(address: unknown, what: string): void {
  assert.equal(typeof address, "string", `${what} is not a string`);
  const match = LOOPBACK_ADDRESS.exec(address as string);
  assert.ok(match, `${what} ${address} is not 127.0.0.1:PORT`);
  const port = Number(match[1]);
  assert.ok(port >= 1 && port <= 65535, `${what} has port ${port}`);
}

/** A server and two clients registered with it (each saw the other join). */
async function startGroup(
  serverArgs: readonly string[] = LOOPBACK_SERVER,
): Promise<{ server: ServerInfo; a: ClientInfo; b: ClientInfo }> {
  const server = await startServer(serverArgs);
  let a: ClientInfo | undefined;
  try {
    a = await startClient(["--server", server.udp]);
    const b = await startClient(["--server", server.udp]);
    await a.proc.stdout.waitJson({ event: "join", address: b.address });
    return { server, a, b };
  } catch (error) {
    await killAll(server.proc, a?.proc);
    throw error;
  }
}

Deno.test({
  name:
    "server --json: the first line is the listening record (protocol 1.1), and SIGTERM stops it with status 0",
  ignore: !CAN_RUN,
  async fn() {
    const server = await startServer();
    try {
      const first = server.first;
      assert.equal(typeof first.ts, "string");
      assert.equal(new Date(first.ts as string).toISOString(), first.ts);
      assert.equal(first.level, "info");
      assert.equal(first.event, "listening");
      assertLoopbackAddress(first.udp, "udp");
      assertLoopbackAddress(first.control, "control");
      assert.match(String(first.fingerprint), FINGERPRINT);
      assert.equal(first.multicast, undefined, "--no-multicast joins no group");
      assert.equal(first.protocol, "1.1", "section 10: a 1.1 server says so");

      server.proc.signal("SIGTERM");
      const status = await server.proc.exited("the server to stop on SIGTERM");
      assert.equal(status.code, 0, server.proc.stderr);
      const last = JSON.parse(server.proc.stdout.lines.at(-1)!);
      assert.equal(last.event, "shutdown");
      assert.equal(server.proc.stderr, "");
    } finally {
      await server.proc.kill();
    }
  },
});

Deno.test({
  name:
    "server (text): the first line reads 'TS INFO  listening udp=... control=... fingerprint=...', and control replies are text lines",
  ignore: !CAN_RUN,
  async fn() {
    const proc = Proc.deno("server.ts", LOOPBACK_SERVER, { name: "server" });
    let control: ControlClient | undefined;
    try {
      const first = await proc.stdout.waitLine(() => true, "the first line");
      const match =
        /^(\S+) INFO {2}listening udp=(\S+) control=(\S+) fingerprint=(\S+)( |$)/
          .exec(first);
      assert.ok(match, first);
      assert.equal(new Date(match[1]).toISOString(), match[1]);
      assertLoopbackAddress(match[2], "udp");
      assertLoopbackAddress(match[3], "control");
      assert.match(match[4], FINGERPRINT);

      control = await ControlClient.connectServer(match[3], false);
      // The first line a connection gets says what the port is.
      assert.equal(
        control.log.lines[0],
        `mcrelay server ${VERSION} control port: type help for the commands`,
      );
      const help = await control.request(
        "help",
        (l) => l.startsWith("  exit"),
      );
      assert.match(help, /stop the server/);
      const helpLines = control.log.lines.slice(
        control.log.lines.lastIndexOf("commands:"),
      );
      for (
        const command of SERVER_CONTROL_COMMANDS.filter((c) => c !== "exit")
      ) {
        assert.ok(
          helpLines.some((l) => l.startsWith(`  ${command} `)),
          `help lists ${command}: ${helpLines.join("\n")}`,
        );
      }
      assert.equal(
        await control.request("clients", (l) => l.endsWith("member(s)")),
        "0 member(s)",
      );
      await control.request("stats", (l) => l.startsWith("messagesRelayed="));
      assert.ok(control.log.lines.includes("messagesRelayed=0"));
      assert.ok(control.log.lines.includes("members=0"));
      assert.equal(
        await control.request("bogus", (l) => l.startsWith("error:")),
        'error: unknown command "bogus": try help',
      );
      // A figure the server does not have (kernelDropped without /proc) is
      // left out, not printed as "undefined".
      assert.deepEqual(
        control.log.lines.filter((l) => l.endsWith("=undefined")),
        [],
      );
      assert.equal(
        await control.request("exit", (l) => l.startsWith("ok:")),
        "ok: stopping",
      );
      const status = await proc.exited("the server to stop on exit");
      assert.equal(status.code, 0, proc.stderr);
    } finally {
      await control?.close();
      await proc.kill();
    }
  },
});

Deno.test({
  name:
    "server control (--json): help, clients, stats and kick with two clients",
  ignore: !CAN_RUN,
  async fn() {
    const { server, a, b } = await startGroup();
    let control: ControlClient | undefined;
    let controlA: ControlClient | undefined;
    try {
      control = await ControlClient.connectServer(server.control);
      assert.deepEqual(parseJson(control.log.lines[0]), {
        event: "greeting",
        version: VERSION,
        text:
          `mcrelay server ${VERSION} control port: type help for the commands`,
      });
      const help = await control.command("help", "help");
      assert.deepEqual(
        new Set(help.commands as string[]),
        new Set(SERVER_CONTROL_COMMANDS),
      );

      const clients = await control.command("clients", "clients");
      const members = clients.clients as Record<string, unknown>[];
      assert.deepEqual(
        new Set(members.map((m) => m.address)),
        new Set([a.address, b.address]),
      );
      for (const member of members) {
        assert.equal(member.profile, "hybrid");
        assert.equal(typeof member.lastSeen, "number");
        assert.equal(member.messagesIn, 0);
      }

      const before = (await control.command("stats", "stats")).stats as Record<
        string,
        unknown
      >;
      for (
        const counter of [
          "datagramsIn",
          "bytesIn",
          "datagramsOut",
          "bytesOut",
          "messagesRelayed",
          "deliveries",
          "registrations",
          "members",
        ]
      ) {
        assert.equal(typeof before[counter], "number", `stats.${counter}`);
      }
      assert.equal(typeof before.dropped, "object");
      assert.equal(before.messagesRelayed, 0);
      assert.equal(before.registrations, 2);
      assert.equal(before.members, 2);
      assert.ok((before.datagramsIn as number) >= 4, "2 key requests + 2 keys");

      controlA = await ControlClient.connect(a.control);
      await controlA.send("one message");
      await b.proc.stdout.waitJson({
        event: "message",
        from: a.address,
        text: "one message",
      });
      const after = (await control.command("stats", "stats")).stats as Record<
        string,
        unknown
      >;
      assert.equal(after.messagesRelayed, 1);
      assert.equal(after.deliveries, 1);
      // Fractions (loopUtilization, ...) are rounded to 3 decimals.
      assert.equal(typeof after.loopUtilization, "number");
      assert.doesNotMatch(JSON.stringify(after), /\d\.\d{4,}/);
      assert.ok(
        (after.datagramsIn as number) > (before.datagramsIn as number),
      );
      const counts = (await control.command("clients", "clients"))
        .clients as Record<string, unknown>[];
      const byAddress = new Map(counts.map((m) => [m.address, m]));
      assert.equal(byAddress.get(a.address)?.messagesIn, 1);
      assert.equal(byAddress.get(b.address)?.messagesOut, 1);

      const logMark = control.log.mark();
      const bMark = b.proc.stdout.mark();
      assert.deepEqual(await control.command(`kick ${a.address}`, "kicked"), {
        event: "kicked",
        address: a.address,
      });
      await b.proc.stdout.waitJson(
        { event: "leave", address: a.address },
        bMark,
      );
      await control.log.waitJson(
        { event: "leave", client: a.address, reason: "kick" },
        logMark,
      );
      const left = (await control.command("clients", "clients"))
        .clients as Record<string, unknown>[];
      assert.deepEqual(left.map((m) => m.address), [b.address]);

      // A kicked member registers again at once (a kick is not a ban), so
      // kick an address that is surely not a member.
      const again = await control.command("kick 127.0.0.1:9", "error");
      assert.match(String(again.error), /no member/);
      const usage = await control.command("kick", "error");
      assert.match(String(usage.error), /usage: kick IP:PORT/);
      const bad = await control.command("kick not-an-address", "error");
      assert.match(String(bad.error), /not an IP:PORT/);
      const unknown = await control.command("frobnicate", "error");
      assert.match(String(unknown.error), /unknown command "frobnicate"/);
    } finally {
      await closeAll(control, controlA);
      await killAll(server.proc, a.proc, b.proc);
    }
  },
});

Deno.test({
  name:
    "server control: several connections all receive the live log, and quit closes only its own",
  ignore: !CAN_RUN,
  async fn() {
    const server = await startServer();
    let first: ControlClient | undefined;
    let second: ControlClient | undefined;
    let a: ClientInfo | undefined;
    let b: ClientInfo | undefined;
    try {
      first = await ControlClient.connectServer(server.control);
      second = await ControlClient.connectServer(server.control);

      a = await startClient(["--server", server.udp]);
      for (const control of [first, second]) {
        const join = await control.log.waitJson({
          event: "join",
          client: a.address,
        });
        assert.equal(join.level, "info");
        assert.equal(join.profile, "hybrid");
        assert.equal(typeof join.ts, "string");
      }

      await first.send("quit");
      await first.closedByPeer();
      assert.ok(first.log.ended);

      // The other connection still answers and still gets the log.
      await second.command("stats", "stats");
      b = await startClient(["--server", server.udp]);
      await second.log.waitJson({ event: "join", client: b.address });
      assert.ok(
        !first.log.lines.some(jsonWith({ event: "join", client: b.address })),
        "a closed connection gets nothing more",
      );
      // And the server runs on: the clients still talk.
      const control = await ControlClient.connect(b.control);
      try {
        await control.send("still relaying");
      } finally {
        await control.close();
      }
      await a.proc.stdout.waitJson({
        event: "message",
        from: b.address,
        text: "still relaying",
      });
    } finally {
      await closeAll(first, second);
      await killAll(server.proc, a?.proc, b?.proc);
    }
  },
});

Deno.test({
  name:
    "server control: exit stops the server with status 0 and its members get NOTICE 5 and reconnect",
  ignore: !CAN_RUN,
  async fn() {
    const { server, a, b } = await startGroup();
    let control: ControlClient | undefined;
    try {
      control = await ControlClient.connectServer(server.control);
      const marks = [a.proc.stdout.mark(), b.proc.stdout.mark()];
      assert.deepEqual(await control.command("exit", "stopping"), {
        event: "stopping",
      });
      const status = await server.proc.exited("the server to stop on exit");
      assert.equal(status.code, 0, server.proc.stderr);
      await control.closedByPeer();
      const last = JSON.parse(server.proc.stdout.lines.at(-1)!);
      assert.equal(last.event, "shutdown");
      assert.equal(last.members, 2);

      for (const [i, client] of [a, b].entries()) {
        const notice = await client.proc.stdout.waitJson(
          { event: "notice", code: 5 },
          marks[i],
        );
        assert.equal(typeof notice.text, "string");
        await client.proc.stdout.waitJson({ event: "reconnecting" }, marks[i]);
      }

      // A client that is reconnecting still stops cleanly on exit.
      const controlA = await ControlClient.connect(a.control);
      try {
        await controlA.command("exit", "stopping");
      } finally {
        await controlA.close();
      }
      const clientStatus = await a.proc.exited("the client to stop on exit");
      assert.equal(clientStatus.code, 0, a.proc.stderr);
    } finally {
      await control?.close();
      await killAll(server.proc, a.proc, b.proc);
    }
  },
});

Deno.test({
  name:
    "server control: a connection that never reads does not stop the relay, the log, or exit",
  ignore: !CAN_RUN,
  async fn() {
    // Debug level: every relayed message is one more log line for every
    // control connection, the stuck one included.
    const { server, a, b } = await startGroup([
      ...LOOPBACK_SERVER,
      "--log-level",
      "debug",
    ]);
    let stuck: Deno.TcpConn | undefined;
    let control: ControlClient | undefined;
    let controlA: ControlClient | undefined;
    try {
      const { host, port } = splitHostPort(server.control);
      stuck = await Deno.connect({ hostname: host, port });
      // Thousands of replies it will never read: far more than the socket
      // buffers and the server's per-connection queue hold.
      const flood = new TextEncoder().encode("stats\n".repeat(20_000));
      let written = 0;
      while (written < flood.length) {
        written += await stuck.write(flood.subarray(written));
      }

      control = await ControlClient.connectServer(server.control);
      controlA = await ControlClient.connect(a.control);
      const messages = 200;
      for (let i = 0; i < messages; i++) {
        const mark = b.proc.stdout.mark();
        await controlA.send(`message ${i}`);
        await b.proc.stdout.waitJson(
          { event: "message", from: a.address, text: `message ${i}` },
          mark,
        );
      }
      // The reading connection got the log of the last relay.
      await control.log.waitJson({
        event: "relay",
        level: "debug",
        from: a.address,
      });
      const stats = (await control.command("stats", "stats")).stats as Record<
        string,
        unknown
      >;
      assert.equal(stats.messagesRelayed, messages);
      assert.equal(stats.deliveries, messages);

      // exit still works with the stuck connection open.
      await control.command("exit", "stopping");
      const status = await server.proc.exited("the server to stop on exit");
      assert.equal(status.code, 0, server.proc.stderr);
    } finally {
      try {
        stuck?.close();
      } catch {
        // Closed by the server.
      }
      await closeAll(control, controlA);
      await killAll(server.proc, a.proc, b.proc);
    }
  },
});

Deno.test({
  name:
    "server --rsa-sched-idle with --allow-ffi: its RSA threads report SCHED_IDLE (idle: true), and it stops cleanly",
  ignore: !CAN_RUN || Deno.build.os !== "linux",
  async fn() {
    const server = await startServer([...LOOPBACK_SERVER, "--rsa-sched-idle"], {
      denoFlags: ["--allow-ffi"],
    });
    try {
      const threads = await server.proc.stdout.waitJson({
        event: "rsa_threads",
      });
      assert.equal(threads.level, "info", JSON.stringify(threads));
      assert.equal(threads.idle, true, JSON.stringify(threads));
      assert.ok(Number(threads.threads) >= 1, JSON.stringify(threads));
      server.proc.signal("SIGTERM");
      const status = await server.proc.exited("the server to stop on SIGTERM");
      assert.equal(status.code, 0, server.proc.stderr);
    } finally {
      await server.proc.kill();
    }
  },
});

Deno.test({
  name:
    "server --udp-batch-syscalls with --allow-ffi: two clients register through recvmmsg/sendmmsg, and it stops cleanly",
  ignore: !CAN_RUN || Deno.build.os !== "linux",
  async fn() {
    const server = await startServer(
      [...LOOPBACK_SERVER, "--udp-batch-syscalls"],
      { denoFlags: ["--allow-ffi"] },
    );
    let a: ClientInfo | undefined;
    let b: ClientInfo | undefined;
    try {
      assertLoopbackAddress(server.first.udp, "udp");
      a = await startClient(["--server", server.udp]);
      b = await startClient(["--server", server.udp]);
      await a.proc.stdout.waitJson({ event: "join", address: b.address });
      server.proc.signal("SIGTERM");
      const status = await server.proc.exited("the server to stop on SIGTERM");
      assert.equal(status.code, 0, server.proc.stderr);
    } finally {
      await killAll(server.proc, a?.proc, b?.proc);
    }
  },
});

Deno.test({
  name:
    "server --udp-batch-syscalls without --no-multicast: one error line saying to add it, status 2",
  ignore: !CAN_RUN || Deno.build.os !== "linux",
  async fn() {
    const proc = Proc.deno(
      "server.ts",
      ["--udp-batch-syscalls", "--port", "0", "--tcp-port", "0"],
      { name: "server", denoFlags: ["--allow-ffi"] },
    );
    try {
      const status = await proc.exited("the server to refuse its flags");
      assert.equal(status.code, 2, proc.stderr);
      assert.match(
        proc.stderr,
        /^error: --udp-batch-syscalls does not join multicast groups: add --no-multicast/,
      );
    } finally {
      await proc.kill();
    }
  },
});

Deno.test({
  name:
    "server control: 70 idle connections do not lock the operator out; the ones silent longest make room, and the operator runs stats",
  ignore: !CAN_RUN,
  async fn() {
    const server = await startServer();
    const idle: ControlClient[] = [];
    let operator: ControlClient | undefined;
    const evicted = (l: string) =>
      l.startsWith("error: closed to make room for a new control connection");
    try {
      for (let i = 0; i < 70; i++) {
        idle.push(await ControlClient.connect(server.control));
      }
      operator = await ControlClient.connectServer(server.control);
      const stats = (await operator.command("stats", "stats")).stats as Record<
        string,
        unknown
      >;
      assert.equal(stats.members, 0);
      // Six made room for the last idle ones, the seventh for the operator.
      assert.deepEqual(stats.control, {
        evicted: 7,
        authFailures: 0,
        authThrottled: 0,
        droppedLines: 0,
      });
      // 64 at most (the default): the first six made room for the last six.
      for (const c of idle.slice(0, 6)) {
        await c.log.waitLine(evicted, "the line saying it makes room");
        await c.closedByPeer();
      }
      // The operator took the place of the next one silent longest only.
      await idle[6]!.log.waitLine(evicted, "the seventh to make room");
      await idle[6]!.closedByPeer();
      for (const c of idle.slice(7)) {
        assert.ok(!c.log.ended && !c.log.lines.some(evicted));
      }
    } finally {
      await closeAll(...idle, operator);
      await server.proc.kill();
    }
  },
});

Deno.test({
  name:
    "server control with a token: attackers that reconnect as soon as they are closed cannot keep the operator out",
  ignore: !CAN_RUN,
  async fn() {
    const token = "the operator's token";
    const server = await startServer([
      ...LOOPBACK_SERVER,
      "--control-token",
      token,
    ]);
    // 80 attackers (more than the 64 connections of the old cap), each
    // reconnecting as soon as its connection is closed, until the operator
    // is done or 20 000 connections in all (a count, not a time, so a slow
    // machine cannot end the attack before the operator tries).
    const SLOTS = 80;
    const MAX_CONNECTIONS = 20_000;
    let stopped = false;
    let connections = 0;
    const open = new Set<ControlClient>();
    const allConnected = Promise.withResolvers<void>();
    let firstConnections = 0;
    const slot = async () => {
      let first = true;
      while (
        !stopped && connections < MAX_CONNECTIONS
      ) {
        connections++;
        const c = await ControlClient.connect(server.control);
        if (stopped) {
          await c.close();
          break;
        }
        open.add(c);
        if (first && ++firstConnections === SLOTS) allConnected.resolve();
        first = false;
        await c.closedByPeer().catch(() => {});
        open.delete(c);
        await c.close();
      }
    };
    const attack = Array.from({ length: SLOTS }, slot);
    let operator: ControlClient | undefined;
    const tries: string[] = [];
    try {
      await allConnected.promise;
      // The operator connects and sends its token at once, as a script does.
      while (operator === undefined && tries.length < 5) {
        const c = await ControlClient.connect(server.control);
        await c.send(`auth ${token}`);
        const answer = await c.log.waitLine(
          (l) => parseJson(l)?.event !== "greeting",
          "the answer to auth",
        )
          .catch((error: Error) => `closed: ${error.message.split("\n")[0]}`);
        tries.push(answer);
        if (answer === "ok: authenticated") operator = c;
        else await c.close();
      }
      assert.ok(operator, `the operator was kept out: ${tries.join(" | ")}`);
      const during = connections;
      const stats = (await operator.command("stats", "stats")).stats as Record<
        string,
        unknown
      >;
      assert.equal(stats.members, 0);
      const counters = stats.control as Record<string, number>;
      assert.equal(counters.authFailures, 0);
      assert.ok(counters.evicted > 0, "no attacker was made to give way");
      assert.ok(
        during < MAX_CONNECTIONS,
        "the attack had ended before the operator got in",
      );
      console.log(
        `operator in after ${tries.length} tr(y/ies) while attackers made ${during} connections: ${
          tries.join(" | ")
        }`,
      );
    } finally {
      stopped = true;
      await closeAll(operator, ...open);
      await Promise.all(attack);
      await server.proc.kill();
    }
  },
});

Deno.test({
  name:
    "server control port with --control-token: the greeting says to send auth first, before any command is taken",
  ignore: !CAN_RUN,
  async fn() {
    const server = await startServer([
      ...LOOPBACK_SERVER,
      "--control-token",
      "s3cret",
    ]);
    const control = await ControlClient.connect(server.control);
    try {
      const greeting = await control.log.waitLine(() => true, "the greeting");
      assert.deepEqual(parseJson(greeting), {
        event: "greeting",
        version: VERSION,
        text:
          `mcrelay server ${VERSION} control port: send auth TOKEN first, then type help for the commands`,
      });
      await control.request("auth s3cret", (l) => l === "ok: authenticated");
      await control.command("help", "help");
    } finally {
      await control.close();
      await killAll(server.proc);
    }
  },
});
