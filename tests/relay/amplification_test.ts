/**
 * No amplification (protocol.md sections 4 and 7): a key request shorter than
 * the answer is not answered unless the server runs with `compat`, and a
 * NOTICE 1 to an unknown source is never larger than the datagram that
 * caused it. Sizes are those of the bytes on the wire.
 */
import assert from "node:assert/strict";
import { HandshakeError } from "../../lib/errors.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { decodeNotice, NOTICE_TEXT } from "../../lib/wire/notice.ts";
import {
  encodeRecords,
  RecordType,
  TLV_HEADER_SIZE,
  type TlvRecord,
} from "../../lib/wire/tlv.ts";
import { keyAnswerSize } from "../../lib/relay/server/server.ts";
import {
  Harness,
  hasRecord,
  keyRequest,
  recordsOf,
  recordValue,
  type TapTransport,
} from "./_harness.ts";
import type { PeerAddress } from "../../lib/wire/address.ts";

const serverKey = await RsaPrivateKey.generate(2048);
/** COOKIE record + SERVER_PUBLIC_KEY record. */
const ANSWER_SIZE = 4 + 20 + 4 + serverKey.publicKey.pem.length;

function isKeyAnswer(data: Uint8Array): boolean {
  return recordValue(data, RecordType.SERVER_PUBLIC_KEY) !== undefined;
}

function isNotice(data: Uint8Array): boolean {
  return recordValue(data, RecordType.NOTICE) !== undefined;
}

/**
 * Sends a full-size key request from `peer` and waits for its answer: the
 * server handles one source's datagrams in order, so everything it was going
 * to send for earlier datagrams of `peer` has been sent by then.
 */
async function barrier(peer: TapTransport, server: PeerAddress) {
  const from = peer.received.mark();
  await peer.sendRaw(keyRequest(1200), server);
  return await peer.received.waitFor(
    (d) => isKeyAnswer(d.data),
    "the barrier's key answer",
    { from },
  );
}

Deno.test("a key request shorter than the answer gets no answer; one at least as long does", async () => {
  await using h = new Harness(serverKey);
  const { server, address } = await h.startServer();
  const peer = await h.socket("peer");

  for (const size of [4, 100, 400, ANSWER_SIZE - 1]) {
    await peer.sendRaw(keyRequest(size), address);
  }
  await peer.sendRaw(keyRequest(ANSWER_SIZE), address);
  const answer = await peer.received.waitFor(
    (d) => isKeyAnswer(d.data),
    "the answer to the exactly-long-enough request",
  );
  assert.equal(answer.data.length, ANSWER_SIZE);
  assert.deepEqual(
    recordsOf(answer.data).map((r) => r.type),
    [RecordType.COOKIE, RecordType.SERVER_PUBLIC_KEY],
  );
  const last = await barrier(peer, address);

  // Exactly two answers: to the ANSWER_SIZE request and to the barrier.
  assert.equal(peer.received.items.length, 2);
  assert.equal(peer.received.items[1], last);
  assert.equal(server.stats().dropped.short_key_request, 4);
  assert.equal(server.stats().datagramsOut, 2);
});

Deno.test("compat: a short key request is answered, and a client with a small MTU can join", async () => {
  await using h = new Harness(serverKey);
  const strict = await h.startServer();
  const compat = await h.startServer({ compat: true });
  assert.equal(compat.server.compat, true);
  const peer = await h.socket("peer");

  await peer.sendRaw(keyRequest(100), compat.address);
  const answer = await peer.received.waitFor(
    (d) => isKeyAnswer(d.data),
    "compat's answer to a 100-byte request",
  );
  assert.ok(answer.data.length > 100);

  // A client whose MTU (hence key request) is below the answer size...
  await assert.rejects(
    h.connect("small-strict", {
      server: strict,
      mtu: 400,
      retryAttempts: 2,
      retryInitialMs: 50,
    }),
    (error: unknown) =>
      error instanceof HandshakeError && /No answer/.test(error.message),
  );
  // Both requests reached the strict server before a later one from another
  // socket (one receive queue, dropped as they are read): its answer is the
  // barrier, whatever the client's retry pace.
  await barrier(await h.socket("after the client"), strict.address);
  assert.equal(strict.server.stats().dropped.short_key_request, 2);
  // ...joins a compat server, and its messages (fragmented at 400) flow.
  const small = await h.connect("small", { server: compat, mtu: 400 });
  const other = await h.connect("other", { server: compat });
  await small.waitPresence("join", other.address);
  const text = "x".repeat(1000);
  await small.client.send(text);
  await other.waitMessage(text, { sender: small.address });
  const sent = small.tap.sent.items;
  assert.ok(sent.every((d) => d.data.length <= 400));
  // Its key request is padded to exactly its MTU; its message was fragmented.
  assert.ok(
    sent.some((d) =>
      d.data.length === 400 && hasRecord(d.data, RecordType.KEY_REQUEST)
    ),
  );
  assert.ok(sent.some((d) => hasRecord(d.data, RecordType.FRAGMENT)));
});

