/**
 * NOTICE records (protocol.md section 7): `code u16 | UTF-8 text`, sized to
 * fit the datagram that caused them; and the body of mcrelay's removal
 * notices (codes 6 KICKED and 7 BANNED, PROTOCOL.md section 7). Pure.
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
  /** mcrelay's extension (PROTOCOL.md section 7): removed by the operator; may register again. */
  KICKED: 6,
  /** mcrelay's extension (PROTOCOL.md section 7): removed and banned; must not register again. */
  BANNED: 7,
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
  6: "removed by the server operator",
  7: "banned by the server operator",
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

/** Longest reason of a removal notice, in UTF-8 bytes. */
export const MAX_REMOVAL_REASON_BYTES = 200;

/** A removal notice (NOTICE 6 KICKED or 7 BANNED) as the member reads it. */
export interface RemovalNotice {
  /** {@linkcode NoticeCode.KICKED} or {@linkcode NoticeCode.BANNED}. */
  readonly code: number;
  /** How long the ban lasts, in seconds; 0: until unbanned (and always 0 for a kick). */
  readonly seconds: number;
  /** Why, in the operator's words. */
  readonly reason: string;
}

/** Whether a NOTICE code is a removal (6 KICKED or 7 BANNED). */
export function isRemovalCode(code: number): boolean {
  return code === NoticeCode.KICKED || code === NoticeCode.BANNED;
}

/**
 * The authenticated body of a removal notice, sealed under the member's key:
 * `code u16 | seconds u32 | UTF-8 reason` (the code inside the token, so a
 * kick cannot be relabelled a ban).
 *
 * @example
 * ```ts
 * import { decodeRemoval, encodeRemoval } from "./notice.ts";
 * const body = encodeRemoval({ code: 7, seconds: 60, reason: "spam" });
 * if (body.length !== 10 || decodeRemoval(body).seconds !== 60) throw new Error();
 * ```
 * @throws {RangeError} for another code, seconds outside u32, or a reason over {@linkcode MAX_REMOVAL_REASON_BYTES}
 */
export function encodeRemoval(notice: RemovalNotice): Uint8Array {
  checkRemoval(notice);
  const reason = encoder.encode(notice.reason);
  const body = new Uint8Array(6 + reason.length);
  const view = new DataView(body.buffer);
  view.setUint16(0, notice.code);
  view.setUint32(2, notice.seconds);
  body.set(reason, 6);
  return body;
}

/**
 * Decodes the body {@linkcode encodeRemoval} makes.
 * @throws {MalformedDatagramError} when shorter than 6 bytes, of another code, or with a reason that is too long or not UTF-8
 */
export function decodeRemoval(body: Uint8Array): RemovalNotice {
  if (body.length < 6 || body.length > 6 + MAX_REMOVAL_REASON_BYTES) {
    throw new MalformedDatagramError(
      `Cannot decode a removal notice: ${body.length} bytes, expected 6 to ${
        6 + MAX_REMOVAL_REASON_BYTES
      }`,
    );
  }
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const code = view.getUint16(0);
  if (!isRemovalCode(code)) {
    throw new MalformedDatagramError(
      `Cannot decode a removal notice: code ${code} is neither 6 nor 7`,
    );
  }
  let reason: string;
  try {
    reason = strictDecoder.decode(body.subarray(6));
  } catch {
    throw new MalformedDatagramError(
      "Cannot decode a removal notice: its reason is not UTF-8",
    );
  }
  return { code, seconds: view.getUint32(2), reason };
}

/**
 * The text of a removal notice to a member without a Fernet key (RSA
 * profile), unauthenticated: `SECONDS SP reason`, seconds in ASCII decimal.
 *
 * @example
 * ```ts
 * import { formatRemovalText, parseRemovalText } from "./notice.ts";
 * const text = formatRemovalText({ code: 6, seconds: 0, reason: "bye" });
 * if (text !== "0 bye" || parseRemovalText(6, text).reason !== "bye") throw new Error();
 * ```
 * @throws {RangeError} as {@linkcode encodeRemoval}
 */
export function formatRemovalText(notice: RemovalNotice): string {
  checkRemoval(notice);
  return `${notice.seconds} ${notice.reason}`;
}

/**
 * Parses {@linkcode formatRemovalText}'s text.
 * @throws {MalformedDatagramError} when it does not start with seconds and a space
 */
export function parseRemovalText(code: number, text: string): RemovalNotice {
  const match = /^(\d{1,10}) ([^]*)$/.exec(text);
  const seconds = Number(match?.[1]);
  if (!match || seconds > 0xffffffff || !isRemovalCode(code)) {
    throw new MalformedDatagramError(
      `Cannot decode a removal notice: ${
        JSON.stringify(text.slice(0, 40))
      } does not start with seconds and a space`,
    );
  }
  return { code, seconds, reason: match[2] };
}

const strictDecoder = new TextDecoder("utf-8", { fatal: true });

function checkRemoval(notice: RemovalNotice): void {
  if (!isRemovalCode(notice.code)) {
    throw new RangeError(
      `A removal notice has code 6 or 7, not ${notice.code}`,
    );
  }
  if (
    !Number.isInteger(notice.seconds) || notice.seconds < 0 ||
    notice.seconds > 0xffffffff
  ) {
    throw new RangeError(
      `A removal notice's seconds must be a whole number from 0 to 4294967295, not ${notice.seconds}`,
    );
  }
  const length = encoder.encode(notice.reason).length;
  if (length > MAX_REMOVAL_REASON_BYTES) {
    throw new RangeError(
      `A reason of ${length} bytes is too long: at most ${MAX_REMOVAL_REASON_BYTES} bytes`,
    );
  }
}
