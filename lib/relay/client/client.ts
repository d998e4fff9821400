/**
 * {@linkcode RelayClient}: a member of a relay group (protocol.md sections
 * 3-7) over a datagram transport: its public API and the wiring of
 * its parts, with one explicit state (`connecting`, `ready`, `reconnecting`,
 * `closed`) whose transitions it makes. The parts: the key exchange
 * (handshake.ts), keep-alives and probes (liveness.ts), what it receives
 * (receive.ts), its outbox (outbox.ts), its events (../event_stream.ts)
 * and the shared state (session.ts).
 *
 * @module
 */
import { ClientClosedError, HandshakeError } from "../../errors.ts";
import { RsaPrivateKey } from "../../crypto/rsa.ts";
import { EventStream } from "../event_stream.ts";
import type { MemberProfile } from "../types.ts";
import {
  type DownstreamSocket,
  groupFanout,
  type GroupReceiver,
} from "./group_receiver.ts";
import { KeyExchange } from "./handshake.ts";
import { closedDuringKeyExchange, guardedProgress } from "./handshake_rules.ts";
import { Liveness } from "./liveness.ts";
import { clientClosed, Outbox, sendCancelled, SentLedger } from "./outbox.ts";
import { StreamReceiver } from "./receive.ts";
import { Session } from "./session.ts";
import type {
  ClientEvent,
  ClientState,
  ClientStats,
  MessageEvent,
  RelayClientOptions,
  SendOptions,
  SendOutcome,
  StatusEvent,
} from "./types.ts";

export type * from "./types.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Why a client stops: its owner closed it, or something ended it. */
interface Stop {
  /** Send an authenticated DISCONNECT (the server still holds the client). */
  readonly goodbye: boolean;
  /** What ended it; undefined: closed by its owner. */
  readonly error?: Error;
}

/**
 * A member of a relay group. Create with {@linkcode RelayClient.connect}; stop
 * with {@linkcode RelayClient.close} (or `await using`).
 */
export class RelayClient implements AsyncDisposable {
  readonly #session: Session;
  readonly #events: EventStream<ClientEvent>;
  readonly #outbox: Outbox;
  readonly #ledger: SentLedger;
  readonly #keys: KeyExchange;
  readonly #liveness: Liveness;
  readonly #receiver: StreamReceiver;
  readonly #group: GroupReceiver | undefined;
  readonly #downstream: DownstreamSocket | undefined;
  #receiving: Promise<void> = Promise.resolve();
  #reconnecting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  /** Why the client stopped, once it has: undefined (closed) or the error. */
  #stoppedWith: Error | undefined;
  readonly #stopped = Promise.withResolvers<void | Error>();
  #unlinkSignal: (() => void) | undefined;

