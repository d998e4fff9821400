/**
 * Fernet tokens (https://github.com/fernet/spec): AES-128-CBC + HMAC-SHA256,
 * version 0x80, ASCII base64url with padding. Two interchangeable backends:
 * WebCrypto and `node:crypto`; the default is chosen by benchmark
 * (PERFORMANCE.md). The node backend is synchronous, can write a token
 * straight into a caller's buffer, and can keep one cipher per key
 * ({@linkcode FernetKeyOptions.persistentCiphers}). Time and IV are
 * injectable for tests.
 *
 * @module
 */
import { createCipheriv, createDecipheriv } from "node:crypto";
import { HmacSha256 } from "./sha256.ts";
import { InvalidKeyError, InvalidTokenError } from "../errors.ts";
import {
  base64UrlEncodedLength,
  decodeBase64Url,
  decodeBase64UrlInto,
  encodeBase64UrlToAscii,
  encodeBase64UrlToAsciiInto,
} from "./base64.ts";
import { constantTimeEqual } from "./hmac.ts";

/** Which crypto implementation a {@linkcode FernetKey} uses. */
export type FernetBackend = "webcrypto" | "node";

/** The backend used when none is named. */
export const DEFAULT_FERNET_BACKEND: FernetBackend = "node";

/** Options of {@linkcode FernetKey.encrypt}. */
export interface FernetEncryptOptions {
  /** Token timestamp in seconds since the epoch. Default: now. */
  nowSeconds?: number;
  /** The 16-byte IV. Default: from `ivSource`, else 16 random bytes. */
  iv?: Uint8Array;
  /** Writes each token's IV in place (e.g. an `IvMarker`); used when `iv` is not given. */
  ivSource?: IvSource;
}

/** Makes Fernet IVs in place, e.g. the marked IVs of `IvMarker`. */
export interface IvSource {
  /** Writes a fresh 16-byte IV at `out[offset]`. */
  createInto(out: Uint8Array, offset: number): void;
}

/** Options of {@linkcode FernetKey.generate} and {@linkcode FernetKey.fromText}. */
export interface FernetKeyOptions {
  /**
   * Node backend: keep one AES cipher and decipher for the key's whole life
   * instead of making one per token (about 1 µs less per token). Each holds a
   * runtime resource until the key is disposed ({@linkcode FernetKey}'s
   * `[Symbol.dispose]`) or, failing that, garbage collected; Deno's test
   * resource sanitizer reports keys left undisposed. Default false.
   */
  persistentCiphers?: boolean;
}

/** Options of {@linkcode FernetKey.decrypt}. */
export interface FernetDecryptOptions {
  /** Current time in seconds since the epoch. Default: now. */
  nowSeconds?: number;
  /** Maximum token age in seconds; `undefined` or `Infinity` disables the check. */
  ttlSeconds?: number;
  /** How far in the future a timestamp may be. Default 60 (the spec's clock skew). */
  maxClockSkewSeconds?: number;
}

/** The fields of a token that passed every check. */
export interface DecryptedToken {
  /** The decrypted plaintext. */
  plaintext: Uint8Array;
  /** The token's timestamp, seconds since the epoch. */
  timestamp: number;
  /** The token's 16-byte IV. */
  iv: Uint8Array;
}

/** The raw fields of a token, before any check of its HMAC. */
export interface TokenFields {
  /** Version byte, 0x80 for valid tokens. */
  version: number;
  /** Timestamp, seconds since the epoch. */
  timestamp: number;
  /** 16-byte IV. */
  iv: Uint8Array;
  /** Ciphertext, a non-empty multiple of 16 bytes. */
  ciphertext: Uint8Array;
  /** 32-byte HMAC. */
  hmac: Uint8Array;
}

/** The version byte of every Fernet token. */
export const FERNET_VERSION = 0x80;
/** Version (1) + timestamp (8) + IV (16). */
const HEADER_SIZE = 25;
const HMAC_SIZE = 32;
const BLOCK_SIZE = 16;
/** The default clock skew of the Fernet spec, in seconds. */
export const FERNET_MAX_CLOCK_SKEW_SECONDS = 60;

