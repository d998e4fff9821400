/**
 * One way to receive what a relay endpoint observes, shared by its two
 * shapes: listeners (`onEvent`) called synchronously for every event, and
 * async-iterable readers (`events()`), each with a bounded queue that drops
 * its oldest events when the reader falls behind. The shape of
 * `RelayClient.onEvent` and `RelayClient.events`, for the basic profile.
 *
 * @module
 */

/** Options of an {@linkcode EventStream}. */
export interface EventStreamOptions {
  /** Events kept for a slow `events()` reader before the oldest are dropped. */
  readonly bufferSize: number;
  /** Aborted when the endpoint has stopped: every `events()` reader then ends, once its queue is empty. */
  readonly stopped: AbortSignal;
}

/** Events waiting for one `events()` reader. */
interface Inbox<T> {
  readonly queue: T[];
  wake: (() => void) | undefined;
}

/** Delivers events to listeners and to async-iterable readers. */
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
  events(signal?: AbortSignal): AsyncGenerator<T> {
    const inbox: Inbox<T> = { queue: [], wake: undefined };
    const unsubscribe = this.onEvent((event) => {
      if (inbox.queue.length >= this.#bufferSize) {
        inbox.queue.shift();
        this.#dropped++;
      }
      inbox.queue.push(event);
      inbox.wake?.();
    });
    return this.#drain(inbox, unsubscribe, signal);
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
    inbox: Inbox<T>,
    unsubscribe: () => void,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<T> {
    const stop = () => inbox.wake?.();
    signal?.addEventListener("abort", stop);
    this.#stopped.addEventListener("abort", stop);
    try {
      while (true) {
        if (inbox.queue.length > 0) {
          yield inbox.queue.shift()!;
          continue;
        }
        if (signal?.aborted || this.#stopped.aborted) return;
        await new Promise<void>((resolve) => inbox.wake = resolve);
        inbox.wake = undefined;
      }
    } finally {
      unsubscribe();
      signal?.removeEventListener("abort", stop);
      this.#stopped.removeEventListener("abort", stop);
    }
  }
}
