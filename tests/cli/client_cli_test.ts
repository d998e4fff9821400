/**
 * `client.ts` as a program: the three-terminal scenario (a server and
 * clients, messages typed into one client's control port appear at the
 * others), `exit` on the control port, and server key pinning. Every server
 * runs with `--no-multicast --bind 127.0.0.1`; clients use `--server`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  assertNoStackTrace,
  CAN_RUN,
  type ClientInfo,
  closeAll,
  ControlClient,
  FIXTURE_FINGERPRINT,
  jsonWith,
  killAll,
  LOOPBACK_SERVER,
  NO_RUN_REASON,
  parseJson,
  Proc,
  type ServerInfo,
  startClient,
  startServer,
  withTempDir,
  writeFixtureKey,
} from "./_process.ts";

if (!CAN_RUN) console.log(`client_cli_test.ts: ignored: ${NO_RUN_REASON}`);

/** The `message` events in a client's JSON stdout. */
function messagesIn(lines: readonly string[]): Record<string, unknown>[] {
  return lines.map(parseJson).filter((l) => l?.event === "message") as Record<
    string,
    unknown
  >[];
}

Deno.test({
  name:
    "client: a line written to A's control port reaches B's stdout and control port, and a text client, as sent by A",
  ignore: !CAN_RUN,
  async fn() {
    let server: ServerInfo | undefined;
    let a: ClientInfo | undefined;
    let b: ClientInfo | undefined;
    let c: Proc | undefined;
    let controlA: ControlClient | undefined;
    let controlB: ControlClient | undefined;
    let controlC: ControlClient | undefined;
    try {
      // Terminal 1: the server. Terminals 2 and 3: clients A and B.
      server = await startServer();
      a = await startClient(["--server", server.udp]);
      b = await startClient(["--server", server.udp]);
      assert.equal(a.server, server.udp);
      assert.equal(b.server, server.udp);
      assert.match(a.address, /^127\.0\.0\.1:\d+$/);
      assert.notEqual(a.address, b.address);
      assert.match(a.control, /^127\.0\.0\.1:\d+$/);
      // Each side learns of the other.
      await a.proc.stdout.waitJson({ event: "join", address: b.address });
      await b.proc.stdout.waitJson({ event: "join", address: a.address });

      // A third member in text mode.
      c = Proc.deno("client.ts", [
        "--server",
        server.udp,
        "--tcp-port",
        "0",
      ], { name: "client C (text)" });
      const ready = await c.stdout.waitLine(() => true, "C's ready line");
      const match =
        /^ready: registered with (\S+) as (\S+) \(server key (SHA256:\S+)\); control port (\S+)$/
          .exec(ready);
      assert.ok(match, ready);
      assert.equal(match[1], server.udp);
      assert.equal(match[3], server.fingerprint);
      const cAddress = match[2];
      const cControl = match[4];
      await c.stdout.waitLine(
        (l) => l === `* ${a!.address} present`,
        "C's line about A",
      );

      // B's control connection is registered once a line it sent is relayed.
      controlB = await ControlClient.connect(b.control);
      await controlB.send("sync from B");
      await a.proc.stdout.waitJson({
        event: "message",
        from: b.address,
        text: "sync from B",
      });

      controlA = await ControlClient.connect(a.control);
      const text = 'hello from A: ünïcödé ✓ "quoted" \\ tab\there';
      await controlA.send(text);
      const expected = { event: "message", from: a.address, text };
      const atB = await b.proc.stdout.waitLine(
        jsonWith(expected),
        "A's message at B",
      );
      assert.deepEqual(JSON.parse(atB), expected);
      const onControl = await controlB.log.waitLine(
        jsonWith(expected),
        "A's message on B's control port",
      );
      assert.deepEqual(JSON.parse(onControl), expected);
      await c.stdout.waitLine(
        (l) => l === `[${a!.address}] ${text}`,
        "A's message at C (text)",
      );

      // A line over the 32 KiB message limit is refused on the control
      // port; one at the limit is relayed (fragmented on the wire).
      const refused = await controlA.command("x".repeat(40_000), "error");
      assert.match(String(refused.error), /40000 bytes.*limit is 32768/);
      const largest = "y".repeat(32 * 1024);
      await controlA.send(largest);
      await b.proc.stdout.waitJson({
        event: "message",
        from: a.address,
        text: largest,
      });

      // C answers; A gets it, and never got its own message back.
      controlC = await ControlClient.connect(cControl);
      await controlC.send("reply from C");
      await a.proc.stdout.waitJson({
        event: "message",
        from: cAddress,
        text: "reply from C",
      });
      assert.deepEqual(
        messagesIn(a.proc.stdout.lines).map((m) => m.from),
        [b.address, cAddress],
      );

      // Text mode: exit answers "ok: stopping" and ends with status 0.
      assert.equal(
        await controlC.request("exit", (l) => l.startsWith("ok:")),
        "ok: stopping",
      );
      assert.equal((await c.exited("C to stop on exit")).code, 0, c.stderr);
      await b.proc.stdout.waitJson({ event: "leave", address: cAddress });
      assert.equal(a.proc.stderr, "");
      assert.equal(b.proc.stderr, "");
    } finally {
      await closeAll(controlA, controlB, controlC);
      await killAll(server?.proc, a?.proc, b?.proc, c);
    }
  },
});

