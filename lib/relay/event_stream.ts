/**
 * One way to receive what a relay endpoint observes, shared by the relay
 * client and the basic server: listeners (`onEvent`) called synchronously
 * for every event, and async-iterable readers (`events()`, all events or
 * those a filter lets through), each with a bounded queue that drops its
 * oldest events when the reader falls behind, ending when the endpoint
 * stops or the reader's signal aborts.
 *
 * @module
 */

/** Events an endpoint keeps for a slow `events()` reader unless told otherwise. */
export const DEFAULT_EVENT_BUFFER = 10_000;

/** Options of an {@linkcode EventStream}. */
export interface EventStreamOptions {
  /** Events kept for a slow `events()` reader before the oldest are dropped. */
  readonly bufferSize: number;
  /** Aborted when the endpoint has stopped: every `events()` reader then ends, once its queue is empty. */
  readonly stopped: AbortSignal;
}

/** Events waiting for one `events()` reader. */
interface ReaderQueue<T> {
  readonly queue: T[];
  wake: (() => void) | undefined;
}

/**
 * Delivers events to listeners and to async-iterable readers.
 *
 * @example
 * ```ts
 * import { EventStream } from "./event_stream.ts";
 * const stopped = new AbortController();
 * const stream = new EventStream<number>({ bufferSize: 2, stopped: stopped.signal });
 * const odd = stream.events(undefined, (n): n is number => n % 2 === 1);
 * for (const n of [1, 2, 3, 5]) stream.emit(n);
 * stopped.abort();
 * const read: number[] = [];
 * for await (const n of odd) read.push(n);
 * if (read.join() !== "3,5" || stream.dropped !== 1) throw new Error();
 * ```
 */
export class EventStream<T> {
  readonly #listeners = new Set<(event: T) => void>();
  readonly #bufferSize: number;
  readonly #stopped: AbortSignal;
  #dropped = 0;

  /** @throws {RangeError} when `bufferSize` is not a positive integer */
  constructor(options: EventStreamOptions) {
    if (!Number.isSafeInteger(options.bufferSize) || options.bufferSize < 1) {
      throw new RangeError(
        `An event buffer holds a positive whole number of events, not ${options.bufferSize}`,
      );
    }
    this.#bufferSize = options.bufferSize;
    this.#stopped = options.stopped;
  }

  /** Events dropped because an `events()` reader was too slow. */
  get dropped(): number {
    return this.#dropped;
  }

  /** Whether any listener or reader is subscribed (events need not be made otherwise). */
  get listening(): boolean {
    return this.#listeners.size > 0;
  }

  /**
   * Calls `listener` for every event until the returned function is called.
   * The listener must not throw or block.
   */
  onEvent(listener: (event: T) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Events as an async iterable, ending when the endpoint stops or `signal`
   * aborts. It subscribes when called, so no event is missed between this
   * call and the first read. A reader that falls more than `bufferSize`
   * events behind loses the oldest ones (counted in {@linkcode dropped}).
   */
  events(signal?: AbortSignal): AsyncGenerator<T>;
  /** Only the events `accept` lets through (the others are neither queued nor counted), as above. */
  events<S extends T>(
    signal: AbortSignal | undefined,
    accept: (event: T) => event is S,
  ): AsyncGenerator<S>;
  events(
    signal?: AbortSignal,
    accept?: (event: T) => boolean,
  ): AsyncGenerator<T> {
    const reader: ReaderQueue<T> = { queue: [], wake: undefined };
    const unsubscribe = this.onEvent((event) => {
      if (accept && !accept(event)) return;
      if (reader.queue.length >= this.#bufferSize) {
        reader.queue.shift();
        this.#dropped++;
      }
      reader.queue.push(event);
      reader.wake?.();
    });
    const drain = this.#drain(reader, unsubscribe, signal);
    // A generator ended before its first read never runs its `finally`:
    // the reader unsubscribes on return() or throw() all the same.
    const [end, fail] = [drain.return.bind(drain), drain.throw.bind(drain)];
    drain.return = (value) => (unsubscribe(), end(value));
    drain.throw = (error) => (unsubscribe(), fail(error));
    return drain;
  }

  /** Hands `event` to every listener and reader; a listener that throws is ignored. */
  emit(event: T): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // A failing listener must not break the endpoint.
      }
    }
  }

  async *#drain(
    reader: ReaderQueue<T>,
    unsubscribe: () => void,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<T> {
    const stop = () => reader.wake?.();
    signal?.addEventListener("abort", stop);
    this.#stopped.addEventListener("abort", stop);
    try {
      while (true) {
        if (reader.queue.length > 0) {
          yield reader.queue.shift()!;
          continue;
        }
        if (signal?.aborted || this.#stopped.aborted) return;
        await new Promise<void>((resolve) => reader.wake = resolve);
        reader.wake = undefined;
      }
    } finally {
      unsubscribe();
      signal?.removeEventListener("abort", stop);
      this.#stopped.removeEventListener("abort", stop);
    }
  }
}
