/**
 * Coalesced relay streams over UDP on 127.0.0.1: messages the server handles
 * in one batch leave as one datagram per recipient (SENDER, token, SENDER,
 * token, ...), which the client decodes in order with the right senders.
 */
import assert from "node:assert/strict";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { UdpTransport } from "../../lib/runtime/udp.ts";
import type {
  Datagram,
  DatagramTransport,
} from "../../lib/runtime/transport.ts";
import type { PeerAddress } from "../../lib/wire/address.ts";
import { RecordType } from "../../lib/wire/tlv.ts";
import { Harness, LOOPBACK, Recorder, recordsOf } from "./_harness.ts";

const serverKey = await RsaPrivateKey.generate(2048);

/**
 * A server transport that holds received datagrams while closed and hands
 * them to the server as one batch when opened.
 */
class GatedTransport implements DatagramTransport {
  readonly held = new Recorder<Datagram>("held datagrams");
  #open = true;
  #queue: Datagram[] = [];
  #wake: (() => void) | undefined;
  #ended = false;
  readonly #pump: Promise<void>;

  constructor(readonly inner: UdpTransport) {
    this.#pump = (async () => {
      for await (const batch of inner.receiveBatches()) {
        this.#queue.push(...batch);
        if (!this.#open) { for (const d of batch) this.held.push(d); }
        this.#wake?.();
      }
      this.#ended = true;
      this.#wake?.();
    })();
  }

  get localAddress(): PeerAddress {
    return this.inner.localAddress;
  }

  close(): void {
    this.inner.close();
  }

  hold(): void {
    this.#open = false;
  }

  release(): void {
    this.#open = true;
    this.#wake?.();
  }

  send(data: Uint8Array, to: PeerAddress): Promise<void> {
    return this.inner.send(data, to);
  }

  async *receiveBatches(): AsyncIterableIterator<readonly Datagram[]> {
    while (true) {
      while ((!this.#open || this.#queue.length === 0) && !this.#ended) {
        await new Promise<void>((resolve) => this.#wake = resolve);
        this.#wake = undefined;
      }
      if (this.#ended) break;
      yield this.#queue.splice(0);
    }
    await this.#pump;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Datagram> {
    for await (const batch of this.receiveBatches()) yield* batch;
  }
}

Deno.test("messages handled in one batch reach each member as one datagram of SENDER/message pairs, decoded in order with the right senders", async () => {
  await using h = new Harness(serverKey);
  const gate = new GatedTransport(
    await UdpTransport.bind({ hostname: LOOPBACK, port: 0 }),
  );
  const { server } = await h.startServer({ transport: gate });
  const a = await h.connect("a");
  const b = await h.connect("b");
  const c = await h.connect("c");
  for (const [x, y] of [[a, b], [a, c], [b, c]]) {
    await x.waitPresence("join", y.address);
    await y.waitPresence("join", x.address);
  }
  const marks = [a, b, c].map((x) => x.tap.received.mark());
  const eventMarks = [a, b, c].map((x) => x.events.mark());

  gate.hold();
  await a.client.send("one");
  await b.client.send("two");
  await a.client.send("three");
  await gate.held.waitForCount(() => true, 3, "the three messages held");
  gate.release();

  await c.waitMessage("three", { sender: a.address });
  await b.waitMessage("three", { sender: a.address });
  await a.waitMessage("two", { sender: b.address });

  // c: one datagram, three pairs, in the order the server got them.
  const relayed = (x: typeof a, mark: number) =>
    x.tap.received.items.slice(mark).filter((d) =>
      recordsOf(d.data).some((r) => r.type === RecordType.FERNET_MESSAGE)
    );
  const toC = relayed(c, marks[2]);
  assert.equal(toC.length, 1, "one datagram for c");
  assert.deepEqual(recordsOf(toC[0].data).map((r) => r.type), [
    RecordType.SENDER,
    RecordType.FERNET_MESSAGE,
    RecordType.SENDER,
    RecordType.FERNET_MESSAGE,
    RecordType.SENDER,
    RecordType.FERNET_MESSAGE,
  ]);
  assert.deepEqual(
    c.messages(eventMarks[2]).map((m) => [m.text, m.from]),
    [["one", a.address], ["two", b.address], ["three", a.address]],
  );
  // b: a's two messages in one datagram; a: b's message alone.
  assert.equal(relayed(b, marks[1]).length, 1, "one datagram for b");
  assert.deepEqual(
    b.messages(eventMarks[1]).map((m) => [m.text, m.from]),
    [["one", a.address], ["three", a.address]],
  );
  assert.equal(relayed(a, marks[0]).length, 1);
  assert.deepEqual(
    a.messages(eventMarks[0]).map((m) => [m.text, m.from]),
    [["two", b.address]],
  );
  // Four deliveries saved a datagram each way they could: c 2, b 1.
  assert.equal(server.stats().coalesced, 3);
  assert.equal(server.stats().deliveries >= 6, true);
});