  private constructor(options: RelayClientOptions) {
    const session = this.#session = new Session(options);
    const config = session.config;
    this.#events = new EventStream({
      bufferSize: config.eventBufferSize,
      stopped: session.closedSignal,
    });
    if (options.onEvent) this.#events.onEvent(options.onEvent);
    this.#ledger = new SentLedger(config, session.now);
    this.#outbox = new Outbox(session, this.#ledger, {
      canSend: () => this.#canSend,
      remember: () =>
        session.profile === "hybrid" && this.#liveness.watch.answering,
      emit: (event) => this.#events.emit(event),
    });
    if (config.group) {
      ({ group: this.#group, downstream: this.#downstream } = groupFanout(
        session,
        options.bindDownstream,
        (sender, data) => this.#deliver(sender, data),
        () => void this.#liveness.askGroupKeyAgain(),
      ));
    }
    const progress = guardedProgress(options.onProgress);
    this.#liveness = new Liveness(session, {
      outbox: this.#outbox,
      ledger: this.#ledger,
      progress,
      reconnect: (reason) => this.#reconnect(reason),
    });
    this.#keys = new KeyExchange(session, {
      progress,
      onServerChanged: () => this.#liveness.watch.serverChanged(),
      onRegistering: () => this.#group?.reset(),
      onRegistered: () => this.#registered(),
    });
    this.#receiver = new StreamReceiver(session, this.#keys, this.#liveness, {
      group: this.#group,
      deliver: (sender, data) => this.#deliver(sender, data),
      emit: (event) => this.#events.emit(event),
      onKicked: (reason) => {
        session.log({ level: "warn", event: "kicked", reason });
        this.#events.emit({ type: "kicked", reason });
        this.#reconnect(`kicked by the server: ${reason}`);
      },
      onBanned: (seconds, reason) => this.#banned(seconds, reason),
    });
  }

  /**
   * Joins the group: runs the key exchange (with retries) and starts the
   * keep-alives. On failure the transport is closed.
   * @throws {HandshakeError} when the server does not answer, its key does not match the pinned fingerprint, or its WELCOME does not verify
   * @throws {RangeError} when `eventBufferSize` is not a positive whole number
   */
  static async connect(options: RelayClientOptions): Promise<RelayClient> {
    let client: RelayClient;
    try {
      client = new RelayClient(options);
    } catch (error) {
      options.transport.close();
      throw error;
    }
    const session = client.#session;
    client.#receiving = client.#receiver.receiveAll((error) =>
      client.#fail(`receiving failed: ${error.message}`, error)
    );
    const signal = options.signal;
    // During the key exchange: no DISCONNECT (not registered), and connect
    // rejects; after it: as close().
    const stop = () => void client.close();
    if (signal?.aborted) stop();
    signal?.addEventListener("abort", stop, { once: true });
    client.#unlinkSignal = () => signal?.removeEventListener("abort", stop);
    try {
      if (session.profile === "rsa" && !session.rsaKey) {
        session.rsaKey = await RsaPrivateKey.generate(
          session.config.rsaKeyBits,
        );
      }
      await client.#keys.runAnyTarget();
    } catch (error) {
      await client.#stop({ goodbye: false, error: error as Error });
      // What ended the client while it joined (a socket that failed), if not this.
      const ended = client.#stoppedWith;
      throw ended === undefined || ended === error
        ? error
        : new HandshakeError(`The key exchange stopped: ${ended.message}`);
    }
    if (session.closed) {
      // Closed in the instant between the WELCOME and here.
      await client.#stopping;
      throw closedDuringKeyExchange();
    }
    client.#liveness.start();
    return client;
  }

  /** The server's address (the one that answered the key request). */
  get serverAddress(): string {
    return this.#session.serverAddress;
  }

  /** This client's address as the server sees it (from WELCOME). */
  get address(): string {
    return this.#session.ownAddress;
  }

  /** The server key's fingerprint. */
  get serverFingerprint(): string {
    return this.#session.serverKey?.fingerprint ?? "";
  }

  /** The profile this client registered with. */
  get profile(): MemberProfile {
    return this.#session.profile;
  }

  /** Where the client is: `connecting`, `ready`, `reconnecting` or `closed`. */
  get state(): ClientState {
    return this.#session.state;
  }

  /** Whether the client is registered right now (false while re-registering). */
  get ready(): boolean {
    return this.#session.ready;
  }

  /** Other members this client knows to be present. */
  members(): string[] {
    return [...this.#session.members];
  }

  /** A snapshot of the counters. */
  stats(): ClientStats {
    return {
      ...this.#session.counters,
      eventsDropped: this.#events.dropped,
      outbox: this.#outbox.size,
      dropped: this.#session.drops.snapshot(),
      ...(this.#group ? { group: this.#group.stats() } : {}),
    };
  }

  /**
   * Calls `listener` for every event until the returned function is called.
   * The listener must not throw or block.
   */
  onEvent(listener: (event: ClientEvent) => void): () => void {
    return this.#events.onEvent(listener);
  }

  /**
   * Events as an async iterable, ending when the client closes or `signal`
   * aborts. It subscribes when called, so no event is missed between this
   * call and the first read. A reader that falls more than
   * `eventBufferSize` events behind loses the oldest ones (counted in
   * `stats().eventsDropped`).
   */
  events(signal?: AbortSignal): AsyncGenerator<ClientEvent> {
    return this.#events.events(signal);
  }

  /** Received messages only, as {@linkcode events} yields them. */
  messages(signal?: AbortSignal): AsyncGenerator<MessageEvent> {
    return this.#events.events(
      signal,
      (event): event is MessageEvent => event.type === "message",
    );
  }

  /**
   * Status events only (everything but received messages: state changes,
   * presence, notices, undelivered reports), as {@linkcode events} yields
   * them.
   */
  statusEvents(signal?: AbortSignal): AsyncGenerator<StatusEvent> {
    return this.#events.events(
      signal,
      (event): event is StatusEvent => event.type !== "message",
    );
  }

  /**
   * Resolves when the client has stopped: with undefined after
   * {@linkcode close} (or its signal), with the error when something ended
   * it (a ban, refused server keys, a failing transport).
   */
  closed(): Promise<void | Error> {
    return this.#stopped.promise;
  }

  /**
   * Sends one message to the group. While the client is not registered
   * (re-registering after a NOTICE 1 or 5 or a kick, the server unreachable,
   * failing over, or checking a NOTICE 1 or 5 with a probe) the message waits
   * in a bounded outbox (`maxOutboxMessages`, `maxOutboxBytes`) and is sent,
   * in order with the others, once the client is registered again; a message
   * still there when the client closes is reported by an `undelivered` event
   * (reason `closed`). With `signal` or `timeoutMs`, send waits until a
   * queued message went out, and gives up on it when they say so.
   * @returns `sent` when the message went to the server (at once, or from the outbox when `signal` or `timeoutMs` was given), `queued` when it waits in the outbox
   * @throws {RangeError} when the message exceeds the maximum size
   * @throws {UndeliveredError} (reason `outbox_full`, also reported by an `undelivered` event) when the outbox is full; (reason `closed`) when the client closed while a waited-for message was queued
   * @throws {SendCancelledError} when `signal` aborted or `timeoutMs` passed before the message went out
   * @throws {ClientClosedError} when the client is closed
   */
  async send(
    message: string | Uint8Array,
    options: SendOptions = {},
  ): Promise<SendOutcome> {
    const data = typeof message === "string"
      ? encoder.encode(message)
      : message;
    if (data.length > this.#session.config.maxMessageBytes) {
      throw new RangeError(
        `Cannot send a message of ${data.length} bytes: the limit is ${this.#session.config.maxMessageBytes} bytes`,
      );
    }
    if (this.#session.closed) throw clientClosed(this.#stoppedWith?.message);
    const { signal, timeoutMs } = options;
    if (signal?.aborted) throw sendCancelled("aborted");
    if (!this.#outbox.mustQueue) {
      await this.#outbox.transmit(data);
      return "sent";
    }
    if (signal === undefined && timeoutMs === undefined) {
      this.#outbox.enqueue(data);
      return "queued";
    }
    await this.#outbox.enqueueAndWait(data, signal, timeoutMs);
    return "sent";
  }

  /**
   * Asks the server to confirm that it holds this client now: sends a
   * keep-alive and resolves true at its authenticated answer (protocol.md
   * section 10), trying like the key exchange (`retryAttempts` keep-alives,
   * waits doubling from `retryInitialMs`); false when none is answered or
   * the client closes. The server takes a member's datagrams in the order
   * they arrive, so an answer to a keep-alive sent after some messages says
   * that those which reached it were taken up; UDP may still have lost one
   * on the way, unseen. False at once while the client registers again, or
   * once it has since the call: what it sent before may have been lost with
   * the old registration. Only hybrid servers of protocol 1.1 answer: for
   * the RSA profile it resolves false at once.
   */
  confirm(): Promise<boolean> {
    return this.#liveness.confirm();
  }

  /**
   * Leaves the group: sends an authenticated DISCONNECT, stops timers and
   * closes the transport. Safe to call twice.
   */
  close(): Promise<void> {
    return this.#stop({ goodbye: true });
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Whether messages go out now: registered, and no NOTICE 1 or 5 being checked. */
  get #canSend(): boolean {
    return this.#session.ready && !this.#liveness.watch.probing;
  }

  /** A WELCOME confirmed a registration: `ready`. */
  #registered(): void {
    const session = this.#session;
    if (!session.transition("ready")) return;
    this.#liveness.watch.registered();
    session.counters.registrations++;
    const ready = {
      server: session.serverAddress,
      address: session.ownAddress,
      fingerprint: this.serverFingerprint,
    };
    session.log({ level: "info", event: "registered", ...ready });
    this.#events.emit({ type: "ready", ...ready });
    this.#outbox.flush();
    // With other relays to move to, one keep-alive at once: its answer
    // tells a 1.1 server from a v1 one before the first interval, so a
    // relay that dies right after the WELCOME, and so never answered a
    // keep-alive, is noticed too (PROTOCOL.md section 11).
    if (session.profile === "hybrid" && session.targets.length > 1) {
      void this.#liveness.keepaliveNow();
    }
  }

  /** `ready` to `reconnecting`: re-runs the key exchange in the background until it succeeds or the client closes. */
  #reconnect(reason: string): void {
    const session = this.#session;
    if (this.#reconnecting || !session.transition("reconnecting")) return;
    this.#liveness.clearProbe();
    session.members.clear();
    this.#events.emit({ type: "reconnecting", reason });
    session.log({ level: "info", event: "reconnecting", reason });
    // Sent since the server last answered: they may not have arrived.
    for (const data of this.#ledger.takeUnanswered()) {
      this.#outbox.report(data, "unconfirmed");
    }
    this.#reconnecting = this.#keys.runUntilRegistered().then((refused) => {
      if (!refused) return;
      session.log({ level: "info", event: "gave_up", error: refused.message });
      this.#fail(refused.message, refused);
    }).finally(() => this.#reconnecting = undefined);
  }

  /**
   * Something ended the client (every relay answered with a key it refuses,
   * or receiving failed): a `failed` event, then it stops without DISCONNECT
   * and {@linkcode closed} resolves with `error`.
   */
  #fail(reason: string, error: Error): void {
    this.#events.emit({ type: "failed", reason });
    void this.#stop({ goodbye: false, error });
  }

  /** A verified NOTICE 7: the client closes, without DISCONNECT (it is no longer a member), and does not come back. */
  #banned(seconds: number | undefined, reason: string): void {
    const why = seconds === undefined
      ? `banned by the server: ${reason}`
      : `banned by the server for ${seconds} s: ${reason}`;
    this.#session.log({ level: "warn", event: "banned", seconds, reason });
    this.#stoppedWith = new ClientClosedError(why);
    this.#session.transition("closed");
    this.#events.emit({ type: "banned", seconds, reason });
    void this.#stop({ goodbye: false, error: this.#stoppedWith });
  }

  /**
   * Stops the client once (later calls share the first): state `closed`,
   * the message being sent goes out, then the DISCONNECT when `goodbye` and
   * the client was registered; the rest of the outbox is reported; the
   * transport closes; {@linkcode closed} resolves.
   */
  #stop(stop: Stop): Promise<void> {
    this.#stopping ??= this.#shutdown(stop);
    return this.#stopping;
  }

  async #shutdown({ goodbye, error }: Stop): Promise<void> {
    const session = this.#session;
    const wasReady = session.ready;
    this.#stoppedWith ??= error;
    session.transition("closed");
    this.#unlinkSignal?.();
    this.#liveness.stop();
    // The message being sent when close() came goes out before the
    // DISCONNECT; the rest of the outbox is reported below.
    await this.#outbox.settled();
    try {
      if (goodbye && wasReady) await session.sendDisconnect();
      await this.#reconnecting?.catch(() => {});
      this.#outbox.drain();
      await session.sendsSettled();
      session.transport.close();
      await this.#receiving;
      await this.#downstream?.close();
      this.#group?.reset();
    } finally {
      this.#stopped.resolve(this.#stoppedWith);
    }
  }

  #deliver(from: string, data: Uint8Array): void {
    this.#session.counters.messagesReceived++;
    this.#events.emit({
      type: "message",
      from,
      text: decoder.decode(data),
      data,
    });
  }
}
