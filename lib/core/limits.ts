/**
 * Bounded per-source accounting: token buckets and once-per-interval gates,
 * in maps that never grow past a fixed number of sources. Pure: the caller
 * passes the time in milliseconds.
 *
 * @module
 */

/** A token bucket: `rate` tokens per second, holding at most `burst`. */
export class TokenBucket {
  #tokens: number;
  #updatedMs: number;

  /**
   * @param rate tokens added per second
   * @param burst bucket size (and initial fill)
   * @param nowMs current time
   */
  constructor(
    readonly rate: number,
    readonly burst: number,
    nowMs: number,
  ) {
    this.#tokens = burst;
    this.#updatedMs = nowMs;
  }

  /**
   * Takes `count` tokens (default 1) if that leaves at least `reserve`
   * (default 0) in the bucket. @returns whether they were taken
   */
  take(nowMs: number, count = 1, reserve = 0): boolean {
    const elapsed = Math.max(0, nowMs - this.#updatedMs) / 1000;
    this.#tokens = Math.min(this.burst, this.#tokens + elapsed * this.rate);
    this.#updatedMs = nowMs;
    if (this.#tokens - count < reserve) return false;
    this.#tokens -= count;
    return true;
  }
}

/**
 * A map from source key to value that keeps at most `capacity` entries,
 * forgetting the least recently used one when full.
 */
export class BoundedMap<V> {
  readonly #entries = new Map<string, V>();

  /** @param capacity most entries kept */
  constructor(readonly capacity: number) {}

  /** Returns the value for `key`, creating it with `create` when absent (and marking it recently used). */
  upsert(key: string, create: () => V): V {
    let value = this.#entries.get(key);
    if (value !== undefined) {
      this.#entries.delete(key);
    } else {
      value = create();
      if (this.#entries.size >= this.capacity) {
        const oldest = this.#entries.keys().next().value;
        if (oldest !== undefined) this.#entries.delete(oldest);
      }
    }
    this.#entries.set(key, value);
    return value;
  }

  /** Entries currently held. */
  get size(): number {
    return this.#entries.size;
  }
}

/** Per-source token buckets, bounded in the number of sources. */
export class SourceRateLimiter {
  readonly #buckets: BoundedMap<TokenBucket>;

  /**
   * @param rate tokens per second per source
   * @param burst bucket size per source
   * @param maxSources most sources tracked (least recently seen forgotten)
   */
  constructor(
    readonly rate: number,
    readonly burst: number,
    maxSources = 4096,
  ) {
    this.#buckets = new BoundedMap(maxSources);
  }

  /** Whether `source` may act now (takes a token when it may). */
  allow(source: string, nowMs: number): boolean {
    return this.#buckets
      .upsert(source, () => new TokenBucket(this.rate, this.burst, nowMs))
      .take(nowMs);
  }

  /** Sources currently tracked. */
  get size(): number {
    return this.#buckets.size;
  }
}

/** Lets a (source, kind) pair through at most once per interval; bounded. */
export class OncePerInterval {
  readonly #last: BoundedMap<{ at: number }>;

  /**
   * @param intervalMs the interval
   * @param maxKeys most keys tracked
   */
  constructor(readonly intervalMs: number, maxKeys = 4096) {
    this.#last = new BoundedMap(maxKeys);
  }

  /** Whether `key` may pass now; records the pass. */
  allow(key: string, nowMs: number): boolean {
    const entry = this.#last.upsert(key, () => ({ at: -Infinity }));
    if (nowMs - entry.at < this.intervalMs) return false;
    entry.at = nowMs;
    return true;
  }
}

/**
 * A map from key to value where each entry expires at a time given when it is
 * set; bounded (the oldest entries are forgotten first when full). With a
 * fixed lifetime, insertion order is expiry order, so pruning is amortised
 * O(1).
 */
export class ExpiringMap<V> {
  readonly #entries = new Map<string, { value: V; expiresAt: number }>();

  /** @param capacity most keys remembered */
  constructor(readonly capacity: number) {}

  /** Remembers `value` for `key` until `expiresAtMs`. */
  set(key: string, value: V, expiresAtMs: number, nowMs: number): void {
    this.#prune(nowMs);
    this.#entries.delete(key);
    if (this.#entries.size >= this.capacity) {
      const oldest = this.#entries.keys().next().value;
      if (oldest !== undefined) this.#entries.delete(oldest);
    }
    this.#entries.set(key, { value, expiresAt: expiresAtMs });
  }

  /** The value remembered for `key`, unless absent or expired. */
  get(key: string, nowMs: number): V | undefined {
    this.#prune(nowMs);
    const entry = this.#entries.get(key);
    return entry !== undefined && entry.expiresAt > nowMs
      ? entry.value
      : undefined;
  }

  /** Forgets every key. */
  clear(): void {
    this.#entries.clear();
  }

  /** Keys remembered now (expired ones may linger until the next call). */
  get size(): number {
    return this.#entries.size;
  }

  #prune(nowMs: number): void {
    for (const [key, entry] of this.#entries) {
      if (entry.expiresAt > nowMs) return;
      this.#entries.delete(key);
    }
  }
}
