/**
 * Reassembly of fragmented streams (protocol.md section 3) with every bound:
 * timeout, partial buffers per source, bytes per source, bytes in all, max
 * count. Time comes from an injected clock; no timers of its own.
 *
 * @module
 */
import type { Fragment } from "./fragment.ts";

/** Bounds of a {@linkcode Reassembler}; defaults are those of protocol.md section 3. */
export interface ReassemblerLimits {
  /** A buffer not complete this long after its first chunk is discarded. Default 10_000 ms. */
  timeoutMs: number;
  /** Partial buffers one source may have open. Default 64. */
  maxPartialsPerSource: number;
  /** Bytes of chunk data one source may have buffered. Default 1 MiB. */
  maxBytesPerSource: number;
  /** Bytes of chunk data buffered for all sources together. Default 64 MiB. */
  maxBytesTotal: number;
  /** Largest `count` accepted. Default 1024. */
  maxCount: number;
}

/** Default bounds of protocol.md section 3. */
export const DEFAULT_REASSEMBLER_LIMITS: Readonly<ReassemblerLimits> = {
  timeoutMs: 10_000,
  maxPartialsPerSource: 64,
  maxBytesPerSource: 1024 * 1024,
  maxBytesTotal: 64 * 1024 * 1024,
  maxCount: 1024,
};

/** Counters of a {@linkcode Reassembler}: completed streams and each kind of drop. */
export interface ReassemblerCounters {
  /** Streams completed and returned. */
  completed: number;
  /** Chunks ignored because that index was already present. */
  duplicate: number;
  /** Buffers discarded because a chunk's count differed from the buffer's (that chunk included). */
  countMismatch: number;
  /** Chunks dropped because `count` exceeded `maxCount`. */
  countTooLarge: number;
  /** Buffers discarded because they were not complete in time. */
  timedOut: number;
  /** Chunks dropped because their source had `maxPartialsPerSource` buffers open. */
  tooManyPartials: number;
  /** Chunks dropped because their source would exceed `maxBytesPerSource`. */
  sourceBytesExceeded: number;
  /** Chunks dropped because all sources together would exceed `maxBytesTotal`. */
  totalBytesExceeded: number;
}

/**
 * Collects FRAGMENT chunks by (source, msg_id) and hands back each stream once
 * all its chunks are present. Memory never exceeds the configured bounds.
 */
export class Reassembler {
  /** Counters, updated in place. */
  readonly counters: ReassemblerCounters = {
    completed: 0,
    duplicate: 0,
    countMismatch: 0,
    countTooLarge: 0,
    timedOut: 0,
    tooManyPartials: 0,
    sourceBytesExceeded: 0,
    totalBytesExceeded: 0,
  };
  /** Effective bounds. */
  readonly limits: Readonly<ReassemblerLimits>;

  /**
   * @param limits bounds, defaults from protocol.md
   * @param now clock in milliseconds (injected for tests)
   */
  constructor(
    limits: Partial<ReassemblerLimits> = {},
    now: () => number = Date.now,
  ) {
    this.limits = { ...DEFAULT_REASSEMBLER_LIMITS, ...limits };
    throw new Error("not implemented" + now);
  }

  /**
   * Adds one chunk from `source` (any string key, e.g. a formatted address).
   * Expires timed-out buffers first.
   * @returns the complete stream (chunks concatenated in index order) when this chunk completes it, else undefined
   */
  add(source: string, fragment: Fragment): Uint8Array | undefined {
    throw new Error("not implemented" + source + fragment);
  }

  /** Discards every buffer older than the timeout. @returns how many were discarded */
  expire(): number {
    throw new Error("not implemented");
  }

  /** Discards every buffer of `source` (e.g. when a member leaves). Not counted as a drop. */
  forgetSource(source: string): void {
    throw new Error("not implemented" + source);
  }

  /** Bytes of chunk data currently buffered, all sources. */
  get bufferedBytes(): number {
    throw new Error("not implemented");
  }

  /** Partial buffers currently open, all sources. */
  get partialCount(): number {
    throw new Error("not implemented");
  }
}
