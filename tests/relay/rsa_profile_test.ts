/**
 * RSA-profile members (protocol.md sections 4-5) in one group with hybrid
 * members: registration with CLIENT_PUBLIC_KEY, messages as RSA_BLOCK
 * records (several per message, fragmented), relayed as RSA_RELAY_BLOCK or
 * FERNET_MESSAGE according to each recipient's profile, and an empty
 * DISCONNECT on close.
 */
import assert from "node:assert/strict";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { Reassembler } from "../../lib/core/reassembler.ts";
import { decodeFragment } from "../../lib/wire/fragment.ts";
import { decodeRecords, RecordType } from "../../lib/wire/tlv.ts";
import {
  type ClientHandle,
  Harness,
  recordsOf,
  registrationRetries,
  type SentDatagram,
  sizedText,
} from "./_harness.ts";
import type { Datagram } from "../../lib/runtime/transport.ts";

const [serverKey, rsaKeyB, rsaKeyC] = await Promise.all([
  RsaPrivateKey.generate(2048),
  RsaPrivateKey.generate(2048),
  RsaPrivateKey.generate(2048),
]);

/** The streams in some recorded datagrams, fragments reassembled, as record type lists. */
function streams(datagrams: readonly (Datagram | SentDatagram)[]): number[][] {
  const reassembler = new Reassembler();
  const out: number[][] = [];
  for (const { data } of datagrams) {
    for (const record of recordsOf(data)) {
      if (record.type !== RecordType.FRAGMENT) continue;
      const stream = reassembler.add("x", decodeFragment(record.value));
      if (stream) out.push(decodeRecords(stream).map((r) => r.type));
    }
    const types = recordsOf(data).map((r) => r.type);
    if (types.length > 0 && types[0] !== RecordType.FRAGMENT) out.push(types);
  }
  return out;
}

Deno.test("RSA and hybrid members in one group: short and multi-block fragmented messages both ways, each delivered once", async () => {
  await using h = new Harness(serverKey);
  const { server } = await h.startServer({ mtu: 1200 });
  const a = await h.connect("a"); // hybrid
  const b = await h.connect("b", { profile: "rsa", rsaKey: rsaKeyB });
  const c = await h.connect("c", { profile: "rsa", rsaKey: rsaKeyC });
  const all = [a, b, c];
  for (const x of all) {
    for (const y of all) if (x !== y) await x.waitPresence("join", y.address);
  }

  const profiles = Object.fromEntries(
    server.members().map((m) => [m.address, m.profile]),
  );
  assert.deepEqual(profiles, {
    [a.address]: "hybrid",
    [b.address]: "rsa",
    [c.address]: "rsa",
  });
  assert.deepEqual(all.map((x) => x.client.profile), ["hybrid", "rsa", "rsa"]);

  // 3000 bytes: 16 RSA blocks of at most 190 bytes, about 4 KB: fragmented.
  const sent: { text: string; sender: ClientHandle }[] = [];
  for (const sender of all) {
    for (const size of [12, 3000]) {
      const text = sizedText(`${sender.name}-${size}`, size);
      await sender.client.send(text);
      sent.push({ text, sender });
      for (const x of all) {
        if (x !== sender) {
          await x.waitMessage(text, { sender: sender.address });
        }
      }
    }
  }
  for (const x of all) {
    const received = x.messages();
    assert.equal(received.length, 4, `${x.name} received ${received.length}`);
    for (const { text, sender } of sent) {
      if (sender === x) continue;
      assert.equal(received.filter((m) => m.text === text).length, 1);
    }
    assert.equal(received.filter((m) => m.from === x.address).length, 0);
  }
  assert.equal(server.stats().messagesRelayed, 6);
  // Nothing dropped, but for the registrations a member sent again because
  // its WELCOME was late (the server's RSA threads yield to a busy machine).
  assert.deepEqual(server.stats().dropped, registrationRetries(all));

  // On the wire: b registered with CLIENT_PUBLIC_KEY and sent RSA_BLOCKs
  // (16 for the long message, inside fragments)...
  const bOut = streams(b.tap.sent.items);
  assert.deepEqual(bOut[1], [RecordType.COOKIE, RecordType.CLIENT_PUBLIC_KEY]);
  const bMessages = bOut.filter((s) => s.includes(RecordType.RSA_BLOCK));
  assert.deepEqual(bMessages.map((s) => s.length), [1, 16]);
  assert.ok(
    b.tap.sent.items.some((d) =>
      recordsOf(d.data)[0]?.type === RecordType.FRAGMENT
    ),
  );
  assert.ok(b.tap.sent.items.every((d) => d.data.length <= 1200));
  // ...received SENDER + RSA_RELAY_BLOCKs, whoever sent; a got FERNET_MESSAGEs.
  const bIn = streams(b.tap.received.items).filter((s) =>
    s[0] === RecordType.SENDER
  );
  assert.equal(bIn.length, 4);
  for (const s of bIn) {
    assert.ok(s.slice(1).every((t) => t === RecordType.RSA_RELAY_BLOCK));
  }
  assert.deepEqual(bIn.map((s) => s.length - 1).sort((x, y) => x - y), [
    1,
    1,
    16,
    16,
  ]);
  const aIn = streams(a.tap.received.items).filter((s) =>
    s[0] === RecordType.SENDER
  );
  assert.deepEqual(
    aIn,
    Array(4).fill([RecordType.SENDER, RecordType.FERNET_MESSAGE]),
  );

  // An RSA member leaves with an (empty) DISCONNECT: the others are told.
  await c.client.close();
  await a.waitPresence("leave", c.address);
  await b.waitPresence("leave", c.address);
  const disconnect = c.tap.sent.items.flatMap((d) =>
    recordsOf(d.data).filter((r) => r.type === RecordType.DISCONNECT)
  );
  assert.equal(disconnect.length, 1);
  assert.equal(disconnect[0]!.value.length, 0);
  assert.deepEqual(
    server.members().map((m) => m.profile).sort(),
    ["hybrid", "rsa"],
  );
});

