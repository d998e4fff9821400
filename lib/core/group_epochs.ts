/**
 * The server's epoch decisions for group fan-out (protocol.md section 9, and
 * PROTOCOL.md "Group fan-out"): who holds the current epoch's key, when a new
 * epoch must start, and whether a message may go out under the current key.
 * Pure: no keys, no sockets, no timers (the caller passes the time and runs
 * the rekey this decides on).
 *
 * - A group-capable member that joins waits for the next epoch; until then it
 *   is served per recipient.
 * - A holder that leaves taints the current epoch: from that moment no
 *   message goes out under its key (everyone is served per recipient) until
 *   the next epoch.
 * - Changes are batched: a new epoch starts at once when the last one began
 *   at least `batchMs` ago, else at `last + batchMs`, for every change in
 *   between.
 *
 * @module
 */

/** Default batching interval of epoch changes (protocol.md section 9: within 1 s). */
export const EPOCH_BATCH_MS = 1000;

/** A rekey to run: the new epoch and the members to hand its key to. */
export interface PlannedEpoch<M> {
  /** The new epoch number (u32, wrapping past 4294967295 to 1). */
  readonly epoch: number;
  /** Every group-capable member at planning time. */
  readonly holders: ReadonlySet<M>;
}

/** Membership and epoch state of one group. */
export class GroupEpochs<M> {
  readonly #capable = new Set<M>();
  #holders = new Set<M>();
  #epoch = 0;
  #tainted = false;
  #lastRekeyAt = -Infinity;
  #dueAt: number | undefined;
  #planned: PlannedEpoch<M> | undefined;

  /**
   * @param batchMs changes within this interval of the last rekey share the next epoch
   * @param startEpoch the epoch before the first rekey (tests of the wrap)
   */
  constructor(readonly batchMs = EPOCH_BATCH_MS, startEpoch = 0) {
    this.#epoch = startEpoch;
  }

  /** The current epoch (0 before the first rekey). */
  get epoch(): number {
    return this.#epoch;
  }

  /** Group-capable members. */
  get capableCount(): number {
    return this.#capable.size;
  }

  /** Members that hold the current epoch's key. */
  get holders(): ReadonlySet<M> {
    return this.#holders;
  }

  /** When the next rekey is due (ms), or undefined when none is. */
  get dueAt(): number | undefined {
    return this.#dueAt;
  }

  /** Whether `member` is group-capable. */
  isCapable(member: M): boolean {
    return this.#capable.has(member);
  }

  /**
   * Whether messages may go out under the current epoch's key now: some
   * member holds it, no holder has left since it began, and no rekey is due.
   */
  canFanOut(nowMs: number): boolean {
    return this.#holders.size > 0 && !this.#tainted &&
      !(this.#dueAt !== undefined && nowMs >= this.#dueAt);
  }

  /**
   * A member became group-capable. Returns when the rekey that hands it a
   * key is due, or undefined when it was capable already.
   */
  join(member: M, nowMs: number): number | undefined {
    if (this.#capable.has(member)) return undefined;
    this.#capable.add(member);
    return this.#change(nowMs);
  }

  /**
   * A member left (or stopped being capable). Returns when the next rekey is
   * due, or undefined when the member was not capable (nothing changes).
   */
  leave(member: M, nowMs: number): number | undefined {
    if (!this.#capable.delete(member)) return undefined;
    if (this.#holders.delete(member)) this.#tainted = true;
    return this.#change(nowMs);
  }

  /**
   * Starts a due rekey: the epoch to make and whom to give its key. The
   * caller hands out the keys and then calls {@linkcode commit}. Returns
   * undefined when no rekey is due yet or one is already planned.
   */
  plan(nowMs: number): PlannedEpoch<M> | undefined {
    if (
      this.#planned !== undefined || this.#dueAt === undefined ||
      nowMs < this.#dueAt
    ) return undefined;
    this.#dueAt = undefined;
    this.#lastRekeyAt = nowMs;
    const epoch = this.#epoch >= 0xffffffff ? 1 : this.#epoch + 1;
    this.#planned = { epoch, holders: new Set(this.#capable) };
    return this.#planned;
  }

  /**
   * Makes the planned epoch current once every holder was sent its key.
   * Planned holders that left meanwhile were given the key: the new epoch is
   * tainted at once and another rekey is scheduled. Returns when the next
   * rekey is due, if one is.
   */
  commit(planned: PlannedEpoch<M>, nowMs: number): number | undefined {
    if (this.#planned !== planned) {
      throw new RangeError(
        `GroupEpochs.commit: epoch ${planned.epoch} is not the planned one`,
      );
    }
    this.#planned = undefined;
    this.#epoch = planned.epoch;
    this.#holders = new Set(
      [...planned.holders].filter((m) => this.#capable.has(m)),
    );
    this.#tainted = this.#holders.size < planned.holders.size;
    if (this.#tainted) return this.#change(nowMs);
    return this.#dueAt;
  }

  /** Whether `member` holds the current epoch's key. */
  holds(member: M): boolean {
    return this.#holders.has(member);
  }

  #change(nowMs: number): number {
    this.#dueAt ??= Math.max(nowMs, this.#lastRekeyAt + this.batchMs);
    return this.#dueAt;
  }
}
