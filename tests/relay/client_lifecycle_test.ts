/**
 * The relay client's embedder API (issue 12): one explicit state,
 * `closed()` after close() and after a receive failure, `messages()` (only
 * messages, with their bytes) beside `statusEvents()`, and `send()` with a
 * signal or a time limit while the server is gone, and on a closed client.
 *
 * In-memory network: no sockets; the "server gone" is a closed server,
 * which the client notices by its NOTICE 5 and an unanswered probe.
 */
import assert from "node:assert/strict";
import {
  ClientClosedError,
  SendCancelledError,
  UndeliveredError,
} from "../../lib/errors.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import type { PeerAddress } from "../../lib/wire/address.ts";
import {
  MemoryNetwork,
  type MemoryTransport,
} from "../../lib/runtime/memory.ts";
import type {
  Datagram,
  DatagramTransport,
} from "../../lib/runtime/transport.ts";
import { RelayServer } from "../../lib/relay/server/server.ts";
import {
  type ClientEvent,
  RelayClient,
  type RelayClientOptions,
} from "../../lib/relay/client/client.ts";

const serverKey = await RsaPrivateKey.generate(2048);

/** A transport whose receiving fails (with `error`) when the test says so. */
class FailingTransport implements DatagramTransport {
  readonly #inner: MemoryTransport;
  readonly #failure = Promise.withResolvers<never>();

  constructor(inner: MemoryTransport) {
    this.#inner = inner;
  }

  get localAddress(): PeerAddress {
    return this.#inner.localAddress;
  }

