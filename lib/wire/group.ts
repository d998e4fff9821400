/**
 * Group fan-out values (protocol.md section 9): the GROUP_KEY plaintext
 * `epoch u32 | group key (44 ASCII bytes) [| downstream address value]`, the
 * GROUP_MESSAGE value `epoch u32 | token`, and the GROUP_MESSAGE plaintext
 * `alen u8 | sender address value | message`. Pure: no I/O.
 *
 * @module
 */
import { MalformedDatagramError } from "../errors.ts";
import {
  decodeAddress,
  IPV4_ADDRESS_VALUE_SIZE,
  IPV6_ADDRESS_VALUE_SIZE,
  type PeerAddress,
} from "./address.ts";

/** Length of a Fernet key's text (base64url of 32 bytes). */
export const GROUP_KEY_TEXT_SIZE = 44;
/** Size of the epoch field that opens a GROUP_KEY plaintext and a GROUP_MESSAGE value. */
export const EPOCH_SIZE = 4;

/** A decoded GROUP_KEY plaintext. */
export interface GroupKeyGrant {
  /** The epoch this key belongs to (u32). */
  readonly epoch: number;
  /** The group key: 44 ASCII base64url characters. */
  readonly keyText: Uint8Array;
  /** Where GROUP_MESSAGE datagrams are multicast; absent: by unicast only. */
  readonly downstream?: PeerAddress;
}

function checkEpoch(epoch: number): void {
  if (!Number.isInteger(epoch) || epoch < 0 || epoch > 0xffffffff) {
    throw new RangeError(
      `Cannot encode group epoch ${epoch}: it must be a whole number from 0 to 4294967295`,
    );
  }
}

function writeEpoch(out: Uint8Array, offset: number, epoch: number): void {
  new DataView(out.buffer, out.byteOffset, out.byteLength).setUint32(
    offset,
    epoch,
  );
}

function readEpoch(bytes: Uint8Array): number {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
    .getUint32(0);
}

/**
 * Encodes a GROUP_KEY plaintext.
 *
 * @example
 * ```ts
 * import { encodeGroupKeyPlaintext } from "./group.ts";
 * const key = new TextEncoder().encode("A".repeat(44));
 * const bytes = encodeGroupKeyPlaintext(7, key);
 * if (bytes.length !== 48 || bytes[3] !== 7) throw new Error();
 * ```
 * @param downstreamValue the downstream address value (section 2.1), if group datagrams are multicast
 * @throws {RangeError} for an epoch out of range, a key that is not 44 bytes, or an address value of another size than 6 or 18
 */
export function encodeGroupKeyPlaintext(
  epoch: number,
  keyText: Uint8Array,
  downstreamValue?: Uint8Array,
): Uint8Array {
  checkEpoch(epoch);
  if (keyText.length !== GROUP_KEY_TEXT_SIZE) {
    throw new RangeError(
      `Cannot encode GROUP_KEY: the key is ${keyText.length} bytes, not ${GROUP_KEY_TEXT_SIZE}`,
    );
  }
  const tail = downstreamValue ?? new Uint8Array(0);
  if (
    tail.length !== 0 && tail.length !== IPV4_ADDRESS_VALUE_SIZE &&
    tail.length !== IPV6_ADDRESS_VALUE_SIZE
  ) {
    throw new RangeError(
      `Cannot encode GROUP_KEY: a downstream address value is 6 or 18 bytes, not ${tail.length}`,
    );
  }
  const out = new Uint8Array(EPOCH_SIZE + GROUP_KEY_TEXT_SIZE + tail.length);
  writeEpoch(out, 0, epoch);
  out.set(keyText, EPOCH_SIZE);
  out.set(tail, EPOCH_SIZE + GROUP_KEY_TEXT_SIZE);
  return out;
}

/**
 * Decodes a GROUP_KEY plaintext (the key text is a copy).
 *
 * @example
 * ```ts
 * import { decodeGroupKeyPlaintext, encodeGroupKeyPlaintext } from "./group.ts";
 * const key = new TextEncoder().encode("A".repeat(44));
 * const grant = decodeGroupKeyPlaintext(
 *   encodeGroupKeyPlaintext(3, key, new Uint8Array([224, 1, 1, 1, 0x13, 0x90])),
 * );
 * if (grant.epoch !== 3 || grant.downstream?.port !== 5008) throw new Error();
 * ```
 * @throws {MalformedDatagramError} when the length is not 48, 54 or 66 bytes
 */
