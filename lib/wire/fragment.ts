/**
 * Fragmentation (protocol.md section 3): a stream larger than the MTU travels
 * as FRAGMENT records `msg_id u32 | index u16 | count u16 | chunk`, one per
 * datagram. Pure: msg_id comes from the caller.
 *
 * @module
 */
import { MalformedDatagramError } from "../errors.ts";
import { MAX_TLV_VALUE_SIZE, RecordType, TLV_HEADER_SIZE } from "./tlv.ts";

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
/** Largest number of chunks one stream can be cut into (`count` is a u16). */
export const MAX_FRAGMENT_COUNT = 0xffff;
/** Largest chunk one FRAGMENT record can hold (its value is at most 65535 bytes). */
export const MAX_FRAGMENT_CHUNK_SIZE = MAX_TLV_VALUE_SIZE -
  FRAGMENT_HEADER_SIZE;

/**
 * Largest chunk a FRAGMENT datagram of `mtu` bytes can carry: `mtu - 4 - 8`,
 * capped at {@linkcode MAX_FRAGMENT_CHUNK_SIZE} for MTUs beyond a TLV value's reach.
 * Zero or negative when the MTU is too small to carry any chunk.
 *
 * @example
 * ```ts
 * import { fragmentChunkSize } from "./fragment.ts";
 * if (fragmentChunkSize(1200) !== 1188) throw new Error();
 * ```
 */
export function fragmentChunkSize(mtu: number): number {
  return Math.min(
    mtu - TLV_HEADER_SIZE - FRAGMENT_HEADER_SIZE,
    MAX_FRAGMENT_CHUNK_SIZE,
  );
}

/**
 * Decodes a FRAGMENT record value. The chunk is a view into `value`.
 *
 * @example
 * ```ts
 * import { decodeFragment } from "./fragment.ts";
 * const f = decodeFragment(new Uint8Array([0, 0, 0, 7, 0, 1, 0, 2, 0xaa]));
 * if (f.msgId !== 7 || f.index !== 1 || f.count !== 2 || f.chunk[0] !== 0xaa) throw new Error();
 * ```
 * @throws {MalformedDatagramError} when shorter than 8 bytes, `count` is 0 or `index >= count`
 */
export function decodeFragment(value: Uint8Array): Fragment {
  if (value.length < FRAGMENT_HEADER_SIZE) {
    throw new MalformedDatagramError(
      `Cannot decode FRAGMENT: value of ${value.length} bytes is shorter than the ${FRAGMENT_HEADER_SIZE}-byte header`,
    );
  }
  const msgId =
    ((value[0] << 24) | (value[1] << 16) | (value[2] << 8) | value[3]) >>> 0;
  const index = (value[4] << 8) | value[5];
  const count = (value[6] << 8) | value[7];
  if (count === 0) {
    throw new MalformedDatagramError(
      `Cannot decode FRAGMENT: count is 0 (msg_id ${msgId})`,
    );
  }
  if (index >= count) {
    throw new MalformedDatagramError(
      `Cannot decode FRAGMENT: index ${index} is not below count ${count} (msg_id ${msgId})`,
    );
  }
  return {
    msgId,
    index,
    count,
    chunk: value.subarray(FRAGMENT_HEADER_SIZE),
  };
}

function checkUint(value: number, max: number, what: string): void {
  if (!Number.isInteger(value) || value < 0 || value > max) {
    throw new RangeError(
      `Cannot encode FRAGMENT: ${what} ${value} is not an integer from 0 to ${max}`,
    );
  }
}

/** Writes the 8-byte FRAGMENT header at `offset`. */
function writeHeader(
  target: Uint8Array,
  offset: number,
  msgId: number,
  index: number,
  count: number,
): void {
  target[offset] = msgId >>> 24;
  target[offset + 1] = (msgId >>> 16) & 0xff;
  target[offset + 2] = (msgId >>> 8) & 0xff;
  target[offset + 3] = msgId & 0xff;
  target[offset + 4] = index >>> 8;
  target[offset + 5] = index & 0xff;
  target[offset + 6] = count >>> 8;
  target[offset + 7] = count & 0xff;
}

