/**
 * The `node:crypto` backend of `FernetKey`: synchronous, writes a
 * token straight into a caller's buffer, decodes into a shared scratch
 * buffer, and can keep one AES cipher per key for its whole life
 * ({@linkcode NodeKeyState.persistent}) by steering the cipher's CBC chain
 * state (see {@linkcode encryptNodeInto}).
 *
 * @module
 */
import { createCipheriv, createDecipheriv } from "node:crypto";
import { HmacSha256 } from "./sha256.ts";
import {
  base64UrlEncodedLength,
  decodeBase64UrlInto,
  encodeBase64UrlToAsciiInto,
} from "./base64.ts";
import { constantTimeEqual } from "./hmac.ts";
import {
  BLOCK_SIZE,
  checkFormat,
  checkIv,
  checkTime,
  type DecryptedToken,
  encryptTimestamp,
  FERNET_VERSION,
  type FernetDecryptOptions,
  type FernetEncryptOptions,
  formatError,
  HEADER_SIZE,
  HMAC_SIZE,
  IV_OFFSET,
  paddedLength,
  paddingError,
  signatureError,
  writeIv,
  writeTimestamp,
} from "./fernet_format.ts";

type NodeCipher = ReturnType<typeof createCipheriv>;
type NodeDecipher = ReturnType<typeof createDecipheriv>;

/**
 * The long-lived AES-128-CBC objects of a node-backend key, each with a copy
 * of its chain state: the last ciphertext block it processed, which CBC uses
 * as the "IV" of the next block it is given.
 */
interface CbcChain {
  cipher?: NodeCipher;
  decipher?: NodeDecipher;
  readonly encState: Uint8Array;
  readonly decState: Uint8Array;
}

/** What a node-backend key holds: made synchronously from the raw key. */
export interface NodeKeyState {
  /** The 16-byte AES-128 key. */
  readonly encryption: Uint8Array<ArrayBuffer>;
  /** The signing key with its HMAC pads pre-hashed. */
  readonly mac: HmacSha256;
  /** Whether to keep {@linkcode NodeKeyState.chain} between tokens. */
  readonly persistent: boolean;
  /** Created on first use when persistent. */
  chain?: CbcChain;
}

/** The node-backend state of the 32-byte raw key `raw` (16 signing, then 16 encryption bytes). */
export function nodeKeyState(
  raw: Uint8Array<ArrayBuffer>,
  persistentCiphers: boolean,
): NodeKeyState {
  return {
    encryption: raw.slice(16, 32),
    mac: new HmacSha256(raw.slice(0, 16)),
    persistent: persistentCiphers,
  };
}

/**
 * Ends both ciphers of a chain. A `node:crypto` cipher holds a runtime
 * resource until final() is called, and garbage collection alone does not
 * free it.
 */
function releaseChain(chain: CbcChain): void {
  const { cipher, decipher } = chain;
  chain.cipher = undefined;
  chain.decipher = undefined;
  try {
    cipher?.final();
  } catch { /* nothing buffered, nothing to lose */ }
  try {
    decipher?.final();
  } catch { /* as above */ }
}

/** Releases the ciphers of keys that were collected without being disposed. */
const chainRegistry = new FinalizationRegistry<CbcChain>(releaseChain);

/**
 * False once a long-lived cipher returned other than exactly its input
 * length (it buffered): from then on every token uses a fresh cipher.
 */
let chainingWorks = true;

const ZERO_IV = new Uint8Array(BLOCK_SIZE);

/**
 * Releases the long-lived ciphers of `state`, if it has any. The key stays
 * usable: a later token makes new ones.
 */
export function releaseNodeKeyState(state: NodeKeyState): void {
  const chain = state.chain;
  if (chain) {
    chainRegistry.unregister(chain);
    state.chain = undefined;
    releaseChain(chain);
  }
}

/** The chain of a persistent key, created on first use; undefined when not persistent or chaining failed. */
function chainOf(state: NodeKeyState): CbcChain | undefined {
  if (!state.persistent) return undefined;
  if (!chainingWorks) {
    releaseNodeKeyState(state);
    return undefined;
  }
  let chain = state.chain;
  if (!chain) {
    chain = {
      encState: new Uint8Array(BLOCK_SIZE),
      decState: new Uint8Array(BLOCK_SIZE),
    };
    state.chain = chain;
    chainRegistry.register(state, chain, chain);
  }
  return chain;
}

