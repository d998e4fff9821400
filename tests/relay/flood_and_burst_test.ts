/**
 * Issue 17 items 5 and 6(f), end to end over an in-memory network: spoofed
 * partial fragments from members' addresses no longer block their big
 * messages (reassembly evicts old partial buffers fairly instead of refusing
 * new ones), and a burst of more than 4,096 messages to one member within one
 * second arrives whole (the replay window is sized by rate and time).
 */
import assert from "node:assert/strict";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { MemoryNetwork } from "../../lib/runtime/memory.ts";
import type { PeerAddress } from "../../lib/wire/address.ts";
import { encodeFragment } from "../../lib/wire/fragment.ts";
import { encodeRecords, RecordType } from "../../lib/wire/tlv.ts";
import type { ClientEvent } from "../../lib/relay/client/client.ts";
import { Harness, sizedText } from "./_harness.ts";

const serverKey = await RsaPrivateKey.generate(2048);

/**
 * Delivers `n` spoofed 13-byte datagrams from `from` to `to`: each one FRAGMENT
 * record holding the first 1-byte chunk of a 2-chunk stream that never
 * completes, so each opens a partial buffer.
 */
function floodPartials(
  network: MemoryNetwork,
  from: PeerAddress,
  to: PeerAddress,
  n: number,
  firstMsgId = 0,
): void {
  for (let i = 0; i < n; i++) {
    const datagram = encodeRecords([{
      type: RecordType.FRAGMENT,
      value: encodeFragment({
        msgId: firstMsgId + i,
        index: 0,
        count: 2,
        chunk: Uint8Array.of(0),
      }),
    }]);
    assert.equal(datagram.length, 13);
    network.deliver(datagram, from, to);
  }
}

Deno.test("a spoofed flood of partial fragments from a member's address does not block that member's 5 KB message", async () => {
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  const { server, address } = await h.startServer({
    transport: network.bind(),
  });
  const a = await h.connect("a", { transport: network.bind() });
  const b = await h.connect("b", { transport: network.bind() });
  await a.waitPresence("join", b.address);

  // 200 partial buffers under a's address (64 are allowed per source), then
  // a's own message of five fragments, queued behind them.
  floodPartials(network, a.tap.localAddress, address, 200);
  const text = sizedText("five kilobytes", 5000);
  await a.client.send(text);
  await b.waitMessage(text, { sender: a.address });

  assert.deepEqual(b.messages().map((m) => m.text), [text]);
  const { reassembly } = server.stats();
  // 136 flood buffers pushed out by the flood, 1 by a's first fragment.
  assert.equal(reassembly.tooManyPartials, 200 - 64 + 1);
  assert.equal(reassembly.completed, 1);
});

Deno.test("spoofed floods that fill the group-wide bound of partial buffers do not block another member's message", async () => {
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  const { server, address } = await h.startServer({
    transport: network.bind(),
    reassembly: { maxPartialsPerSource: 64, maxPartialsTotal: 128 },
  });
  const a = await h.connect("a", { transport: network.bind() });
  const b = await h.connect("b", { transport: network.bind() });
  const c = await h.connect("c", { transport: network.bind() });
  const d = await h.connect("d", { transport: network.bind() });
  await b.waitPresence("join", d.address);

  // c and d (members) each hold 64 partial buffers: the group's 128.
  floodPartials(network, c.tap.localAddress, address, 64);
  floodPartials(network, d.tap.localAddress, address, 64, 1000);
  const text = sizedText("past the group bound", 5000);
  await a.client.send(text);
  await b.waitMessage(text, { sender: a.address });

  const { reassembly } = server.stats();
  // a's first fragment took the oldest buffer of c (c and d held as many;
  // c's oldest was older); nothing else was evicted.
  assert.equal(reassembly.tooManyPartials, 1);
  assert.equal(reassembly.completed, 1);
});

Deno.test("a burst of 5,000 messages to one member within one second arrives whole, each message once", async () => {
  // A clock that does not move: every token of the burst carries one second.
  const frozen = Date.now();
  const now = () => frozen;
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  const { server } = await h.startServer({
    transport: network.bind(),
    now,
    messagesPerSecond: 1e6,
    messageBurst: 1e6,
  });
  const a = await h.connect("a", { transport: network.bind(), now });
  const b = await h.connect("b", { transport: network.bind(), now });
  await b.waitPresence("join", a.address);

  const count = 5_000;
  const texts = Array.from({ length: count }, (_, i) => `burst ${i}`);
  const from = b.events.mark();
  for (const text of texts) await a.client.send(text);
  const fromA = (e: ClientEvent) =>
    e.type === "message" && e.from === a.address;
  await b.events.waitForCount(fromA, count, "messages from a", {
    from,
    timeoutMs: 60_000,
  });

  const received = b.messages(from).map((m) => m.text);
  assert.equal(received.length, count);
  assert.deepEqual(new Set(received), new Set(texts));
  const tokenDrops = Object.entries(b.client.stats().dropped).filter((
    [reason],
  ) => reason.startsWith("token_"));
  assert.deepEqual(tokenDrops, []);
  assert.equal(server.stats().messagesRelayed, count);
});
