/**
 * The key exchange of protocol.md section 4 as a state machine with retries:
 * `idle`, then `key` (key requests until a server key the client accepts
 * answers), then `register` (the client key until a WELCOME verifies), back
 * to `idle`. The decisions are the pure functions of handshake_rules.ts;
 * {@linkcode KeyExchange} drives them with the client's transport and timers, over the targets in turn, and as the
 * background re-registration loop of a running client.
 *
 * @module
 */
import { ServerKeyError } from "../../errors.ts";
import { FernetKey } from "../../crypto/fernet.ts";
import { sha256 } from "../../crypto/sha256.ts";
import { TokenGuard } from "../../crypto/token_guard.ts";
import { formatAddress, type PeerAddress } from "../../wire/address.ts";
import { encodeRecords } from "../../wire/tlv.ts";
import {
  closedDuringKeyExchange,
  COOKIE_REUSE_MS,
  judgeKeyAnswer,
  type KeyAnswer,
  keyRequestDatagram,
  noKeyAnswerError,
  noWelcomeError,
  registrationRecords,
  reuseUnconfirmedKey,
} from "./handshake_rules.ts";
import { Awaited, type ClientConfig, type Session } from "./session.ts";
import type { HandshakeProgress } from "./types.ts";

const encoder = new TextEncoder();

/** Where the key exchange is. */
type Phase =
  | { readonly step: "idle" }
  | {
    readonly step: "key";
    readonly answer: Awaited<KeyAnswer | "refused">;
  }
  | {
    readonly step: "register";
    readonly guard: TokenGuard | undefined;
    welcome: Awaited<PeerAddress> | undefined;
    refusedFull: string | undefined;
  };

/** What {@linkcode KeyExchange} tells its client. */
export interface KeyExchangeHooks {
  /** Announces a try. */
  readonly progress: (progress: HandshakeProgress) => void;
  /** The server key is not the last one (or this is the first). */
  readonly onServerChanged: () => void;
  /** A registration asking for group fan-out is about to be sent: the group key starts afresh. */
  readonly onRegistering: () => void;
  /** A WELCOME confirmed the registration; session.guard and address are set. */
  readonly onRegistered: () => void;
}

/** Drives the key exchange; see the module comment. */
export class KeyExchange {
  readonly #session: Session;
  readonly #config: ClientConfig;
  readonly #hooks: KeyExchangeHooks;
  #phase: Phase = { step: "idle" };
  /**
   * The key of the last registration sent and not yet confirmed by a
   * WELCOME. The server may have taken it while its WELCOME was lost or late,
   * so every key exchange offers it again until one is confirmed: to a
   * server that holds it, that is a retransmission (protocol.md section 10),
   * where a new key would need a proof under a key the client cannot know.
   * Only while the server can still hold it ({@linkcode reuseUnconfirmedKey}):
   * after that, a client whose address changed meanwhile would be refused
   * it (`key_in_use`), so a new key is made.
   */
  #unconfirmed: TokenGuard | undefined;
  /** When the registration of {@linkcode #unconfirmed} was last sent (ms). */
  #unconfirmedSentAt = 0;
  /** The last refusal of a server key in this key exchange. */
  #mismatched: string | undefined;
  /** The NOTICE 4 text of the last registration round a too-old cookie ended. */
  #lastRefusedFull: string | undefined;

  /**
   * @param session the client's shared state
   * @param hooks what it tells the client
   */
  constructor(session: Session, hooks: KeyExchangeHooks) {
    this.#session = session;
    this.#config = session.config;
    this.#hooks = hooks;
  }

  /** Whether a key answer is awaited now. */
  get awaitingKey(): boolean {
    return this.#phase.step === "key" && !this.#phase.answer.done;
  }

  /** The key of the registration under way (its WELCOME and GROUP_KEY open under it). */
  get pendingGuard(): TokenGuard | undefined {
    return this.#phase.step === "register" ? this.#phase.guard : undefined;
  }

  /** Whether a WELCOME is awaited now. */
  get awaitingWelcome(): boolean {
    return this.#phase.step === "register" &&
      this.#phase.welcome !== undefined && !this.#phase.welcome.done;
  }

