/**
 * The basic profile's framing (protocol.md section 8): the key request
 * `REQ_PUB_KEY\n` + zero padding, a bare PEM to register a key, a whole
 * RSA-OAEP ciphertext, or a fragment `msg_id u32 | number u8 | total u8 |
 * payload`; and the ACK replies. Pure.
 *
 * @module
 */
import { MalformedDatagramError } from "../errors.ts";
import type { Fragment } from "./fragment.ts";

/** Prefix of a key request. */
export const BASIC_KEY_REQUEST_PREFIX = "REQ_PUB_KEY\n";
/** Size clients pad a key request to. */
export const BASIC_KEY_REQUEST_SIZE = 1200;
/** Size of a fragment header: msg_id u32 + number u8 + total u8. */
export const BASIC_FRAGMENT_HEADER_SIZE = 6;
/** Largest fragment payload sent. */
export const BASIC_MAX_FRAGMENT_PAYLOAD = 490;
/** The basic server's RSA key size. */
export const BASIC_SERVER_KEY_BITS = 4096;

const PEM_BEGIN = "-----BEGIN PUBLIC KEY-----";
const PEM_END = "-----END PUBLIC KEY-----";
const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");
const REQUEST_PREFIX_BYTES = encoder.encode(BASIC_KEY_REQUEST_PREFIX);
const PEM_BEGIN_BYTES = encoder.encode(PEM_BEGIN);

/** What a datagram to the basic server is, by the first matching rule of section 8. */
export type BasicDatagram =
  | { readonly kind: "key_request" }
  | { readonly kind: "public_key"; readonly pem: string }
  | { readonly kind: "ciphertext"; readonly ciphertext: Uint8Array }
  | { readonly kind: "fragment"; readonly fragment: Fragment }
  | { readonly kind: "invalid"; readonly reason: string };

function startsWith(data: Uint8Array, prefix: Uint8Array): boolean {
  if (data.length < prefix.length) return false;
  for (let i = 0; i < prefix.length; i++) {
    if (data[i] !== prefix[i]) return false;
  }
  return true;
}

/**
 * Classifies a datagram received by the basic server. A fragment's `number`
 * (from 1) becomes `index = number - 1`, `total` becomes `count`.
 * @param data the datagram
 * @param modulusBytes the server key's modulus size (512 for RSA-4096)
 */
export function classifyBasicDatagram(
  data: Uint8Array,
  modulusBytes: number,
): BasicDatagram {
  if (startsWith(data, REQUEST_PREFIX_BYTES)) return { kind: "key_request" };
  if (startsWith(data, PEM_BEGIN_BYTES)) {
    const text = latin1.decode(data);
    if (text.includes(PEM_END)) return { kind: "public_key", pem: text };
  }
  if (data.length === modulusBytes) {
    return { kind: "ciphertext", ciphertext: data };
  }
  if (data.length < BASIC_FRAGMENT_HEADER_SIZE) {
    return {
      kind: "invalid",
      reason:
        `datagram of ${data.length} bytes is shorter than a fragment header`,
    };
  }
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const msgId = view.getUint32(0);
  const number = data[4]!;
  const total = data[5]!;
  if (number < 1 || number > total) {
    return {
      kind: "invalid",
      reason: `fragment number ${number} of ${total} is out of range`,
    };
  }
  return {
    kind: "fragment",
    fragment: {
      msgId,
      index: number - 1,
      count: total,
      chunk: data.subarray(BASIC_FRAGMENT_HEADER_SIZE),
    },
  };
}

/** A key request: the prefix padded with zero bytes to `size` (1200 by default). */
export function basicKeyRequest(size = BASIC_KEY_REQUEST_SIZE): Uint8Array {
  const request = new Uint8Array(Math.max(size, REQUEST_PREFIX_BYTES.length));
  request.set(REQUEST_PREFIX_BYTES);
  return request;
}

/**
 * Cuts a ciphertext into fragment datagrams of at most `maxPayload` payload bytes.
 * @throws {RangeError} when it would need more than 255 fragments or `maxPayload` < 1
 */
export function fragmentBasicCiphertext(
  ciphertext: Uint8Array,
  msgId: number,
  maxPayload = BASIC_MAX_FRAGMENT_PAYLOAD,
): Uint8Array[] {
  if (!Number.isInteger(maxPayload) || maxPayload < 1) {
    throw new RangeError(
      `Fragment payload size ${maxPayload} must be at least 1`,
    );
  }
  const total = Math.max(1, Math.ceil(ciphertext.length / maxPayload));
  if (total > 255) {
    throw new RangeError(
      `A ciphertext of ${ciphertext.length} bytes needs ${total} fragments of ${maxPayload} bytes; at most 255 are possible`,
    );
  }
  const datagrams: Uint8Array[] = [];
  for (let n = 1; n <= total; n++) {
    const payload = ciphertext.subarray((n - 1) * maxPayload, n * maxPayload);
    const datagram = new Uint8Array(
      BASIC_FRAGMENT_HEADER_SIZE + payload.length,
    );
    new DataView(datagram.buffer).setUint32(0, msgId >>> 0);
    datagram[4] = n;
    datagram[5] = total;
    datagram.set(payload, BASIC_FRAGMENT_HEADER_SIZE);
    datagrams.push(datagram);
  }
  return datagrams;
}

/** The ACK text for a message: `ACK`, or `<msg_id>: ACK` after a fragmented one. */
export function basicAckText(msgId?: number): string {
  return msgId === undefined ? "ACK" : `${msgId >>> 0}: ACK`;
}

/**
 * Parses an ACK text.
 * @returns the msg_id (undefined for a plain `ACK`)
 * @throws {MalformedDatagramError} when the text is not an ACK
 */
export function parseBasicAck(text: string): { msgId: number | undefined } {
  if (text === "ACK") return { msgId: undefined };
  const match = /^(\d{1,10}): ACK$/.exec(text);
  if (!match || Number(match[1]) > 0xffffffff) {
    throw new MalformedDatagramError(
      `Cannot parse basic ACK: ${
        JSON.stringify(text.slice(0, 40))
      } is neither "ACK" nor "<msg_id>: ACK"`,
    );
  }
  return { msgId: Number(match[1]) };
}
