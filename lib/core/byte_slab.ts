/**
 * Short-lived byte arrays carved out of larger chunks. In Deno every new
 * `ArrayBuffer` costs about 1 µs (allocation, zeroing, external-memory
 * accounting and its share of garbage collection; PERFORMANCE.md), while a
 * view on an existing one costs about 20 ns. The relay makes a datagram per
 * delivery, so it takes them from a slab instead.
 *
 * A chunk is never reused: each view is zero-filled when taken, no two views
 * overlap, and a chunk is freed by the garbage collector once every view on
 * it is. So a view kept long pins its whole chunk: take from a slab only what
 * is dropped soon after (a datagram handed to a send), never what a table
 * or a queue keeps.
 *
 * @module
 */

/** Bytes of one chunk by default: about 300 relay datagrams of 200 bytes. */
export const DEFAULT_SLAB_CHUNK_SIZE = 64 * 1024;

/** Carves zero-filled, non-overlapping byte arrays out of shared chunks. */
export class ByteSlab {
  readonly #chunkSize: number;
  readonly #ownAbove: number;
  #chunk: Uint8Array<ArrayBuffer> | undefined;
  #used = 0;

  /**
   * @param chunkSize bytes of each chunk; a request over an eighth of it gets
   *   an array of its own (a large one would waste the rest of a chunk)
   * @throws {RangeError} when `chunkSize` is not a positive integer
   */
  constructor(chunkSize: number = DEFAULT_SLAB_CHUNK_SIZE) {
    if (!Number.isSafeInteger(chunkSize) || chunkSize < 1) {
      throw new RangeError(
        `ByteSlab chunk size must be a positive integer of bytes, got ${chunkSize}`,
      );
    }
    this.#chunkSize = chunkSize;
    this.#ownAbove = Math.max(1, Math.floor(chunkSize / 8));
  }

  /**
   * `length` zero-filled bytes that no other view shares.
   * @throws {RangeError} when `length` is not a non-negative integer
   */
  take(length: number): Uint8Array<ArrayBuffer> {
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(
        `ByteSlab.take needs a byte count, got ${length}`,
      );
    }
    if (length > this.#ownAbove) return new Uint8Array(length);
    let chunk = this.#chunk;
    if (chunk === undefined || this.#used + length > chunk.length) {
      chunk = new Uint8Array(this.#chunkSize);
      this.#chunk = chunk;
      this.#used = 0;
    }
    const start = this.#used;
    this.#used = start + length;
    return chunk.subarray(start, start + length);
  }
}
