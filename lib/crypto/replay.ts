/**
 * Replay window for Fernet tokens (protocol.md section 6): rejects tokens
 * older than the maximum age, too far in the future, or whose IV was already
 * accepted under the same key within the window. Bounded memory. Pure: the
 * caller passes the time.
 *
 * Invariant: every IV ever accepted is either still remembered or has a
 * timestamp at or below the floor, and a token at or below the floor is
 * "expired". Forgetting an IV (because it aged out, or to make room) raises
 * the floor to its timestamp, so no forgotten IV is ever accepted again, even
 * if the caller's clock steps backwards.
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

/** The IV as a compact Map key: one char per byte (latin1). */
function ivKey(iv: Uint8Array): string {
  if (iv.length === 16) {
    return String.fromCharCode(
      iv[0],
      iv[1],
      iv[2],
      iv[3],
      iv[4],
      iv[5],
      iv[6],
      iv[7],
      iv[8],
      iv[9],
      iv[10],
      iv[11],
      iv[12],
      iv[13],
      iv[14],
      iv[15],
    );
  }
  let s = "";
  for (let i = 0; i < iv.length; i++) s += String.fromCharCode(iv[i]);
  return s;
}

/** Remembers accepted IVs of one key within the time window. */
export class ReplayWindow {
  /** Effective bounds. */
  readonly options: Readonly<ReplayWindowOptions>;
  /** Remembered IVs (latin1 key) → timestamp. */
  #seen = new Map<string, number>();
  /** Binary min-heap on timestamp over the remembered IVs, as parallel arrays. */
  #heapTimes: number[] = [];
  #heapKeys: string[] = [];
  /** Tokens with a timestamp at or below this are "expired". */
  #floor = -Infinity;

  /**
   * Creates an empty window.
   * @param options bounds; defaults 60 s, 60 s, 4096 entries
   * @throws {RangeError} for negative bounds or maxEntries below 1
   */
  constructor(options: Partial<ReplayWindowOptions> = {}) {
    this.options = {
      maxAgeSeconds: 60,
      maxFutureSeconds: 60,
      maxEntries: 4096,
      ...options,
    };
    const { maxAgeSeconds, maxFutureSeconds, maxEntries } = this.options;
    if (!(maxAgeSeconds >= 0) || !(maxFutureSeconds >= 0)) {
      throw new RangeError(
        `ReplayWindow bounds must be non-negative: maxAgeSeconds ${maxAgeSeconds}, maxFutureSeconds ${maxFutureSeconds}`,
      );
    }
    if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) {
      throw new RangeError(
        `ReplayWindow maxEntries must be a whole number of at least 1, not ${maxEntries}`,
      );
    }
  }

  /**
   * Checks a token's IV and timestamp; records the IV when the verdict is "accepted".
   * Call only after the token's HMAC has been verified. A non-finite timestamp,
   * or one no newer than every entry of a full window, is "expired".
   */
  check(
    iv: Uint8Array,
    timestampSeconds: number,
    nowSeconds: number,
  ): ReplayVerdict {
    const oldest = nowSeconds - this.options.maxAgeSeconds;
    // Forget what aged out; each forgotten IV raises the floor.
    while (this.#heapTimes.length > 0 && this.#heapTimes[0] < oldest) {
      this.#forgetOldest();
    }
    if (
      !(timestampSeconds >= oldest) || timestampSeconds <= this.#floor
    ) {
      return "expired";
    }
    if (timestampSeconds > nowSeconds + this.options.maxFutureSeconds) {
      return "future";
    }
    const key = ivKey(iv);
    if (this.#seen.has(key)) return "replayed";
    if (this.#seen.size >= this.options.maxEntries) {
      // Full: making room forgets the oldest entry and raises the floor to its
      // timestamp. If that is not older than this token, the token would fall
      // at or below the new floor, so reject it and keep the window as it is.
      if (this.#heapTimes[0] >= timestampSeconds) return "expired";
      this.#forgetOldest();
    }
    this.#seen.set(key, timestampSeconds);
    this.#push(timestampSeconds, key);
    return "accepted";
  }

  /** IVs currently remembered. */
  get size(): number {
    return this.#seen.size;
  }

  /** The floor: tokens with a timestamp at or below it are "expired" (-Infinity until something is forgotten). */
  get floor(): number {
    return this.#floor;
  }

  #forgetOldest(): void {
    const times = this.#heapTimes;
    const keys = this.#heapKeys;
    const t = times[0];
    this.#seen.delete(keys[0]);
    if (t > this.#floor) this.#floor = t;
    const lastT = times.pop()!;
    const lastK = keys.pop()!;
    const n = times.length;
    if (n === 0) return;
    // Sift the last element down from the root.
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && times[r] < times[l] ? r : l;
      if (times[c] >= lastT) break;
      times[i] = times[c];
      keys[i] = keys[c];
      i = c;
    }
    times[i] = lastT;
    keys[i] = lastK;
  }

  #push(t: number, key: string): void {
    const times = this.#heapTimes;
    const keys = this.#heapKeys;
    let i = times.length;
    times.push(t);
    keys.push(key);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (times[p] <= t) break;
      times[i] = times[p];
      keys[i] = keys[p];
      i = p;
    }
    times[i] = t;
    keys[i] = key;
  }
}
