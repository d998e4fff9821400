/**
 * The bookkeeping behind the fair eviction of `Reassembler`
 * (reassembler.ts): one partial buffer per (source, msg_id), each source's
 * buffers in creation order with its byte total, and {@linkcode SourceHeap},
 * which keeps the sources ordered by what they hold so that the source
 * holding the most (buffers, or bytes) is found in O(1) and moved in
 * O(log n). No clock and no limits: the reassembler decides what to evict;
 * this module only keeps the order.
 *
 * @module
 */

/** One partial buffer: the chunks of one (source, msg_id) received so far. */
export interface PartialBuffer {
  /** The source it belongs to. */
  readonly source: SourceState;
  /** The stream's msg_id. */
  readonly msgId: number;
  /** Chunks the stream has in all. */
  readonly count: number;
  /** Internal clock time of the first chunk. */
  readonly createdAt: number;
  /** Creation order over all buffers: smaller is older. */
  readonly seq: number;
  /** Copies of the chunks, by index; holes for chunks not yet received. */
  readonly chunks: (Uint8Array | undefined)[];
  /** Chunks received so far. */
  received: number;
  /** Bytes of chunk data received so far. */
  bytes: number;
}

/** What one source has buffered. Removed as soon as its last buffer goes. */
export interface SourceState {
  /** The source's key (e.g. a formatted address). */
  readonly key: string;
  /** By msg_id, in creation order (the first is the oldest). */
  readonly buffers: Map<number, PartialBuffer>;
  /** Bytes of chunk data in all its buffers. */
  bytes: number;
  /** `seq` of its oldest buffer: breaks ties between sources holding as much. */
  oldestSeq: number;
  /** Positions in the reassembler's two heaps (-1: not in it). */
  readonly slots: [number, number];
}

/**
 * The sources ordered by what they hold (buffers, or bytes), the most first;
 * of two that hold as much, the one with the older oldest buffer first. An
 * indexed binary heap: each source knows its position, so a change of its
 * holding moves it in O(log n).
 */
export class SourceHeap {
  readonly #items: SourceState[] = [];

  /**
   * @param slot which of a source's `slots` this heap uses
   * @param weight what a source holds
   */
  constructor(
    readonly slot: 0 | 1,
    readonly weight: (source: SourceState) => number,
  ) {}

  /** The source holding the most, if any. */
  top(): SourceState | undefined {
    return this.#items[0];
  }

  /** Adds `source`, or moves it after its holding changed. */
  update(source: SourceState): void {
    let i = source.slots[this.slot];
    if (i < 0) {
      i = this.#items.length;
      this.#items.push(source);
      source.slots[this.slot] = i;
    }
    this.#siftDown(this.#siftUp(i));
  }

  /** Takes `source` out. */
  remove(source: SourceState): void {
    const i = source.slots[this.slot];
    if (i < 0) return;
    source.slots[this.slot] = -1;
    const last = this.#items.pop()!;
    if (last === source) return;
    this.#place(last, i);
    this.#siftDown(this.#siftUp(i));
  }

  #before(a: SourceState, b: SourceState): boolean {
    const wa = this.weight(a);
    const wb = this.weight(b);
    return wa > wb || (wa === wb && a.oldestSeq < b.oldestSeq);
  }

  #place(source: SourceState, i: number): void {
    this.#items[i] = source;
    source.slots[this.slot] = i;
  }

  #siftUp(i: number): number {
    const items = this.#items;
    const item = items[i];
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#before(item, items[parent])) break;
      this.#place(items[parent], i);
      i = parent;
    }
    this.#place(item, i);
    return i;
  }

  #siftDown(i: number): void {
    const items = this.#items;
    const item = items[i];
    for (;;) {
      const left = 2 * i + 1;
      if (left >= items.length) break;
      const right = left + 1;
      const child =
        right < items.length && this.#before(items[right], items[left])
          ? right
          : left;
      if (!this.#before(items[child], item)) break;
      this.#place(items[child], i);
      i = child;
    }
    this.#place(item, i);
  }
}

/** The oldest buffer of `state` other than `except`, if it has one. */
export function oldestOf(
  state: SourceState,
  except?: PartialBuffer,
): PartialBuffer | undefined {
  for (const buffer of state.buffers.values()) {
    if (buffer !== except) return buffer;
  }
  return undefined;
}