/** Returns `bytes` typed for WebCrypto, copying only when it is not backed by a plain ArrayBuffer. */
function own(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes.buffer instanceof ArrayBuffer
    ? bytes as Uint8Array<ArrayBuffer>
    : new Uint8Array(bytes);
}

function nowSecondsDefault(): number {
  return Math.floor(Date.now() / 1000);
}

function formatError(detail: string): InvalidTokenError {
  return new InvalidTokenError(
    "format",
    `Cannot parse Fernet token: ${detail}`,
  );
}

/**
 * Checks the framing of the decoded token `raw[0, length)`: size, version
 * byte, ciphertext a non-empty multiple of 16. Returns the timestamp.
 */
function checkFormat(raw: Uint8Array, length: number): number {
  if (length < HEADER_SIZE + HMAC_SIZE) {
    throw formatError(
      `${length} bytes is shorter than the minimum of ${
        HEADER_SIZE + BLOCK_SIZE + HMAC_SIZE
      }`,
    );
  }
  if (raw[0] !== FERNET_VERSION) {
    throw formatError(
      `version byte 0x${raw[0].toString(16).padStart(2, "0")} is not 0x80`,
    );
  }
  const ctLength = length - HEADER_SIZE - HMAC_SIZE;
  if (ctLength === 0 || ctLength % BLOCK_SIZE !== 0) {
    throw formatError(
      `ciphertext of ${ctLength} bytes is not a non-empty multiple of ${BLOCK_SIZE}`,
    );
  }
  return ((raw[1] << 24 | raw[2] << 16 | raw[3] << 8 | raw[4]) >>> 0) *
      0x1_0000_0000 +
    ((raw[5] << 24 | raw[6] << 16 | raw[7] << 8 | raw[8]) >>> 0);
}

/** Decodes and splits a token; `raw` is the whole decoded token. */
function parseRaw(
  token: Uint8Array | string,
): { raw: Uint8Array<ArrayBuffer>; fields: TokenFields } {
  let raw: Uint8Array<ArrayBuffer>;
  try {
    raw = decodeBase64Url(token);
  } catch (e) {
    throw formatError((e as Error).message);
  }
  const timestamp = checkFormat(raw, raw.length);
  const ctEnd = raw.length - HMAC_SIZE;
  return {
    raw,
    fields: {
      version: raw[0],
      timestamp,
      iv: raw.subarray(9, HEADER_SIZE),
      ciphertext: raw.subarray(HEADER_SIZE, ctEnd),
      hmac: raw.subarray(ctEnd),
    },
  };
}

/**
 * Parses a token's base64url text (or its ASCII bytes) into fields without verifying anything cryptographic.
 * @throws {InvalidTokenError} reason "format": bad base64, too short, wrong version, ciphertext not a multiple of 16
 */
export function parseToken(token: Uint8Array | string): TokenFields {
  return parseRaw(token).fields;
}

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