Deno.test("RSA member keep-alives (4 zero bytes) keep it present past the timeout", async () => {
  await using h = new Harness(serverKey);
  const { server } = await h.startServer({ clientTimeoutMs: 500 });
  const a = await h.connect("a", { keepaliveMs: 100 });
  const b = await h.connect("b", {
    profile: "rsa",
    rsaKey: rsaKeyB,
    keepaliveMs: 100,
  });
  // Outlive the timeout several times over, measured in b's own keep-alives.
  await b.tap.sent.waitForCount(
    (d) =>
      recordsOf(d.data).some((r) =>
        r.type === RecordType.KEEPALIVE && r.value.length === 4 &&
        r.value.every((x) => x === 0)
      ),
    12,
    "b's RSA keep-alives",
  );
  assert.deepEqual(
    server.members().map((m) => m.address).sort(),
    [a.address, b.address].sort(),
  );
  assert.equal(a.events.count((e) => e.type === "leave"), 0);
});

Deno.test("an RSA member's blocks are paid for before any RSA work", async () => {
  await using h = new Harness(serverKey);
  const { server, waitDrop } = await h.startServer({
    rsaBlocksPerSecond: 1,
    handshakesPerSecond: 1000,
    handshakeBurst: 1000,
  });
  const sender = await h.connect("rsa sender", {
    profile: "rsa",
    rsaKey: rsaKeyB,
  });
  const receiver = await h.connect("receiver");
  const decryptsBefore = server.stats().rsaDecryptions;
  const big = "r".repeat(30_000); // 158 blocks of 190 bytes
  await sender.client.send(big);
  await receiver.waitMessage(big);
  assert.equal(server.stats().rsaDecryptions - decryptsBefore, 158);
  // The burst (200 blocks) has 42 left: the second message is refused
  // before decryption, with NOTICE 3.
  await sender.client.send(big);
  await waitDrop("rate_limited");
  await sender.waitEvent("notice");
  assert.equal(server.stats().rsaDecryptions - decryptsBefore, 158);
  assert.equal(server.stats().messagesRelayed, 1);
});

Deno.test("an RSA member kicked re-registers with the same key once its cookie is fresh", async () => {
  await using h = new Harness(serverKey);
  const { server } = await h.startServer();
  const member = await h.connect("rsa member", {
    profile: "rsa",
    rsaKey: rsaKeyB,
    keepaliveMs: 100,
    retryInitialMs: 100,
  });
  const since = member.events.mark();
  assert.ok(server.kick(member.address));
  await member.events.waitFor(
    (e) => e.type === "ready",
    "registered again after the kick",
    { from: since },
  );
  assert.deepEqual(server.members().map((m) => m.address), [member.address]);
  // Cookies are a function of address and second (protocol.md section 4),
  // and an RSA member's key never changes: a re-registration carrying the
  // cookie of its first registration's second is byte for byte a replay, and
  // refused. The client retries that step (at most retryAttempts times),
  // then starts over with a fresh cookie and gets in: locked out for one
  // round of retries, not for the cookie's 66 s.
  const replayed = server.stats().dropped.registration_replayed ?? 0;
  assert.ok(replayed <= 5, `${replayed} registrations refused as replays`);
});
