/**
 * How busy the relay's event loop is, from the waits of its receive loop:
 * the share of wall time in a window that it spent not waiting for a
 * datagram. Pure: the caller gives the times (a monotonic clock, in ms).
 *
 * The server uses it to shed key exchanges while the loop is nearly
 * saturated, so that relaying for registered members keeps up during a
 * registration flood (PERFORMANCE.md). The measure is wall time, so a loop
 * that is ready to run but waits for a core counts as busy, as it should:
 * either way datagrams queue up in the socket.
 *
 * @module
 */

/** What the server asks of a load measure ({@linkcode LoadMeter}, or a stub in tests). */
export interface LoadProbe {
  /** The receive loop waited for input from `from` to `to` (ms, monotonic). */
  waited(from: number, to: number): void;
  /** Share of the last window the loop spent working (0-1). */
  readonly utilization: number;
  /** Whether the loop is too busy to take on key exchanges. */
  readonly overloaded: boolean;
}

/** Options of {@linkcode LoadMeter}. */
export interface LoadMeterOptions {
  /** Length of a measuring window in ms. Default 100. */
  readonly windowMs?: number;
  /** Utilization (0-1) from which the loop counts as overloaded. Default 0.9. */
  readonly overloadedAt?: number;
}

/** The event loop's utilization over the last whole window. */
export class LoadMeter implements LoadProbe {
  /** Length of a measuring window in ms. */
  readonly windowMs: number;
  /** Utilization from which {@linkcode overloaded} holds. */
  readonly overloadedAt: number;
  #windowStart: number | undefined;
  #waited = 0;
  #utilization = 0;

  /**
   * Creates a meter; the first window opens at the first report.
   * @throws {RangeError} for a window that is not positive or a threshold outside (0, 1]
   */
  constructor(options: LoadMeterOptions = {}) {
    const windowMs = options.windowMs ?? 100;
    const overloadedAt = options.overloadedAt ?? 0.9;
    if (!(windowMs > 0) || !Number.isFinite(windowMs)) {
      throw new RangeError(`LoadMeter window must be > 0 ms, not ${windowMs}`);
    }
    if (!(overloadedAt > 0 && overloadedAt <= 1)) {
      throw new RangeError(
        `LoadMeter threshold must be in (0, 1], not ${overloadedAt}`,
      );
    }
    this.windowMs = windowMs;
    this.overloadedAt = overloadedAt;
  }

  /**
   * Reports that the loop waited for input from `from` to `to` (ms). A
   * window closes at the first report past its end; its utilization is
   * 1 - waited / (its length).
   */
  waited(from: number, to: number): void {
    this.#windowStart ??= from;
    this.#waited += Math.max(0, to - from);
    const span = to - this.#windowStart;
    if (span >= this.windowMs) {
      this.#utilization = Math.min(1, Math.max(0, 1 - this.#waited / span));
      this.#windowStart = to;
      this.#waited = 0;
    }
  }

  /** Utilization (0-1) of the last whole window; 0 before the first. */
  get utilization(): number {
    return this.#utilization;
  }

  /** Whether the last whole window was at or above the threshold. */
  get overloaded(): boolean {
    return this.#utilization >= this.overloadedAt;
  }
}
