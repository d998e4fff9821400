/**
 * The Fernet token format (https://github.com/fernet/spec), shared by both
 * backends of `FernetKey`: the byte layout (version 0x80, 8-byte
 * timestamp, 16-byte IV, ciphertext, 32-byte HMAC), parsing and framing
 * checks, header writing, IV and timestamp choice, the age and skew checks
 * and the typed errors of each failed check. No cryptography here.
 *
 * @module
 */
import { InvalidTokenError } from "../errors.ts";
import { decodeBase64Url } from "./base64.ts";

/** Options of `FernetKey.encrypt`. */
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

/** Options of `FernetKey.decrypt`. */
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
/** Version (1) + timestamp (8) + IV (16): where the ciphertext starts. */
export const HEADER_SIZE = 25;
/** Where the IV starts (after version and timestamp). */
export const IV_OFFSET = 9;
/** Bytes of the HMAC-SHA256 that ends a token. */
export const HMAC_SIZE = 32;
/** The AES block size. */
export const BLOCK_SIZE = 16;
/** The default clock skew of the Fernet spec, in seconds. */
export const FERNET_MAX_CLOCK_SKEW_SECONDS = 60;

function nowSecondsDefault(): number {
  return Math.floor(Date.now() / 1000);
}

/** The error for a token that does not parse: bad base64 or framing. */
export function formatError(detail: string): InvalidTokenError {
  return new InvalidTokenError(
    "format",
    `Cannot parse Fernet token: ${detail}`,
  );
}

/**
 * Checks the framing of the decoded token `raw[0, length)`: size, version
 * byte, ciphertext a non-empty multiple of 16. Returns the timestamp.
 * @throws {InvalidTokenError} reason "format"
 */
export function checkFormat(raw: Uint8Array, length: number): number {
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

/**
 * Decodes and splits a token; `raw` is the whole decoded token.
 * @throws {InvalidTokenError} reason "format"
 */
export function parseRaw(
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
      iv: raw.subarray(IV_OFFSET, HEADER_SIZE),
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

/** Writes the 8-byte big-endian `timestamp` at `raw[1]`. */
export function writeTimestamp(raw: Uint8Array, timestamp: number): void {
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

/** Allocates a raw token of `ctLength` ciphertext bytes and writes its version, timestamp and IV. */
export function tokenHeader(
  ctLength: number,
  timestamp: number,
  iv: Uint8Array,
): Uint8Array<ArrayBuffer> {
  const token = new Uint8Array(HEADER_SIZE + ctLength + HMAC_SIZE);
  token[0] = FERNET_VERSION;
  writeTimestamp(token, timestamp);
  token.set(iv, IV_OFFSET);
  return token;
}

/**
 * The timestamp a new token carries: `options.nowSeconds`, else now.
 * @throws {RangeError} when it is not a non-negative safe integer
 */
export function encryptTimestamp(options: FernetEncryptOptions): number {
  const timestamp = options.nowSeconds ?? nowSecondsDefault();
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new RangeError(
      `Cannot encrypt Fernet token: timestamp ${timestamp} is not a non-negative whole number of seconds`,
    );
  }
  return timestamp;
}

/**
 * Checks that a caller's IV is 16 bytes.
 * @throws {RangeError} when it is not
 */
export function checkIv(iv: Uint8Array): void {
  if (iv.length !== 16) {
    throw new RangeError(
      `Cannot encrypt Fernet token: the IV is ${iv.length} bytes, not 16`,
    );
  }
}

/** The timestamp and a fresh 16-byte IV of a new token, from its options. */
export function encryptArgs(
  options: FernetEncryptOptions,
): { timestamp: number; iv: Uint8Array } {
  const timestamp = encryptTimestamp(options);
  const iv = new Uint8Array(16);
  writeIv(options, iv, 0);
  return { timestamp, iv };
}

/** Writes a token's IV at `out[offset]`: `options.iv`, else from `options.ivSource`, else 16 random bytes. */
export function writeIv(
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

/**
 * Age and skew checks, after the HMAC has been verified.
 * @throws {InvalidTokenError} reason "expired" or "future"
 */
export function checkTime(
  timestamp: number,
  options: FernetDecryptOptions,
): void {
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

/** The error for a token whose HMAC does not verify. */
export function signatureError(): InvalidTokenError {
  return new InvalidTokenError(
    "signature",
    "Fernet token signature does not verify: wrong key or tampered token",
  );
}

/** The error for a token whose plaintext padding is invalid. */
export function paddingError(): InvalidTokenError {
  return new InvalidTokenError(
    "padding",
    "Fernet token plaintext has invalid PKCS#7 padding",
  );
}

/** The PKCS#7-padded length of `n` bytes: the next whole block, always adding 1..16. */
export function paddedLength(n: number): number {
  return (Math.floor(n / BLOCK_SIZE) + 1) * BLOCK_SIZE;
}