export function decodeGroupKeyPlaintext(bytes: Uint8Array): GroupKeyGrant {
  const tail = bytes.length - EPOCH_SIZE - GROUP_KEY_TEXT_SIZE;
  if (
    tail !== 0 && tail !== IPV4_ADDRESS_VALUE_SIZE &&
    tail !== IPV6_ADDRESS_VALUE_SIZE
  ) {
    throw new MalformedDatagramError(
      `Cannot decode GROUP_KEY: ${bytes.length} bytes is not 48, 54 or 66 (epoch, key, optional address)`,
    );
  }
  const epoch = readEpoch(bytes);
  const keyText = bytes.slice(EPOCH_SIZE, EPOCH_SIZE + GROUP_KEY_TEXT_SIZE);
  if (tail === 0) return { epoch, keyText };
  return {
    epoch,
    keyText,
    downstream: decodeAddress(bytes.subarray(EPOCH_SIZE + GROUP_KEY_TEXT_SIZE)),
  };
}

/**
 * Size of a GROUP_MESSAGE plaintext for a sender address value of
 * `addressLength` bytes and a message of `messageLength` bytes.
 */
export function groupPlaintextSize(
  addressLength: number,
  messageLength: number,
): number {
  return 1 + addressLength + messageLength;
}

/**
 * Encodes a GROUP_MESSAGE plaintext: `alen u8 | sender address value | message`.
 *
 * @example
 * ```ts
 * import { encodeGroupPlaintext } from "./group.ts";
 * const bytes = encodeGroupPlaintext(
 *   new Uint8Array([127, 0, 0, 1, 0x9c, 0x40]),
 *   new TextEncoder().encode("hi"),
 * );
 * if (bytes.join() !== "6,127,0,0,1,156,64,104,105") throw new Error();
 * ```
 * @throws {RangeError} when the address value is not 6 or 18 bytes
 */
export function encodeGroupPlaintext(
  senderValue: Uint8Array,
  message: Uint8Array,
): Uint8Array {
  if (
    senderValue.length !== IPV4_ADDRESS_VALUE_SIZE &&
    senderValue.length !== IPV6_ADDRESS_VALUE_SIZE
  ) {
    throw new RangeError(
      `Cannot encode a group message: the sender address value is ${senderValue.length} bytes, not 6 or 18`,
    );
  }
  const out = new Uint8Array(
    groupPlaintextSize(senderValue.length, message.length),
  );
  out[0] = senderValue.length;
  out.set(senderValue, 1);
  out.set(message, 1 + senderValue.length);
  return out;
}

/** A decoded GROUP_MESSAGE plaintext. */
export interface GroupPlaintext {
  /** The original sender. */
  readonly sender: PeerAddress;
  /** The sender's address value as sent (6 or 18 bytes; a view). */
  readonly senderValue: Uint8Array;
  /** The message (a view into the plaintext). */
  readonly message: Uint8Array;
}

/**
 * Decodes a GROUP_MESSAGE plaintext.
 * @throws {MalformedDatagramError} when `alen` is not 6 or 18 or runs past the end
 */
export function decodeGroupPlaintext(bytes: Uint8Array): GroupPlaintext {
  const alen = bytes[0];
  if (
    bytes.length < 1 ||
    (alen !== IPV4_ADDRESS_VALUE_SIZE && alen !== IPV6_ADDRESS_VALUE_SIZE) ||
    bytes.length < 1 + alen
  ) {
    throw new MalformedDatagramError(
      `Cannot decode a group message: alen ${alen} is not 6 or 18 or runs past the end of ${bytes.length} bytes`,
    );
  }
  const senderValue = bytes.subarray(1, 1 + alen);
  return {
    sender: decodeAddress(senderValue),
    senderValue,
    message: bytes.subarray(1 + alen),
  };
}

/**
 * Writes the 4-byte epoch that opens a GROUP_MESSAGE value at `out[offset]`;
 * the token follows it.
 * @throws {RangeError} for an epoch out of range
 */
export function writeGroupMessageEpoch(
  out: Uint8Array,
  offset: number,
  epoch: number,
): void {
  checkEpoch(epoch);
  writeEpoch(out, offset, epoch);
}

/**
 * Splits a GROUP_MESSAGE value into its epoch and its token (a view).
 *
 * @example
 * ```ts
 * import { decodeGroupMessageValue } from "./group.ts";
 * const { epoch, token } = decodeGroupMessageValue(new Uint8Array([0, 0, 1, 2, 9]));
 * if (epoch !== 258 || token.join() !== "9") throw new Error();
 * ```
 * @throws {MalformedDatagramError} when the value is shorter than 5 bytes
 */
export function decodeGroupMessageValue(
  value: Uint8Array,
): { readonly epoch: number; readonly token: Uint8Array } {
  if (value.length <= EPOCH_SIZE) {
    throw new MalformedDatagramError(
      `Cannot decode GROUP_MESSAGE: ${value.length} bytes leave no token after the 4-byte epoch`,
    );
  }
  return { epoch: readEpoch(value), token: value.subarray(EPOCH_SIZE) };
}
