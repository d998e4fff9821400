/**
 * Replay and reflection (protocol.md section 6): a token sent back to the
 * side that made it, or sent twice, is dropped and counted, never relayed or
 * delivered again. Server side over UDP with raw sends from the clients' own
 * sockets; client side over an in-memory network that can forge the
 * server's source address.
 */
import assert from "node:assert/strict";
import { decodeBase64Url } from "../../lib/crypto/base64.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { MemoryNetwork } from "../../lib/runtime/memory.ts";
import { encodeAddress } from "../../lib/wire/address.ts";
import { encodeRecords, RecordType } from "../../lib/wire/tlv.ts";
import {
  Harness,
  hasRecord,
  recordsOf,
  recordValue,
  sizedText,
} from "./_harness.ts";

const serverKey = await RsaPrivateKey.generate(2048);

Deno.test("server: a relayed token reflected back from the recipient's socket is not relayed again", async () => {
  await using h = new Harness(serverKey);
  const { server, address, waitDrop } = await h.startServer();
  const a = await h.connect("a");
  const b = await h.connect("b");
  await a.waitPresence("join", b.address);

  const mark = a.tap.received.mark();
  await b.client.send("from b");
  await a.waitMessage("from b", { sender: b.address });
  // The relay stream as it reached a: SENDER then FERNET_MESSAGE under a's key.
  const relayed = await a.tap.received.waitFor(
    (d) => hasRecord(d.data, RecordType.FERNET_MESSAGE),
    "the relayed message",
    { from: mark },
  );
  assert.deepEqual(
    recordsOf(relayed.data).map((r) => r.type),
    [RecordType.SENDER, RecordType.FERNET_MESSAGE],
  );
  assert.deepEqual(
    recordValue(relayed.data, RecordType.SENDER),
    encodeAddress(b.tap.localAddress),
  );
  const token = recordValue(relayed.data, RecordType.FERNET_MESSAGE)!;

  // a sends the server's token back, from a's own socket.
  await a.tap.sendRaw(
    encodeRecords([{ type: RecordType.FERNET_MESSAGE, value: token }]),
    address,
  );
  await waitDrop("token_reflected");
  // Barrier: a's next message is handled after the reflected one.
  await a.client.send("after reflection");
  await b.waitMessage("after reflection", { sender: a.address });

  assert.deepEqual(b.messages().map((m) => m.text), ["after reflection"]);
  assert.deepEqual(a.messages().map((m) => m.text), ["from b"]);
  const stats = server.stats();
  assert.equal(stats.dropped.token_reflected, 1);
  assert.equal(stats.messagesRelayed, 2);
  assert.equal(stats.deliveries, 2);
});

Deno.test("server: the recipients' tokens of one message share one marked IV, each under its own key, and a reflected one is still dropped", async () => {
  await using h = new Harness(serverKey);
  const { server, address, waitDrop } = await h.startServer();
  const a = await h.connect("a");
  const b = await h.connect("b");
  const c = await h.connect("c");
  await a.waitPresence("join", c.address);
  await b.waitPresence("join", c.address);

  const marks = [a.tap.received.mark(), b.tap.received.mark()];
  await c.client.send("one message");
  await a.waitMessage("one message", { sender: c.address });
  await b.waitMessage("one message", { sender: c.address });
  const tokens = await Promise.all([a, b].map(async (member, i) => {
    const relayed = await member.tap.received.waitFor(
      (d) => hasRecord(d.data, RecordType.FERNET_MESSAGE),
      "the relayed message",
      { from: marks[i] },
    );
    return recordValue(relayed.data, RecordType.FERNET_MESSAGE)!;
  }));
  // Fernet: version (1), timestamp (8), IV (16), then ciphertext and HMAC.
  const [forA, forB] = tokens.map((token) => decodeBase64Url(token));
  assert.deepEqual(forA.subarray(9, 25), forB.subarray(9, 25));
  assert.notDeepEqual(forA.subarray(25), forB.subarray(25));

  // The shared IV carries the server's mark: sent back, it is reflected.
  await b.tap.sendRaw(
    encodeRecords([{ type: RecordType.FERNET_MESSAGE, value: tokens[1] }]),
    address,
  );
  await waitDrop("token_reflected");
  assert.deepEqual(a.messages().map((m) => m.text), ["one message"]);
  assert.deepEqual(b.messages().map((m) => m.text), ["one message"]);
  assert.equal(server.stats().deliveries, 2);
});

