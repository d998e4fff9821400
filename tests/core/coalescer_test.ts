/**
 * SendCoalescer: relay streams for one recipient in one batch leave as one
 * datagram of SENDER/message pairs in order, split at the MTU; a stream
 * added outside a batch is sent by the scheduled flush, never held for
 * company.
 */
import assert from "node:assert/strict";
import { SendCoalescer } from "../../lib/core/coalescer.ts";
import { encodeAddress, type PeerAddress } from "../../lib/wire/address.ts";
import {
  decodeRecords,
  encodeRecords,
  RecordType,
} from "../../lib/wire/tlv.ts";

const alice: PeerAddress = { hostname: "127.0.0.1", port: 5001 };
const bob: PeerAddress = { hostname: "127.0.0.1", port: 5002 };
const carol: PeerAddress = { hostname: "10.0.0.3", port: 5003 };

/** A relay stream as the server makes it: SENDER then a FERNET_MESSAGE. */
function relayStream(sender: PeerAddress, token: string): Uint8Array {
  return encodeRecords([
    { type: RecordType.SENDER, value: encodeAddress(sender) },
    {
      type: RecordType.FERNET_MESSAGE,
      value: new TextEncoder().encode(token),
    },
  ]);
}

interface Sent {
  readonly datagram: Uint8Array;
  readonly to: PeerAddress;
  readonly streams: number;
}

function recorder(): {
  sent: Sent[];
  send: (d: Uint8Array, to: PeerAddress, streams: number) => void;
} {
  const sent: Sent[] = [];
  return {
    sent,
    send: (datagram, to, streams) => sent.push({ datagram, to, streams }),
  };
}

Deno.test({
  name:
    "SendCoalescer: one batch's streams for a recipient are one datagram, byte for byte the streams in order",
  permissions: "none",
  fn() {
    const { sent, send } = recorder();
    const coalescer = new SendCoalescer(1200, send, () => {
      throw new Error("a held batch schedules no flush");
    });
    const first = relayStream(alice, "token-1");
    const second = relayStream(bob, "token-2");
    const third = relayStream(alice, "token-3");
    const forBob = relayStream(alice, "token-b");
    const release = coalescer.hold();
    coalescer.add(carol, first);
    coalescer.add(bob, forBob);
    coalescer.add(carol, second);
    coalescer.add(carol, third);
    assert.equal(sent.length, 0, "nothing leaves before the batch ends");
    assert.equal(coalescer.pending, 4);
    release();
    assert.equal(sent.length, 2);
    const toCarol = sent.find((s) => s.to === carol)!;
    assert.deepEqual(
      toCarol.datagram,
      new Uint8Array([...first, ...second, ...third]),
    );
    assert.equal(toCarol.streams, 3);
    // SENDER, token, SENDER, token, SENDER, token.
    assert.deepEqual(
      decodeRecords(toCarol.datagram).map((r) => r.type),
      [10, 14, 10, 14, 10, 14],
    );
    // A lone stream goes as it is (the same bytes, not a copy).
    const toBob = sent.find((s) => s.to === bob)!;
    assert.equal(toBob.datagram, forBob);
    assert.equal(coalescer.joined, 2);
    assert.equal(coalescer.pending, 0);
  },
});

Deno.test({
  name:
    "SendCoalescer: streams that do not fit one MTU go in as few datagrams as their order allows",
  permissions: "none",
  fn() {
    const { sent, send } = recorder();
    const coalescer = new SendCoalescer(100, send);
    const streams = [40, 40, 30, 90, 10].map((n) => new Uint8Array(n).fill(n));
    const release = coalescer.hold();
    for (const stream of streams) coalescer.add(carol, stream);
    release();
    release(); // a second call sends nothing more
    // 40+40 (a third would pass 100), 30 (90 would pass), 90+10.
    assert.deepEqual(sent.map((s) => s.datagram.length), [80, 30, 100]);
    assert.deepEqual(sent.map((s) => s.streams), [2, 1, 2]);
    assert.deepEqual(
      new Uint8Array(sent.flatMap((s) => [...s.datagram])),
      new Uint8Array(streams.flatMap((s) => [...s])),
    );
    assert.throws(
      () => coalescer.add(carol, new Uint8Array(101)),
      /larger than the 100-byte MTU/,
    );
  },
});

Deno.test({
  name:
    "SendCoalescer: a stream added outside a batch is flushed by the scheduled task at once, not held for company",
  permissions: "none",
  fn() {
    const { sent, send } = recorder();
    const scheduled: (() => void)[] = [];
    const coalescer = new SendCoalescer(1200, send, (f) => scheduled.push(f));
    const lone = relayStream(alice, "lone");
    coalescer.add(bob, lone);
    assert.equal(scheduled.length, 1, "the add scheduled a flush");
    scheduled[0]();
    assert.equal(sent.length, 1);
    assert.equal(sent[0].datagram, lone);
    assert.equal(sent[0].to, bob);
    // A second add schedules again; one scheduled flush serves several adds.
    coalescer.add(bob, lone);
    coalescer.add(carol, lone);
    assert.equal(scheduled.length, 2);
    scheduled[1]();
    assert.equal(sent.length, 3);
  },
});

Deno.test({
  name:
    "SendCoalescer: overlapping batches: each release sends what is pending, none waits for the later batch",
  permissions: "none",
  fn() {
    const { sent, send } = recorder();
    const scheduled: (() => void)[] = [];
    const coalescer = new SendCoalescer(1200, send, (f) => scheduled.push(f));
    const releaseFirst = coalescer.hold();
    coalescer.add(carol, relayStream(alice, "1"));
    const releaseSecond = coalescer.hold();
    coalescer.add(carol, relayStream(bob, "2"));
    releaseFirst();
    assert.equal(sent.length, 1, "the first release sent both streams");
    assert.equal(sent[0].streams, 2);
    coalescer.add(carol, relayStream(alice, "3"));
    assert.equal(scheduled.length, 0, "still held by the second batch");
    releaseSecond();
    assert.equal(sent.length, 2);
  },
});

Deno.test({
  name:
    "SendCoalescer.flushTo sends one recipient's pending streams before another datagram to it, leaving the others held",
  permissions: "none",
  fn() {
    const { sent, send } = recorder();
    const coalescer = new SendCoalescer(1200, send);
    const release = coalescer.hold();
    coalescer.add(carol, relayStream(alice, "1"));
    coalescer.add(bob, relayStream(alice, "2"));
    coalescer.flushTo(carol);
    assert.deepEqual(sent.map((s) => s.to), [carol]);
    coalescer.flushTo(carol); // nothing left for carol
    assert.equal(sent.length, 1);
    release();
    assert.deepEqual(sent.map((s) => s.to), [carol, bob]);
  },
});