function newCipher(key: Uint8Array, iv: Uint8Array): NodeCipher {
  const cipher = createCipheriv("aes-128-cbc", key, iv);
  cipher.setAutoPadding(false);
  return cipher;
}

function newDecipher(key: Uint8Array, iv: Uint8Array): NodeDecipher {
  const decipher = createDecipheriv("aes-128-cbc", key, iv);
  decipher.setAutoPadding(false);
  return decipher;
}

/** Runs a fresh cipher or decipher (from {@linkcode newCipher} or {@linkcode newDecipher}) over whole blocks. */
function runFresh(c: NodeCipher | NodeDecipher, input: Uint8Array): Uint8Array {
  const head = c.update(input);
  const tail = c.final();
  if (tail.length === 0) return head;
  const out = new Uint8Array(head.length + tail.length);
  out.set(head);
  out.set(tail, head.length);
  return out;
}

/**
 * update() of a long-lived cipher over whole blocks. `undefined` when it did
 * not return exactly as many bytes as it was given (it buffered) or threw:
 * its chain state is then unknown and it must not be used again.
 */
function updateExactly(
  c: NodeCipher | NodeDecipher,
  input: Uint8Array,
): Uint8Array | undefined {
  try {
    const out = c.update(input);
    return out.length === input.length ? out : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The first `length` bytes of `padded`, a cipher's output, as a plain
 * Uint8Array the caller owns: a view when `padded` is alone on its
 * ArrayBuffer (as update() returns it; a copy would cost an allocation),
 * otherwise a copy.
 */
function unpadded(padded: Uint8Array, length: number): Uint8Array {
  const { buffer, byteOffset } = padded;
  if (
    buffer instanceof ArrayBuffer && byteOffset === 0 &&
    buffer.byteLength === padded.length
  ) {
    return new Uint8Array(buffer, 0, length);
  }
  return new Uint8Array(buffer, byteOffset, length).slice();
}

/** Largest raw token kept in the shared scratch buffer; longer ones get their own. */
const SCRATCH_MAX = 64 * 1024;
/**
 * Scratch for one raw (decoded) token of the node backend. Shared by every
 * key: the node backend is synchronous, so no two tokens use it at once, and
 * nothing handed to a caller aliases it.
 */
let scratch = new Uint8Array(1024);
/** Scratch for a computed HMAC. */
const macScratch = new Uint8Array(HMAC_SIZE);

/** At least `length` bytes of scratch: the shared buffer, grown up to {@linkcode SCRATCH_MAX}. */
function rawScratch(length: number): Uint8Array {
  if (length <= scratch.length) return scratch;
  if (length > SCRATCH_MAX) return new Uint8Array(length);
  scratch = new Uint8Array(
    Math.min(SCRATCH_MAX, Math.max(length, 2 * scratch.length)),
  );
  return scratch;
}

/**
 * Encrypts the padded plaintext `body` (at raw[25]) in place under the IV
 * at raw[9..25], as standard AES-128-CBC.
 *
 * The chain-state trick: the long-lived cipher, created with a zero IV,
 * XORs the first block it is given with its state S (the last ciphertext
 * block it produced). Feeding it P1 ^ IV ^ S makes it compute
 * E(P1 ^ IV ^ S ^ S) = E(P1 ^ IV), the first block of CBC under IV; every
 * later block chains on the output as usual. So one cipher serves every
 * token, and a new token only costs a 16-byte XOR.
 */
function encryptBody(
  state: NodeKeyState,
  raw: Uint8Array,
  body: Uint8Array,
): void {
  const chain = chainOf(state);
  if (chain) {
    const chainState = chain.encState;
    for (let i = 0; i < BLOCK_SIZE; i++) {
      body[i] ^= raw[IV_OFFSET + i] ^ chainState[i];
    }
    chain.cipher ??= newCipher(state.encryption, ZERO_IV);
    const ct = updateExactly(chain.cipher, body);
    if (ct) {
      body.set(ct);
      const last = ct.length - BLOCK_SIZE;
      for (let i = 0; i < BLOCK_SIZE; i++) chainState[i] = ct[last + i];
      return;
    }
    // It buffered or threw: undo the XOR, fall back on a fresh cipher.
    for (let i = 0; i < BLOCK_SIZE; i++) {
      body[i] ^= raw[IV_OFFSET + i] ^ chainState[i];
    }
    chainingWorks = false;
    releaseNodeKeyState(state);
  }
  const iv = raw.subarray(IV_OFFSET, HEADER_SIZE);
  body.set(runFresh(newCipher(state.encryption, iv), body));
}

/**
 * Decrypts whole blocks `ct` under `iv` (standard AES-128-CBC, no padding
 * removed); returns a new array. The decipher used its state S (the last
 * ciphertext block it was given) where CBC uses the IV, so its first
 * output block is D(C1) ^ S: XOR with S ^ IV gives D(C1) ^ IV.
 */
function decryptBody(
  state: NodeKeyState,
  iv: Uint8Array,
  ct: Uint8Array,
): Uint8Array {
  const chain = chainOf(state);
  if (chain) {
    chain.decipher ??= newDecipher(state.encryption, ZERO_IV);
    const pt = updateExactly(chain.decipher, ct);
    if (pt) {
      const chainState = chain.decState;
      for (let i = 0; i < BLOCK_SIZE; i++) pt[i] ^= chainState[i] ^ iv[i];
      chainState.set(ct.subarray(ct.length - BLOCK_SIZE));
      return pt;
    }
    chainingWorks = false;
    releaseNodeKeyState(state);
  }
  return runFresh(newDecipher(state.encryption, iv), ct);
}

/**
 * Encrypts `plaintext` and writes the ASCII token into `out` at `offset`;
 * see `FernetKey.encryptInto`. Returns the number of bytes written.
 * @throws {RangeError} when the token does not fit (nothing is written), or for a bad timestamp or IV
 */
export function encryptNodeInto(
  state: NodeKeyState,
  plaintext: Uint8Array,
  out: Uint8Array,
  offset: number,
  options: FernetEncryptOptions,
): number {
  const timestamp = encryptTimestamp(options);
  if (options.iv) checkIv(options.iv);
  const ctLength = paddedLength(plaintext.length);
  const rawLength = HEADER_SIZE + ctLength + HMAC_SIZE;
  const length = base64UrlEncodedLength(rawLength);
  if (
    !Number.isInteger(offset) || offset < 0 || offset + length > out.length
  ) {
    throw new RangeError(
      `Cannot encrypt Fernet token: its ${length} bytes do not fit at offset ${offset} of a ${out.length}-byte buffer`,
    );
  }
  const raw = rawScratch(rawLength);
  raw[0] = FERNET_VERSION;
  writeTimestamp(raw, timestamp);
  writeIv(options, raw, IV_OFFSET);
  // PKCS#7: pad with n bytes of value n, 1 <= n <= 16.
  const body = raw.subarray(HEADER_SIZE, HEADER_SIZE + ctLength);
  body.set(plaintext);
  body.fill(ctLength - plaintext.length, plaintext.length);
  encryptBody(state, raw, body);
  const signedEnd = HEADER_SIZE + ctLength;
  state.mac.macInto([raw.subarray(0, signedEnd)], raw, signedEnd);
  return encodeBase64UrlToAsciiInto(raw.subarray(0, rawLength), out, offset);
}

/**
 * Verifies and decrypts a token (ASCII bytes or text). Order: format, HMAC,
 * age and skew, padding.
 * @throws {InvalidTokenError} naming the failed check
 */
export function decryptNode(
  state: NodeKeyState,
  token: Uint8Array | string,
  options: FernetDecryptOptions,
): DecryptedToken {
  // Decode into the shared scratch: padded base64url is at most 3/4 its length.
  const raw = rawScratch(Math.floor(token.length / 4) * 3);
  let length: number;
  try {
    length = decodeBase64UrlInto(token, raw, 0);
  } catch (e) {
    throw formatError((e as Error).message);
  }
  const timestamp = checkFormat(raw, length);
  const signedEnd = length - HMAC_SIZE;
  state.mac.macInto([raw.subarray(0, signedEnd)], macScratch, 0);
  if (!constantTimeEqual(macScratch, raw.subarray(signedEnd, length))) {
    throw signatureError();
  }
  checkTime(timestamp, options);
  const iv = raw.slice(IV_OFFSET, HEADER_SIZE);
  const padded = decryptBody(state, iv, raw.subarray(HEADER_SIZE, signedEnd));
  // PKCS#7: the last byte n (1..16) and the n bytes ending there all equal n.
  const n = padded[padded.length - 1];
  let bad = n === 0 || n > BLOCK_SIZE ? 1 : 0;
  for (
    let i = padded.length - Math.min(n, BLOCK_SIZE);
    i < padded.length;
    i++
  ) {
    bad |= padded[i] ^ n;
  }
  if (bad !== 0) throw paddingError();
  return { plaintext: unpadded(padded, padded.length - n), timestamp, iv };
}
