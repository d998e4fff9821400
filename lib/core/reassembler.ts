/**
 * Reassembly of fragmented streams (protocol.md section 3) with every bound:
 * timeout, partial buffers per source and in all, bytes per source and in
 * all, max count. Time comes from an injected clock; no timers of its own.
 *
 * A bound that is reached evicts an old partial buffer rather than refusing
 * the new chunk, so a flood of partial buffers cannot block later messages:
 * a source at its own bound loses its own oldest buffer, and a bound in all
 * takes the oldest buffer of the source holding the most (buffers for the
 * count bound, bytes for the byte bound), so no source can starve the others.
 * The per-source bookkeeping and the heaps that find the source holding the
 * most are in reassembler_sources.ts.
 *
 * @module
 */
import { MalformedDatagramError } from "../errors.ts";
import { decodeFragment, type Fragment } from "../wire/fragment.ts";
import { decodeRecords, RecordType, type TlvRecord } from "../wire/tlv.ts";
import {
  oldestOf,
  type PartialBuffer,
  SourceHeap,
  type SourceState,
} from "./reassembler_sources.ts";

/** What one FRAGMENT record led to, from {@linkcode Reassembler.addRecord}. */
export type FragmentOutcome =
  | { readonly kind: "pending" }
  | { readonly kind: "stream"; readonly records: TlvRecord[] }
  | {
    readonly kind: "dropped";
    /** `malformed_fragment` (bad header), `malformed` (the stream is not TLV) or `nested_fragment` (a FRAGMENT inside it). */
    readonly reason: "malformed_fragment" | "malformed" | "nested_fragment";
  };

/** Bounds of a {@linkcode Reassembler}; defaults are those of protocol.md section 3. */
export interface ReassemblerLimits {
  /** A buffer not complete this long after its first chunk is discarded. Default 10_000 ms. */
  timeoutMs: number;
  /** Partial buffers one source may have open; past it its oldest is evicted. Default 64. */
  maxPartialsPerSource: number;
  /**
   * Partial buffers open for all sources together (the group). Default 4096.
   * Bounds the per-buffer overhead that byte caps do not see (many sources
   * each sending empty chunks); past it the oldest buffer of the source with
   * the most is evicted.
   */
  maxPartialsTotal: number;
  /** Bytes of chunk data one source may have buffered; past it its oldest buffers are evicted. Default 1 MiB. */
  maxBytesPerSource: number;
  /**
   * Bytes of chunk data buffered for all sources together. Default 64 MiB.
   * Past it the oldest buffers of the source holding the most bytes are
   * evicted.
   */
  maxBytesTotal: number;
  /** Largest `count` accepted. Default 1024. */
  maxCount: number;
}

/** Default bounds of protocol.md section 3. */
export const DEFAULT_REASSEMBLER_LIMITS: Readonly<ReassemblerLimits> = {
  timeoutMs: 10_000,
  maxPartialsPerSource: 64,
  maxPartialsTotal: 4096,
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
  /**
   * Buffers evicted to open a new one: the oldest of a source that had
   * `maxPartialsPerSource` open, or of the source with the most when all had
   * `maxPartialsTotal`.
   */
  tooManyPartials: number;
  /**
   * Buffers evicted (the source's oldest) or chunks dropped with their buffer
   * because their source would exceed `maxBytesPerSource`.
   */
  sourceBytesExceeded: number;
  /**
   * Buffers evicted (the oldest of the source holding the most bytes) or
   * chunks dropped with their buffer because all sources together would exceed
   * `maxBytesTotal`.
   */
  totalBytesExceeded: number;
}

function checkLimits(limits: ReassemblerLimits): void {
  if (!(Number.isFinite(limits.timeoutMs) && limits.timeoutMs > 0)) {
    throw new RangeError(
      `Reassembler limit timeoutMs must be a positive number of milliseconds, got ${limits.timeoutMs}`,
    );
  }
  for (
    const name of [
      "maxPartialsPerSource",
      "maxPartialsTotal",
      "maxBytesPerSource",
      "maxBytesTotal",
      "maxCount",
    ] as const
  ) {
    const value = limits[name];
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(
        `Reassembler limit ${name} must be a positive integer, got ${value}`,
      );
    }
  }
}

function checkFragment(fragment: Fragment): void {
  const { msgId, index, count } = fragment;
  if (
    !Number.isInteger(msgId) || msgId < 0 || msgId > 0xffffffff ||
    !Number.isInteger(count) || count < 1 || count > 0xffff ||
    !Number.isInteger(index) || index < 0 || index >= count
  ) {
    throw new MalformedDatagramError(
      `Cannot reassemble FRAGMENT: msg_id ${msgId}, index ${index}, count ${count} is not a valid header`,
    );
  }
}

