/**
 * Fernet tokens (https://github.com/fernet/spec): AES-128-CBC + HMAC-SHA256,
 * version 0x80, ASCII base64url with padding. Two interchangeable backends:
 * WebCrypto and `node:crypto`; the default is chosen by benchmark
 * (PERFORMANCE.md). Time and IV are injectable for tests.
 *
 * @module
 */
import { InvalidKeyError, InvalidTokenError } from "../errors.ts";

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

/**
 * Parses a token's base64url text (or its ASCII bytes) into fields without verifying anything cryptographic.
 * @throws {InvalidTokenError} reason "format": bad base64, too short, wrong version, ciphertext not a multiple of 16
 */
export function parseToken(token: Uint8Array | string): TokenFields {
  throw new InvalidTokenError("format", "not implemented" + token);
}

/** A Fernet key (32 bytes: 16 signing + 16 encryption) ready to encrypt and decrypt. */
export class FernetKey {
  /** The key as 44 ASCII base64url characters (the form sent in SYMMETRIC_KEY). */
  readonly text: string;
  /** The backend this key uses. */
  readonly backend: FernetBackend;

  private constructor(text: string, backend: FernetBackend) {
    this.text = text;
    this.backend = backend;
  }

  /** Generates a fresh random key. */
  static generate(
    backend: FernetBackend = DEFAULT_FERNET_BACKEND,
  ): Promise<FernetKey> {
    throw new Error("not implemented" + backend);
  }

  /**
   * Imports a key from its 44-character base64url text or ASCII bytes.
   * @throws {InvalidKeyError} when it does not decode to exactly 32 bytes
   */
  static fromText(
    text: string | Uint8Array,
    backend: FernetBackend = DEFAULT_FERNET_BACKEND,
  ): Promise<FernetKey> {
    throw new InvalidKeyError("not implemented" + text + backend);
  }

  /** Encrypts `plaintext` into a token's ASCII bytes. */
  encrypt(
    plaintext: Uint8Array,
    options: FernetEncryptOptions = {},
  ): Promise<Uint8Array> {
    throw new Error("not implemented" + plaintext + options);
  }

  /**
   * Verifies and decrypts a token (ASCII bytes or text). Order: format, HMAC, age and skew, padding.
   * @throws {InvalidTokenError} naming the failed check
   */
  decrypt(
    token: Uint8Array | string,
    options: FernetDecryptOptions = {},
  ): Promise<DecryptedToken> {
    throw new Error("not implemented" + token + options);
  }
}
