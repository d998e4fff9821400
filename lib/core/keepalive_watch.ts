/**
 * The client's side of "the server answers keep-alives" (protocol.md
 * section 10): whether the server still holds this client, from
 * authenticated keep-alive answers only. Pure: the caller gives the times
 * (ms) and does the sending.
 *
 * - No answer to 3 keep-alives in a row: the server is unreachable (the
 *   client tells its user and runs the key exchange again). The rule
 *   applies only once this server has answered a keep-alive at least once:
 *   a v1 server never answers, and its members keep working as before.
 * - A NOTICE 1 or 5 is unauthenticated: it triggers a probe (one keep-alive
 *   at once), and the client re-registers only when no authenticated answer
 *   comes within the probe's time. One probe at a time, and none within a
 *   probe interval of an answer (a notice then is probed when that interval
 *   is over), so a flood of spoofed notices costs one keep-alive per
 *   interval at most, and a genuine one is never ignored.
 *
 * @module
 */

/**
 * What to do about an unauthenticated hint (NOTICE 1 or 5): ignore it (a
 * probe is already running or due), or probe after this many ms (0: at
 * once).
 */
export type HintAction = number | "ignore";

/** Keep-alive answer bookkeeping of one client. */
export class KeepaliveWatch {
  #unanswered = 0;
  #answering = false;
  #lastAnswerAt = -Infinity;
  /** A hint is being checked: its probe is due or out. */
  #probeDue = false;
  /** The probe's keep-alive went out and is not answered yet. */
  #probeOut = false;

  /**
   * Creates the bookkeeping of one client.
   * @param missLimit keep-alives in a row without an answer that make the server unreachable
   * @param probeIntervalMs no probe within this long of an answer
   */
  constructor(readonly missLimit = 3, readonly probeIntervalMs = 1000) {}

  /** Whether this server has answered a keep-alive (it implements section 10). */
  get answering(): boolean {
    return this.#answering;
  }

  /**
   * Whether a probe's keep-alive is out and not answered yet (a NOTICE 1
   * or 5 is being checked): messages wait until it is answered. A probe
   * that is only due (within the interval after an answer) holds nothing.
   */
  get probing(): boolean {
    return this.#probeOut;
  }

  /** Whether the server is unreachable: it answers keep-alives, but not the last `missLimit`. */
  get unreachable(): boolean {
    return this.#answering && this.#unanswered >= this.missLimit;
  }

  /** A periodic keep-alive went out. */
  sent(): void {
    this.#unanswered++;
  }

  /** An authenticated keep-alive answer arrived at `nowMs`. */
  answered(nowMs: number): void {
    this.#unanswered = 0;
    this.#answering = true;
    this.#lastAnswerAt = nowMs;
    this.#probeDue = false;
    this.#probeOut = false;
  }

  /**
   * A NOTICE 1 or 5 arrived at `nowMs`: ignore it, or probe after the
   * returned delay (the probe counts as running from now; an answer ends
   * it).
   */
  hint(nowMs: number): HintAction {
    if (this.#probeDue) return "ignore";
    this.#probeDue = true;
    return Math.max(0, this.#lastAnswerAt + this.probeIntervalMs - nowMs);
  }

  /** The probe's keep-alive is going out now. */
  probeSent(): void {
    if (this.#probeDue) this.#probeOut = true;
  }

  /** The probe's time is up: whether it failed (no answer came since it was sent). Ends the probe. */
  probeExpired(): boolean {
    const failed = this.#probeDue;
    this.#probeDue = false;
    this.#probeOut = false;
    return failed;
  }

  /** The client (re-)registered: counting starts again. */
  registered(): void {
    this.#unanswered = 0;
    this.#probeDue = false;
    this.#probeOut = false;
  }

  /** The client now talks to another server key: whether it answers is not known yet. */
  serverChanged(): void {
    this.registered();
    this.#answering = false;
    this.#lastAnswerAt = -Infinity;
  }
}