/**
 * Collects FRAGMENT chunks by (source, msg_id) and hands back each stream once
 * all its chunks are present. Memory never exceeds the configured bounds.
 *
 * Chunks are copied when buffered, so callers may reuse their receive buffers.
 * Time is measured by summing the forward steps of `now()`: a clock that jumps
 * back neither stalls nor reorders expiry.
 *
 * @example
 * ```ts
 * import { Reassembler } from "./reassembler.ts";
 * const r = new Reassembler();
 * r.add("10.0.0.1:5007", { msgId: 1, index: 1, count: 2, chunk: new Uint8Array([2]) });
 * const stream = r.add("10.0.0.1:5007", { msgId: 1, index: 0, count: 2, chunk: new Uint8Array([1]) });
 * if (stream?.join() !== "1,2" || r.bufferedBytes !== 0) throw new Error();
 * ```
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

  readonly #now: () => number;
  #lastClock: number;
  #elapsed = 0;
  /** Every open buffer in creation order, hence in `createdAt` order. */
  readonly #buffers = new Set<PartialBuffer>();
  readonly #sources = new Map<string, SourceState>();
  /** Sources by buffers held (the `maxPartialsTotal` victim on top). */
  readonly #byPartials = new SourceHeap(0, (s) => s.buffers.size);
  /** Sources by bytes held (the `maxBytesTotal` victim on top). */
  readonly #byBytes = new SourceHeap(1, (s) => s.bytes);
  #bytes = 0;
  #nextSeq = 0;

  /**
   * Creates an empty reassembler.
   * @param limits bounds, defaults from protocol.md
   * @param now clock in milliseconds (injected for tests)
   * @throws {RangeError} when a limit is not a positive number
   */
  constructor(
    limits: Partial<ReassemblerLimits> = {},
    now: () => number = Date.now,
  ) {
    const effective = { ...DEFAULT_REASSEMBLER_LIMITS };
    for (const [name, value] of Object.entries(limits)) {
      if (value !== undefined && name in effective) {
        effective[name as keyof ReassemblerLimits] = value;
      }
    }
    checkLimits(effective);
    this.limits = Object.freeze(effective);
    this.#now = now;
    this.#lastClock = now();
  }

  /** Monotonic milliseconds: the sum of the clock's forward steps. */
  #tick(): number {
    const clock = this.#now();
    if (clock > this.#lastClock) this.#elapsed += clock - this.#lastClock;
    if (!Number.isNaN(clock)) this.#lastClock = clock;
    return this.#elapsed;
  }

  /**
   * Takes the value of one FRAGMENT record from `source` (protocol.md section
   * 3): decodes its header, adds the chunk, and when that completes a stream
   * decodes it into records. A stream holding a FRAGMENT is refused whole.
   */
  addRecord(source: string, value: Uint8Array): FragmentOutcome {
    let stream: Uint8Array | undefined;
    try {
      stream = this.add(source, decodeFragment(value));
    } catch {
      return { kind: "dropped", reason: "malformed_fragment" };
    }
    if (stream === undefined) return { kind: "pending" };
    let records: TlvRecord[];
    try {
      records = decodeRecords(stream);
    } catch {
      return { kind: "dropped", reason: "malformed" };
    }
    if (records.some((r) => r.type === RecordType.FRAGMENT)) {
      return { kind: "dropped", reason: "nested_fragment" };
    }
    return { kind: "stream", records };
  }

  /**
   * Adds one chunk from `source` (any string key, e.g. a formatted address).
   * Expires timed-out buffers first.
   * @returns the complete stream (chunks concatenated in index order) when this chunk completes it, else undefined
   * @throws {MalformedDatagramError} when the fragment header itself is invalid (what `decodeFragment()` rejects)
   */
  add(source: string, fragment: Fragment): Uint8Array | undefined {
    checkFragment(fragment);
    const now = this.#tick();
    this.#expireBefore(now);
    const { msgId, index, count, chunk } = fragment;
    const limits = this.limits;
    const state = this.#sources.get(source);
    let buffer = state?.buffers.get(msgId);

    if (buffer !== undefined) {
      if (count !== buffer.count) {
        this.#discard(buffer);
        this.counters.countMismatch++;
        return undefined;
      }
      if (buffer.chunks[index] !== undefined) {
        this.counters.duplicate++;
        return undefined;
      }
    } else {
      if (count > limits.maxCount) {
        this.counters.countTooLarge++;
        return undefined;
      }
      if (count === 1) {
        this.counters.completed++;
        return chunk.slice();
      }
      // A chunk no eviction could make room for opens nothing.
      if (chunk.length > limits.maxBytesPerSource) {
        this.counters.sourceBytesExceeded++;
        return undefined;
      }
      if (chunk.length > limits.maxBytesTotal) {
        this.counters.totalBytesExceeded++;
        return undefined;
      }
      if (
        state !== undefined && state.buffers.size >= limits.maxPartialsPerSource
      ) {
        this.#discard(oldestOf(state)!);
        this.counters.tooManyPartials++;
      } else if (this.#buffers.size >= limits.maxPartialsTotal) {
        this.#discard(oldestOf(this.#byPartials.top()!)!);
        this.counters.tooManyPartials++;
      }
      buffer = this.#open(this.#sources.get(source), source, msgId, count, now);
    }

    // Make room for the bytes: the source's own oldest buffers first, then
    // those of whoever holds the most. When the only buffer left to evict is
    // the one this chunk is for, it can never complete within the bound.
    const owner = buffer.source;
    while (owner.bytes + chunk.length > limits.maxBytesPerSource) {
      this.counters.sourceBytesExceeded++;
      const victim = oldestOf(owner, buffer);
      this.#discard(victim ?? buffer);
      if (victim === undefined) return undefined;
    }
    while (this.#bytes + chunk.length > limits.maxBytesTotal) {
      this.counters.totalBytesExceeded++;
      const victim = oldestOf(this.#byBytes.top()!, buffer);
      this.#discard(victim ?? buffer);
      if (victim === undefined) return undefined;
    }

    buffer.chunks[index] = chunk.slice();
    buffer.received++;
    buffer.bytes += chunk.length;
    owner.bytes += chunk.length;
    this.#bytes += chunk.length;
    this.#byBytes.update(owner);
    if (buffer.received < buffer.count) return undefined;

    const stream = new Uint8Array(buffer.bytes);
    let offset = 0;
    for (const part of buffer.chunks as Uint8Array[]) {
      stream.set(part, offset);
      offset += part.length;
    }
    this.#discard(buffer);
    this.counters.completed++;
    return stream;
  }

  /** Creates an empty buffer (and the source's state when it has none). */
  #open(
    state: SourceState | undefined,
    source: string,
    msgId: number,
    count: number,
    now: number,
  ): PartialBuffer {
    const seq = this.#nextSeq++;
    if (state === undefined) {
      state = {
        key: source,
        buffers: new Map(),
        bytes: 0,
        oldestSeq: seq,
        slots: [-1, -1],
      };
      this.#sources.set(source, state);
    }
    const buffer: PartialBuffer = {
      source: state,
      msgId,
      count,
      createdAt: now,
      seq,
      chunks: new Array<Uint8Array | undefined>(count),
      received: 0,
      bytes: 0,
    };
    state.buffers.set(msgId, buffer);
    this.#buffers.add(buffer);
    this.#byPartials.update(state);
    this.#byBytes.update(state);
    return buffer;
  }

  /** Frees a buffer and keeps every total (and both heaps) exact. */
  #discard(buffer: PartialBuffer): void {
    const state = buffer.source;
    this.#buffers.delete(buffer);
    state.buffers.delete(buffer.msgId);
    state.bytes -= buffer.bytes;
    this.#bytes -= buffer.bytes;
    const oldest = oldestOf(state);
    if (oldest === undefined) {
      this.#sources.delete(state.key);
      this.#byPartials.remove(state);
      this.#byBytes.remove(state);
      return;
    }
    state.oldestSeq = oldest.seq;
    this.#byPartials.update(state);
    this.#byBytes.update(state);
  }

  /** Discards buffers whose first chunk is `timeoutMs` or more before `now`, oldest first. */
  #expireBefore(now: number): number {
    let discarded = 0;
    for (const buffer of this.#buffers) {
      if (now - buffer.createdAt < this.limits.timeoutMs) break;
      this.#discard(buffer);
      discarded++;
    }
    this.counters.timedOut += discarded;
    return discarded;
  }

  /** Discards every buffer older than the timeout. @returns how many were discarded */
  expire(): number {
    return this.#expireBefore(this.#tick());
  }

  /** Discards every buffer of `source` (e.g. when a member leaves). Not counted as a drop. */
  forgetSource(source: string): void {
    const state = this.#sources.get(source);
    if (state === undefined) return;
    for (const buffer of [...state.buffers.values()]) this.#discard(buffer);
  }

  /** Bytes of chunk data currently buffered, all sources. */
  get bufferedBytes(): number {
    return this.#bytes;
  }

  /** Partial buffers currently open, all sources. */
  get partialCount(): number {
    return this.#buffers.size;
  }

  /** Sources that currently have at least one partial buffer (their bookkeeping is freed with their last buffer). */
  get sourceCount(): number {
    return this.#sources.size;
  }
}