/** Raw key halves plus, for the WebCrypto backend, the imported keys. */
interface KeyMaterial {
  signing: Uint8Array<ArrayBuffer>;
  encryption: Uint8Array<ArrayBuffer>;
  /** The signing key with its HMAC pads pre-hashed (node backend). */
  mac?: HmacSha256;
  /** Whether to keep {@linkcode chain} between tokens (node backend). */
  persistent: boolean;
  /** Created on first use when persistent; see {@linkcode FernetKey.encryptInto}. */
  chain?: CbcChain;
  hmacKey?: CryptoKey;
  aesKey?: CryptoKey;
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

/** Writes the 8-byte big-endian `timestamp` at `raw[1]`. */
function writeTimestamp(raw: Uint8Array, timestamp: number): void {
  const high = Math.floor(timestamp / 0x1_0000_0000);
  const low = timestamp >>> 0;
  raw[1] = high >>> 24;
  raw[2] = high >>> 16;
  raw[3] = high >>> 8;
  raw[4] = high;
  raw[5] = low >>> 24;
  raw[6] = low >>> 16;
  raw[7] = low >>> 8;
  raw[8] = low;
}

/** The key material of the node backend: made synchronously. */
function nodeMaterial(
  raw: Uint8Array<ArrayBuffer>,
  options: FernetKeyOptions,
): KeyMaterial {
  const signing = raw.slice(0, 16);
  return {
    signing,
    encryption: raw.slice(16, 32),
    mac: new HmacSha256(signing),
    persistent: options.persistentCiphers === true,
  };
}

async function importMaterial(
  raw: Uint8Array<ArrayBuffer>,
  backend: FernetBackend,
  options: FernetKeyOptions,
): Promise<KeyMaterial> {
  if (backend === "node") return nodeMaterial(raw, options);
  const signing = raw.slice(0, 16);
  const encryption = raw.slice(16, 32);
  const [hmacKey, aesKey] = await Promise.all([
    crypto.subtle.importKey(
      "raw",
      signing,
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign", "verify"],
    ),
    crypto.subtle.importKey("raw", encryption, "AES-CBC", false, [
      "encrypt",
      "decrypt",
    ]),
  ]);
  return { signing, encryption, persistent: false, hmacKey, aesKey };
}

/**
 * Decodes a key's 44 base64url characters (or their ASCII bytes) to its 32
 * bytes, with the text in canonical form.
 * @throws {InvalidKeyError} when it does not decode to exactly 32 bytes
 */
function parseKeyText(
  text: string | Uint8Array,
): { raw: Uint8Array<ArrayBuffer>; canonical: string } {
  let raw: Uint8Array<ArrayBuffer>;
  try {
    raw = decodeBase64Url(text);
  } catch (e) {
    throw new InvalidKeyError(
      `Cannot use Fernet key: ${
        (e as Error).message
      }; a key is 44 base64url characters ending in "="`,
    );
  }
  if (raw.length !== 32) {
    throw new InvalidKeyError(
      `Cannot use Fernet key: it decodes to ${raw.length} bytes, not 32; a key is 44 base64url characters ending in "="`,
    );
  }
  const canonical = typeof text === "string"
    ? text
    : new TextDecoder().decode(encodeBase64UrlToAscii(raw));
  return { raw, canonical };
}

function checkBackend(backend: FernetBackend): void {
  if (backend !== "node" && backend !== "webcrypto") {
    throw new TypeError(
      `Unknown Fernet backend "${backend}": use "node" or "webcrypto"`,
    );
  }
}

/** Allocates a token, writes version, timestamp and IV; returns it and where the ciphertext starts. */
function tokenHeader(
  ctLength: number,
  timestamp: number,
  iv: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const token = new Uint8Array(HEADER_SIZE + ctLength + HMAC_SIZE);
  token[0] = FERNET_VERSION;
  writeTimestamp(token, timestamp);
  token.set(iv, 9);
  return token;
}

function encryptTimestamp(options: FernetEncryptOptions): number {
  const timestamp = options.nowSeconds ?? nowSecondsDefault();
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new RangeError(
      `Cannot encrypt Fernet token: timestamp ${timestamp} is not a non-negative whole number of seconds`,
    );
  }
  return timestamp;
}

function checkIv(iv: Uint8Array): void {
  if (iv.length !== 16) {
    throw new RangeError(
      `Cannot encrypt Fernet token: the IV is ${iv.length} bytes, not 16`,
    );
  }
}

function encryptArgs(
  options: FernetEncryptOptions,
): { timestamp: number; iv: Uint8Array } {
  const timestamp = encryptTimestamp(options);
  const iv = new Uint8Array(16);
  writeIv(options, iv, 0);
  return { timestamp, iv };
}

/** Writes a token's IV at `out[offset]`: `options.iv`, else from `options.ivSource`, else 16 random bytes. */
function writeIv(
  options: FernetEncryptOptions,
  out: Uint8Array,
  offset: number,
): void {
  if (options.iv) {
    checkIv(options.iv);
    out.set(options.iv, offset);
  } else if (options.ivSource) options.ivSource.createInto(out, offset);
  else crypto.getRandomValues(out.subarray(offset, offset + 16));
}

