/**
 * Stand-ins for the clock and the load probe that the relay takes as
 * options, so a test decides when time passes and when the server is busy
 * instead of depending on the machine's speed.
 *
 * @module
 */
import type { LoadProbe } from "../../lib/core/load.ts";

/** A clock in milliseconds. */
export interface FrozenClock {
  /** The current time: the same until {@linkcode FrozenClock.advance}. */
  readonly now: () => number;
  /** Moves the clock forward by `ms`. */
  readonly advance: (ms: number) => void;
}

/** A clock that stands at the current time and moves only when the test moves it. */
export function frozenClock(): FrozenClock {
  let t = Date.now();
  return { now: () => t, advance: (ms) => t += ms };
}

/**
 * A load probe the test sets by hand: `overloaded` (and `utilization`, which
 * follows it unless set) say how busy the server is; `waits` counts the
 * receive loop's reports.
 */
export class StubLoad implements LoadProbe {
  /** Whether the server reads as overloaded. */
  overloaded = false;
  /** How many times the receive loop reported a wait. */
  waits = 0;
  #utilization: number | undefined;

  /** The loop's utilization: as set, or 1 when overloaded and 0 otherwise. */
  get utilization(): number {
    return this.#utilization ?? (this.overloaded ? 1 : 0);
  }

  set utilization(value: number) {
    this.#utilization = value;
  }

  /** Counts a wait of the receive loop. */
  waited(): void {
    this.waits++;
  }
}
