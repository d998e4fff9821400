/**
 * Fragmentation (protocol.md section 3): a stream larger than the MTU travels
 * as FRAGMENT records `msg_id u32 | index u16 | count u16 | chunk`, one per
 * datagram. Pure: msg_id comes from the caller.
 *
 * @module
 */
import { MalformedDatagramError } from "../errors.ts";

/** One decoded FRAGMENT record value. */
export interface Fragment {
  /** Random per stream and sender. */
  readonly msgId: number;
  /** 0-based chunk index, `index < count`. */
  readonly index: number;
  /** Number of chunks in the stream, at least 1. */
  readonly count: number;
  /** The chunk bytes (a view into the datagram when decoded). */
  readonly chunk: Uint8Array;
}

/** Size of the FRAGMENT value header: msg_id u32 + index u16 + count u16. */
export const FRAGMENT_HEADER_SIZE = 8;

/** Largest chunk a FRAGMENT datagram of `mtu` bytes can carry: `mtu - 4 - 8`. */
export function fragmentChunkSize(mtu: number): number {
  throw new Error("not implemented" + mtu);
}

/**
 * Decodes a FRAGMENT record value.
 * @throws {MalformedDatagramError} when shorter than 8 bytes, `count` is 0 or `index >= count`
 */
export function decodeFragment(value: Uint8Array): Fragment {
  throw new MalformedDatagramError("not implemented" + value);
}

/** Encodes a FRAGMENT record value (header + chunk), without the TLV header. */
export function encodeFragment(fragment: Fragment): Uint8Array {
  throw new Error("not implemented" + fragment);
}

/**
 * Splits a stream into datagrams of at most `mtu` bytes. A stream of at most
 * `mtu` bytes is returned as is (one datagram, no FRAGMENT record); a larger one
 * as complete datagrams, each one TLV FRAGMENT record, chunks as large as the
 * MTU allows, the last one possibly shorter.
 * @param msgId the u32 message id to use (the caller draws it at random)
 * @throws {RangeError} when `mtu` is too small to carry a byte of chunk or the stream needs more than 65535 chunks
 */
export function fragmentStream(
  stream: Uint8Array,
  mtu: number,
  msgId: number,
): Uint8Array[] {
  throw new Error("not implemented" + stream + mtu + msgId);
}
