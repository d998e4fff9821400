/**
 * Clean shutdown: closing clients and server, in either order and twice,
 * leaves no socket, timer or pending promise behind (Deno's ops and
 * resources sanitizers, on for every test, prove it), ends event streams,
 * and makes later sends reject.
 */
import assert from "node:assert/strict";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { HandshakeError } from "../../lib/errors.ts";
import { RelayClient } from "../../lib/relay/client/client.ts";
import { RelayServer } from "../../lib/relay/server/server.ts";
import { UdpTransport } from "../../lib/runtime/udp.ts";
import type { LogRecord } from "../../lib/log.ts";
import { Harness, LOOPBACK, PATIENT_RETRIES, Recorder } from "./_harness.ts";

const serverKey = await RsaPrivateKey.generate(2048);

Deno.test("clients closed, then the server: close() twice is safe, event streams end, nothing leaks", async () => {
  const log = new Recorder<LogRecord>("server log");
  const server = await RelayServer.start({
    transport: await UdpTransport.bind({ hostname: LOOPBACK, port: 0 }),
    privateKey: serverKey,
    // No member times out during the test, whatever the machine's pace: every
    // leave here is a DISCONNECT.
    clientTimeoutMs: 600_000,
    log: (record) => log.push(record),
  });
  const clients: RelayClient[] = [];
  for (let i = 0; i < 3; i++) {
    clients.push(
      await RelayClient.connect({
        transport: await UdpTransport.bind({ hostname: LOOPBACK, port: 0 }),
        target: server.localAddress,
        ...PATIENT_RETRIES,
        keepaliveMs: 50,
      }),
    );
  }
  // Readers of every client's event stream, started before any traffic.
  const streams = clients.map((_, i) => new Recorder<string>(`stream ${i}`));
  const readers = clients.map(async (c, i) => {
    for await (const event of c.events()) streams[i]!.push(event.type);
    return streams[i]!.items;
  });
  const [a, b, c] = clients as [RelayClient, RelayClient, RelayClient];
  await a.send("one");
  await a.close();
  await a.close();
  await assert.rejects(a.send("after close"), /closed/);
  for (const stream of streams.slice(1)) {
    await stream.waitFor((t) => t === "message", "a's message");
    await stream.waitFor((t) => t === "leave", "a's leave");
  }
  await b.close();
  await streams[2]!.waitForCount((t) => t === "leave", 2, "b's leave");
  await Promise.all([c.close(), c.close()]);
  // The server handles each DISCONNECT: three leaves, no member left.
  const leaves = await log.waitForCount(
    (r) => r.event === "leave",
    3,
    "leave log records",
  );
  assert.deepEqual(leaves.map((r) => r.reason), Array(3).fill("disconnect"));
  assert.equal(server.members().length, 0);
  await server.close();
  await server.close();

  // The event streams ended with their clients (c's saw a's and b's leaves).
  const seen = await Promise.all(readers);
  assert.deepEqual(seen[0], []);
  assert.deepEqual(seen[1], ["message", "leave"]);
  assert.deepEqual(seen[2], ["message", "leave", "leave"]);
});

Deno.test("server closed first: clients reconnecting in the background are closed cleanly; a message queued meanwhile is reported undelivered", async () => {
  await using h = new Harness(serverKey);
  const { server } = await h.startServer();
  const a = await h.connect("a", { keepaliveMs: 50, retryInitialMs: 20 });
  const b = await h.connect("b", { keepaliveMs: 50, retryInitialMs: 20 });
  await a.waitPresence("join", b.address);

  await server.close();
  await a.waitEvent("reconnecting");
  await b.waitEvent("reconnecting");
  // A send while re-registering waits in the outbox; closing the client
  // reports it.
  assert.equal(await a.client.send("never delivered"), "queued");
  // Let a few retries of the key exchange go out to the dead port.
  await a.tap.sent.waitForCount(
    (d) => d.data.length === 1200,
    3,
    "key requests after the shutdown",
  );
  await a.client.close();
  assert.deepEqual(
    a.events.filter((e) => e.type === "undelivered").map((e) =>
      e.type === "undelivered" && [e.reason, e.text]
    ),
    [["closed", "never delivered"]],
  );
  await b.client.close();
  await a.client.close();
  assert.equal(a.client.ready, false);
  assert.equal(a.client.stats().messagesSent, 0);
});

Deno.test("a server with members closed while they keep alive: the dispose order of `await using` is safe", async () => {
  {
    await using server = await RelayServer.start({
      transport: await UdpTransport.bind({ hostname: LOOPBACK, port: 0 }),
      privateKey: serverKey,
    });
    await using client = await RelayClient.connect({
      transport: await UdpTransport.bind({ hostname: LOOPBACK, port: 0 }),
      target: server.localAddress,
      ...PATIENT_RETRIES,
      keepaliveMs: 20,
    });
    assert.equal(client.ready, true);
    assert.equal(server.members().length, 1);
    // Disposed in reverse order: the client first (DISCONNECT), then the server.
  }
});

Deno.test("events(signal): the stream ends when its signal aborts, the client stays up", async () => {
  await using h = new Harness(serverKey);
  await h.startServer();
  const a = await h.connect("a");
  const b = await h.connect("b");
  const controller = new AbortController();
  const seen = new Recorder<string>("a's stream");
  const reader = (async () => {
    for await (const event of a.client.events(controller.signal)) {
      seen.push(event.type === "message" ? event.text : event.type);
    }
  })();
  await b.client.send("first");
  await seen.waitFor((t) => t === "first", "the first message");
  controller.abort();
  await reader;
  await b.client.send("second");
  await a.waitMessage("second");
  assert.equal(seen.count((t) => t === "second"), 0);
  assert.equal(a.client.ready, true);
});

Deno.test("AbortSignal: aborting stops a server and closes a client; aborting during connect rejects it", async () => {
  await using h = new Harness(serverKey);
  const serverAbort = new AbortController();
  const { server, log } = await h.startServer({ signal: serverAbort.signal });
  const clientAbort = new AbortController();
  const member = await h.connect("member", { signal: clientAbort.signal });
  const watcher = await h.connect("watcher");
  const since = watcher.events.mark();
  clientAbort.abort();
  await watcher.waitPresence("leave", member.address, since);
  assert.equal(member.client.ready, false);

  // Aborting while the key exchange waits for a server that never answers.
  const silent = await h.socket("silent");
  const connecting = new AbortController();
  const pending = RelayClient.connect({
    transport: await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 }),
    target: silent.localAddress,
    signal: connecting.signal,
  });
  await silent.received.waitFor(() => true, "the key request");
  connecting.abort();
  await assert.rejects(pending, HandshakeError);

  const notices = watcher.events.mark();
  serverAbort.abort();
  await watcher.events.waitFor(
    (e) => e.type === "notice" && e.code === 5,
    "NOTICE 5 from the aborted server",
    { from: notices },
  );
  await log.waitFor((r) => r.event === "shutdown", "the shutdown log");
  assert.deepEqual(server.members(), []);
});
