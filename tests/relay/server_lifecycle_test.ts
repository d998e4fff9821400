/**
 * The relay server's lifecycle: start() resolves once the RSA threads run,
 * closed() resolves on close and with the error when the transport fails to
 * receive, status() yields joins and leaves, and calls on a closed server
 * throw a typed error.
 */
import assert from "node:assert/strict";
import { ServerClosedError } from "../../lib/errors.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import {
  MemoryNetwork,
  type MemoryTransport,
} from "../../lib/runtime/memory.ts";
import type {
  Datagram,
  DatagramTransport,
} from "../../lib/runtime/transport.ts";
import type { PeerAddress } from "../../lib/wire/address.ts";
import { RelayClient } from "../../lib/relay/client/client.ts";
import type { LogRecord } from "../../lib/log.ts";
import {
  RelayServer,
  type ServerStatus,
} from "../../lib/relay/server/server.ts";
import { Recorder } from "./_harness.ts";

const serverKey = await RsaPrivateKey.generate(2048);
const SERVER: PeerAddress = { hostname: "127.0.0.1", port: 7000 };

/** A memory transport whose receiving fails when the test says so. */
class FailingTransport implements DatagramTransport {
  readonly #inner: MemoryTransport;
  #fail!: (error: Error) => void;
  readonly #failed = new Promise<never>((_, reject) => this.#fail = reject);

  constructor(inner: MemoryTransport) {
    this.#inner = inner;
  }

  get localAddress(): PeerAddress {
    return this.#inner.localAddress;
  }

  /** Makes the receive loop's next read throw `error`. */
  fail(error: Error): void {
    this.#fail(error);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Datagram> {
    const datagrams = this.#inner[Symbol.asyncIterator]();
    while (true) {
      const next = await Promise.race([datagrams.next(), this.#failed]);
      if (next.done) return;
      yield next.value;
    }
  }

  send(data: Uint8Array, to: PeerAddress): Promise<void> {
    return this.#inner.send(data, to);
  }

  close(): void {
    this.#inner.close();
  }
}

async function connect(network: MemoryNetwork): Promise<RelayClient> {
  return await RelayClient.connect({
    transport: network.bind(),
    target: SERVER,
    retryInitialMs: 100,
    retryMaxMs: 400,
  });
}

Deno.test("start() resolves once the RSA threads run (rsa_threads already logged); closed() resolves with undefined after close()", async () => {
  const network = new MemoryNetwork();
  const log = new Recorder<LogRecord>("server log");
  const server = await RelayServer.start({
    transport: network.bind(SERVER.hostname, SERVER.port),
    privateKey: serverKey,
    rsaThreads: 1,
    log: (record) => log.push(record),
  });
  assert.equal(log.count((r) => r.event === "rsa_threads"), 1);
  let settled = false;
  const closed = server.closed().then((outcome) => {
    settled = true;
    return outcome;
  });
  const client = await connect(network);
  await client.close();
  assert.equal(settled, false);
  await server.close();
  assert.equal(await closed, undefined);
  assert.equal(await server.closed(), undefined);
});

Deno.test("status() yields a member's join and leave (disconnect, kick), and ends when the server stops", async () => {
  const network = new MemoryNetwork();
  const server = await RelayServer.start({
    transport: network.bind(SERVER.hostname, SERVER.port),
    privateKey: serverKey,
    rsaThreads: 1,
  });
  const events = new Recorder<ServerStatus>("status");
  const reading = (async () => {
    for await (const event of server.status()) events.push(event);
  })();
  const alice = await connect(network);
  const bob = await connect(network);
  await events.waitForCount((e) => e.type === "join", 2, "two joins");
  const joins = events.filter((e) => e.type === "join");
  assert.deepEqual(
    joins.map((e) => e.type === "join" && e.profile),
    ["hybrid", "hybrid"],
  );
  const [first, second] = joins.map((e) => e.address);
  assert.ok(first !== second);
  const aliceAddress = alice.address;
  await alice.close();
  const left = await events.waitFor(
    (e) => e.type === "leave" && e.reason === "disconnect",
    "alice's leave",
  );
  assert.equal(left.address, aliceAddress);
  assert.equal(left.type === "leave" && left.profile, "hybrid");
  const bobKey = server.members()[0]!.address;
  assert.equal(server.kick(bobKey), true);
  const kicked = await events.waitFor(
    (e) => e.type === "leave" && e.reason === "kick",
    "bob's kick",
  );
  assert.equal(kicked.address, bobKey);
  await bob.close();
  await server.close();
  await reading; // the iteration ends with the server
  assert.equal(events.count((e) => e.type === "leave"), 2);
});

Deno.test("a transport that fails to receive stops the server: receive_failed at error, closed() resolves with the error, kick and ban then throw ServerClosedError", async () => {
  const network = new MemoryNetwork();
  const transport = new FailingTransport(
    network.bind(SERVER.hostname, SERVER.port),
  );
  const log = new Recorder<LogRecord>("server log");
  const server = await RelayServer.start({
    transport,
    privateKey: serverKey,
    rsaThreads: 1,
    log: (record) => log.push(record),
  });
  const client = await connect(network);
  const reading = (async () => {
    for await (const _ of server.status()) { /* until it ends */ }
  })();
  const failure = new Error("socket gone");
  transport.fail(failure);
  assert.equal(await server.closed(), failure);
  await reading;
  const record = await log.waitFor(
    (r) => r.event === "receive_failed",
    "receive_failed",
  );
  assert.equal(record.level, "error");
  assert.ok(log.count((r) => r.event === "shutdown") === 1);
  assert.throws(() => server.kick("127.0.0.1:1"), ServerClosedError);
  assert.throws(() => server.ban("127.0.0.2"), ServerClosedError);
  assert.throws(() => server.unban("127.0.0.2"), ServerClosedError);
  await server.close(); // safe after a failure
  await client.close();
});

Deno.test("kick and ban after close() throw ServerClosedError", async () => {
  const network = new MemoryNetwork();
  const server = await RelayServer.start({
    transport: network.bind(SERVER.hostname, SERVER.port),
    privateKey: serverKey,
    rsaThreads: 0,
  });
  await server.close();
  assert.throws(() => server.kick("127.0.0.1:1"), ServerClosedError);
  assert.throws(() => server.ban("127.0.0.1"), ServerClosedError);
  // Reading calls still answer.
  assert.deepEqual(server.members(), []);
  assert.deepEqual(server.bans(), []);
  // A listener that comes after the end ends at once.
  for await (const _ of server.status()) assert.fail("no events after close");
});
