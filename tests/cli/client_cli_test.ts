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
  splitHostPort,
  startClient,
  startServer,
  withTempDir,
  writeFixtureKey,
} from "./_process.ts";

if (!CAN_RUN) console.log(`client_cli_test.ts: ignored: ${NO_RUN_REASON}`);

/** A loopback address where nothing answers (the discard port). */
const NOWHERE = "127.0.0.1:9";

/** A progress line of the key exchange on stderr. */
const PROGRESS =
  /^(asking \S+ for its key|registering with \S+ \(server key \S+\)|waiting for \S+ to confirm what was sent), try \d+ of \d+ \.\.\.$/;

/**
 * Asserts that a client's stderr holds only what a client that works says
 * (as text, or JSON with --json): progress lines, and the line recording a
 * new server in its known-servers file.
 */
function assertOnlyProgress(stderr: string): void {
  const lines = stderr.split("\n").filter((l) => l.length > 0);
  for (const line of lines) {
    const event = parseJson(line)?.event;
    assert.ok(
      PROGRESS.test(line) || /^the server \S+ is new: its key/.test(line) ||
        event === "progress" || event === "known_server_added",
      `unexpected stderr line: ${line}\n${stderr}`,
    );
  }
}

/** The `error:` lines of a stderr text. */
function errorLines(stderr: string): string[] {
  return stderr.split("\n").filter((l) => l.startsWith("error:"));
}

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
      assertOnlyProgress(a.proc.stderr);
      assertOnlyProgress(b.proc.stderr);
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
      assertOnlyProgress(a.proc.stderr);
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
        // Anything else is the warn-level log of the refused answers, and
        // what the client was doing.
        for (const line of lines.slice(0, -1)) {
          assert.match(
            line,
            /WARN +drop reason=fingerprint_mismatch|^asking \S+ for its key, try \d of 5 \.\.\.$/,
          );
        }
      } finally {
        await killAll(server?.proc, right?.proc, wrong);
      }
    });
  },
});

/** Loopback server flags with a given UDP port (a restart on the same port). */
function onPort(port: number): string[] {
  return [
    "--no-multicast",
    "--bind",
    "127.0.0.1",
    "--port",
    String(port),
    "--tcp-port",
    "0",
  ];
}

/** Starts `client.ts` with `args` and stdin piped (as `... | client.ts`). */
function pipedClient(args: readonly string[], name: string): Proc {
  return Proc.deno("client.ts", args, { name, stdin: "piped" });
}

/** A client's address from its first (JSON ready) line. */
async function readyAddress(proc: Proc): Promise<string> {
  const ready = await proc.stdout.waitJson({ event: "ready" });
  return String(ready.address);
}

Deno.test({
  name:
    "client with piped stdin: each line reaches the other member, then it exits 0 at end of input, with no control port",
  ignore: !CAN_RUN,
  async fn() {
    let server: ServerInfo | undefined;
    let b: ClientInfo | undefined;
    let pipe: Proc | undefined;
    try {
      server = await startServer();
      b = await startClient(["--server", server.udp]);
      // echo -e 'hi\n\nsecond line\nno newline at the end' | client.ts ...
      pipe = pipedClient(["--server", server.udp, "--json"], "piped client");
      await pipe.write("hi\n\nsecond line\nno newline");
      await pipe.write(" at the end");
      await pipe.closeStdin();
      const status = await pipe.exited("the piped client to exit");
      assert.equal(status.code, 0, pipe.stderr);
      const ready = parseJson(pipe.stdout.lines[0]);
      assert.equal(ready?.event, "ready");
      assert.ok(!("control" in ready!), "no control port unless asked");
      const from = String(ready!.address);
      const texts = ["hi", "second line", "no newline at the end"];
      await b.proc.stdout.waitJson({ event: "message", from, text: texts[2] });
      // Each line once, in order; the empty line is not sent.
      assert.deepEqual(
        messagesIn(b.proc.stdout.lines).map((m) => m.text),
        texts,
      );
      assertOnlyProgress(pipe.stderr);
      await b.proc.stdout.waitJson({ event: "leave", address: from });
    } finally {
      await killAll(server?.proc, b?.proc, pipe);
    }
  },
});

