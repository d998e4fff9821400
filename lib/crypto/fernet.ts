/**
 * Fernet tokens (https://github.com/fernet/spec): AES-128-CBC + HMAC-SHA256,
 * version 0x80, ASCII base64url with padding. Two interchangeable backends:
 * WebCrypto and `node:crypto`; the default is chosen by benchmark
 * (PERFORMANCE.md). Time and IV are injectable for tests.
 *
 * @module
 */
import { createCipheriv, createDecipheriv } from "node:crypto";
import { HmacSha256 } from "./sha256.ts";
import { InvalidKeyError, InvalidTokenError } from "../errors.ts";
import { decodeBase64Url, encodeBase64UrlToAscii } from "./base64.ts";
import { constantTimeEqual } from "./hmac.ts";

/** Which crypto implementation a {@linkcode FernetKey} uses. */
export type FernetBackend = "webcrypto" | "node";

/** The backend used when none is named. */
export const DEFAULT_FERNET_BACKEND: FernetBackend = "node";

/** Options of {@linkcode FernetKey.encrypt}. */
export interface FernetEncryptOptions {
  /** Token timestamp in seconds since the epoch. Default: now. */
  nowSeconds?: number;
  /** The 16-byte IV. Default: 16 random bytes. */
  iv?: Uint8Array;
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

/** Decodes and splits a token; `raw` is the whole decoded token. */
function parseRaw(
  token: Uint8Array | string,
): { raw: Uint8Array<ArrayBuffer>; fields: TokenFields } {
  let raw: Uint8Array<ArrayBuffer>;
  try {
    raw = decodeBase64Url(token);
  } catch (e) {
    throw new InvalidTokenError(
      "format",
      `Cannot parse Fernet token: ${(e as Error).message}`,
    );
  }
  if (raw.length < HEADER_SIZE + HMAC_SIZE) {
    throw new InvalidTokenError(
      "format",
      `Cannot parse Fernet token: ${raw.length} bytes is shorter than the minimum of ${
        HEADER_SIZE + BLOCK_SIZE + HMAC_SIZE
      }`,
    );
  }
  if (raw[0] !== FERNET_VERSION) {
    throw new InvalidTokenError(
      "format",
      `Cannot parse Fernet token: version byte 0x${
        raw[0].toString(16).padStart(2, "0")
      } is not 0x80`,
    );
  }
  const ctLength = raw.length - HEADER_SIZE - HMAC_SIZE;
  if (ctLength === 0 || ctLength % BLOCK_SIZE !== 0) {
    throw new InvalidTokenError(
      "format",
      `Cannot parse Fernet token: ciphertext of ${ctLength} bytes is not a non-empty multiple of ${BLOCK_SIZE}`,
    );
  }
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const timestamp = view.getUint32(1) * 0x1_0000_0000 + view.getUint32(5);
  return {
    raw,
    fields: {
      version: raw[0],
      timestamp,
      iv: raw.subarray(9, HEADER_SIZE),
      ciphertext: raw.subarray(HEADER_SIZE, HEADER_SIZE + ctLength),
      hmac: raw.subarray(HEADER_SIZE + ctLength),
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

/** Raw key halves plus, for the WebCrypto backend, the imported keys. */
interface KeyMaterial {
  signing: Uint8Array<ArrayBuffer>;
  encryption: Uint8Array<ArrayBuffer>;
  /** The signing key with its HMAC pads pre-hashed (node backend). */
  mac?: HmacSha256;
  hmacKey?: CryptoKey;
  aesKey?: CryptoKey;
}

async function importMaterial(
  raw: Uint8Array<ArrayBuffer>,
  backend: FernetBackend,
): Promise<KeyMaterial> {
  const signing = raw.slice(0, 16);
  const encryption = raw.slice(16, 32);
  if (backend === "node") {
    return { signing, encryption, mac: new HmacSha256(signing) };
  }
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
  return { signing, encryption, hmacKey, aesKey };
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
  const view = new DataView(token.buffer);
  view.setUint32(1, Math.floor(timestamp / 0x1_0000_0000));
  view.setUint32(5, timestamp >>> 0);
  token.set(iv, 9);
  return token;
}

function encryptArgs(
  options: FernetEncryptOptions,
): { timestamp: number; iv: Uint8Array } {
  const timestamp = options.nowSeconds ?? nowSecondsDefault();
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new RangeError(
      `Cannot encrypt Fernet token: timestamp ${timestamp} is not a non-negative whole number of seconds`,
    );
  }
  const iv = options.iv ?? crypto.getRandomValues(new Uint8Array(16));
  if (iv.length !== 16) {
    throw new RangeError(
      `Cannot encrypt Fernet token: the IV is ${iv.length} bytes, not 16`,
    );
  }
  return { timestamp, iv };
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
  ): Promise<FernetKey> {
    checkBackend(backend);
    const raw = crypto.getRandomValues(new Uint8Array(32));
    const text = new TextDecoder().decode(encodeBase64UrlToAscii(raw));
    return new FernetKey(text, backend, await importMaterial(raw, backend));
  }

  /**
   * Imports a key from its 44-character base64url text or ASCII bytes.
   * @throws {InvalidKeyError} when it does not decode to exactly 32 bytes
   */
  static async fromText(
    text: string | Uint8Array,
    backend: FernetBackend = DEFAULT_FERNET_BACKEND,
  ): Promise<FernetKey> {
    checkBackend(backend);
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
    return new FernetKey(
      canonical,
      backend,
      await importMaterial(raw, backend),
    );
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

  /**
   * Encrypts synchronously (the node backend only): the relay's hot path.
   * @throws {TypeError} for a key of the webcrypto backend
   */
  encryptSync(
    plaintext: Uint8Array,
    options: FernetEncryptOptions = {},
  ): Uint8Array {
    return this.#encryptNode(plaintext, options);
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

  #encryptNode(
    plaintext: Uint8Array,
    options: FernetEncryptOptions,
  ): Uint8Array<ArrayBuffer> {
    const mac = this.#nodeMac();
    const { timestamp, iv } = encryptArgs(options);
    const cipher = createCipheriv("aes-128-cbc", this.#keys.encryption, iv);
    const head = cipher.update(plaintext);
    const tail = cipher.final();
    const ctLength = head.length + tail.length;
    const token = tokenHeader(ctLength, timestamp, iv);
    token.set(head, HEADER_SIZE);
    token.set(tail, HEADER_SIZE + head.length);
    const signed = token.subarray(0, HEADER_SIZE + ctLength);
    mac.macInto([signed], token, HEADER_SIZE + ctLength);
    return encodeBase64UrlToAscii(token);
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
    const { raw, fields } = parseRaw(token);
    const signed = raw.subarray(0, raw.length - HMAC_SIZE);
    if (!constantTimeEqual(mac.mac(signed), fields.hmac)) {
      throw signatureError();
    }
    checkTime(fields.timestamp, options);
    const decipher = createDecipheriv(
      "aes-128-cbc",
      this.#keys.encryption,
      fields.iv,
    );
    let head: Uint8Array;
    let tail: Uint8Array;
    try {
      head = decipher.update(fields.ciphertext);
      tail = decipher.final();
    } catch {
      throw paddingError();
    }
    const plaintext = new Uint8Array(head.length + tail.length);
    plaintext.set(head);
    plaintext.set(tail, head.length);
    return { plaintext, timestamp: fields.timestamp, iv: fields.iv };
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
