import assert from "node:assert/strict";
import { MalformedDatagramError } from "../../lib/errors.ts";
import {
  decodeRecord,
  decodeRecords,
  encodedSize,
  encodeRecords,
  encodeRecordsInto,
  isKnownRecordType,
  MAX_TLV_VALUE_SIZE,
  RecordType,
} from "../../lib/wire/tlv.ts";

const bytes = (...values: number[]) => new Uint8Array(values);

function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

test("encodeRecords() writes a KEEPALIVE as type, length and value, big-endian", () => {
  const out = encodeRecords([{
    type: RecordType.KEEPALIVE,
    value: bytes(0, 0, 0, 0),
  }]);
  assert.deepEqual(out, bytes(0, 9, 0, 4, 0, 0, 0, 0));
});

test("encodeRecords() puts two records back to back", () => {
  const out = encodeRecords([
    { type: RecordType.SENDER, value: bytes(127, 0, 0, 1, 0x13, 0x8f) },
    { type: RecordType.FERNET_MESSAGE, value: bytes(0x67, 0x41) },
  ]);
  assert.deepEqual(
    out,
    bytes(0, 10, 0, 6, 127, 0, 0, 1, 0x13, 0x8f, 0, 14, 0, 2, 0x67, 0x41),
  );
});

test("encodeRecords() writes an empty value as a bare header", () => {
  assert.deepEqual(
    encodeRecords([{ type: RecordType.DISCONNECT, value: bytes() }]),
    bytes(0, 8, 0, 0),
  );
});

test("encodeRecords() writes types and lengths above 255 in both bytes", () => {
  const value = new Uint8Array(0x0102).fill(0xee);
  const out = encodeRecords([{ type: 0xabcd, value }]);
  assert.deepEqual(out.subarray(0, 4), bytes(0xab, 0xcd, 0x01, 0x02));
  assert.equal(out.length, 4 + 0x0102);
  assert.ok(out.subarray(4).every((b) => b === 0xee));
});

test("encodeRecords() of no records is empty", () => {
  assert.deepEqual(encodeRecords([]), bytes());
});

test("encodedSize() counts a 4-byte header per record", () => {
  assert.equal(encodedSize([]), 0);
  assert.equal(
    encodedSize([{ type: 1, value: bytes(1, 2, 3) }, {
      type: 2,
      value: bytes(),
    }]),
    11,
  );
});

test("encodeRecords() accepts a 65535-byte value and rejects 65536", () => {
  const max = encodeRecords([{
    type: 14,
    value: new Uint8Array(MAX_TLV_VALUE_SIZE),
  }]);
  assert.deepEqual(max.subarray(0, 4), bytes(0, 14, 0xff, 0xff));
  assert.equal(max.length, 4 + 65535);
  assert.throws(
    () => encodeRecords([{ type: 14, value: new Uint8Array(65536) }]),
    RangeError,
  );
});

test("encodeRecords() rejects a type outside 0..65535", () => {
  for (const type of [-1, 65536, 1.5, NaN]) {
    assert.throws(() => encodeRecords([{ type, value: bytes() }]), RangeError);
  }
  assert.deepEqual(
    encodeRecords([{ type: 0, value: bytes() }]),
    bytes(0, 0, 0, 0),
  );
  assert.deepEqual(
    encodeRecords([{ type: 65535, value: bytes() }]),
    bytes(0xff, 0xff, 0, 0),
  );
});

test("encodeRecordsInto() writes at the offset and returns the offset after", () => {
  const target = new Uint8Array(10).fill(0xaa);
  const end = encodeRecordsInto([{ type: 9, value: bytes(1, 2) }], target, 3);
  assert.equal(end, 9);
  assert.deepEqual(target, bytes(0xaa, 0xaa, 0xaa, 0, 9, 0, 2, 1, 2, 0xaa));
});

test("encodeRecordsInto() throws and writes nothing when the target is too small", () => {
  const target = new Uint8Array(8);
  assert.throws(
    () =>
      encodeRecordsInto(
        [{ type: 9, value: bytes(1) }, { type: 9, value: bytes(2) }],
        target,
        0,
      ),
    RangeError,
  );
  assert.deepEqual(target, new Uint8Array(8));
  assert.throws(
    () => encodeRecordsInto([{ type: 9, value: bytes() }], target, 5),
    RangeError,
  );
  assert.throws(
    () => encodeRecordsInto([{ type: 9, value: bytes() }], target, -1),
    RangeError,
  );
});

test("encodeRecordsInto() throws on an oversized value before writing anything", () => {
  const target = new Uint8Array(70_000);
  assert.throws(
    () =>
      encodeRecordsInto(
        [{ type: 9, value: bytes(1) }, {
          type: 14,
          value: new Uint8Array(65536),
        }],
        target,
        0,
      ),
    RangeError,
  );
  assert.ok(target.every((b) => b === 0));
});

test("decodeRecords() reads a KEEPALIVE", () => {
  const records = decodeRecords(bytes(0, 9, 0, 4, 0, 0, 0, 0));
  assert.equal(records.length, 1);
  assert.equal(records[0].type, RecordType.KEEPALIVE);
  assert.deepEqual(records[0].value, bytes(0, 0, 0, 0));
});

