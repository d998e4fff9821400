/**
 * NOTICE records (protocol.md section 7): `code u16 | UTF-8 text`, sized to
 * fit the datagram that caused them. Pure.
 *
 * @module
 */
import { MalformedDatagramError } from "../errors.ts";
import { RecordType, TLV_HEADER_SIZE, type TlvRecord } from "./tlv.ts";

/** NOTICE codes of protocol.md section 7. */
export const NoticeCode = {
  UNKNOWN_CLIENT: 1,
  MESSAGE_TOO_LARGE: 2,
  RATE_LIMITED: 3,
  SERVER_FULL: 4,
  SERVER_SHUTDOWN: 5,
} as const;

/** One of the NOTICE code numbers. */
export type NoticeCodeNumber = typeof NoticeCode[keyof typeof NoticeCode];

/** Default texts sent with each code. */
export const NOTICE_TEXT: Readonly<Record<number, string>> = {
  1: "unknown client: run the key exchange again",
  2: "message too large",
  3: "rate limited: slow down",
  4: "server full: retry later",
  5: "server shutting down",
};

/** A decoded NOTICE. */
export interface Notice {
  /** The code (1-5 known; others possible from newer servers). */
  readonly code: number;
  /** The text, possibly cut short to fit the datagram size limit. */
  readonly text: string;
}

/** Smallest NOTICE datagram: TLV header + code. */
export const MIN_NOTICE_SIZE = TLV_HEADER_SIZE + 2;

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Builds a NOTICE record whose whole TLV encoding is at most `maxSize` bytes,
 * cutting the text (never inside a UTF-8 sequence) to fit.
 * @returns the record, or undefined when `maxSize` cannot hold even the code
 */
export function noticeRecord(
  code: number,
  maxSize: number,
  text: string = NOTICE_TEXT[code] ?? "",
): TlvRecord | undefined {
  if (maxSize < MIN_NOTICE_SIZE) return undefined;
  let textBytes = encoder.encode(text);
  const room = Math.min(maxSize - MIN_NOTICE_SIZE, 0xffff - 2);
  if (textBytes.length > room) {
    let end = room;
    // Back off over UTF-8 continuation bytes so the cut lands on a boundary.
    while (end > 0 && (textBytes[end]! & 0xc0) === 0x80) end--;
    textBytes = textBytes.subarray(0, end);
  }
  const value = new Uint8Array(2 + textBytes.length);
  new DataView(value.buffer).setUint16(0, code);
  value.set(textBytes, 2);
  return { type: RecordType.NOTICE, value };
}

/**
 * Decodes a NOTICE value.
 * @throws {MalformedDatagramError} when shorter than the 2-byte code
 */
export function decodeNotice(value: Uint8Array): Notice {
  if (value.length < 2) {
    throw new MalformedDatagramError(
      `Cannot decode NOTICE: value of ${value.length} bytes is shorter than its 2-byte code`,
    );
  }
  const code = (value[0]! << 8) | value[1]!;
  return { code, text: decoder.decode(value.subarray(2)) };
}