Deno.test({
  name:
    "client with piped stdin: lines the server refuses (NOTICE 3, rate limited) make it exit 1 with one error line",
  ignore: !CAN_RUN,
  async fn() {
    let server: ServerInfo | undefined;
    let pipe: Proc | undefined;
    try {
      // One message a second, a burst of two: 20 lines at once overflow it
      // unless sending them took 18 s.
      server = await startServer([...LOOPBACK_SERVER, "--message-rate", "1"]);
      pipe = pipedClient(["--server", server.udp, "--json"], "piped client");
      await pipe.write(
        Array.from({ length: 20 }, (_, i) => `line ${i}\n`).join(""),
      );
      await pipe.closeStdin();
      const status = await pipe.exited("the piped client to exit");
      assert.equal(status.code, 1, pipe.stderr);
      await pipe.stdout.waitJson({ event: "notice", code: 3 });
      assertNoStackTrace(pipe.stderr);
      const errors = errorLines(pipe.stderr);
      assert.equal(errors.length, 1, pipe.stderr);
      assert.match(
        errors[0],
        /^error: the server refused some of the 20 messages sent \(\d+ NOTICE 2: too large, or 3: rate limited, came back/,
      );
    } finally {
      await killAll(server?.proc, pipe);
    }
  },
});

Deno.test({
  name:
    "client with piped stdin: a server that stops answering after the ready line leaves the lines unconfirmed: exit 1 with one error line",
  ignore: !CAN_RUN,
  async fn() {
    let server: ServerInfo | undefined;
    let pipe: Proc | undefined;
    try {
      server = await startServer();
      // --connect-timeout also paces the confirmation tries: 10 s leaves a
      // busy machine's server time to register the client, and the five
      // tries still end well within the wait for the exit.
      pipe = pipedClient(
        ["--server", server.udp, "--json", "--connect-timeout", "10"],
        "piped client",
      );
      await pipe.stdout.waitJson({ event: "ready" });
      server.proc.signal("SIGSTOP"); // up, but answering nothing
      await pipe.write("into the void\n");
      await pipe.closeStdin();
      const status = await pipe.exited("the piped client to give up");
      assert.equal(status.code, 1, pipe.stderr);
      const errors = errorLines(pipe.stderr);
      assert.equal(errors.length, 1, pipe.stderr);
      assert.match(
        errors[0],
        /^error: 127\.0\.0\.1:\d+ did not confirm the 1 messages sent \(no answer to the keep-alives after them\): they may be lost/,
      );
      // Each confirmation try after the first was announced.
      const tries = pipe.stderr.split("\n").map(parseJson).filter((l) =>
        l?.event === "progress" && l.step === "confirm"
      ).map((l) => l!.try);
      assert.deepEqual(tries, [2, 3, 4, 5]);
    } finally {
      server?.proc.signal("SIGCONT");
      await killAll(server?.proc, pipe);
    }
  },
});

Deno.test({
  name:
    "client --count 2 prints two messages and exits 0; --file sends a 20 KB file as one message and exits 0",
  ignore: !CAN_RUN,
  async fn() {
    await withTempDir(async (dir) => {
      let server: ServerInfo | undefined;
      let a: ClientInfo | undefined;
      let counter: Proc | undefined;
      let sender: Proc | undefined;
      let controlA: ControlClient | undefined;
      try {
        server = await startServer();
        a = await startClient(["--server", server.udp]);
        counter = Proc.deno(
          "client.ts",
          ["--server", server.udp, "--json", "--count", "2"],
          { name: "client --count 2" },
        );
        const counterAddress = await readyAddress(counter);
        await a.proc.stdout.waitJson({
          event: "join",
          address: counterAddress,
        });
        controlA = await ControlClient.connect(a.control);
        for (const text of ["one", "two", "three"]) await controlA.send(text);
        const status = await counter.exited("the counting client to exit");
        assert.equal(status.code, 0, counter.stderr);
        assert.deepEqual(
          messagesIn(counter.stdout.lines).map((m) => [m.from, m.text]),
          [[a.address, "one"], [a.address, "two"]],
        );

        // Lines of a file larger than the MTU: one message, fragmented.
        const content = Array.from(
          { length: 400 },
          (_, i) => `line ${i} of the file `.padEnd(49, "~"),
        ).join("\n");
        assert.equal(content.length, 400 * 50 - 1);
        const path = `${dir}/message.txt`;
        await Deno.writeTextFile(path, content);
        sender = Proc.deno(
          "client.ts",
          ["--server", server.udp, "--json", "--file", path],
          { name: "client --file" },
        );
        const senderStatus = await sender.exited("the file sender to exit");
        assert.equal(senderStatus.code, 0, sender.stderr);
        const from = String(parseJson(sender.stdout.lines[0])?.address);
        await a.proc.stdout.waitJson({ event: "message", from, text: content });
        assert.equal(
          messagesIn(a.proc.stdout.lines).filter((m) => m.from === from)
            .length,
          1,
        );
        assertOnlyProgress(sender.stderr);
      } finally {
        await controlA?.close();
        await killAll(server?.proc, a?.proc, counter, sender);
      }
    });
  },
});

Deno.test({
  name:
    "client to a dead server: says what it is doing at each try and exits 1 at --connect-timeout with one error line",
  ignore: !CAN_RUN,
  async fn() {
    const proc = Proc.deno(
      "client.ts",
      ["--server", NOWHERE, "--tcp-port", "0", "--connect-timeout", "2"],
      { name: "client of a dead server" },
    );
    try {
      // Without --connect-timeout it would take 31 s, past this wait.
      const status = await proc.exited("the client to give up");
      assert.equal(status.code, 1, proc.stderr);
      assert.deepEqual(proc.stdout.lines, []);
      assertNoStackTrace(proc.stderr);
      const lines = proc.stderr.split("\n").filter((l) => l.length > 0);
      assert.deepEqual(lines.slice(0, -1), [
        "asking 127.0.0.1:9 for its key, try 1 of 5 ...",
        "asking 127.0.0.1:9 for its key, try 2 of 5 ...",
        "asking 127.0.0.1:9 for its key, try 3 of 5 ...",
        "asking 127.0.0.1:9 for its key, try 4 of 5 ...",
        "asking 127.0.0.1:9 for its key, try 5 of 5 ...",
      ]);
      assert.match(
        lines.at(-1)!,
        /^error: No answer from 127\.0\.0\.1:9 within --connect-timeout 2 s \(5 key requests sent\): check that the server runs/,
      );
    } finally {
      await proc.kill();
    }
  },
});

Deno.test({
  name:
    "client SIGINT: while joining and once registered, it exits 130 (not killed by the signal), and the others see it leave",
  ignore: !CAN_RUN,
  async fn() {
    let server: ServerInfo | undefined;
    let a: ClientInfo | undefined;
    let b: ClientInfo | undefined;
    const joining = Proc.deno(
      "client.ts",
      ["--server", NOWHERE, "--tcp-port", "0"],
      { name: "client still joining" },
    );
    try {
      await joining.stderrLines.waitLine(
        (l) => l.startsWith("asking 127.0.0.1:9 for its key, try 1"),
        "the first progress line",
      );
      joining.signal("SIGINT");
      const interrupted = await joining.exited("the joining client to stop");
      assert.equal(interrupted.code, 130, joining.stderr);
      assert.equal(interrupted.signal, null, "it handled the signal");
      assert.deepEqual(errorLines(joining.stderr), []);

      server = await startServer();
      a = await startClient(["--server", server.udp]);
      b = await startClient(["--server", server.udp]);
      await b.proc.stdout.waitJson({ event: "join", address: a.address });
      a.proc.signal("SIGINT");
      const status = await a.proc.exited("the client to stop on SIGINT");
      assert.equal(status.code, 130, a.proc.stderr);
      assert.equal(status.signal, null);
      await b.proc.stdout.waitJson({ event: "leave", address: a.address });
    } finally {
      await killAll(joining, server?.proc, a?.proc, b?.proc);
    }
  },
});

Deno.test({
  name:
    "client known-servers file: the first key is recorded (mode 0600), the same key is accepted, a changed key is refused with one line naming the file and the fix",
  ignore: !CAN_RUN,
  async fn() {
    await withTempDir(async (dir) => {
      const knownServers = `${dir}/config/known_servers`;
      const keyFile = await writeFixtureKey(dir);
      let server: ServerInfo | undefined;
      const procs: Proc[] = [];
      /** `echo hello | client.ts --server SERVER`, run to its end. */
      const sendHello = async (args: readonly string[]) => {
        const proc = pipedClient(
          ["--server", server!.udp, "--json", ...args],
          "piped client",
        );
        procs.push(proc);
        await proc.write("hello\n");
        await proc.closeStdin();
        const status = await proc.exited("the piped client to exit");
        return { code: status.code, proc };
      };
      try {
        server = await startServer(); // a key of its own, made at start
        const first = await sendHello(["--known-servers", knownServers]);
        assert.equal(first.code, 0, first.proc.stderr);
        assert.equal(
          await Deno.readTextFile(knownServers),
          `${server.udp} ${server.fingerprint}\n`,
        );
        assert.equal((await Deno.stat(knownServers)).mode! & 0o777, 0o600);
        await first.proc.stderrLines.waitJson({
          level: "info",
          event: "known_server_added",
          server: server.udp,
          fingerprint: server.fingerprint,
          path: knownServers,
        });
        const again = await sendHello(["--known-servers", knownServers]);
        assert.equal(again.code, 0, again.proc.stderr);
        assert.ok(
          !again.proc.stderr.includes("known_server_added"),
          again.proc.stderr,
        );

        // The server restarts on its port with another key.
        const { port } = splitHostPort(server.udp);
        const firstKey = server.fingerprint;
        await server.proc.kill();
        server = await startServer([...onPort(port), "--key-file", keyFile]);
        assert.equal(server.udp, `127.0.0.1:${port}`);
        const refused = await sendHello(["--known-servers", knownServers]);
        assert.equal(refused.code, 1, refused.proc.stderr);
        assert.deepEqual(refused.proc.stdout.lines, [], "no ready line");
        assertNoStackTrace(refused.proc.stderr);
        const errors = errorLines(refused.proc.stderr);
        assert.equal(errors.length, 1, refused.proc.stderr);
        for (
          const part of [
            server.udp,
            FIXTURE_FINGERPRINT,
            firstKey,
            knownServers,
            `sed -i '1d' ${knownServers}`,
          ]
        ) {
          assert.ok(errors[0].includes(part), `${part} in ${errors[0]}`);
        }
        // The file is left as it was; without it the client gets in.
        assert.equal(
          await Deno.readTextFile(knownServers),
          `${server.udp} ${firstKey}\n`,
        );
        const off = await sendHello(["--no-known-servers"]);
        assert.equal(off.code, 0, off.proc.stderr);
      } finally {
        await killAll(server?.proc, ...procs);
      }
    });
  },
});

Deno.test({
  name:
    "client whose server restarts with another key: a pinned one, or one with a known-servers file, exits 1 with one error; an unpinned one warns with both keys and registers again",
  ignore: !CAN_RUN,
  async fn() {
    await withTempDir(async (dir) => {
      const keyFile = await writeFixtureKey(dir);
      let server: ServerInfo | undefined;
      let pinned: ClientInfo | undefined;
      let known: ClientInfo | undefined;
      let loose: ClientInfo | undefined;
      try {
        server = await startServer([...LOOPBACK_SERVER, "--key-file", keyFile]);
        const base = ["--server", server.udp, "--keepalive", "0.2"];
        pinned = await startClient([
          ...base,
          "--fingerprint",
          FIXTURE_FINGERPRINT,
        ], { name: "pinned client" });
        known = await startClient(base, { name: "client with known servers" });
        loose = await startClient([...base, "--no-known-servers"], {
          name: "client without known servers",
        });
        const { port } = splitHostPort(server.udp);
        await server.proc.kill();
        // Restarted on the same port without --key-file: a new key.
        server = await startServer(onPort(port));
        assert.notEqual(server.fingerprint, FIXTURE_FINGERPRINT);

        for (const client of [pinned, known]) {
          const status = await client.proc.exited(
            "the client to give up on the new key",
            60_000,
          );
          assert.equal(status.code, 1, client.proc.stderr);
          assertNoStackTrace(client.proc.stderr);
          const errors = errorLines(client.proc.stderr);
          assert.equal(errors.length, 1, client.proc.stderr);
          assert.ok(errors[0].includes(server.fingerprint), errors[0]);
          assert.ok(errors[0].includes(FIXTURE_FINGERPRINT), errors[0]);
        }
        assert.match(errorLines(pinned.proc.stderr)[0], /pinned fingerprint/);
        assert.match(errorLines(known.proc.stderr)[0], /known_servers/);

        await loose.proc.stdout.waitJson({ event: "registered" }, 0, 60_000);
        await loose.proc.stderrLines.waitLine(
          (l) =>
            l.includes("server_key_changed") &&
            l.includes(
              `the server's key changed from ${FIXTURE_FINGERPRINT} to ${
                server!.fingerprint
              }`,
            ),
          "the warning about the changed key",
        );
      } finally {
        await killAll(server?.proc, pinned?.proc, known?.proc, loose?.proc);
      }
    });
  },
});

Deno.test({
  name:
    "client: a line sent while the server is down is shown queued, and one still queued at exit is reported undelivered on stdout and the control port",
  ignore: !CAN_RUN,
  async fn() {
    let server: ServerInfo | undefined;
    let a: ClientInfo | undefined;
    let controlA: ControlClient | undefined;
    try {
      server = await startServer();
      a = await startClient(["--server", server.udp]);
      controlA = await ControlClient.connect(a.control);
      // A graceful stop: NOTICE 5, then no answer to the client's probe.
      server.proc.signal("SIGTERM");
      await a.proc.stdout.waitJson({ event: "notice", code: 5 });
      const queued = { event: "queued", text: "while down" };
      await controlA.send("while down");
      await a.proc.stdout.waitJson(queued);
      await controlA.log.waitJson(queued);
      await a.proc.stdout.waitJson({ event: "reconnecting" });

      const since = controlA.log.mark();
      await controlA.send("exit");
      const undelivered = {
        event: "undelivered",
        reason: "closed",
        text: "while down",
      };
      await a.proc.stdout.waitJson(undelivered);
      await controlA.log.waitJson(undelivered, since);
      assert.equal((await a.proc.exited("A to stop on exit")).code, 0);
      assertNoStackTrace(a.proc.stderr);
    } finally {
      await closeAll(controlA);
      await killAll(server?.proc, a?.proc);
    }
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
