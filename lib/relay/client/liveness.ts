/**
 * Whether a relay client's server still holds it (protocol.md section 10):
 * the periodic keep-alive, the probe sent on an unauthenticated loss hint
 * (NOTICE 1 or 5), the server's authenticated keep-alive answers, the
 * re-registration when the server stops answering, and
 * {@linkcode Liveness.confirm} (an answer to a keep-alive sent after the
 * messages so far).
 *
 * @module
 */
import { KeepaliveWatch } from "../../core/keepalive_watch.ts";
import { encodeToServer } from "../../wire/message_codec.ts";
import { encodeRecords } from "../../wire/tlv.ts";
import type { Outbox, SentLedger } from "./outbox.ts";
import { Awaited, type Session } from "./session.ts";
import type { HandshakeProgress } from "./types.ts";

const RSA_KEEPALIVE = new Uint8Array(4);
const EMPTY = new Uint8Array(0);

/** What {@linkcode Liveness} works with besides the session. */
export interface LivenessParts {
  readonly outbox: Outbox;
  readonly ledger: SentLedger;
  /** Announces a try of {@linkcode Liveness.confirm}. */
  readonly progress: (progress: HandshakeProgress) => void;
  /** The server lost this client: register again. */
  readonly reconnect: (reason: string) => void;
}

/** Keep-alives, probes and their answers; see the module comment. */
export class Liveness {
  /** What the keep-alive answers say about the server. */
  readonly watch = new KeepaliveWatch();
  readonly #session: Session;
  readonly #options: LivenessParts;
  #interval: ReturnType<typeof setInterval> | undefined;
  #probeTimer: ReturnType<typeof setTimeout> | undefined;
  /** Called at every authenticated keep-alive answer ({@linkcode confirm}). */
  readonly #answerListeners = new Set<() => void>();

  /**
   * @param session the client's shared state
   * @param options the outbox, the ledger and hooks
   */
  constructor(session: Session, options: LivenessParts) {
    this.#session = session;
    this.#options = options;
  }

