/**
 * A relay client's event fan-out: listeners called for every event, and
 * bounded async iterators over the events (all of them, received messages
 * only, or status events only) that end when the client closes or the
 * reader's signal aborts.
 *
 * @module
 */
import type { ClientEvent } from "./types.ts";

/** Events waiting for one iterator's reader. */
interface EventQueue {
  readonly queue: ClientEvent[];
  wake: (() => void) | undefined;
}

/** Listeners and iterators of one client's events. */
export class Inbox {
  readonly #listeners = new Set<(event: ClientEvent) => void>();
  readonly #bufferSize: number;
  readonly #closed: AbortSignal;
  readonly #onDropped: () => void;

  /**
   * @param bufferSize events kept for a slow iterator before the oldest are dropped
   * @param closed aborted when the client closes: every iterator ends then
   * @param onDropped called for every event an iterator dropped
   */
  constructor(bufferSize: number, closed: AbortSignal, onDropped: () => void) {
    this.#bufferSize = bufferSize;
    this.#closed = closed;
    this.#onDropped = onDropped;
  }

  /** Hands `event` to every listener; a failing listener does not stop the others. */
  emit(event: ClientEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // A failing listener must not break the client.
      }
    }
  }

  /** Calls `listener` for every event until the returned function is called. */
  listen(listener: (event: ClientEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * The events `accept` lets through, as an async iterable that subscribes at
   * once and ends when the client closes or `signal` aborts.
   */
  iterate<T extends ClientEvent>(
    accept: (event: ClientEvent) => event is T,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<T> {
    const waiting: EventQueue = { queue: [], wake: undefined };
    const unsubscribe = this.listen((event) => {
      if (!accept(event)) return;
      if (waiting.queue.length >= this.#bufferSize) {
        waiting.queue.shift();
        this.#onDropped();
      }
      waiting.queue.push(event);
      waiting.wake?.();
    });
    return this.#drain(waiting, unsubscribe, signal) as AsyncGenerator<T>;
  }

  async *#drain(
    waiting: EventQueue,
    unsubscribe: () => void,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<ClientEvent> {
    const stop = () => waiting.wake?.();
    signal?.addEventListener("abort", stop);
    this.#closed.addEventListener("abort", stop);
    try {
      while (true) {
        const event = waiting.queue.shift();
        if (event) {
          yield event;
          continue;
        }
        if (signal?.aborted || this.#closed.aborted) return;
        await new Promise<void>((resolve) => waiting.wake = resolve);
        waiting.wake = undefined;
      }
    } finally {
      unsubscribe();
      signal?.removeEventListener("abort", stop);
      this.#closed.removeEventListener("abort", stop);
    }
  }
}
