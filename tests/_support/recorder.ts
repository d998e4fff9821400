/**
 * The one way the tests await something: a {@linkcode Recorder} keeps what
 * was observed (client events, log records, datagrams, a process's output
 * lines) and resolves a wait when a matching item arrives, and
 * {@linkcode withTimeout} bounds any other promise. Their timeouts only
 * bound a hung test (the failure then says what was awaited and what was
 * seen); they never measure anything.
 *
 * @module
 */
import { formatAddress, type PeerAddress } from "../../lib/wire/address.ts";

/** How long an in-process test waits for an expected event before it fails. */
export const WAIT_TIMEOUT_MS = 5_000;

/**
 * Races `promise` against a safety timer that rejects with `what`; the timer
 * is always cleared.
 */
export async function withTimeout<T>(
  promise: Promise<T>,
  what: string,
  ms: number,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Options of a wait: from which index on, and the safety timeout. */
export interface WaitOptions {
  /** Only items at this index or later count (see {@linkcode Recorder.mark}). */
  readonly from?: number;
  /** The safety timeout (the recorder's default otherwise). */
  readonly timeoutMs?: number;
}

/** Options of a {@linkcode Recorder}. */
export interface RecorderOptions<T> {
  /** How an item is shown in a failure message. */
  readonly describe?: (item: T) => string;
  /** The safety timeout of a wait ({@linkcode WAIT_TIMEOUT_MS} by default). */
  readonly timeoutMs?: number;
  /** How many of the last items a failure message shows (8 by default). */
  readonly tail?: number;
}

interface Waiter {
  readonly check: () => void;
  readonly fail: (error: Error) => void;
}

/**
 * An append-only list of observed items that a test can await:
 * {@linkcode waitFor} resolves with the first item (from a mark on) that
 * matches, {@linkcode until} once a condition on all of them holds; both
 * reject after a safety timeout, or at once when the source has
 * {@linkcode end}ed.
 */
export class Recorder<T> {
  /** Every item recorded, in order. */
  readonly items: T[] = [];
  /** How an item is shown in a failure message. */
  readonly describe: (item: T) => string;
  readonly #timeoutMs: number;
  readonly #tail: number;
  readonly #waiters = new Set<Waiter>();
  #ended: string | undefined;

  /** @param name what is recorded, for failure messages */
  constructor(readonly name: string, options: RecorderOptions<T> = {}) {
    this.describe = options.describe ?? describeItem;
    this.#timeoutMs = options.timeoutMs ?? WAIT_TIMEOUT_MS;
    this.#tail = options.tail ?? 8;
  }

  /** Appends `item` and wakes the waits it completes. */
  push(item: T): void {
    this.items.push(item);
    for (const waiter of [...this.#waiters]) waiter.check();
  }

  /** Marks the end of the source: waits still pending fail at once. */
  end(reason: string): void {
    this.#ended ??= reason;
    for (const waiter of [...this.#waiters]) {
      waiter.fail(new Error(`${this.name} ended (${reason})`));
    }
  }

  /** Whether the source has ended (see {@linkcode end}). */
  get ended(): boolean {
    return this.#ended !== undefined;
  }

  /** The current length: pass it as `from` to wait only for later items. */
  mark(): number {
    return this.items.length;
  }

  /** Items (from index `from` on) that match. */
  filter(predicate: (item: T) => boolean, from = 0): T[] {
    return this.items.slice(from).filter(predicate);
  }

  /** How many items (from index `from` on) match. */
  count(predicate: (item: T) => boolean, from = 0): number {
    return this.filter(predicate, from).length;
  }

  /**
   * Resolves once `ready()` holds: checked now and after every new item;
   * rejects with `what` after the safety timeout or when the source ends.
   */
  until(
    ready: () => boolean,
    what: string,
    timeoutMs = this.#timeoutMs,
  ): Promise<void> {
    if (ready()) return Promise.resolve();
    if (this.#ended !== undefined) {
      return Promise.reject(
        this.#failure(`${this.name} ended (${this.#ended})`, what),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const settle = () => {
        clearTimeout(timer);
        this.#waiters.delete(waiter);
      };
      const waiter: Waiter = {
        check: () => {
          if (!ready()) return;
          settle();
          resolve();
        },
        fail: (error) => {
          settle();
          reject(this.#failure(error.message, what));
        },
      };
      const timer = setTimeout(
        () => waiter.fail(new Error(`Timed out after ${timeoutMs} ms`)),
        timeoutMs,
      );
      this.#waiters.add(waiter);
    });
  }

  /**
   * Resolves with the first item at index `from` or later that matches, now
   * or when it arrives.
   */
  async waitFor(
    predicate: (item: T) => boolean,
    what: string,
    { from = 0, timeoutMs = this.#timeoutMs }: WaitOptions = {},
  ): Promise<T> {
    let found: T | undefined;
    let index = from;
    await this.until(
      () => {
        for (; index < this.items.length; index++) {
          if (predicate(this.items[index]!)) {
            found = this.items[index];
            return true;
          }
        }
        return false;
      },
      what,
      timeoutMs,
    );
    return found as T;
  }

  /** Waits until `n` items (from `from` on) match; resolves with all matching ones. */
  async waitForCount(
    predicate: (item: T) => boolean,
    n: number,
    what: string,
    { from = 0, timeoutMs = this.#timeoutMs }: WaitOptions = {},
  ): Promise<T[]> {
    let seen = 0;
    let index = from;
    await this.until(
      () => {
        for (; index < this.items.length; index++) {
          if (predicate(this.items[index]!)) seen++;
        }
        return seen >= n;
      },
      `${n} x ${what}`,
      timeoutMs,
    );
    return this.filter(predicate, from);
  }

  #failure(cause: string, what: string): Error {
    const recent = this.items.slice(-this.#tail).map((item) =>
      `  | ${this.describe(item)}`
    ).join("\n");
    return new Error(
      `${cause} waiting for ${what} in ${this.name} (${this.items.length} recorded; the last:\n${
        recent || "  (none)"
      })`,
    );
  }
}

/** A short text for an item: datagrams by size and source, others as JSON. */
export function describeItem(item: unknown): string {
  if (typeof item === "string") return item;
  if (item instanceof Uint8Array) return `${item.length} B`;
  if (item && typeof item === "object" && "data" in item && "from" in item) {
    const d = item as { type?: string; data: Uint8Array; from: unknown };
    const from = typeof d.from === "string"
      ? d.from
      : formatAddress(d.from as PeerAddress);
    return `${d.type ?? "datagram"} ${d.data.length} B from ${from}`;
  }
  return JSON.stringify(
    item,
    (_k, v) =>
      v instanceof Uint8Array
        ? `<${v.length} B>`
        : typeof v === "string" && v.length > 40
        ? `${v.slice(0, 40)}...(${v.length})`
        : v,
  );
}