  /** Starts the periodic keep-alive. */
  start(): void {
    this.#interval ??= setInterval(
      () => void this.#tick(),
      this.#session.config.keepaliveMs,
    );
  }

  /** Stops every timer. */
  stop(): void {
    clearInterval(this.#interval);
    this.clearProbe();
  }

  /** Drops a probe's timer (the client registers again or closes). */
  clearProbe(): void {
    clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
  }

  /**
   * The periodic keep-alive. A server that answers keep-alives (section 10)
   * but left the last 3 unanswered is unreachable: the client says so and
   * runs the key exchange again.
   */
  async #tick(): Promise<void> {
    const session = this.#session;
    if (!session.ready) return;
    if (this.watch.unreachable) {
      session.log({
        level: "warn",
        event: "server_unreachable",
        server: session.serverAddress,
        missed: this.watch.missLimit,
      });
      const why =
        `server unreachable: no answer to ${this.watch.missLimit} keep-alives in a row`;
      // Another relay of the group can take the member at once: the one that
      // stopped answering is the last to try again.
      session.nextTarget(why);
      this.#options.reconnect(why);
      return;
    }
    this.watch.sent();
    await this.keepaliveNow();
  }

  /** Sends one keep-alive (hybrid: a token of the empty plaintext). */
  async keepaliveNow(): Promise<void> {
    const session = this.#session;
    const hybrid = session.profile === "hybrid";
    if (hybrid) this.#options.ledger.keepaliveSent();
    const value = hybrid
      ? await session.guard!.seal(EMPTY, session.now())
      : RSA_KEEPALIVE;
    if (!session.ready) return;
    await session.sendStream(
      encodeRecords(encodeToServer([{ kind: "keepalive", value }])),
    );
  }

  /**
   * Asks the server again for the current group key (a GROUP_KEY was
   * missed): an authenticated keep-alive and GROUP_CAPABLE in one stream
   * (PROTOCOL.md "Group fan-out").
   */
  async askGroupKeyAgain(): Promise<void> {
    const session = this.#session;
    if (!session.ready || !session.guard) return;
    const keepalive = await session.guard.seal(EMPTY, session.now());
    session.log({ level: "info", event: "group_key_asked_again" });
    await session.sendStream(
      encodeRecords(encodeToServer([
        { kind: "keepalive", value: keepalive },
        { kind: "group_capable", value: new Uint8Array(0) },
      ])),
    );
  }

  /**
   * An unauthenticated hint (NOTICE 1 or 5) that the server lost this
   * client: a hybrid client probes with a keep-alive and re-registers only
   * when no authenticated answer comes within the probe's time (section
   * 10); an RSA-profile client, whose keep-alives are not answered,
   * re-registers at once.
   */
  onLossHint(reason: string): void {
    const session = this.#session;
    if (session.profile !== "hybrid") return this.#options.reconnect(reason);
    const delay = this.watch.hint(session.now());
    if (delay === "ignore") {
      session.drops.count("notice_unconfirmed");
      return;
    }
    const probe = () => {
      this.#probeTimer = setTimeout(() => {
        this.#probeTimer = undefined;
        if (!this.watch.probeExpired() || !session.ready) return;
        // As after unanswered keep-alives: the relay that left the probe
        // unanswered is the last to be tried again.
        session.nextTarget(reason);
        this.#options.reconnect(reason);
      }, session.config.probeTimeoutMs);
      this.watch.probeSent();
      void this.keepaliveNow();
    };
    if (delay === 0) return probe();
    // An answer came within the probe interval: probe when it is over,
    // unless another answer ends the probe first (it clears this timer).
    this.#probeTimer = setTimeout(probe, delay);
  }

  /** The server's KEEPALIVE answer: counts only when its token passes every check under this client's key. */
  async onKeepaliveAnswer(value: Uint8Array): Promise<void> {
    const session = this.#session;
    if (session.profile !== "hybrid" || !session.guard || !session.ready) {
      session.drops.count("unexpected_keepalive");
      return;
    }
    const opened = await session.guard.open(value, session.now());
    if (!opened.ok) {
      session.drops.drop(`keepalive_${opened.reason}`, session.serverAddress);
    } else if (opened.plaintext.length !== 0) {
      session.drops.drop("keepalive_not_empty", session.serverAddress);
    } else {
      session.counters.keepaliveAnswers++;
      session.log({ level: "debug", event: "keepalive_answered" });
      this.watch.answered(session.now()); // ends a probe too
      this.clearProbe();
      this.#options.ledger.answered();
      this.#options.outbox.flush(); // what was held during a probe
      // Listeners (confirm) see the flush under way and wait for it.
      for (const listener of [...this.#answerListeners]) listener();
    }
  }

  /**
   * Resolves true at the server's authenticated answer to a keep-alive sent
   * after the messages so far; see `RelayClient.confirm`.
   */
  async confirm(): Promise<boolean> {
    const session = this.#session;
    const { outbox, ledger } = this.#options;
    const { retryAttempts, retryInitialMs } = session.config;
    if (session.profile !== "hybrid") return false;
    const registration = session.counters.registrations;
    const unchanged = () =>
      session.ready && session.counters.registrations === registration;
    /** The answer count that proves a keep-alive sent after the messages was answered. */
    let target: number | undefined;
    let delay = retryInitialMs;
    for (let i = 0; i < retryAttempts; i++) {
      // Messages held in the outbox (a probe is out) go first: the
      // keep-alive must follow them.
      await outbox.settled();
      if (!unchanged()) return false;
      this.#options.progress({
        step: "confirm",
        server: session.serverAddress,
        attempt: i + 1,
        attempts: retryAttempts,
        waitMs: delay,
      });
      const held = outbox.size > 0;
      if (!held && target === undefined) target = ledger.answerTargetForNext();
      const answered = new Awaited<true>(delay, session.closedSignal);
      const listener = () => {
        if (held || ledger.answersSeen >= target!) answered.settle(true);
      };
      this.#answerListeners.add(listener);
      answered.promise.finally(() => this.#answerListeners.delete(listener));
      // While messages are held, the probe's own answer releases them.
      if (!held) await this.keepaliveNow();
      if (await answered.promise && !held) return unchanged();
      if (!held) delay *= 2;
    }
    return false;
  }
}
