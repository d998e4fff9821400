/**
 * The key exchange of protocol.md section 4 as a state machine with retries:
 * `idle`, then `key` (key requests until a server key the client accepts
 * answers), then `register` (the client key until a WELCOME verifies), back
 * to `idle`. The decisions are pure functions (which key answer to take,
 * what the key request and registration hold, when a cookie is too old, what
 * to say when nobody answers); {@linkcode KeyExchange} drives them with the
 * client's transport and timers, over the targets in turn, and as the
 * background re-registration loop of a running client.
 *
 * @module
 */
import { HandshakeError, ServerKeyError } from "../../errors.ts";
import { type FernetBackend, FernetKey } from "../../crypto/fernet.ts";
import type { RsaPublicKey } from "../../crypto/rsa.ts";
import { sha256 } from "../../crypto/sha256.ts";
import { TokenGuard } from "../../crypto/token_guard.ts";
import {
  formatAddress,
  isMulticastIPv4,
  type PeerAddress,
} from "../../wire/address.ts";
import {
  encodeRecords,
  RecordType,
  TLV_HEADER_SIZE,
  type TlvRecord,
} from "../../wire/tlv.ts";
import { Awaited, type Session } from "./session.ts";
import type { HandshakeProgress } from "./types.ts";

/** A cookie older than this is not reused for a registration (protocol.md section 4). */
export const COOKIE_REUSE_MS = 50_000;

const encoder = new TextEncoder();

/** A server's answer to a key request. */
export interface KeyAnswer {
  readonly cookie: Uint8Array;
  readonly serverKey: RsaPublicKey;
  readonly from: PeerAddress;
}

/** What to do with a key answer: take it, drop it and wait on, or fail the step now. */
export type KeyVerdict =
  | { readonly action: "accept" }
  | { readonly action: "skip"; readonly refusal: string }
  | { readonly action: "refuse"; readonly refusal: string };

/** How the client judges server keys. */
export interface KeyPolicy {
  /** Pinned fingerprint `SHA256:...`. */
  readonly pinned: string | undefined;
  /** Checks a key the pin did not decide; returns the refusal, or undefined. */
  readonly verifyKey:
    | ((server: string, fingerprint: string) => string | undefined)
    | undefined;
}

/**
 * Judges a key answer (pure): accepted, or refused with a one-line reason.
 * A refused answer from the unicast target itself fails the step at once
 * (nothing else will answer for it); under multicast another member of the
 * group may still answer with the pinned key, so it is skipped.
 */
export function judgeKeyAnswer(
  answer: KeyAnswer,
  target: PeerAddress,
  policy: KeyPolicy,
): KeyVerdict {
  const fingerprint = answer.serverKey.fingerprint;
  const from = formatAddress(answer.from);
  let refusal: string | undefined;
  if (policy.pinned === undefined) {
    refusal = policy.verifyKey?.(from, fingerprint);
  } else if (fingerprint !== policy.pinned) {
    refusal =
      `The server at ${from} answered with key ${fingerprint}, which does not match the pinned fingerprint ${policy.pinned}: check --fingerprint, or whether something else answers on that address`;
  }
  if (refusal === undefined) return { action: "accept" };
  const fromTarget = !isMulticastIPv4(target.hostname) &&
    from === formatAddress(target);
  return { action: fromTarget ? "refuse" : "skip", refusal };
}

/** The key request (pure): one KEY_REQUEST record padded to the MTU. */
export function keyRequestDatagram(mtu: number): Uint8Array {
  const request = new Uint8Array(Math.max(mtu, TLV_HEADER_SIZE));
  request.set(
    encodeRecords([{
      type: RecordType.KEY_REQUEST,
      value: new Uint8Array(request.length - TLV_HEADER_SIZE),
    }]),
  );
  return request;
}

/** The error when no key answer came (pure). */
export function noKeyAnswerError(
  target: PeerAddress,
  attempts: number,
  initialMs: number,
): HandshakeError {
  const total = Number((initialMs * (2 ** attempts - 1) / 1000).toFixed(1));
  return new HandshakeError(
    `No answer to the key request sent to ${
      formatAddress(target)
    } after ${attempts} tries over ${total} s: check that the server runs, and --server/--group/--port (use --server HOST:PORT where multicast does not route)`,
  );
}

/** The error when the server sent its key but no WELCOME verified (pure). */
export function noWelcomeError(
  server: string,
  attempts: number,
  refusedFull: string | undefined,
): HandshakeError {
  if (refusedFull !== undefined) {
    return new HandshakeError(
      `The server at ${server} is full (NOTICE 4: "${refusedFull}"): it has as many members as it takes in all, or from this client's IP address; try again later, or ask its operator to raise its member limits`,
    );
  }
  return new HandshakeError(
    `The server at ${server} sent its key but no valid WELCOME after ${attempts} tries: check that client and server clocks agree within 60 s and that the server is not full or rate-limiting this address`,
  );
}

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