Deno.test({
  name:
    "client: exit on the control port, or SIGTERM right after the ready line, stops it with status 0 and the others see it leave",
  ignore: !CAN_RUN,
  async fn() {
    let server: ServerInfo | undefined;
    let a: ClientInfo | undefined;
    let b: ClientInfo | undefined;
    let c: ClientInfo | undefined;
    let controlA: ControlClient | undefined;
    let controlServer: ControlClient | undefined;
    try {
      server = await startServer();
      controlServer = await ControlClient.connectServer(server.control);
      a = await startClient(["--server", server.udp]);
      b = await startClient(["--server", server.udp]);
      await a.proc.stdout.waitJson({ event: "join", address: b.address });

      controlA = await ControlClient.connect(a.control);
      assert.deepEqual(await controlA.command("exit", "stopping"), {
        event: "stopping",
      });
      const status = await a.proc.exited("A to stop on exit");
      assert.equal(status.code, 0, a.proc.stderr);
      assert.equal(a.proc.stderr, "");
      await controlA.closedByPeer();

      await b.proc.stdout.waitJson({ event: "leave", address: a.address });
      await controlServer.log.waitJson({
        event: "leave",
        client: a.address,
        reason: "disconnect",
      });
      const clients = await controlServer.command("clients", "clients");
      assert.deepEqual(
        (clients.clients as Record<string, unknown>[]).map((m) => m.address),
        [b.address],
      );

      // SIGTERM as soon as the ready line is out also leaves cleanly.
      const mark = controlServer.log.mark();
      b.proc.signal("SIGTERM");
      assert.equal((await b.proc.exited()).code, 0, b.proc.stderr);
      await controlServer.log.waitJson(
        { event: "leave", client: b.address, reason: "disconnect" },
        mark,
      );
      c = await startClient(["--server", server.udp]);
      c.proc.signal("SIGTERM");
      assert.equal((await c.proc.exited()).code, 0, c.proc.stderr);
      await controlServer.log.waitJson({
        event: "leave",
        client: c.address,
        reason: "disconnect",
      }, mark);
    } finally {
      await closeAll(controlA, controlServer);
      await killAll(server?.proc, a?.proc, b?.proc, c?.proc);
    }
  },
});

Deno.test({
  name:
    "client --fingerprint: the server's key connects; another key exits non-zero with one error line and no stack trace",
  ignore: !CAN_RUN,
  async fn() {
    await withTempDir(async (dir) => {
      const keyFile = await writeFixtureKey(dir);
      let server: ServerInfo | undefined;
      let right: ClientInfo | undefined;
      let wrong: Proc | undefined;
      try {
        server = await startServer([
          ...LOOPBACK_SERVER,
          "--key-file",
          keyFile,
        ]);
        assert.equal(server.fingerprint, FIXTURE_FINGERPRINT);
        // Some other valid fingerprint.
        const other = "SHA256:" + "A".repeat(43);
        // The refused client retries for the whole key-exchange backoff
        // (1+2+4+8+16 s) before it gives up, so start it first.
        wrong = Proc.deno("client.ts", [
          "--server",
          server.udp,
          "--tcp-port",
          "0",
          "--fingerprint",
          other,
        ], { name: "client with a wrong fingerprint" });

        right = await startClient([
          "--server",
          server.udp,
          "--fingerprint",
          FIXTURE_FINGERPRINT,
        ]);
        assert.equal(right.server, server.udp);

        const status = await wrong.exited(
          "the client with a wrong fingerprint to give up",
          60_000,
        );
        assert.notEqual(status.code, 0);
        assert.deepEqual(wrong.stdout.lines, [], "no ready line");
        const stderr = wrong.stderr;
        assertNoStackTrace(stderr);
        const lines = stderr.split("\n").filter((l) => l.length > 0);
        const errors = lines.filter((l) => l.startsWith("error:"));
        assert.equal(errors.length, 1, stderr);
        assert.match(errors[0], /fingerprint/);
        assert.ok(errors[0].includes(other), errors[0]);
        assert.ok(errors[0].includes(FIXTURE_FINGERPRINT), errors[0]);
        assert.equal(lines.at(-1), errors[0], "the error line comes last");
        // Anything else is the warn-level log of the refused answers.
        for (const line of lines.slice(0, -1)) {
          assert.match(line, /WARN +drop reason=fingerprint_mismatch/);
        }
      } finally {
        await killAll(server?.proc, right?.proc, wrong);
      }
    });
  },
});

Deno.test({
  name:
    "client: members there before it are reported present, later ones joined; --server localhost:PORT works",
  ignore: !CAN_RUN,
  async fn() {
    const server = await startServer();
    const clients: ClientInfo[] = [];
    try {
      const port = server.udp.split(":").at(-1);
      clients.push(await startClient(["--server", server.udp]));
      const [a] = clients;
      clients.push(await startClient(["--server", `localhost:${port}`]));
      const b = clients[1];
      assert.equal(b.server, server.udp);
      await b.proc.stdout.waitJson({
        event: "join",
        address: a.address,
        present: true,
      });
      clients.push(await startClient(["--server", server.udp]));
      const c = clients[2];
      await b.proc.stdout.waitJson({
        event: "join",
        address: c.address,
        present: false,
      });
      await a.proc.stdout.waitJson({
        event: "join",
        address: b.address,
        present: false,
      });
      await c.proc.stdout.waitJson({
        event: "join",
        address: a.address,
        present: true,
      });
    } finally {
      await killAll(...clients.map((c) => c.proc), server.proc);
    }
  },
});
