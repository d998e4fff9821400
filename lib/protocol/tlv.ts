/**
 * TLV records (protocol.md section 2): `type u16 | length u16 | value[length]`,
 * big-endian, back to back in a datagram or reassembled stream. Pure: no I/O.
 *
 * @module
 */
import { MalformedDatagramError } from "../errors.ts";

/** Record type numbers of protocol.md section 2. */
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

/** Whether `type` is one of the record types of this protocol version. */
export function isKnownRecordType(type: number): boolean {
  throw new Error("not implemented" + type);
}

/**
 * Decodes the record that starts at `offset`.
 * @returns the record (value is a view into `bytes`) and the offset after it
 * @throws {MalformedDatagramError} when the header or the value runs past the end
 */
export function decodeRecord(
  bytes: Uint8Array,
  offset: number,
): [TlvRecord, number] {
  throw new MalformedDatagramError("not implemented" + bytes + offset);
}

/**
 * Decodes a whole datagram or stream into its records, in order. Unknown types
 * are returned too (callers skip and count them with {@linkcode isKnownRecordType}).
 * @throws {MalformedDatagramError} when any record is truncated (the whole datagram is then dropped)
 */
export function decodeRecords(bytes: Uint8Array): TlvRecord[] {
  throw new Error("not implemented" + bytes);
}

/** Number of bytes {@linkcode encodeRecords} produces for `records`. */
export function encodedSize(records: readonly TlvRecord[]): number {
  throw new Error("not implemented" + records);
}

/**
 * Writes `records` into `target` at `offset`.
 * @returns the offset after the last record
 * @throws {RangeError} when a value exceeds 65535 bytes, a type is out of range, or `target` is too small
 */
export function encodeRecordsInto(
  records: readonly TlvRecord[],
  target: Uint8Array,
  offset: number,
): number {
  throw new Error("not implemented" + records + target + offset);
}

/**
 * Encodes records back to back into a new buffer sized once.
 * @throws {RangeError} when a value exceeds 65535 bytes or a type is out of range
 */
export function encodeRecords(records: readonly TlvRecord[]): Uint8Array {
  throw new Error("not implemented" + records);
}
