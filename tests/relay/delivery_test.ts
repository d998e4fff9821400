/**
 * Messages between three hybrid clients over UDP on 127.0.0.1: every message
 * (5 B, 5 KB, 30 KB) reaches each other member exactly once, with the right
 * sender, and is never echoed back; 30 KB at MTU 1200 is fragmented both ways.
 */
import assert from "node:assert/strict";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { RecordType } from "../../lib/wire/tlv.ts";
import {
  Harness,
  recordsOf,
  registrationRetries,
  sizedText,
} from "./_harness.ts";

const serverKey = await RsaPrivateKey.generate(2048);

Deno.test("three clients: 5 B, 5 KB and 30 KB messages delivered exactly once to each other member, never echoed", async () => {
  await using h = new Harness(serverKey);
  const { server, tap: serverTap } = await h.startServer({ mtu: 1200 });
  const clients = [
    await h.connect("a"),
    await h.connect("b"),
    await h.connect("c"),
  ];
  // Everyone knows everyone before messages flow.
  for (const c of clients) {
    for (const other of clients) {
      if (other !== c) await c.waitPresence("join", other.address);
    }
  }

  const sent: { text: string; sender: string }[] = [];
  const deliveredToOthers = async (text: string, sender: string) => {
    for (const c of clients) {
      if (c.address !== sender) await c.waitMessage(text, { sender });
    }
  };
  // 5 B and 5 KB: the three senders at once.
  for (const size of [5, 5_000]) {
    const round = clients.map((c) => ({
      text: sizedText(`${c.name}-${size}`, size),
      sender: c.address,
    }));
    await Promise.all(clients.map((c, i) => c.client.send(round[i]!.text)));
    sent.push(...round);
    for (const { text, sender } of round) await deliveredToOthers(text, sender);
  }
  // 30 KB (about 35 fragments each way): one sender at a time. Server and
  // clients share one process here, so three simultaneous bursts would land
  // in the server socket before its first read and overflow the kernel's
  // default receive buffer (about 90 such datagrams) - a loss of the test
  // setup, not of the relay.
  for (const c of clients) {
    const text = sizedText(`${c.name}-30000`, 30_000);
    await c.client.send(text);
    sent.push({ text, sender: c.address });
    await deliveredToOthers(text, c.address);
  }

  // A barrier: each client's last message reaches the others only after
  // everything it sent before (one ordered queue per source at the server).
  for (const c of clients) await c.client.send(`barrier ${c.name}`);
  for (const c of clients) {
    for (const other of clients) {
      if (other !== c) {
        await c.waitMessage(`barrier ${other.name}`, {
          sender: other.address,
        });
      }
    }
  }

  for (const c of clients) {
    const received = c.messages();
    assert.equal(
      received.filter((m) => m.from === c.address).length,
      0,
      `${c.name} got its own message back`,
    );
    for (const { text, sender } of sent) {
      if (sender === c.address) continue;
      const copies = received.filter((m) => m.text === text);
      assert.equal(copies.length, 1, `${c.name}: copies of ${text.length} B`);
      assert.equal(copies[0]!.from, sender);
      assert.deepEqual(copies[0]!.data, new TextEncoder().encode(text));
    }
    // 6 messages + 2 barriers from the others, nothing else.
    assert.equal(received.length, 8, `${c.name} received ${received.length}`);
    assert.equal(c.client.stats().messagesReceived, 8);
    assert.equal(c.client.stats().messagesSent, 4);
  }

  const stats = server.stats();
  assert.equal(stats.messagesRelayed, 12);
  assert.equal(stats.deliveries, 24);
  // Nothing dropped, but for the registrations a client sent again because
  // its WELCOME was late (the server's RSA threads yield to a busy machine):
  // each is answered once more, as the same bytes on the wire show.
  assert.deepEqual(stats.dropped, registrationRetries(clients));

  // Fragmentation both ways, and no datagram over the MTU on either side.
  for (const c of clients) {
    const out = c.tap.sent.items;
    assert.ok(out.every((d) => d.data.length <= 1200), `${c.name} sent > MTU`);
    assert.ok(
      out.some((d) => recordsOf(d.data)[0]?.type === RecordType.FRAGMENT),
      `${c.name} never sent a FRAGMENT`,
    );
    const inbound = c.tap.received.items;
    assert.ok(inbound.every((d) => d.data.length <= 1200));
    assert.ok(
      inbound.some((d) => recordsOf(d.data)[0]?.type === RecordType.FRAGMENT),
      `${c.name} never received a FRAGMENT`,
    );
  }
  assert.ok(serverTap.sent.items.every((d) => d.data.length <= 1200));
});

Deno.test("the largest message (32 KiB) is delivered; one byte more is refused by send() with a RangeError", async () => {
  await using h = new Harness(serverKey);
  const { server } = await h.startServer();
  const a = await h.connect("a");
  const b = await h.connect("b");
  await a.waitPresence("join", b.address);

  const largest = sizedText("largest", 32 * 1024);
  await a.client.send(largest);
  const got = await b.waitMessage(largest, { sender: a.address });
  assert.equal(got.type === "message" && got.data.length, 32 * 1024);

  await assert.rejects(
    a.client.send(new Uint8Array(32 * 1024 + 1)),
    RangeError,
  );
  // Bytes that are not UTF-8 travel unchanged.
  const binary = Uint8Array.from(
    { length: 300 },
    (_, i) => (i * 7 + 0x80) & 0xff,
  );
  await a.client.send(binary);
  const raw = await b.events.waitFor(
    (e) => e.type === "message" && e.data.length === 300,
    "the binary message",
  );
  assert.deepEqual(raw.type === "message" && raw.data, binary);
  assert.equal(a.client.stats().messagesSent, 2);
  assert.equal(server.stats().messagesRelayed, 2);
});
