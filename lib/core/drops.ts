/**
 * Counting dropped datagrams by reason, and logging each (reason, source) at
 * most once per interval, so hostile traffic can neither hide in the
 * counters nor flood the log. Shared by every server and client.
 *
 * @module
 */
import { OncePerInterval } from "./limits.ts";
import type { LogRecord, LogSink } from "../log.ts";

/** Wraps a log sink so that a sink that throws never takes the caller down. */
export function guardedSink(sink: LogSink): LogSink {
  return (record: LogRecord) => {
    try {
      sink(record);
    } catch {
      // A failing log sink must not break the relay.
    }
  };
}

/** Drop counters by reason, with rate-limited `drop` log records. */
export class DropCounter {
  readonly #counts: Record<string, number> = {};
  readonly #gate: OncePerInterval;

  /**
   * @param log where `drop` records go (at level warn)
   * @param now clock in milliseconds
   * @param intervalMs a (reason, source) pair is logged at most once per this
   */
  constructor(
    readonly log: LogSink,
    readonly now: () => number,
    intervalMs = 10_000,
  ) {
    this.#gate = new OncePerInterval(intervalMs);
  }

  /** Counts `n` drops (default 1) without logging them (for common, uninteresting drops). */
  count(reason: string, n = 1): void {
    this.#counts[reason] = (this.#counts[reason] ?? 0) + n;
  }

  /** Counts `n` drops (default 1) and logs them unless this (reason, source) was logged within the interval. */
  drop(
    reason: string,
    source: string,
    details: Record<string, unknown> = {},
    n = 1,
  ): void {
    this.count(reason, n);
    if (this.#gate.allow(`${reason} ${source}`, this.now())) {
      this.log({
        level: "warn",
        event: "drop",
        reason,
        source,
        count: this.#counts[reason],
        ...details,
      });
    }
  }

  /** A copy of the counters. */
  snapshot(): Record<string, number> {
    return { ...this.#counts };
  }
}
