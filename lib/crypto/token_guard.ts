/**
 * Seals and opens the Fernet tokens of one key with every rule of
 * protocol.md section 6: maximum age, clock skew, replayed IVs, reflected
 * IVs (this side's own mark). Holds the key's replay window.
 *
 * @module
 */
import { InvalidTokenError } from "../errors.ts";
import {
  type DecryptedToken,
  type FernetDecryptOptions,
  type FernetEncryptOptions,
  FernetKey,
} from "./fernet.ts";
import type { IvMarker } from "./iv_mark.ts";
import { deriveKeyText } from "./derive_key.ts";
import { DEFAULT_REPLAY_ENTRIES, ReplayWindow } from "./replay.ts";

/** Why a token was not accepted (a drop reason, counted and logged). */
export type TokenRejection =
  | "token_format"
  | "token_signature"
  | "token_padding"
  | "token_expired"
  | "token_future"
  | "token_replayed"
  | "token_reflected"
  | "token_window_full";

/** The result of {@linkcode TokenGuard.open}. */
export type OpenResult =
  | { readonly ok: true; readonly plaintext: Uint8Array }
  | { readonly ok: false; readonly reason: TokenRejection };

/** One key's token rules: seals outgoing tokens with marked IVs, opens incoming ones. */
export class TokenGuard {
  readonly #replay: ReplayWindow;