Deno.test("NOTICE 1 to an unknown source is never larger than the datagram that caused it", async () => {
  await using h = new Harness(serverKey);
  const { server, address } = await h.startServer();
  const fullNotice = 4 + 2 + NOTICE_TEXT[1]!.length;

  const cases: { name: string; datagram: Uint8Array }[] = [
    // KEEPALIVE values of several sizes (the RSA profile's is 4 zero bytes).
    ...[0, 1, 2, 4, 16, 100, 1196].map((n) => ({
      name: `KEEPALIVE of ${n} B`,
      datagram: encodeRecords([{
        type: RecordType.KEEPALIVE,
        value: new Uint8Array(n).fill(n === 4 ? 0 : 0x41),
      }]),
    })),
    {
      name: "FERNET_MESSAGE of 20 B",
      datagram: encodeRecords([{
        type: RecordType.FERNET_MESSAGE,
        value: new Uint8Array(16).fill(0x41),
      }]),
    },
  ];
  for (const { name, datagram } of cases) {
    // One socket per case: notices are rate-limited per source.
    const peer = await h.socket(name);
    await peer.sendRaw(datagram, address);
    const answer = await barrier(peer, address);
    const notices = peer.received.items.filter((d) => isNotice(d.data));
    // The barrier's answer comes last; nothing but notices before it.
    assert.equal(peer.received.items.at(-1), answer, name);
    assert.equal(peer.received.items.length, notices.length + 1, name);
    if (datagram.length < 6) {
      assert.equal(notices.length, 0, `${name}: too small for any NOTICE`);
      continue;
    }
    assert.equal(notices.length, 1, name);
    const notice = notices[0]!.data;
    assert.ok(
      notice.length <= datagram.length,
      `${name}: NOTICE of ${notice.length} B to a ${datagram.length}-byte datagram`,
    );
    assert.equal(notice.length, Math.min(datagram.length, fullNotice), name);
    const decoded = decodeNotice(recordValue(notice, RecordType.NOTICE)!);
    assert.equal(decoded.code, 1, name);
    assert.ok(NOTICE_TEXT[1]!.startsWith(decoded.text), name);
  }
  assert.equal(server.stats().dropped.unknown_source, cases.length);
  assert.deepEqual(server.members(), []);
});

Deno.test("a datagram of several KEY_REQUEST records gets one answer, never more bytes than it had", async () => {
  await using h = new Harness(serverKey);
  const { server, waitDrop } = await h.startServer();
  const raw = await h.socket("amplifier");
  const answer = keyAnswerSize(serverKey);
  // Ten KEY_REQUEST records whose datagram is exactly one answer long.
  const records: TlvRecord[] = [];
  const padding = Math.floor((answer - 10 * TLV_HEADER_SIZE) / 10);
  for (let i = 0; i < 10; i++) {
    records.push({
      type: RecordType.KEY_REQUEST,
      value: new Uint8Array(
        i === 9 ? answer - 10 * TLV_HEADER_SIZE - 9 * padding : padding,
      ),
    });
  }
  const datagram = encodeRecords(records);
  assert.equal(datagram.length, answer);
  await raw.sendRaw(datagram, server.localAddress);
  await raw.received.waitFor(
    (d) => recordValue(d.data, RecordType.SERVER_PUBLIC_KEY) !== undefined,
    "the key answer",
  );
  // Sentinel: its drop is logged once every earlier datagram was handled.
  await raw.sendRaw(keyRequest(10), server.localAddress);
  await waitDrop("short_key_request");
  const answers = raw.received.items.filter((d) =>
    recordValue(d.data, RecordType.SERVER_PUBLIC_KEY) !== undefined
  );
  assert.equal(answers.length, 1);
  assert.ok(answers[0]!.data.length <= datagram.length);
  assert.equal(server.stats().dropped.extra_key_request, 9);
});