/** Age and skew checks, after the HMAC has been verified. */
function checkTime(timestamp: number, options: FernetDecryptOptions): void {
  const now = options.nowSeconds ?? nowSecondsDefault();
  const ttl = options.ttlSeconds;
  if (
    typeof ttl === "number" && Number.isFinite(ttl) && timestamp + ttl < now
  ) {
    throw new InvalidTokenError(
      "expired",
      `Fernet token expired: issued at ${timestamp}, ${
        now - timestamp
      } s ago, older than the ${ttl} s limit`,
    );
  }
  const skew = options.maxClockSkewSeconds ?? FERNET_MAX_CLOCK_SKEW_SECONDS;
  if (timestamp > now + skew) {
    throw new InvalidTokenError(
      "future",
      `Fernet token from the future: issued at ${timestamp}, ${
        timestamp - now
      } s ahead, more than the ${skew} s clock skew allowed`,
    );
  }
}

function signatureError(): InvalidTokenError {
  return new InvalidTokenError(
    "signature",
    "Fernet token signature does not verify: wrong key or tampered token",
  );
}

function paddingError(): InvalidTokenError {
  return new InvalidTokenError(
    "padding",
    "Fernet token plaintext has invalid PKCS#7 padding",
  );
}

/** The PKCS#7-padded length of `n` bytes: the next whole block, always adding 1..16. */
function paddedLength(n: number): number {
  return (Math.floor(n / BLOCK_SIZE) + 1) * BLOCK_SIZE;
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

/** A Fernet key (32 bytes: 16 signing + 16 encryption) ready to encrypt and decrypt. */
export class FernetKey {
  /** The key as 44 ASCII base64url characters (the form sent in SYMMETRIC_KEY). */
  readonly text: string;
  /** The backend this key uses. */
  readonly backend: FernetBackend;
  #keys: KeyMaterial;

  private constructor(
    text: string,
    backend: FernetBackend,
    keys: KeyMaterial,
  ) {
    this.text = text;
    this.backend = backend;
    this.#keys = keys;
  }

  /** Generates a fresh random key. */
  static async generate(
    backend: FernetBackend = DEFAULT_FERNET_BACKEND,
    options: FernetKeyOptions = {},
  ): Promise<FernetKey> {
    checkBackend(backend);
    const raw = crypto.getRandomValues(new Uint8Array(32));
    const text = new TextDecoder().decode(encodeBase64UrlToAscii(raw));
    return new FernetKey(
      text,
      backend,
      await importMaterial(raw, backend, options),
    );
  }

  /**
   * Imports a key from its 44-character base64url text or ASCII bytes.
   * @throws {InvalidKeyError} when it does not decode to exactly 32 bytes
   */
  static async fromText(
    text: string | Uint8Array,
    backend: FernetBackend = DEFAULT_FERNET_BACKEND,
    options: FernetKeyOptions = {},
  ): Promise<FernetKey> {
    checkBackend(backend);
    const { raw, canonical } = parseKeyText(text);
    return new FernetKey(
      canonical,
      backend,
      await importMaterial(raw, backend, options),
    );
  }

  /**
   * {@linkcode fromText}, synchronously, for the node backend (whose keys
   * need no asynchronous import): where a key made on the spot must not
   * delay what is sent with it.
   * @throws {InvalidKeyError} when it does not decode to exactly 32 bytes
   */
  static fromTextSync(
    text: string | Uint8Array,
    options: FernetKeyOptions = {},
  ): FernetKey {
    const { raw, canonical } = parseKeyText(text);
    return new FernetKey(canonical, "node", nodeMaterial(raw, options));
  }

  /** Encrypts `plaintext` into a token's ASCII bytes. */
  encrypt(
    plaintext: Uint8Array,
    options: FernetEncryptOptions = {},
  ): Promise<Uint8Array> {
    if (this.backend === "webcrypto") {
      return this.#encryptWebCrypto(plaintext, options);
    }
    try {
      return Promise.resolve(this.encryptSync(plaintext, options));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** The length of the ASCII token {@linkcode encryptSync} makes for `plaintextLength` bytes. */
  static tokenLength(plaintextLength: number): number {
    if (!Number.isSafeInteger(plaintextLength) || plaintextLength < 0) {
      throw new RangeError(
        `Cannot size a Fernet token: ${plaintextLength} is not a byte count`,
      );
    }
    return base64UrlEncodedLength(
      HEADER_SIZE + paddedLength(plaintextLength) + HMAC_SIZE,
    );
  }

  /**
   * Encrypts synchronously (the node backend only): the relay's hot path.
   * @throws {TypeError} for a key of the webcrypto backend
   */
  encryptSync(
    plaintext: Uint8Array,
    options: FernetEncryptOptions = {},
  ): Uint8Array {
    const out = new Uint8Array(FernetKey.tokenLength(plaintext.length));
    this.encryptInto(plaintext, out, 0, options);
    return out;
  }

  /**
   * {@linkcode encryptSync}, writing the ASCII token into `out` at `offset`
   * ({@linkcode tokenLength} bytes). Returns the number of bytes written.
   * @throws {RangeError} when the token does not fit (nothing is written)
   * @throws {TypeError} for a key of the webcrypto backend
   */
  encryptInto(
    plaintext: Uint8Array,
    out: Uint8Array,
    offset: number,
    options: FernetEncryptOptions = {},
  ): number {
    const mac = this.#nodeMac();
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
    writeIv(options, raw, 9);
    // PKCS#7: pad with n bytes of value n, 1 <= n <= 16.
    const body = raw.subarray(HEADER_SIZE, HEADER_SIZE + ctLength);
    body.set(plaintext);
    body.fill(ctLength - plaintext.length, plaintext.length);
    this.#encryptBody(raw, body);
    const signedEnd = HEADER_SIZE + ctLength;
    mac.macInto([raw.subarray(0, signedEnd)], raw, signedEnd);
    return encodeBase64UrlToAsciiInto(raw.subarray(0, rawLength), out, offset);
  }

  /**
   * Releases the native cipher state this key keeps between tokens (node
   * backend). The key stays usable: a later sync call makes new state.
   * Keys that are merely dropped are released when garbage collected.
   */
  [Symbol.dispose](): void {
    const chain = this.#keys.chain;
    if (chain) {
      chainRegistry.unregister(chain);
      this.#keys.chain = undefined;
      releaseChain(chain);
    }
  }

  /**
   * Verifies and decrypts synchronously (the node backend only).
   * @throws {InvalidTokenError} naming the failed check
   * @throws {TypeError} for a key of the webcrypto backend
   */
  decryptSync(
    token: Uint8Array | string,
    options: FernetDecryptOptions = {},
  ): DecryptedToken {
    return this.#decryptNode(token, options);
  }

  /** Whether {@linkcode encryptSync} and {@linkcode decryptSync} are available. */
  get canRunSync(): boolean {
    return this.#keys.mac !== undefined;
  }

  #nodeMac(): HmacSha256 {
    const mac = this.#keys.mac;
    if (!mac) {
      throw new TypeError(
        "Synchronous Fernet operations need a key of the node backend",
      );
    }
    return mac;
  }

  /**
   * Verifies and decrypts a token (ASCII bytes or text). Order: format, HMAC, age and skew, padding.
   * @throws {InvalidTokenError} naming the failed check
   */
  decrypt(
    token: Uint8Array | string,
    options: FernetDecryptOptions = {},
  ): Promise<DecryptedToken> {
    if (this.backend === "webcrypto") {
      return this.#decryptWebCrypto(token, options);
    }
    try {
      return Promise.resolve(this.decryptSync(token, options));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  #chain(): CbcChain | undefined {
    if (!this.#keys.persistent) return undefined;
    if (!chainingWorks) {
      this[Symbol.dispose]();
      return undefined;
    }
    let chain = this.#keys.chain;
    if (!chain) {
      chain = {
        encState: new Uint8Array(BLOCK_SIZE),
        decState: new Uint8Array(BLOCK_SIZE),
      };
      this.#keys.chain = chain;
      chainRegistry.register(this.#keys, chain, chain);
    }
    return chain;
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
  #encryptBody(raw: Uint8Array, body: Uint8Array): void {
    const chain = this.#chain();
    if (chain) {
      const state = chain.encState;
      for (let i = 0; i < BLOCK_SIZE; i++) body[i] ^= raw[9 + i] ^ state[i];
      chain.cipher ??= newCipher(this.#keys.encryption, ZERO_IV);
      const ct = updateExactly(chain.cipher, body);
      if (ct) {
        body.set(ct);
        const last = ct.length - BLOCK_SIZE;
        for (let i = 0; i < BLOCK_SIZE; i++) state[i] = ct[last + i];
        return;
      }
      // It buffered or threw: undo the XOR, fall back on a fresh cipher.
      for (let i = 0; i < BLOCK_SIZE; i++) body[i] ^= raw[9 + i] ^ state[i];
      chainingWorks = false;
      this[Symbol.dispose]();
    }
    const iv = raw.subarray(9, HEADER_SIZE);
    body.set(runFresh(newCipher(this.#keys.encryption, iv), body));
  }

  /**
   * Decrypts whole blocks `ct` under `iv` (standard AES-128-CBC, no padding
   * removed); returns a new array. The decipher used its state S (the last
   * ciphertext block it was given) where CBC uses the IV, so its first
   * output block is D(C1) ^ S: XOR with S ^ IV gives D(C1) ^ IV.
   */
  #decryptBody(iv: Uint8Array, ct: Uint8Array): Uint8Array {
    const chain = this.#chain();
    if (chain) {
      chain.decipher ??= newDecipher(this.#keys.encryption, ZERO_IV);
      const pt = updateExactly(chain.decipher, ct);
      if (pt) {
        const state = chain.decState;
        for (let i = 0; i < BLOCK_SIZE; i++) pt[i] ^= state[i] ^ iv[i];
        state.set(ct.subarray(ct.length - BLOCK_SIZE));
        return pt;
      }
      chainingWorks = false;
      this[Symbol.dispose]();
    }
    return runFresh(newDecipher(this.#keys.encryption, iv), ct);
  }

  async #encryptWebCrypto(
    plaintext: Uint8Array,
    options: FernetEncryptOptions,
  ): Promise<Uint8Array> {
    const { timestamp, iv } = encryptArgs(options);
    const ct = new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-CBC", iv: own(iv) },
        this.#keys.aesKey!,
        own(plaintext),
      ),
    );
    const token = tokenHeader(ct.length, timestamp, iv);
    token.set(ct, HEADER_SIZE);
    const signed = token.subarray(0, HEADER_SIZE + ct.length);
    const mac = await crypto.subtle.sign("HMAC", this.#keys.hmacKey!, signed);
    token.set(new Uint8Array(mac), HEADER_SIZE + ct.length);
    return encodeBase64UrlToAscii(token);
  }

  #decryptNode(
    token: Uint8Array | string,
    options: FernetDecryptOptions,
  ): DecryptedToken {
    const mac = this.#nodeMac();
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
    mac.macInto([raw.subarray(0, signedEnd)], macScratch, 0);
    if (!constantTimeEqual(macScratch, raw.subarray(signedEnd, length))) {
      throw signatureError();
    }
    checkTime(timestamp, options);
    const iv = raw.slice(9, HEADER_SIZE);
    const padded = this.#decryptBody(iv, raw.subarray(HEADER_SIZE, signedEnd));
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

  async #decryptWebCrypto(
    token: Uint8Array | string,
    options: FernetDecryptOptions,
  ): Promise<DecryptedToken> {
    const { raw, fields } = parseRaw(token);
    const signed = raw.subarray(0, raw.length - HMAC_SIZE);
    const ok = await crypto.subtle.verify(
      "HMAC",
      this.#keys.hmacKey!,
      raw.subarray(raw.length - HMAC_SIZE),
      signed,
    );
    if (!ok) throw signatureError();
    checkTime(fields.timestamp, options);
    let plaintext: Uint8Array;
    try {
      plaintext = new Uint8Array(
        await crypto.subtle.decrypt(
          { name: "AES-CBC", iv: raw.subarray(9, HEADER_SIZE) },
          this.#keys.aesKey!,
          raw.subarray(HEADER_SIZE, raw.length - HMAC_SIZE),
        ),
      );
    } catch {
      throw paddingError();
    }
    return { plaintext, timestamp: fields.timestamp, iv: fields.iv };
  }
}