  /**
   * @param key the Fernet key shared with the peer
   * @param marker this side's IV marker
   * @param maxAgeSeconds maximum token age and future skew (default 60)
   * @param maxRememberedIvs replay window size, by rate and time
   *   (`replayWindowEntries()`); default 65,536
   */
  constructor(
    readonly key: FernetKey,
    readonly marker: IvMarker,
    readonly maxAgeSeconds = 60,
    maxRememberedIvs = DEFAULT_REPLAY_ENTRIES,
  ) {
    this.#replay = new ReplayWindow({
      maxAgeSeconds,
      maxFutureSeconds: maxAgeSeconds,
      maxEntries: maxRememberedIvs,
    });
  }

  /** Encrypts `plaintext` under a fresh marked IV. */
  seal(plaintext: Uint8Array, nowMs: number): Promise<Uint8Array> {
    return this.key.encrypt(plaintext, this.#encryptOptions(nowMs));
  }

  /** Whether {@linkcode sealSync} is available (keys of the node backend). */
  get canSealSync(): boolean {
    return this.key.canRunSync;
  }

  /**
   * Encrypts `plaintext` under a fresh marked IV, synchronously.
   * @throws {TypeError} for a key of the webcrypto backend
   */
  sealSync(plaintext: Uint8Array, nowMs: number): Uint8Array {
    return this.key.encryptSync(plaintext, this.#encryptOptions(nowMs));
  }

  /**
   * {@linkcode sealSync}, writing the token's ASCII bytes at `out[offset]`
   * (the relay builds each datagram in one buffer). Returns the bytes written,
   * `FernetKey.tokenLength(plaintext.length)`.
   *
   * `markedIv`, when given, is the token's IV instead of a fresh one: an IV
   * from this guard's marker (`marker.create()`) that the caller shares
   * among the tokens of one plaintext under several keys, as the relay does
   * for the recipients of one message (a mark costs two SHA-256 blocks).
   * Under one key a reused IV gives equal tokens for equal plaintexts and
   * repeats an IV the peer's replay window remembers: share it across keys,
   * never across tokens of one key.
   * @throws {RangeError} when the token does not fit, or `markedIv` is not 16 bytes
   * @throws {TypeError} for a key of the webcrypto backend
   */
  sealInto(
    plaintext: Uint8Array,
    nowMs: number,
    out: Uint8Array,
    offset: number,
    markedIv?: Uint8Array,
  ): number {
    return this.key.encryptInto(
      plaintext,
      out,
      offset,
      markedIv === undefined
        ? this.#encryptOptions(nowMs)
        : { nowSeconds: Math.floor(nowMs / 1000), iv: markedIv },
    );
  }

  /**
   * A guard of the key derived from this one for `label` (`deriveKeyText`,
   * PROTOCOL.md section 7.1), with the same IV marker and maximum age and a
   * replay window of its own: tokens of one purpose, which never open under
   * this key nor this under it.
   * @param maxRememberedIvs its replay window size (default 64: a purpose
   *   key seals few tokens)
   */
  async derive(label: string, maxRememberedIvs = 64): Promise<TokenGuard> {
    if (this.key.canRunSync) return this.deriveSync(label, maxRememberedIvs);
    const key = await FernetKey.fromText(
      deriveKeyText(this.key.text, label),
      this.key.backend,
    );
    return new TokenGuard(
      key,
      this.marker,
      this.maxAgeSeconds,
      maxRememberedIvs,
    );
  }

  /**
   * {@linkcode derive}, synchronously (keys of the node backend).
   * @throws {TypeError} for a key of the webcrypto backend
   */
  deriveSync(label: string, maxRememberedIvs = 64): TokenGuard {
    if (!this.key.canRunSync) {
      throw new TypeError(
        "TokenGuard.deriveSync needs a key of the node backend; use derive()",
      );
    }
    const key = FernetKey.fromTextSync(deriveKeyText(this.key.text, label));
    return new TokenGuard(
      key,
      this.marker,
      this.maxAgeSeconds,
      maxRememberedIvs,
    );
  }

  /** Releases the key's long-lived ciphers, if it keeps any (it stays usable). */
  [Symbol.dispose](): void {
    this.key[Symbol.dispose]();
  }

  /** Verifies and decrypts a token; records its IV when accepted. */
  async open(token: Uint8Array, nowMs: number): Promise<OpenResult> {
    if (this.key.canRunSync) return this.openSync(token, nowMs);
    const options = this.#decryptOptions(nowMs);
    let opened: DecryptedToken;
    try {
      opened = await this.key.decrypt(token, options);
    } catch (error) {
      return rejection(error);
    }
    return this.#admit(opened, options.nowSeconds);
  }

  /**
   * {@linkcode open}, synchronously (keys of the node backend): the hot path.
   * @throws {TypeError} for a key of the webcrypto backend
   */
  openSync(token: Uint8Array, nowMs: number): OpenResult {
    const options = this.#decryptOptions(nowMs);
    let opened: DecryptedToken;
    try {
      opened = this.key.decryptSync(token, options);
    } catch (error) {
      return rejection(error);
    }
    return this.#admit(opened, options.nowSeconds);
  }

  /** Options of every seal: the token's second, and this side's marked IVs. */
  #encryptOptions(nowMs: number): FernetEncryptOptions {
    return { nowSeconds: Math.floor(nowMs / 1000), ivSource: this.marker };
  }

  #decryptOptions(
    nowMs: number,
  ): FernetDecryptOptions & { nowSeconds: number } {
    return {
      nowSeconds: Math.floor(nowMs / 1000),
      ttlSeconds: this.maxAgeSeconds,
      maxClockSkewSeconds: this.maxAgeSeconds,
    };
  }

  /** The checks after decryption: own IV mark (reflection), then replay. */
  #admit(opened: DecryptedToken, nowSeconds: number): OpenResult {
    if (this.marker.isOwn(opened.iv)) {
      return { ok: false, reason: "token_reflected" };
    }
    const verdict = this.#replay.check(opened.iv, opened.timestamp, nowSeconds);
    if (verdict !== "accepted") {
      return { ok: false, reason: `token_${verdict}` };
    }
    return { ok: true, plaintext: opened.plaintext };
  }
}

/** Maps a Fernet failure to its rejection reason; rethrows anything else. */
function rejection(error: unknown): OpenResult {
  if (error instanceof InvalidTokenError) {
    return { ok: false, reason: `token_${error.reason}` };
  }
  throw error;
}
