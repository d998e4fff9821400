/**
 * TLV records (protocol.md section 2): `type u16 | length u16 | value[length]`,
 * big-endian, back to back in a datagram or reassembled stream. Pure: no I/O.
 *
 * @module
 */
import { MalformedDatagramError } from "../errors.ts";

/** The protocol.md version this implementation speaks (sections 1-10). */
export const PROTOCOL_VERSION = "1.1";

/** Record type numbers of protocol.md sections 2, 9 and 10. */
export const RecordType = {
  FRAGMENT: 1,
  RSA_BLOCK: 3,
  CLIENT_PUBLIC_KEY: 4,
  SERVER_PUBLIC_KEY: 5,
  RSA_RELAY_BLOCK: 6,
  KEY_REQUEST: 7,
  DISCONNECT: 8,
  KEEPALIVE: 9,
  SENDER: 10,
  NOTIFY_CONNECT: 11,
  NOTIFY_DISCONNECT: 12,
  SYMMETRIC_KEY: 13,
  FERNET_MESSAGE: 14,
  WELCOME: 15,
  NOTICE: 16,
  COOKIE: 17,
  /** Version 1.1 (protocol.md section 9): the client can receive group fan-out. */
  GROUP_CAPABLE: 18,
  /** Version 1.1 (section 9): an epoch's group key under the member's own key. */
  GROUP_KEY: 19,
  /** Version 1.1 (section 9): `epoch u32` then a token under that epoch's group key. */
  GROUP_MESSAGE: 20,
  /** Version 1.1 (protocol.md section 10): proof of the current key in a rekey. */
  KEY_PROOF: 21,
} as const;

/** One of the known record type numbers. */
export type RecordTypeNumber = typeof RecordType[keyof typeof RecordType];

/** One decoded or to-be-encoded TLV record. */
export interface TlvRecord {
  /** Record type, 0..65535 (known ones in {@linkcode RecordType}). */
  readonly type: number;
  /** Record value, at most 65535 bytes. Decoded values are views into the datagram. */
  readonly value: Uint8Array;
}

/** Size of a record header: type u16 + length u16. */
export const TLV_HEADER_SIZE = 4;
/** Largest value a record can carry. */
export const MAX_TLV_VALUE_SIZE = 0xffff;

const KNOWN_TYPES: ReadonlySet<number> = new Set(Object.values(RecordType));

/**
 * Whether `type` is one of the record types of this protocol version.
 *
 * @example
 * ```ts
 * import { isKnownRecordType } from "./tlv.ts";
 * if (!isKnownRecordType(9) || isKnownRecordType(2)) throw new Error();
 * ```
 */
export function isKnownRecordType(type: number): boolean {
  return KNOWN_TYPES.has(type);
}

/**
 * Decodes the record that starts at `offset`.
 * @returns the record (value is a view into `bytes`) and the offset after it
 * @throws {MalformedDatagramError} when the header or the value runs past the end
 * @throws {RangeError} when `offset` is not an integer in `0..bytes.length`
 */
export function decodeRecord(
  bytes: Uint8Array,
  offset: number,
): [TlvRecord, number] {
  if (!Number.isInteger(offset) || offset < 0 || offset > bytes.length) {
    throw new RangeError(
      `Cannot decode TLV record: offset ${offset} is outside a ${bytes.length}-byte datagram`,
    );
  }
  const left = bytes.length - offset;
  if (left < TLV_HEADER_SIZE) {
    throw new MalformedDatagramError(
      `Cannot decode TLV record: truncated header: ${left} bytes left at offset ${offset}`,
    );
  }
  const type = (bytes[offset] << 8) | bytes[offset + 1];
  const length = (bytes[offset + 2] << 8) | bytes[offset + 3];
  const start = offset + TLV_HEADER_SIZE;
  const end = start + length;
  if (end > bytes.length) {
    throw new MalformedDatagramError(
      `Cannot decode TLV record: length ${length} runs past the end of a ${bytes.length}-byte datagram`,
    );
  }
  return [{ type, value: bytes.subarray(start, end) }, end];
}

