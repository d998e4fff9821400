/**
 * Replay window for Fernet tokens (protocol.md section 6): rejects tokens
 * older than the maximum age, too far in the future, or whose IV was already
 * accepted under the same key within the window. Bounded memory. Pure: the
 * caller passes the time.
 *
 * @module
 */

/** Outcome of {@linkcode ReplayWindow.check}. */
export type ReplayVerdict = "accepted" | "expired" | "future" | "replayed";

/** Bounds of a {@linkcode ReplayWindow}. */
export interface ReplayWindowOptions {
  /** Oldest acceptable timestamp: now - maxAgeSeconds. Default 60. */
  maxAgeSeconds: number;
  /** Newest acceptable timestamp: now + maxFutureSeconds. Default 60. */
  maxFutureSeconds: number;
  /**
   * Most IVs remembered. When full, the oldest entry is forgotten and the
   * window's floor rises to its timestamp, so a forgotten IV can never be
   * accepted again (tokens at or below the floor are "expired"). Default 4096.
   */
  maxEntries: number;
}

/** Remembers accepted IVs of one key within the time window. */
export class ReplayWindow {
  /** Effective bounds. */
  readonly options: Readonly<ReplayWindowOptions>;

  /** @param options bounds; defaults 60 s, 60 s, 4096 entries */
  constructor(options: Partial<ReplayWindowOptions> = {}) {
    this.options = {
      maxAgeSeconds: 60,
      maxFutureSeconds: 60,
      maxEntries: 4096,
      ...options,
    };
  }

  /**
   * Checks a token's IV and timestamp; records the IV when the verdict is "accepted".
   * Call only after the token's HMAC has been verified.
   */
  check(
    iv: Uint8Array,
    timestampSeconds: number,
    nowSeconds: number,
  ): ReplayVerdict {
    throw new Error("not implemented" + iv + timestampSeconds + nowSeconds);
  }

  /** IVs currently remembered. */
  get size(): number {
    throw new Error("not implemented");
  }
}