Deno.test("server: a message datagram re-sent from the sender's socket is not relayed twice (single and fragmented)", async () => {
  await using h = new Harness(serverKey);
  const { server, address, waitDrop } = await h.startServer({ mtu: 1200 });
  const a = await h.connect("a");
  const b = await h.connect("b");
  await a.waitPresence("join", b.address);

  // One datagram.
  let mark = b.tap.sent.mark();
  await b.client.send("replay me");
  await a.waitMessage("replay me", { sender: b.address });
  const single = b.tap.sent.filter(
    (d) => hasRecord(d.data, RecordType.FERNET_MESSAGE),
    mark,
  );
  assert.equal(single.length, 1);
  await b.tap.sendRaw(single[0]!.data, address);
  await waitDrop("token_replayed");

  // A fragmented message: every fragment again, in order.
  const long = sizedText("long replay", 3000);
  mark = b.tap.sent.mark();
  await b.client.send(long);
  await a.waitMessage(long, { sender: b.address });
  const fragments = b.tap.sent.items.slice(mark);
  assert.ok(fragments.length >= 3, `${fragments.length} fragments`);
  assert.ok(fragments.every((d) => hasRecord(d.data, RecordType.FRAGMENT)));
  for (const d of fragments) await b.tap.sendRaw(d.data, address);

  // Barrier: b's next message is handled after the replays.
  await b.client.send("after replay");
  await a.waitMessage("after replay", { sender: b.address });

  assert.deepEqual(a.messages().map((m) => m.text), [
    "replay me",
    long,
    "after replay",
  ]);
  const stats = server.stats();
  assert.equal(stats.dropped.token_replayed, 2, JSON.stringify(stats.dropped));
  assert.equal(stats.messagesRelayed, 3);
});

Deno.test("client: a relayed datagram delivered twice, or its own token sent back to it, is not delivered", async () => {
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  const { address: serverAddress } = await h.startServer({
    transport: network.bind(),
  });
  const a = await h.connect("a", { transport: network.bind() });
  const b = await h.connect("b", { transport: network.bind() });
  await a.waitPresence("join", b.address);

  // Replay: the server's datagram to a, delivered to a a second time.
  let mark = a.tap.received.mark();
  await b.client.send("once");
  await a.waitMessage("once");
  const relayed = a.tap.received.filter(
    (d) => hasRecord(d.data, RecordType.FERNET_MESSAGE),
    mark,
  );
  assert.equal(relayed.length, 1);
  network.deliver(relayed[0]!.data, serverAddress, a.tap.localAddress);
  await a.log.waitFor(
    (r) => r.event === "drop" && r.reason === "token_replayed",
    "a's token_replayed drop",
  );

  // Reflection: a's own outgoing token, wrapped as if the server relayed it.
  mark = a.tap.sent.mark();
  await a.client.send("mine");
  await b.waitMessage("mine");
  const own = a.tap.sent.filter(
    (d) => hasRecord(d.data, RecordType.FERNET_MESSAGE),
    mark,
  );
  assert.equal(own.length, 1);
  network.deliver(
    encodeRecords([
      { type: RecordType.SENDER, value: encodeAddress(b.tap.localAddress) },
      {
        type: RecordType.FERNET_MESSAGE,
        value: recordValue(own[0]!.data, RecordType.FERNET_MESSAGE)!,
      },
    ]),
    serverAddress,
    a.tap.localAddress,
  );
  await a.log.waitFor(
    (r) => r.event === "drop" && r.reason === "token_reflected",
    "a's token_reflected drop",
  );

  // Barrier: a handles datagrams in order.
  await b.client.send("last");
  await a.waitMessage("last");
  assert.deepEqual(a.messages().map((m) => m.text), ["once", "last"]);
  const dropped = a.client.stats().dropped;
  assert.equal(dropped.token_replayed, 1);
  assert.equal(dropped.token_reflected, 1);
});