  /** A key answer came while one is awaited. */
  offerKey(answer: KeyAnswer): void {
    if (this.#phase.step !== "key") return;
    const verdict = judgeKeyAnswer(
      answer,
      this.#session.target,
      this.#config,
    );
    if (verdict.action === "accept") return this.#phase.answer.settle(answer);
    this.#mismatched = verdict.refusal;
    if (verdict.action === "refuse") {
      return this.#phase.answer.settle("refused");
    }
    this.#session.drops.drop(
      "fingerprint_mismatch",
      formatAddress(answer.from),
      {
        fingerprint: answer.serverKey.fingerprint,
      },
    );
  }

  /** A verified WELCOME named this client's address. */
  confirmWelcome(address: PeerAddress): void {
    if (this.#phase.step === "register") this.#phase.welcome?.settle(address);
  }

  /** A NOTICE 4 (server full) came: remembered while a WELCOME is awaited. */
  noteServerFull(text: string): void {
    if (this.awaitingWelcome && this.#phase.step === "register") {
      this.#phase.refusedFull = text;
    }
  }

  /** The key exchange with each target in turn, from the current one, until one succeeds. */
  async runAnyTarget(): Promise<void> {
    for (let tried = 1;; tried++) {
      try {
        return await this.run();
      } catch (error) {
        if (
          tried >= this.#session.targets.length || this.#session.closed
        ) throw error;
        this.#session.nextTarget((error as Error).message);
      }
    }
  }

  /**
   * Registers again (a running client lost its registration), retrying with
   * doubling delays up to `maxMs` until it succeeds or the client closes.
   * @returns undefined when registered or closed; the error when every target refused its server key (trying again cannot help)
   */
  async runUntilRegistered(): Promise<ServerKeyError | undefined> {
    const session = this.#session;
    let delay = this.#config.retryInitialMs;
    /** Key exchanges in a row that met only refused server keys. */
    let refused = 0;
    while (!session.closed) {
      try {
        await this.run();
        return undefined;
      } catch (error) {
        if (session.closed) return undefined;
        if (!(error instanceof ServerKeyError)) refused = 0;
        else if (++refused >= session.targets.length) return error;
        session.log({
          level: "warn",
          event: "reconnect_failed",
          error: (error as Error).message,
        });
        if (session.targets.length > 1) {
          // Another relay of the group may answer at once; wait only
          // after a whole round of them.
          session.nextTarget((error as Error).message);
          if (session.target !== session.targets[0]) continue;
        }
        await session.sleep(delay);
        delay = Math.min(delay * 2, this.#config.retryMaxMs);
      }
    }
    return undefined;
  }

  /**
   * One key exchange with the current target: key request until a server
   * key it accepts answers, then the registration until a WELCOME verifies;
   * from the key request again (a bounded number of times) when the cookie
   * grows too old. Each step is tried `attempts` times with doubling delays.
   * @throws {HandshakeError} (or {@linkcode ServerKeyError}) when it fails or the client closes
   */
  async run(): Promise<void> {
    this.#mismatched = undefined;
    this.#lastRefusedFull = undefined;
    try {
      for (
        let restarts = 0;
        restarts <= this.#config.retryAttempts;
        restarts++
      ) {
        const answer = await this.#askKey();
        if (await this.#register(answer)) return;
      }
      // The last round's NOTICE 4, if the server said it is full.
      throw noWelcomeError(
        this.#session.serverAddress,
        this.#config.retryAttempts,
        this.#lastRefusedFull,
      );
    } finally {
      this.#phase = { step: "idle" };
    }
  }

  /** Step `key`: the accepted answer. */
  async #askKey(): Promise<KeyAnswer> {
    const session = this.#session;
    const { retryAttempts: attempts, retryInitialMs: initialMs } = this.#config;
    let delay = initialMs;
    for (let i = 0; i < attempts; i++) {
      this.#throwIfClosed();
      this.#hooks.progress({
        step: "key",
        server: formatAddress(session.target),
        attempt: i + 1,
        attempts,
        waitMs: delay,
      });
      const answer = new Awaited<KeyAnswer | "refused">(
        delay,
        session.closedSignal,
      );
      this.#phase = { step: "key", answer };
      void session.sendDatagram(
        keyRequestDatagram(session.config.mtu),
        session.target,
      );
      const result = await answer.promise;
      this.#phase = { step: "idle" };
      if (result === "refused") break;
      if (result) return this.#accept(result);
      delay *= 2;
    }
    this.#throwIfClosed();
    if (this.#mismatched) throw new ServerKeyError(this.#mismatched);
    throw noKeyAnswerError(session.target, attempts, initialMs);
  }

  /** Takes an accepted key answer as the server's; a changed key is said loudly, once per change. */
  #accept(answer: KeyAnswer): KeyAnswer {
    const session = this.#session;
    const previous = session.serverKey?.fingerprint;
    const fingerprint = answer.serverKey.fingerprint;
    if (fingerprint !== previous) this.#hooks.onServerChanged();
    if (previous !== undefined && fingerprint !== previous) {
      // Nothing pinned it: a pin or a known-servers record refuses a change.
      const server = formatAddress(answer.from);
      session.log({
        level: "warn",
        event: "server_key_changed",
        server,
        previous,
        fingerprint,
        message:
          `the server's key changed from ${previous} to ${fingerprint}: the server restarted without --key-file, or something else answers at ${server}; pin the key (--fingerprint, or a known-servers file) to refuse a change`,
      });
    }
    session.server = answer.from;
    session.serverKey = answer.serverKey;
    return answer;
  }

