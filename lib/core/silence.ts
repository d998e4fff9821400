/**
 * When the server may judge a member silent (protocol.md section 6, and
 * issue 17 items 6(b) and 6(c)): a member is removed for silence only when
 * the silence is its own. Pure: the caller gives the times (ms).
 *
 * - **Stalls.** When the presence sweep runs much later than it was
 *   scheduled (the process was stopped, or the event loop blocked), the
 *   datagrams of the stall are still queued in the socket: silence is then
 *   counted from the end of the stall, so every member has a whole timeout
 *   to be read again before anyone is judged.
 * - **Self-inflicted loss.** When the server itself dropped datagrams
 *   (its queues were full, the kernel dropped on its socket, its event loop
 *   was saturated) during a member's timeout window, the lost keep-alive may
 *   be the server's fault: the window is extended instead (counted), a
 *   bounded number of times in a row, so that a member that really left is
 *   still removed under lasting overload.
 *
 * @module
 */

/** Options of {@linkcode PresenceJudge}. */
export interface PresenceJudgeOptions {
  /** A member silent this long is removed (ms). */
  readonly timeoutMs: number;
  /** Interval of the presence sweep (ms). */
  readonly sweepMs: number;
  /**
   * A sweep later than scheduled by more than this is a stall (ms).
   * Default: the larger of 1000 ms and one sweep interval.
   */
  readonly stallMs?: number;
  /** Extensions for self-inflicted loss in a row before a silent member is removed anyway. Default 3. */
  readonly maxExtensions?: number;
  /**
   * When the sweeps were scheduled from (ms): the first sweep is judged
   * late against it, so a stall before the first sweep counts too.
   */
  readonly startMs: number;
}

/** The silence bookkeeping the judge keeps on each member. */
export interface SilenceRecord {
  /** When the member was last heard (authenticated), ms. */
  readonly lastSeen: number;
  /** When its window was last extended (ms; -Infinity when never). */
  extendedAt: number;
  /** Extensions since it was last heard. */
  extensions: number;
}

/** What {@linkcode PresenceJudge.judge} decides for one member. */
export type SilenceVerdict = "present" | "extended" | "silent";

/** Counters of a {@linkcode PresenceJudge}. */
export interface PresenceCounters {
  /** Sweeps that ran late enough to count as a stall. */
  stalls: number;
  /** Timeout windows extended because the server had dropped datagrams. */
  timeoutsExtended: number;
}

/** Decides, sweep by sweep, which silent members may be removed. */
export class PresenceJudge {
  /** A member silent this long is removed (ms). */
  readonly timeoutMs: number;
  /** Interval of the presence sweep (ms). */
  readonly sweepMs: number;
  /** A sweep later than scheduled by more than this is a stall (ms). */
  readonly stallMs: number;
  /** Extensions in a row at most. */
  readonly maxExtensions: number;
  /** Counters (read-only for callers). */
  readonly counters: PresenceCounters = { stalls: 0, timeoutsExtended: 0 };
  #lastSweep: number;
  /** Silence counts from here at the earliest (the end of the last stall). */
  #resumedAt = -Infinity;
  /** The last time the server itself dropped datagrams. */
  #selfDropAt = -Infinity;

  /**
   * Creates a judge; sweeps are expected every `sweepMs` from `startMs` on.
   * @throws {RangeError} for a timeout or sweep interval that is not positive
   */
  constructor(options: PresenceJudgeOptions) {
    if (!(options.timeoutMs > 0) || !(options.sweepMs > 0)) {
      throw new RangeError(
        `PresenceJudge needs a positive timeout and sweep interval, not ${options.timeoutMs} and ${options.sweepMs} ms`,
      );
    }
    this.timeoutMs = options.timeoutMs;
    this.sweepMs = options.sweepMs;
    this.stallMs = options.stallMs ?? Math.max(1000, options.sweepMs);
    this.maxExtensions = options.maxExtensions ?? 3;
    this.#lastSweep = options.startMs;
  }

  /**
   * A sweep starts at `nowMs`. Returns whether it follows a stall (then
   * silence counts from `nowMs` on: nobody is judged silent before a whole
   * timeout has passed).
   */
  sweep(nowMs: number): boolean {
    const last = this.#lastSweep;
    this.#lastSweep = nowMs;
    if (nowMs - last <= this.sweepMs + this.stallMs) {
      return false;
    }
    this.#resumedAt = nowMs;
    this.counters.stalls++;
    return true;
  }

  /** The server itself dropped datagrams (or could not keep up) at `nowMs`. */
  selfDrop(nowMs: number): void {
    this.#selfDropAt = nowMs;
  }

  /** Whether the server dropped datagrams itself after `sinceMs`. */
  droppedSince(sinceMs: number): boolean {
    return this.#selfDropAt > sinceMs;
  }

  /**
   * Judges one member at `nowMs`: present (within its window), extended
   * (silent, but the server dropped datagrams itself within the window;
   * `record` is updated), or silent (to be removed).
   */
  judge(record: SilenceRecord, nowMs: number): SilenceVerdict {
    if (record.lastSeen >= record.extendedAt) record.extensions = 0;
    const from = Math.max(record.lastSeen, record.extendedAt, this.#resumedAt);
    if (nowMs - from <= this.timeoutMs) return "present";
    if (
      this.droppedSince(from) && record.extensions < this.maxExtensions
    ) {
      record.extendedAt = nowMs;
      record.extensions++;
      this.counters.timeoutsExtended++;
      return "extended";
    }
    return "silent";
  }
}
