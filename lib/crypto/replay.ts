/**
 * Replay window for Fernet tokens (protocol.md section 6): rejects tokens
 * older than the maximum age, too far in the future, or whose IV was already
 * accepted under the same key within the window. Bounded memory. Pure: the
 * caller passes the time.
 *
 * Invariant: every IV ever accepted is either still remembered or has a
 * timestamp at or below the floor, and a token at or below the floor is
 * refused. Forgetting an IV (because it aged out, or to make room) raises
 * the floor to its timestamp, so no forgotten IV is ever accepted again, even
 * if the caller's clock steps backwards.
 *
 * Size: a window that must remember every token arriving at up to R per
 * second for S seconds needs R x S entries ({@linkcode replayWindowEntries}).
 * Below that rate it covers a token's whole life; above it, it still covers
 * `maxEntries / rate` seconds, and what it cannot hold is refused as
 * "window_full" (counted apart from "expired").
 *
 * @module
 */

/**
 * Outcome of {@linkcode ReplayWindow.check}. "expired": older than the
 * maximum age; "window_full": within the age but the window had no room for
 * it (its second was forgotten to make room, or every remembered IV is of its
 * second or newer).
 */
export type ReplayVerdict =
  | "accepted"
  | "expired"
  | "future"
  | "replayed"
  | "window_full";

/**
 * IVs a replay window needs to remember every token that arrives at up to
 * `ratePerSecond` (after a `burst` on top) for `seconds`.
 *
 * @example
 * ```ts
 * import { replayWindowEntries } from "./replay.ts";
 * if (replayWindowEntries(210, 61, 420) !== 13_230) throw new Error();
 * ```
 * @param ratePerSecond tokens per second the window must take
 * @param seconds how long each of them must be remembered
 * @param burst tokens that may come on top of the rate
 * @returns the entry count, at least 1
 * @throws {RangeError} when an argument is negative or not finite
 */
export function replayWindowEntries(
  ratePerSecond: number,
  seconds: number,
  burst = 0,
): number {
  for (const value of [ratePerSecond, seconds, burst]) {
    if (!(Number.isFinite(value) && value >= 0)) {
      throw new RangeError(
        `A replay window is sized by a non-negative rate, time and burst, got ${ratePerSecond}/s, ${seconds} s, burst ${burst}`,
      );
    }
  }
  return Math.max(1, Math.ceil(ratePerSecond * seconds + burst));
}

/**
 * Default size of a receiver's replay window: 16,384 tokens per second for
 * 4 s (65,536 IVs, about 5.5 MB when full). It remembers a token's whole
 * life (the 60 s age and the second it was sealed in) up to 1,074 tokens per
 * second, and at least 4 s of tokens up to 16,384 per second.
 */
export const DEFAULT_REPLAY_ENTRIES: number = replayWindowEntries(16_384, 4);

/** Bounds of a {@linkcode ReplayWindow}. */
export interface ReplayWindowOptions {
  /** Oldest acceptable timestamp: now - maxAgeSeconds. Default 60. */
  maxAgeSeconds: number;
  /** Newest acceptable timestamp: now + maxFutureSeconds. Default 60. */
  maxFutureSeconds: number;
  /**
   * Most IVs remembered: the memory bound. When full, the oldest entry is
   * forgotten and the window's floor rises to its timestamp, so a forgotten
   * IV can never be accepted again (tokens at or below the floor are
   * "window_full"). Default {@linkcode DEFAULT_REPLAY_ENTRIES} (65,536).
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
  /** Remembered IVs (latin1 keys); their timestamps are in the heap. */
  #seen = new Set<string>();
  /** Binary min-heap on timestamp over the remembered IVs, as parallel arrays. */
  #heapTimes: number[] = [];
  #heapKeys: string[] = [];
  /** Tokens with a timestamp at or below this are refused. */
  #floor = -Infinity;
  /** The newest timestamp forgotten to make room (not for age): at or below it, "window_full". */
  #roomFloor = -Infinity;

  /**
   * Creates an empty window.
   * @param options bounds; defaults 60 s, 60 s, 65,536 entries
   * @throws {RangeError} for negative bounds or maxEntries below 1
   */
  constructor(options: Partial<ReplayWindowOptions> = {}) {
    this.options = {
      maxAgeSeconds: 60,
      maxFutureSeconds: 60,
      maxEntries: DEFAULT_REPLAY_ENTRIES,
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
   * Call only after the token's HMAC has been verified. A non-finite
   * timestamp is "expired"; one within the age but at or below the floor, or
   * no newer than every entry of a full window, is "window_full".
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
    if (!(timestampSeconds >= oldest)) return "expired";
    if (timestampSeconds > nowSeconds + this.options.maxFutureSeconds) {
      return "future";
    }
    // An IV still remembered is a replay, even at or below the floor (the
    // rest of a second whose first IVs were forgotten to make room).
    const key = ivKey(iv);
    if (this.#seen.has(key)) return "replayed";
    if (timestampSeconds <= this.#floor) {
      return timestampSeconds <= this.#roomFloor ? "window_full" : "expired";
    }
    if (this.#seen.size >= this.options.maxEntries) {
      // Full: making room forgets the oldest entry and raises the floor to its
      // timestamp. If that is not older than this token, the token would fall
      // at or below the new floor, so refuse it and keep the window as it is.
      if (this.#heapTimes[0] >= timestampSeconds) return "window_full";
      if (this.#heapTimes[0] > this.#roomFloor) {
        this.#roomFloor = this.#heapTimes[0];
      }
      this.#forgetOldest();
    }
    this.#seen.add(key);
    this.#push(timestampSeconds, key);
    return "accepted";
  }

  /** IVs currently remembered. */
  get size(): number {
    return this.#seen.size;
  }

  /** The floor: tokens with a timestamp at or below it are refused, "expired" or "window_full" (-Infinity until something is forgotten). */
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