test("decodeRecords() reads records back to back, in order, including empty values", () => {
  const records = decodeRecords(
    bytes(0, 17, 0, 2, 0xc0, 0xff, 0, 8, 0, 0, 0, 13, 0, 1, 0x42),
  );
  assert.deepEqual(
    records.map((r) => [r.type, [...r.value]]),
    [[17, [0xc0, 0xff]], [8, []], [13, [0x42]]],
  );
});

test("decodeRecords() of an empty datagram is no records", () => {
  assert.deepEqual(decodeRecords(bytes()), []);
});

test("decodeRecords() returns values as views into the datagram", () => {
  const datagram = bytes(0, 14, 0, 3, 1, 2, 3);
  const [record] = decodeRecords(datagram);
  assert.equal(record.value.buffer, datagram.buffer);
  assert.equal(record.value.byteOffset, 4);
  datagram[5] = 0x99;
  assert.equal(record.value[1], 0x99);
});

test("decodeRecords() surfaces unknown types for the caller to skip and count", () => {
  const records = decodeRecords(
    bytes(0, 2, 0, 1, 7, 0, 22, 0, 0, 0xff, 0xff, 0, 0, 0, 9, 0, 0),
  );
  assert.deepEqual(records.map((r) => r.type), [2, 22, 0xffff, 9]);
  assert.deepEqual(records.map((r) => isKnownRecordType(r.type)), [
    false,
    false,
    false,
    true,
  ]);
});

test("decodeRecords() throws on a truncated header", () => {
  // One whole KEEPALIVE (8 bytes), then 3 stray bytes at offset 8.
  const datagram = bytes(0, 9, 0, 4, 0, 0, 0, 0, 0, 9, 0);
  assert.throws(() => decodeRecords(datagram), MalformedDatagramError);
  assert.throws(
    () => decodeRecords(datagram),
    {
      message:
        "Cannot decode TLV record: truncated header: 3 bytes left at offset 8",
    },
  );
  for (let n = 1; n < 4; n++) {
    assert.throws(
      () => decodeRecords(new Uint8Array(n)),
      MalformedDatagramError,
    );
  }
});

test("decodeRecords() throws when a value runs past the end", () => {
  const datagram = new Uint8Array(120);
  datagram.set([0, 14, 0x03, 0x84]); // length 900
  assert.throws(
    () => decodeRecords(datagram),
    (e: unknown) =>
      e instanceof MalformedDatagramError &&
      e.message ===
        "Cannot decode TLV record: length 900 runs past the end of a 120-byte datagram",
  );
  // Off by one: length 3 with only 2 value bytes.
  assert.throws(
    () => decodeRecords(bytes(0, 14, 0, 3, 1, 2)),
    MalformedDatagramError,
  );
  // A good first record does not save a bad second one.
  assert.throws(
    () => decodeRecords(bytes(0, 9, 0, 0, 0, 14, 0, 1)),
    MalformedDatagramError,
  );
});

test("MalformedDatagramError is a RangeError callers can catch by class", () => {
  assert.throws(() => decodeRecords(bytes(0)), RangeError);
});

test("decodeRecord() returns the record and the offset after it", () => {
  const datagram = bytes(0xff, 0, 9, 0, 2, 5, 6, 0xee);
  const [record, next] = decodeRecord(datagram, 1);
  assert.equal(record.type, 9);
  assert.deepEqual(record.value, bytes(5, 6));
  assert.equal(next, 7);
});

test("decodeRecord() reports a truncated header at the end of the datagram", () => {
  assert.throws(
    () => decodeRecord(bytes(0, 9, 0, 0), 4),
    {
      name: "MalformedDatagramError",
      message:
        "Cannot decode TLV record: truncated header: 0 bytes left at offset 4",
    },
  );
});

test("decodeRecord() rejects an offset outside the datagram as a caller bug", () => {
  const callerBug = (e: unknown) =>
    e instanceof RangeError && !(e instanceof MalformedDatagramError);
  assert.throws(() => decodeRecord(bytes(0, 9, 0, 0), 5), callerBug);
  assert.throws(() => decodeRecord(bytes(0, 9, 0, 0), -1), callerBug);
  assert.throws(() => decodeRecord(bytes(0, 9, 0, 0), 0.5), callerBug);
});

test("isKnownRecordType() knows exactly the types of protocol.md sections 2, 9 and 10", () => {
  const known = [
    ...[1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17],
    ...[18, 19, 20, 21],
  ];
  for (let type = 0; type < 40; type++) {
    assert.equal(isKnownRecordType(type), known.includes(type), `type ${type}`);
  }
  assert.equal(isKnownRecordType(0xffff), false);
});

test("decodeRecords() inverts encodeRecords()", () => {
  const records = [
    { type: 16, value: bytes(0, 1, 0x68, 0x69) },
    { type: 8, value: bytes() },
    { type: 300, value: new Uint8Array(1000).map((_, i) => i & 0xff) },
  ];
  assert.deepEqual(
    decodeRecords(encodeRecords(records)).map((r) => ({
      type: r.type,
      value: r.value.slice(),
    })),
    records,
  );
});