  /**
   * Step `register`: sends the registration until a WELCOME verifies.
   * @returns true when registered, false when the cookie grew too old first
   */
  async #register(answer: KeyAnswer): Promise<boolean> {
    const session = this.#session;
    const { retryAttempts: attempts, retryInitialMs: initialMs } = this.#config;
    const cookieReceivedAt = session.now();
    const { guard, stream } = await this.#registration(answer);
    const phase = {
      step: "register" as const,
      guard,
      welcome: undefined as Awaited<PeerAddress> | undefined,
      refusedFull: undefined as string | undefined,
    };
    this.#phase = phase;
    let delay = initialMs;
    for (let i = 0; i < attempts; i++) {
      this.#throwIfClosed();
      // The cookie is too old to register with: start again from step 1.
      if (session.now() - cookieReceivedAt > COOKIE_REUSE_MS) {
        this.#lastRefusedFull = phase.refusedFull;
        return false;
      }
      this.#hooks.progress({
        step: "register",
        server: session.serverAddress,
        fingerprint: answer.serverKey.fingerprint,
        attempt: i + 1,
        attempts,
        waitMs: delay,
      });
      await session.sendStream(stream);
      this.#unconfirmedSentAt = session.now();
      phase.welcome = new Awaited<PeerAddress>(delay, session.closedSignal);
      const address = await phase.welcome.promise;
      if (address) {
        session.guard = guard;
        this.#unconfirmed = undefined;
        session.address = address;
        this.#phase = { step: "idle" };
        this.#hooks.onRegistered();
        return true;
      }
      delay *= 2;
    }
    this.#throwIfClosed();
    throw noWelcomeError(session.serverAddress, attempts, phase.refusedFull);
  }

  /**
   * The registration stream and the key it offers. Encrypted once, resent as
   * the same bytes on every try: the server takes a cookie for one key
   * record only (section 10).
   */
  async #registration(
    answer: KeyAnswer,
  ): Promise<{ guard: TokenGuard | undefined; stream: Uint8Array }> {
    const session = this.#session;
    let keyValue: Uint8Array;
    let guard: TokenGuard | undefined;
    if (session.profile === "hybrid") {
      if (
        this.#unconfirmed &&
        !reuseUnconfirmedKey(this.#unconfirmedSentAt, session.now())
      ) {
        this.#unconfirmed[Symbol.dispose]();
        this.#unconfirmed = undefined;
      }
      guard = this.#unconfirmed ??= new TokenGuard(
        await FernetKey.generate(this.#config.fernetBackend),
        session.marker,
        this.#config.tokenMaxAgeSeconds,
      );
      keyValue = await answer.serverKey.encrypt(encoder.encode(guard.key.text));
    } else {
      keyValue = encoder.encode(session.rsaKey!.publicKey.pem);
    }
    // The server may still hold this client under its current key (a
    // spoofed NOTICE 1, a lost keep-alive): prove that key, so the server
    // takes the new one as a rekey (protocol.md section 10).
    const proof = await session.guard?.seal(
      sha256(keyValue).subarray(0, 16),
      session.now(),
    );
    const groupCapable = this.#config.group;
    // A new registration starts from no group key.
    if (groupCapable) this.#hooks.onRegistering();
    const records = registrationRecords(answer.cookie, {
      profile: session.profile,
      keyValue,
      proof,
      groupCapable,
    });
    return { guard, stream: encodeRecords(records) };
  }

  #throwIfClosed(): void {
    if (this.#session.closed) {
      throw closedDuringKeyExchange();
    }
  }
}