/**
 * Encodes a FRAGMENT record value (header + chunk), without the TLV header.
 *
 * @example
 * ```ts
 * import { encodeFragment } from "./fragment.ts";
 * const value = encodeFragment({ msgId: 7, index: 1, count: 2, chunk: new Uint8Array([0xaa]) });
 * if (value.join() !== "0,0,0,7,0,1,0,2,170") throw new Error();
 * ```
 * @throws {RangeError} when a header field is out of range, `index >= count`, or the value would exceed 65535 bytes
 */
export function encodeFragment(fragment: Fragment): Uint8Array {
  const { msgId, index, count, chunk } = fragment;
  checkUint(msgId, 0xffffffff, "msg_id");
  checkUint(count, MAX_FRAGMENT_COUNT, "count");
  checkUint(index, MAX_FRAGMENT_COUNT, "index");
  if (count === 0 || index >= count) {
    throw new RangeError(
      `Cannot encode FRAGMENT: index ${index} must be below count ${count} and count at least 1`,
    );
  }
  if (chunk.length > MAX_FRAGMENT_CHUNK_SIZE) {
    throw new RangeError(
      `Cannot encode FRAGMENT: chunk of ${chunk.length} bytes exceeds ${MAX_FRAGMENT_CHUNK_SIZE}`,
    );
  }
  const value = new Uint8Array(FRAGMENT_HEADER_SIZE + chunk.length);
  writeHeader(value, 0, msgId, index, count);
  value.set(chunk, FRAGMENT_HEADER_SIZE);
  return value;
}

/**
 * Splits a stream into datagrams of at most `mtu` bytes. A stream of at most
 * `mtu` bytes is returned as is (one datagram, no FRAGMENT record); a larger one
 * as complete datagrams, each one TLV FRAGMENT record, chunks as large as the
 * MTU allows, the last one possibly shorter.
 *
 * @example
 * ```ts
 * import { fragmentStream } from "./fragment.ts";
 * const datagrams = fragmentStream(new Uint8Array(2000), 1200, 42);
 * if (datagrams.length !== 2 || datagrams[0].length !== 1200) throw new Error();
 * ```
 * @param msgId the u32 message id to use (the caller draws it at random)
 * @throws {RangeError} when `mtu` is too small to carry a byte of chunk or the stream needs more than 65535 chunks
 */
export function fragmentStream(
  stream: Uint8Array,
  mtu: number,
  msgId: number,
): Uint8Array[] {
  if (!Number.isInteger(mtu) || fragmentChunkSize(mtu) < 1) {
    throw new RangeError(
      `Cannot fragment: MTU ${mtu} must be an integer above ${
        TLV_HEADER_SIZE + FRAGMENT_HEADER_SIZE
      } to carry any chunk`,
    );
  }
  checkUint(msgId, 0xffffffff, "msg_id");
  if (stream.length <= mtu) return [stream];
  const chunkSize = fragmentChunkSize(mtu);
  const count = Math.ceil(stream.length / chunkSize);
  if (count > MAX_FRAGMENT_COUNT) {
    throw new RangeError(
      `Cannot fragment a ${stream.length}-byte stream at MTU ${mtu}: it needs ${count} chunks, more than ${MAX_FRAGMENT_COUNT}`,
    );
  }
  const datagrams: Uint8Array[] = [];
  for (let index = 0; index < count; index++) {
    const chunk = stream.subarray(index * chunkSize, (index + 1) * chunkSize);
    const valueLength = FRAGMENT_HEADER_SIZE + chunk.length;
    const datagram = new Uint8Array(TLV_HEADER_SIZE + valueLength);
    datagram[0] = RecordType.FRAGMENT >>> 8;
    datagram[1] = RecordType.FRAGMENT & 0xff;
    datagram[2] = valueLength >>> 8;
    datagram[3] = valueLength & 0xff;
    writeHeader(datagram, TLV_HEADER_SIZE, msgId, index, count);
    datagram.set(chunk, TLV_HEADER_SIZE + FRAGMENT_HEADER_SIZE);
    datagrams.push(datagram);
  }
  return datagrams;
}