/**
 * Decodes a whole datagram or stream into its records, in order. Unknown types
 * are returned too (callers skip and count them with {@linkcode isKnownRecordType}).
 * An empty datagram holds zero records.
 *
 * @example
 * ```ts
 * import { decodeRecords } from "./tlv.ts";
 * const [keepalive] = decodeRecords(new Uint8Array([0, 9, 0, 4, 0, 0, 0, 0]));
 * if (keepalive.type !== 9 || keepalive.value.length !== 4) throw new Error();
 * ```
 * @throws {MalformedDatagramError} when any record is truncated (the whole datagram is then dropped)
 */
export function decodeRecords(bytes: Uint8Array): TlvRecord[] {
  const records: TlvRecord[] = [];
  let offset = 0;
  while (offset < bytes.length) {
    const [record, next] = decodeRecord(bytes, offset);
    records.push(record);
    offset = next;
  }
  return records;
}

/** Number of bytes {@linkcode encodeRecords} produces for `records`. */
export function encodedSize(records: readonly TlvRecord[]): number {
  let size = 0;
  for (const record of records) size += TLV_HEADER_SIZE + record.value.length;
  return size;
}

function checkRecord(record: TlvRecord): void {
  if (
    !Number.isInteger(record.type) || record.type < 0 || record.type > 0xffff
  ) {
    throw new RangeError(
      `Cannot encode TLV record: type ${record.type} is not an integer from 0 to 65535`,
    );
  }
  if (record.value.length > MAX_TLV_VALUE_SIZE) {
    throw new RangeError(
      `Cannot encode TLV record of type ${record.type}: value of ${record.value.length} bytes exceeds ${MAX_TLV_VALUE_SIZE}; fragment the stream instead`,
    );
  }
}

/**
 * Writes `records` into `target` at `offset`. Nothing is written when it throws.
 * @returns the offset after the last record
 * @throws {RangeError} when a value exceeds 65535 bytes, a type is out of range, or `target` is too small
 */
export function encodeRecordsInto(
  records: readonly TlvRecord[],
  target: Uint8Array,
  offset: number,
): number {
  for (const record of records) checkRecord(record);
  const size = encodedSize(records);
  if (
    !Number.isInteger(offset) || offset < 0 || offset + size > target.length
  ) {
    throw new RangeError(
      `Cannot encode TLV records: ${size} bytes do not fit at offset ${offset} of a ${target.length}-byte buffer`,
    );
  }
  return writeRecords(records, target, offset);
}

/**
 * Writes the 4-byte header of a record (type, then value length, both u16
 * big-endian) at `offset`; the caller writes the value after it. Returns the
 * offset of the value. Unchecked: the caller keeps `type` and `length` in
 * range and the header inside `target`.
 */
export function writeRecordHeader(
  target: Uint8Array,
  offset: number,
  type: number,
  length: number,
): number {
  target[offset] = type >>> 8;
  target[offset + 1] = type & 0xff;
  target[offset + 2] = length >>> 8;
  target[offset + 3] = length & 0xff;
  return offset + TLV_HEADER_SIZE;
}

/** Writes already checked records that are known to fit. */
function writeRecords(
  records: readonly TlvRecord[],
  target: Uint8Array,
  offset: number,
): number {
  let at = offset;
  for (const { type, value } of records) {
    at = writeRecordHeader(target, at, type, value.length);
    target.set(value, at);
    at += value.length;
  }
  return at;
}

/**
 * Encodes records back to back into a new buffer sized once.
 *
 * @example
 * ```ts
 * import { encodeRecords, RecordType } from "./tlv.ts";
 * const bytes = encodeRecords([
 *   { type: RecordType.KEEPALIVE, value: new Uint8Array(4) },
 * ]);
 * if (bytes.join() !== "0,9,0,4,0,0,0,0") throw new Error();
 * ```
 * @throws {RangeError} when a value exceeds 65535 bytes or a type is out of range
 */
export function encodeRecords(records: readonly TlvRecord[]): Uint8Array {
  for (const record of records) checkRecord(record);
  const out = new Uint8Array(encodedSize(records));
  writeRecords(records, out, 0);
  return out;
}