  /** Makes the pending (or next) receive throw `error`. */
  fail(error: Error): void {
    this.#failure.reject(error);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Datagram> {
    const inner = this.#inner[Symbol.asyncIterator]();
    try {
      while (true) {
        const next = await Promise.race([inner.next(), this.#failure.promise]);
        if (next.done) return;
        yield next.value;
      }
    } finally {
      this.#inner.close();
      await inner.return?.();
    }
  }

  send(data: Uint8Array, to: PeerAddress): Promise<void> {
    return this.#inner.send(data, to);
  }

  close(): void {
    this.#inner.close();
  }
}

/** A server on `network` and a client option set that reaches it. */
async function start(network: MemoryNetwork) {
  const server = await RelayServer.start({
    transport: network.bind(),
    privateKey: serverKey,
  });
  const options = (
    transport: DatagramTransport,
    more: Partial<RelayClientOptions> = {},
  ): RelayClientOptions => ({
    transport,
    target: server.localAddress,
    fingerprint: server.fingerprint,
    keepaliveMs: 60_000,
    retryInitialMs: 50,
    ...more,
  });
  return { server, options };
}

/** The first event of `type` the client reports from now on. */
function nextEvent<T extends ClientEvent["type"]>(
  client: RelayClient,
  type: T,
): Promise<Extract<ClientEvent, { type: T }>> {
  return new Promise((resolve) => {
    const stop = client.onEvent((event) => {
      if (event.type !== type) return;
      stop();
      resolve(event as Extract<ClientEvent, { type: T }>);
    });
  });
}

Deno.test("state and closed(): connecting ends ready; close() resolves closed() with undefined; calls after it reject with ClientClosedError", async () => {
  const network = new MemoryNetwork();
  const { server, options } = await start(network);
  try {
    const client = await RelayClient.connect(options(network.bind()));
    assert.equal(client.state, "ready");
    assert.equal(client.ready, true);
    await client.close();
    assert.equal(client.state, "closed");
    assert.equal(await client.closed(), undefined);
    await assert.rejects(() => client.send("late"), ClientClosedError);
  } finally {
    await server.close();
  }
});

Deno.test("an eventBufferSize that is not a positive whole number: connect() rejects with a RangeError and closes the transport", async () => {
  const network = new MemoryNetwork();
  const { server, options } = await start(network);
  try {
    const transport = network.bind();
    await assert.rejects(
      () => RelayClient.connect(options(transport, { eventBufferSize: 0 })),
      RangeError,
    );
    await assert.rejects(
      () => transport.send(new Uint8Array(1), server.localAddress),
      Deno.errors.BadResource,
    );
  } finally {
    await server.close();
  }
});

Deno.test("a receive error ends the client visibly: a failed status event, state closed, closed() resolves with the error", async () => {
  const network = new MemoryNetwork();
  const { server, options } = await start(network);
  try {
    const transport = new FailingTransport(network.bind());
    const client = await RelayClient.connect(options(transport));
    const status = client.statusEvents();
    const boom = new Error("socket broke");
    transport.fail(boom);
    assert.equal(await client.closed(), boom);
    assert.equal(client.state, "closed");
    const seen: ClientEvent[] = [];
    for await (const event of status) seen.push(event);
    const failed = seen.find((event) => event.type === "failed");
    assert.ok(failed && failed.type === "failed");
    assert.match(failed.reason, /socket broke/);
    await assert.rejects(() => client.send("late"), ClientClosedError);
  } finally {
    await server.close();
  }
});

Deno.test("messages() yields only received messages, with their bytes; statusEvents() the rest", async () => {
  const network = new MemoryNetwork();
  const { server, options } = await start(network);
  try {
    const bob = await RelayClient.connect(options(network.bind()));
    const messages = bob.messages();
    const status = bob.statusEvents();
    const alice = await RelayClient.connect(options(network.bind()));
    const bytes = new Uint8Array([0, 1, 2, 255, 0xc3]); // not UTF-8 text
    await alice.send(bytes);
    await alice.send("hello");
    const first = await messages.next();
    const second = await messages.next();
    assert.equal(first.done, false);
    assert.equal(second.done, false);
    if (first.done || second.done) return;
    assert.equal(first.value.type, "message");
    assert.equal(first.value.from, alice.address);
    assert.deepEqual(first.value.data, bytes);
    assert.deepEqual(second.value.data, new TextEncoder().encode("hello"));
    assert.equal(second.value.text, "hello");
    // Alice's join came first on the status stream, no message on it.
    const join = await status.next();
    assert.equal(join.done, false);
    if (join.done) return;
    assert.deepEqual(join.value, {
      type: "join",
      address: alice.address,
      present: false,
    });
    await alice.close();
    const leave = await status.next();
    assert.equal(!leave.done && leave.value.type, "leave");
    await bob.close();
    assert.equal((await messages.next()).done, true);
    const rest: string[] = [];
    for await (const event of status) rest.push(event.type);
    assert.ok(!rest.includes("message"));
  } finally {
    await server.close();
  }
});

Deno.test("send() while the server is gone: an aborted signal or a time limit rejects with SendCancelledError and drops the message; without them it is queued", async () => {
  const network = new MemoryNetwork();
  const { server, options } = await start(network);
  const client = await RelayClient.connect(
    options(network.bind(), { probeTimeoutMs: 50, retryInitialMs: 20 }),
  );
  try {
    const reconnecting = nextEvent(client, "reconnecting");
    await server.close();
    await reconnecting;
    assert.equal(client.state, "reconnecting");

    const aborted = new AbortController();
    aborted.abort();
    await assert.rejects(
      () => client.send("aborted first", { signal: aborted.signal }),
      (error) =>
        error instanceof SendCancelledError && error.reason === "aborted",
    );

    const later = new AbortController();
    const waiting = client.send("aborted later", { signal: later.signal });
    assert.equal(client.stats().outbox, 1);
    later.abort();
    await assert.rejects(
      waiting,
      (error) =>
        error instanceof SendCancelledError && error.reason === "aborted",
    );
    assert.equal(client.stats().outbox, 0);

    await assert.rejects(
      () => client.send("timed out", { timeoutMs: 30 }),
      (error) =>
        error instanceof SendCancelledError && error.reason === "timeout",
    );
    assert.equal(client.stats().outbox, 0);

    // Without a signal or a time limit: queued, reported at close.
    assert.equal(await client.send("queued"), "queued");
    const pending = client.send("waits", { timeoutMs: 60_000 });
    const undelivered: string[] = [];
    client.onEvent((event) => {
      if (event.type === "undelivered") undelivered.push(event.text);
    });
    await client.close();
    await assert.rejects(
      pending,
      (error) => error instanceof UndeliveredError && error.reason === "closed",
    );
    assert.deepEqual(undelivered, ["queued", "waits"]);
    assert.equal(client.stats().undelivered, 2);
  } finally {
    await client.close();
  }
});

Deno.test("a receive failure while connect() runs the key exchange: connect rejects naming that failure, not a close by its owner", async () => {
  const network = new MemoryNetwork();
  const transport = new FailingTransport(network.bind());
  const connecting = RelayClient.connect({
    transport,
    target: { hostname: "127.0.0.1", port: 7999 }, // nobody answers
    retryInitialMs: 60_000,
    retryAttempts: 1,
    onProgress: () => transport.fail(new Error("socket broke")),
  });
  await assert.rejects(connecting, /The key exchange stopped: socket broke/);
});
