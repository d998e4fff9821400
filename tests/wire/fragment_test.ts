import assert from "node:assert/strict";
import { MalformedDatagramError } from "../../lib/errors.ts";
import {
  decodeFragment,
  encodeFragment,
  type Fragment,
  FRAGMENT_HEADER_SIZE,
  fragmentChunkSize,
  fragmentStream,
} from "../../lib/wire/fragment.ts";
import { decodeRecords, RecordType } from "../../lib/wire/tlv.ts";

const bytes = (...values: number[]) => new Uint8Array(values);

function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

/** Bytes 0, 1, 2, ... (mod 251, so chunk boundaries do not line up with the pattern). */
function pattern(length: number): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => i % 251);
}

/** Decodes a fragmented datagram: exactly one FRAGMENT record. */
function decodeDatagram(datagram: Uint8Array): Fragment {
  const records = decodeRecords(datagram);
  assert.equal(records.length, 1);
  assert.equal(records[0].type, RecordType.FRAGMENT);
  return decodeFragment(records[0].value);
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

test("fragmentChunkSize() leaves room for the TLV and FRAGMENT headers", () => {
  assert.equal(FRAGMENT_HEADER_SIZE, 8);
  assert.equal(fragmentChunkSize(1200), 1188);
  assert.equal(fragmentChunkSize(13), 1);
  assert.equal(fragmentChunkSize(12), 0);
});

test("fragmentChunkSize() never exceeds what one TLV value can hold", () => {
  assert.equal(fragmentChunkSize(65539), 65527);
  assert.equal(fragmentChunkSize(100_000), 65527);
});

test("encodeFragment() writes msg_id u32, index u16, count u16, then the chunk", () => {
  assert.deepEqual(
    encodeFragment({
      msgId: 0xdeadbeef,
      index: 0x0102,
      count: 0x0304,
      chunk: bytes(0xaa, 0xbb),
    }),
    bytes(0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04, 0xaa, 0xbb),
  );
  assert.deepEqual(
    encodeFragment({ msgId: 0, index: 0, count: 1, chunk: bytes() }),
    bytes(0, 0, 0, 0, 0, 0, 0, 1),
  );
});

test("encodeFragment() rejects header fields out of range", () => {
  const chunk = bytes(1);
  for (
    const f of [
      { msgId: -1, index: 0, count: 1, chunk },
      { msgId: 2 ** 32, index: 0, count: 1, chunk },
      { msgId: 1, index: 0, count: 0, chunk },
      { msgId: 1, index: 2, count: 2, chunk },
      { msgId: 1, index: 0, count: 65536, chunk },
      { msgId: 1, index: 0, count: 1, chunk: new Uint8Array(65528) },
    ]
  ) {
    assert.throws(() => encodeFragment(f), RangeError, JSON.stringify(f));
  }
});

test("decodeFragment() reads the header big-endian and the chunk as a view", () => {
  const value = bytes(
    0xde,
    0xad,
    0xbe,
    0xef,
    0x01,
    0x02,
    0x03,
    0x04,
    0xaa,
    0xbb,
  );
  const fragment = decodeFragment(value);
  assert.equal(fragment.msgId, 0xdeadbeef);
  assert.equal(fragment.index, 0x0102);
  assert.equal(fragment.count, 0x0304);
  assert.deepEqual(fragment.chunk, bytes(0xaa, 0xbb));
  assert.equal(fragment.chunk.buffer, value.buffer);
  assert.equal(fragment.chunk.byteOffset, 8);
});

test("decodeFragment() accepts the extremes of the header", () => {
  const fragment = decodeFragment(
    bytes(0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xff, 0xff),
  );
  assert.deepEqual(
    { ...fragment, chunk: [...fragment.chunk] },
    { msgId: 0xffffffff, index: 65534, count: 65535, chunk: [] },
  );
});

test("decodeFragment() throws on a value shorter than 8 bytes", () => {
  for (let n = 0; n < 8; n++) {
    assert.throws(
      () => decodeFragment(new Uint8Array(n).fill(1)),
      MalformedDatagramError,
    );
  }
});

test("decodeFragment() throws on count 0", () => {
  assert.throws(
    () => decodeFragment(bytes(0, 0, 0, 1, 0, 0, 0, 0, 9)),
    MalformedDatagramError,
  );
});

test("decodeFragment() throws when index is not below count", () => {
  assert.throws(
    () => decodeFragment(bytes(0, 0, 0, 1, 0, 3, 0, 3, 9)),
    MalformedDatagramError,
  );
  assert.throws(
    () => decodeFragment(bytes(0, 0, 0, 1, 0xff, 0xff, 0, 1)),
    MalformedDatagramError,
  );
  assert.equal(decodeFragment(bytes(0, 0, 0, 1, 0, 2, 0, 3, 9)).index, 2);
});

test("fragmentStream() lays out a FRAGMENT datagram byte for byte", () => {
  // mtu 20: chunks of 8 bytes; a 21-byte stream becomes 8 + 8 + 5.
  const stream = Uint8Array.from({ length: 21 }, (_, i) => i + 1);
  const datagrams = fragmentStream(stream, 20, 0x01020304);
  assert.deepEqual(datagrams, [
    // type 1 | length 16 | msg_id | index 0 | count 3 | chunk
    bytes(0, 1, 0, 16, 1, 2, 3, 4, 0, 0, 0, 3, 1, 2, 3, 4, 5, 6, 7, 8),
    bytes(0, 1, 0, 16, 1, 2, 3, 4, 0, 1, 0, 3, 9, 10, 11, 12, 13, 14, 15, 16),
    bytes(0, 1, 0, 13, 1, 2, 3, 4, 0, 2, 0, 3, 17, 18, 19, 20, 21),
  ]);
});

test("fragmentStream() returns a stream of exactly mtu bytes unchanged", () => {
  const stream = pattern(1200);
  const datagrams = fragmentStream(stream, 1200, 7);
  assert.equal(datagrams.length, 1);
  assert.equal(datagrams[0], stream);
  assert.deepEqual(fragmentStream(bytes(), 1200, 7), [bytes()]);
});

test("fragmentStream() fragments a stream of mtu + 1 bytes into two chunks", () => {
  const datagrams = fragmentStream(pattern(1201), 1200, 7);
  assert.deepEqual(datagrams.map((d) => d.length), [1200, 1201 - 1188 + 12]);
  assert.deepEqual(datagrams.map((d) => decodeDatagram(d).chunk.length), [
    1188,
    13,
  ]);
});

test("fragmentStream() cuts an exact multiple of the chunk size into full chunks", () => {
  const datagrams = fragmentStream(pattern(3 * 1188), 1200, 7);
  assert.deepEqual(datagrams.map((d) => d.length), [1200, 1200, 1200]);
  const plusOne = fragmentStream(pattern(3 * 1188 + 1), 1200, 7);
  assert.deepEqual(plusOne.map((d) => d.length), [1200, 1200, 1200, 13]);
});

test("fragmentStream() never emits a datagram larger than the MTU", () => {
  for (const mtu of [13, 14, 20, 100, 576, 1200, 1500]) {
    for (
      const length of [
        mtu + 1,
        mtu + 2,
        2 * mtu,
        3 * (mtu - 12),
        3 * (mtu - 12) + 1,
        5000,
      ]
    ) {
      if (length <= mtu) continue;
      const datagrams = fragmentStream(pattern(length), mtu, 1);
      assert.ok(
        datagrams.every((d) => d.length <= mtu),
        `mtu ${mtu} length ${length}`,
      );
      assert.equal(datagrams.length, Math.ceil(length / (mtu - 12)));
    }
  }
});

test("fragmentStream() round-trips through decodeRecords() and decodeFragment()", () => {
  const stream = pattern(5000);
  const datagrams = fragmentStream(stream, 576, 0xcafef00d);
  const fragments = datagrams.map(decodeDatagram);
  assert.ok(fragments.every((f) => f.msgId === 0xcafef00d && f.count === 9));
  assert.deepEqual(fragments.map((f) => f.index), [0, 1, 2, 3, 4, 5, 6, 7, 8]);
  assert.deepEqual(concat(fragments.map((f) => f.chunk)), stream);
});

test("fragmentStream() throws a RangeError on an MTU that cannot carry a chunk", () => {
  for (const mtu of [0, 5, 12, 12.5, NaN]) {
    assert.throws(
      () => fragmentStream(pattern(100), mtu, 1),
      RangeError,
      `mtu ${mtu}`,
    );
  }
  assert.equal(fragmentStream(pattern(100), 13, 1).length, 100);
});

test("fragmentStream() throws a RangeError when more than 65535 chunks are needed", () => {
  // mtu 13 carries 1 byte per datagram.
  assert.equal(fragmentStream(new Uint8Array(65535), 13, 1).length, 65535);
  assert.throws(() => fragmentStream(new Uint8Array(65536), 13, 1), RangeError);
});

test("fragmentStream() rejects a msg_id that is not a u32", () => {
  for (const msgId of [-1, 2 ** 32, 0.5]) {
    assert.throws(() => fragmentStream(pattern(2000), 1200, msgId), RangeError);
  }
});

test("fragmentStream() caps chunks for an MTU beyond a TLV value's reach", () => {
  const datagrams = fragmentStream(pattern(70_000), 100_000, 1);
  assert.deepEqual(datagrams, [pattern(70_000)]);
  const large = fragmentStream(pattern(200_000), 100_000, 1);
  assert.deepEqual(large.map((d) => d.length), [
    65539,
    65539,
    65539,
    200_000 - 3 * 65527 + 12,
  ]);
  assert.deepEqual(
    concat(large.map((d) => decodeDatagram(d).chunk)),
    pattern(200_000),
  );
});