/** What {@linkcode KeyExchange} needs besides the session. */
export interface KeyExchangeOptions {
  readonly policy: KeyPolicy;
  readonly attempts: number;
  readonly initialMs: number;
  readonly maxMs: number;
  readonly tokenMaxAgeSeconds: number;
  readonly fernetBackend: FernetBackend | undefined;
  /** Whether the registration asks for group fan-out. */
  readonly groupCapable: boolean;
  /** Announces a try. */
  readonly progress: (progress: HandshakeProgress) => void;
  /** The server key is not the last one (or this is the first). */
  readonly onServerChanged: () => void;
  /** A registration is about to be sent: the group key starts afresh. */
  readonly onRegistering: () => void;
  /** A WELCOME confirmed the registration; session.guard and address are set. */
  readonly onRegistered: () => void;
}

/** Drives the key exchange; see the module comment. */
export class KeyExchange {
  readonly #session: Session;
  readonly #options: KeyExchangeOptions;
  #phase: Phase = { step: "idle" };
  /**
   * The key of the last registration sent and not yet confirmed by a
   * WELCOME. The server may have taken it while its WELCOME was lost or late,
   * so every key exchange offers it again until one is confirmed: to a
   * server that holds it, that is a retransmission (protocol.md section 10),
   * where a new key would need a proof under a key the client cannot know.
   */
  #unconfirmed: TokenGuard | undefined;
  /** The last refusal of a server key in this key exchange. */
  #mismatched: string | undefined;

  /**
   * @param session the client's shared state
   * @param options policy, retries and hooks
   */
  constructor(session: Session, options: KeyExchangeOptions) {
    this.#session = session;
    this.#options = options;
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
      this.#options.policy,
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
    let delay = this.#options.initialMs;
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
        delay = Math.min(delay * 2, this.#options.maxMs);
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
    try {
      for (let restarts = 0; restarts <= this.#options.attempts; restarts++) {
        const answer = await this.#askKey();
        if (await this.#register(answer)) return;
      }
      throw noWelcomeError(
        this.#session.serverAddress,
        this.#options.attempts,
        undefined,
      );
    } finally {
      this.#phase = { step: "idle" };
    }
  }

  /** Step `key`: the accepted answer. */
  async #askKey(): Promise<KeyAnswer> {
    const session = this.#session;
    const { attempts, initialMs } = this.#options;
    let delay = initialMs;
    for (let i = 0; i < attempts; i++) {
      this.#throwIfClosed();
      this.#options.progress({
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
        keyRequestDatagram(session.mtu),
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
    if (fingerprint !== previous) this.#options.onServerChanged();
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
    const { attempts, initialMs } = this.#options;
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
      if (session.now() - cookieReceivedAt > COOKIE_REUSE_MS) return false;
      this.#options.progress({
        step: "register",
        server: session.serverAddress,
        fingerprint: answer.serverKey.fingerprint,
        attempt: i + 1,
        attempts,
        waitMs: delay,
      });
      await session.sendStream(stream);
      phase.welcome = new Awaited<PeerAddress>(delay, session.closedSignal);
      const address = await phase.welcome.promise;
      if (address) {
        session.guard = guard;
        this.#unconfirmed = undefined;
        session.address = address;
        this.#phase = { step: "idle" };
        this.#options.onRegistered();
        return true;
      }
      delay *= 2;
    }
    this.#throwIfClosed();
    throw noWelcomeError(session.serverAddress, attempts, phase.refusedFull);
  }

  /**
   * The registration stream: cookie, key record, proof under the current key
   * (a rekey), GROUP_CAPABLE. Encrypted once, resent as the same bytes on
   * every try: the server takes a cookie for one key record only (section 10).
   */
  async #registration(
    answer: KeyAnswer,
  ): Promise<{ guard: TokenGuard | undefined; stream: Uint8Array }> {
    const session = this.#session;
    let value: Uint8Array;
    let guard: TokenGuard | undefined;
    if (session.profile === "hybrid") {
      guard = this.#unconfirmed ??= new TokenGuard(
        await FernetKey.generate(this.#options.fernetBackend),
        session.marker,
        this.#options.tokenMaxAgeSeconds,
      );
      value = await answer.serverKey.encrypt(encoder.encode(guard.key.text));
    } else {
      value = encoder.encode(session.rsaKey!.publicKey.pem);
    }
    const records: TlvRecord[] = [
      { type: RecordType.COOKIE, value: answer.cookie },
      {
        type: session.profile === "hybrid"
          ? RecordType.SYMMETRIC_KEY
          : RecordType.CLIENT_PUBLIC_KEY,
        value,
      },
    ];
    if (session.guard) {
      // The server may still hold this client under its current key (a
      // spoofed NOTICE 1, a lost keep-alive): prove that key, so the
      // server takes the new one as a rekey (protocol.md section 10).
      records.push({
        type: RecordType.KEY_PROOF,
        value: await session.guard.seal(
          sha256(value).subarray(0, 16),
          session.now(),
        ),
      });
    }
    if (this.#options.groupCapable) {
      // Section 9: after the key record (and its proof). A new
      // registration starts from no group key.
      records.push({
        type: RecordType.GROUP_CAPABLE,
        value: new Uint8Array(0),
      });
      this.#options.onRegistering();
    }
    return { guard, stream: encodeRecords(records) };
  }

  #throwIfClosed(): void {
    if (this.#session.closed) {
      throw new HandshakeError("The client was closed during the key exchange");
    }
  }
}
