/**
 * The relay client's protocol logic (protocol.md sections 3-7) over a
 * {@linkcode DatagramTransport}: key exchange with retries and an optional
 * pinned fingerprint, authenticated keep-alives, sending and receiving
 * (fragmented both ways), presence events, re-registration after NOTICE 1 or
 * a server restart or a kick, closing for good after a ban, a bounded
 * outbox for what is sent while not registered, and an authenticated
 * DISCONNECT on close.
 *
 * @module
 */
import {
  HandshakeError,
  ServerKeyError,
  UndeliveredError,
  type UndeliveredReason,
} from "../../errors.ts";
import { type FernetBackend, FernetKey } from "../../crypto/fernet.ts";
import { IvMarker } from "../../crypto/iv_mark.ts";
import { REMOVAL_NOTICE_LABEL } from "../../crypto/derive_key.ts";
import {
  RsaDecryptError,
  RsaPrivateKey,
  RsaPublicKey,
} from "../../crypto/rsa.ts";
import {
  decodeAddress,
  formatAddress,
  isMulticastIPv4,
  type PeerAddress,
} from "../../wire/address.ts";
import { fragmentStream } from "../../wire/fragment.ts";
import {
  decodeNotice,
  decodeRemoval,
  isRemovalCode,
  NoticeCode,
  parseRemovalText,
  type RemovalNotice,
} from "../../wire/notice.ts";
import { Reassembler } from "../../core/reassembler.ts";
import {
  decodeRecords,
  encodeRecords,
  RecordType,
  TLV_HEADER_SIZE,
  type TlvRecord,
} from "../../wire/tlv.ts";
import type { DatagramTransport } from "../../runtime/transport.ts";
import { type LogSink, silentLog } from "../log.ts";
import { DropCounter, guardedSink } from "../../core/drops.ts";
import { randomMsgId } from "../../crypto/msg_id.ts";
import { TokenGuard } from "../../crypto/token_guard.ts";
import { KeepaliveWatch } from "../../core/keepalive_watch.ts";
import { sha256 } from "../../crypto/sha256.ts";
import type { MemberProfile } from "../types.ts";
import {
  DownstreamSocket,
  GroupReceiver,
  type GroupReceiverStats,
} from "./group_receiver.ts";

/** Something the client observed, delivered to {@linkcode RelayClient.events} and listeners. */
export type ClientEvent =
  | {
    readonly type: "message";
    /** The original sender, `IP:PORT`. */
    readonly from: string;
    /** The message decoded as UTF-8. */
    readonly text: string;
    /** The message bytes. */
    readonly data: Uint8Array;
  }
  | {
    readonly type: "join";
    readonly address: string;
    /**
     * Reported in the stream of the WELCOME that registered this client: a
     * member already there, not one that just joined (PROTOCOL.md section 4).
     */
    readonly present: boolean;
  }
  | { readonly type: "leave"; readonly address: string }
  | { readonly type: "notice"; readonly code: number; readonly text: string }
  | {
    readonly type: "ready";
    /** The server's address. */
    readonly server: string;
    /** This client's address as the server sees it. */
    readonly address: string;
    /** The server key's fingerprint `SHA256:...`. */
    readonly fingerprint: string;
  }
  | { readonly type: "reconnecting"; readonly reason: string }
  | {
    /** The server removed this client (NOTICE 6); it registers again at once. */
    readonly type: "kicked";
    /** Why, in the operator's words. */
    readonly reason: string;
  }
  | {
    /** The server banned this client (NOTICE 7); the client closes and does not register again. */
    readonly type: "banned";
    /** How long the ban lasts; undefined: until the operator lifts it. */
    readonly seconds: number | undefined;
    /** Why, in the operator's words. */
    readonly reason: string;
  }
  | {
    /**
     * The client gave up and closed itself: re-registering met a server key
     * it refuses (pinned fingerprint or known-servers record) on every try.
     */
    readonly type: "failed";
    /** What was refused and what to do, one line. */
    readonly reason: string;
  }
  | {
    readonly type: "undelivered";
    /** Why: the outbox was full, the client closed before it could send, or the server stopped answering after it was sent (it may not have arrived). */
    readonly reason: UndeliveredReason;
    /** The message decoded as UTF-8. */
    readonly text: string;
    /** The message bytes. */
    readonly data: Uint8Array;
  };

/**
 * What {@linkcode RelayClient.send} did with a message: handed it to the
 * transport (`sent`), or kept it in the outbox because the client is not
 * registered right now (`queued`: sent in order once it is, or reported by an
 * `undelivered` event).
 */
export type SendOutcome = "sent" | "queued";

/**
 * One try of the key exchange, announced before it is sent
 * ({@linkcode RelayClientOptions.onProgress}): a key request (`key`), a
 * registration (`register`), or a keep-alive of
 * {@linkcode RelayClient.confirm} (`confirm`).
 */
export interface HandshakeProgress {
  /** Which step is tried. */
  readonly step: "key" | "register" | "confirm";
  /** Where it goes: the group or server asked (`key`), the server (others). */
  readonly server: string;
  /** The server key's fingerprint (`register` only). */
  readonly fingerprint?: string;
  /** This try, from 1. */
  readonly attempt: number;
  /** Tries of this step before it fails. */
  readonly attempts: number;
  /** How long this try waits for the answer, in ms. */
  readonly waitMs: number;
}

/** Options of {@linkcode RelayClient.connect}. */
export interface RelayClientOptions {
  /** The client's own bound transport (an ephemeral UDP socket). */
  readonly transport: DatagramTransport;
  /** Where to send: the multicast group and port, or a server's unicast address. */
  readonly target: PeerAddress;
  /**
   * More relays of the same group (federated over NATS), tried in turn after
   * `target` when the current one stops answering: the client re-registers
   * at the next one.
   */
  readonly fallbackTargets?: readonly PeerAddress[];
  /** Hybrid (Fernet, default) or RSA only. */
  readonly profile?: MemberProfile;
  /** Largest datagram sent; the key request is padded to it. Default 1200. */
  readonly mtu?: number;
  /** Keep-alive interval. Default 10_000 ms. */
  readonly keepaliveMs?: number;
  /**
   * How long a probe (the keep-alive sent at once on a NOTICE 1 or 5) waits
   * for the server's authenticated answer before the client re-registers
   * (protocol.md section 10). Default 2000 ms.
   */
  readonly probeTimeoutMs?: number;
  /** Pinned server key fingerprint `SHA256:...`; a different key is refused. */
  readonly fingerprint?: string;
  /**
   * Checks a server key the pin did not decide (no `fingerprint` given): the
   * answering server's `IP:PORT` and the key's fingerprint; returns undefined
   * to accept it, or the one-line error to refuse it with (e.g. a
   * known-servers file that records another key for that address). A refused
   * key is treated like one that does not match a pin.
   */
  readonly verifyKey?: (
    server: string,
    fingerprint: string,
  ) => string | undefined;
  /** Called before every try of the key exchange (to tell a user what the client is doing). */
  readonly onProgress?: (progress: HandshakeProgress) => void;
  /** First retry delay of the key exchange, doubling. Default 1000 ms. */
  readonly retryInitialMs?: number;
  /** Tries per step of the first key exchange. Default 5. */
  readonly retryAttempts?: number;
  /** Longest delay between re-registration tries while running. Default 30_000 ms. */
  readonly retryMaxMs?: number;
  /** The RSA profile's own key; generated when absent. */
  readonly rsaKey?: RsaPrivateKey;
  /** Size of a generated RSA profile key. Default 2048. */
  readonly rsaKeyBits?: number;
  /** Largest message accepted by {@linkcode RelayClient.send}. Default 32 KiB. */
  readonly maxMessageBytes?: number;
  /**
   * Messages the outbox holds at most while the client is not registered
   * (re-registering, server unreachable, failing over, or checking a NOTICE
   * 1 or 5). Default 256.
   */
  readonly maxOutboxMessages?: number;
  /** Bytes of messages the outbox holds at most. Default 1 MiB. */
  readonly maxOutboxBytes?: number;
  /** Maximum Fernet token age and future skew. Default 60 s. */
  readonly tokenMaxAgeSeconds?: number;
  /** Fernet implementation. Default: the library default. */
  readonly fernetBackend?: FernetBackend;
  /** Events kept for a slow `events()` reader before the oldest are dropped. Default 10_000. */
  readonly eventBufferSize?: number;
  /** Called for every event from the start, including those of the first key exchange (present members). */
  readonly onEvent?: (event: ClientEvent) => void;
  /**
   * Ask for group fan-out (protocol.md section 9: GROUP_CAPABLE in the
   * registration). Default true for the hybrid profile; the RSA profile never
   * asks. A server with fan-out off simply never sends a GROUP_KEY.
   */
  readonly group?: boolean;
  /**
   * Binds the socket that receives the downstream multicast address a
   * GROUP_KEY names (bound to its port with address reuse, joined to the
   * group). Without it, group messages come only by unicast, and a server
   * that multicasts them is not heard (its per-recipient streams still are).
   */
  readonly bindDownstream?: (group: PeerAddress) => Promise<DatagramTransport>;
  /** Receives log records. */
  readonly log?: LogSink;
  /** Clock in milliseconds. Default Date.now. */
  readonly now?: () => number;
  /**
   * Aborting it closes the client, as {@linkcode RelayClient.close} does;
   * during {@linkcode RelayClient.connect} it makes connect reject.
   */
  readonly signal?: AbortSignal;
}

/** Counters of a client. */
export interface ClientStats {
  /** Messages sent. */
  readonly messagesSent: number;
  /** Messages received and delivered. */
  readonly messagesReceived: number;
  /** Successful registrations (first and later). */
  readonly registrations: number;
  /** Events dropped because an `events()` reader was too slow. */
  readonly eventsDropped: number;
  /** Authenticated keep-alive answers from the server (protocol.md section 10). */
  readonly keepaliveAnswers: number;
  /** Messages in the outbox now, waiting for the client to be registered. */
  readonly outbox: number;
  /** Messages reported undelivered (`undelivered` events). */
  readonly undelivered: number;
  /** Datagrams or records dropped, by reason. */
  readonly dropped: Readonly<Record<string, number>>;
  /** Group fan-out counters (when the client asks for it). */
  readonly group?: GroupReceiverStats;
}

interface KeyAnswer {
  readonly cookie: Uint8Array;
  readonly serverKey: RsaPublicKey;
  readonly from: PeerAddress;
}

type Waiter<T> = (value: T) => void;

/** A message waiting in the outbox. */
interface Outgoing {
  readonly data: Uint8Array;
}

/** Events waiting for an `events()` reader. */
interface EventInbox {
  readonly queue: ClientEvent[];
  wake: (() => void) | undefined;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const DISCONNECT_TEXT = encoder.encode("DISCONNECT");
const RSA_KEEPALIVE = new Uint8Array(4);
const EMPTY = new Uint8Array(0);
/** A cookie older than this is not reused for a registration (protocol.md section 4). */
const COOKIE_REUSE_MS = 50_000;
/** A keep-alive unanswered for this long was lost, or its answer was. */
const KEEPALIVE_ANSWER_WINDOW_MS = 10_000;
/** Keep-alives remembered while their answers are awaited. */
const MAX_KEEPALIVES_OUT = 64;

/**
 * A member of a relay group. Create with {@linkcode RelayClient.connect}; stop
 * with {@linkcode RelayClient.close} (or `await using`).
 */
export class RelayClient implements AsyncDisposable {
  readonly #transport: DatagramTransport;
  /** `target`, then the fallback targets: where the client registers, in turn. */
  readonly #targets: readonly PeerAddress[];
  #target: PeerAddress;
  readonly #profile: MemberProfile;
  readonly #mtu: number;
  readonly #keepaliveMs: number;
  readonly #probeTimeoutMs: number;
  readonly #watch = new KeepaliveWatch();
  #probeTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #pinned: string | undefined;
  readonly #verifyKey:
    | ((server: string, fingerprint: string) => string | undefined)
    | undefined;
  readonly #onProgress: ((progress: HandshakeProgress) => void) | undefined;
  /** Waiting for the next authenticated keep-alive answer ({@linkcode confirm}). */
  #answerWaiters: Waiter<void>[] = [];
  readonly #retryInitialMs: number;
  readonly #retryAttempts: number;
  readonly #retryMaxMs: number;
  readonly #rsaKeyBits: number;
  readonly #maxMessageBytes: number;
  readonly #maxOutboxMessages: number;
  readonly #maxOutboxBytes: number;
  readonly #tokenMaxAge: number;
  readonly #fernetBackend: FernetBackend | undefined;
  readonly #eventBufferSize: number;
  readonly #log: LogSink;
  readonly #drops: DropCounter;
  readonly #now: () => number;

  readonly #marker = new IvMarker();
  readonly #reassembler: Reassembler;
  readonly #listeners = new Set<(event: ClientEvent) => void>();
  readonly #members = new Set<string>();
  readonly #abort = new AbortController();

  #rsaKey: RsaPrivateKey | undefined;
  #server: PeerAddress | undefined;
  #serverKey: RsaPublicKey | undefined;
  #guard: TokenGuard | undefined;
  /**
   * The guard of removal notices (PROTOCOL.md section 7.1) per key, derived
   * once so that its replay window holds for that key.
   */
  readonly #removalGuards = new WeakMap<TokenGuard, Promise<TokenGuard>>();
  #address: PeerAddress | undefined;
  #ready = false;
  /** Messages sent while not registered, oldest first. */
  readonly #outbox: Outgoing[] = [];
  #outboxBytes = 0;
  /** Sending the outbox, one message after the other. */
  #flushing: Promise<void> | undefined;
  /**
   * Messages sent after the last keep-alive the server answered (hybrid, a
   * server that answers keep-alives): reported if it stops answering before
   * a keep-alive sent after them is answered. At most the outbox's bounds.
   */
  readonly #unanswered: { readonly seq: number; readonly data: Uint8Array }[] =
    [];
  #unansweredBytes = 0;
  /** Messages sent so far, numbered. */
  #sentSeq = 0;
  /**
   * Hybrid keep-alives not answered yet, oldest first: when each went out
   * and how many messages had been sent by then. The server answers in the
   * order they arrive, so an answer belongs to the oldest one here (or to a
   * later one, when an earlier answer was lost: never to an earlier one).
   */
  readonly #keepalivesOut: { readonly at: number; readonly seq: number }[] = [];
  /** Authenticated keep-alive answers so far. */
  #answersSeen = 0;
  #keyWaiter: Waiter<KeyAnswer> | undefined;
  #welcomeWaiter: Waiter<PeerAddress> | undefined;
  #pendingGuard: TokenGuard | undefined;
  /** A NOTICE 4 (server full) that came while a WELCOME was awaited. */
  #refusedFull: string | undefined;
  /**
   * The key of the last registration sent and not yet confirmed by a
   * WELCOME. The server may have taken it while its WELCOME was lost or late,
   * so every key exchange offers it again until one is confirmed: to a
   * server that holds it, that is a retransmission (protocol.md section 10),
   * where a new key would need a proof under a key the client cannot know.
   */
  #unconfirmed: TokenGuard | undefined;
  #reconnecting: Promise<void> | undefined;
  #keepalive: ReturnType<typeof setInterval> | undefined;
  #unlinkSignal: (() => void) | undefined;
  #receiving: Promise<void> = Promise.resolve();
  #closing: Promise<void> | undefined;
  readonly #pendingSends = new Set<Promise<void>>();
  readonly #group: GroupReceiver | undefined;
  #downstream: DownstreamSocket | undefined;

  #messagesSent = 0;
  #messagesReceived = 0;
  #registrations = 0;
  #eventsDropped = 0;
  #keepaliveAnswers = 0;
  /** Why the server banned this client (it closed then), if it did. */
  #bannedFor: string | undefined;
  #undelivered = 0;

  private constructor(options: RelayClientOptions) {
    this.#transport = options.transport;
    this.#targets = [options.target, ...options.fallbackTargets ?? []];
    this.#target = options.target;
    this.#profile = options.profile ?? "hybrid";
    this.#mtu = options.mtu ?? 1200;
    this.#keepaliveMs = options.keepaliveMs ?? 10_000;
    this.#probeTimeoutMs = options.probeTimeoutMs ?? 2000;
    this.#pinned = options.fingerprint;
    this.#verifyKey = options.fingerprint ? undefined : options.verifyKey;
    this.#onProgress = options.onProgress;
    this.#retryInitialMs = options.retryInitialMs ?? 1000;
    this.#retryAttempts = options.retryAttempts ?? 5;
    this.#retryMaxMs = options.retryMaxMs ?? 30_000;
    this.#rsaKey = options.rsaKey;
    this.#rsaKeyBits = options.rsaKeyBits ?? 2048;
    this.#maxMessageBytes = options.maxMessageBytes ?? 32 * 1024;
    this.#maxOutboxMessages = options.maxOutboxMessages ?? 256;
    this.#maxOutboxBytes = options.maxOutboxBytes ?? 1024 * 1024;
    this.#tokenMaxAge = options.tokenMaxAgeSeconds ?? 60;
    this.#fernetBackend = options.fernetBackend;
    this.#eventBufferSize = options.eventBufferSize ?? 10_000;
    this.#log = guardedSink(options.log ?? silentLog);
    this.#now = options.now ?? Date.now;
    this.#drops = new DropCounter(this.#log, this.#now);
    this.#reassembler = new Reassembler({}, this.#now);
    if (options.onEvent) this.#listeners.add(options.onEvent);
    if (this.#profile === "hybrid" && (options.group ?? true)) {
      const group = this.#group = new GroupReceiver({
        marker: this.#marker,
        tokenMaxAgeSeconds: this.#tokenMaxAge,
        drops: this.#drops,
        now: this.#now,
        ownAddress: () => this.address,
        onMessage: (sender, data) => this.#deliver(sender, data),
        askAgain: () => void this.#askGroupKeyAgain(),
        onDownstream: (address) => this.#downstream?.join(address),
      });
      this.#downstream = new DownstreamSocket({
        bind: options.bindDownstream,
        receive: (datagram) =>
          this.#ready
            ? group.onDownstreamDatagram(
              datagram.data,
              datagram.from,
              this.#server !== undefined &&
                formatAddress(this.#server) === formatAddress(datagram.from),
            )
            : Promise.resolve(this.#drops.count("group_message_unexpected")),
        drops: this.#drops,
        log: this.#log,
      });
    }
  }

  /**
   * Joins the group: runs the key exchange (with retries) and starts the
   * keep-alives. On failure the transport is closed.
   * @throws {HandshakeError} when the server does not answer, its key does not match the pinned fingerprint, or its WELCOME does not verify
   */
  static async connect(options: RelayClientOptions): Promise<RelayClient> {
    const client = new RelayClient(options);
    client.#receiving = client.#receiveLoop();
    const signal = options.signal;
    const stop = () => {
      if (client.#keepalive === undefined) client.#abort.abort(); // connecting
      else void client.close();
    };
    if (signal?.aborted) stop();
    signal?.addEventListener("abort", stop, { once: true });
    client.#unlinkSignal = () => signal?.removeEventListener("abort", stop);
    try {
      if (client.#profile === "rsa" && !client.#rsaKey) {
        client.#rsaKey = await RsaPrivateKey.generate(client.#rsaKeyBits);
      }
      await client.#handshakeAnyTarget();
    } catch (error) {
      await client.#shutdown(false);
      throw error;
    }
    if (client.#abort.signal.aborted) {
      // Aborted in the instant between the WELCOME and here.
      await client.#shutdown(false);
      throw new HandshakeError("The client was closed during the key exchange");
    }
    client.#keepalive = setInterval(
      () => client.#sendKeepalive(),
      client.#keepaliveMs,
    );
    return client;
  }

  /** The server's address (the one that answered the key request). */
  get serverAddress(): string {
    return this.#server ? formatAddress(this.#server) : "";
  }

  /** This client's address as the server sees it (from WELCOME). */
  get address(): string {
    return this.#address ? formatAddress(this.#address) : "";
  }

  /** The server key's fingerprint. */
  get serverFingerprint(): string {
    return this.#serverKey?.fingerprint ?? "";
  }

  /** The profile this client registered with. */
  get profile(): MemberProfile {
    return this.#profile;
  }

  /** Whether the client is registered right now (false while re-registering). */
  get ready(): boolean {
    return this.#ready;
  }

  /** Other members this client knows to be present. */
  members(): string[] {
    return [...this.#members];
  }

  /** A snapshot of the counters. */
  stats(): ClientStats {
    return {
      messagesSent: this.#messagesSent,
      messagesReceived: this.#messagesReceived,
      registrations: this.#registrations,
      eventsDropped: this.#eventsDropped,
      keepaliveAnswers: this.#keepaliveAnswers,
      outbox: this.#outbox.length,
      undelivered: this.#undelivered,
      dropped: this.#drops.snapshot(),
      ...(this.#group ? { group: this.#group.stats() } : {}),
    };
  }

  /**
   * Calls `listener` for every event until the returned function is called.
   * The listener must not throw or block.
   */
  onEvent(listener: (event: ClientEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Events as an async iterable, ending when the client closes or `signal`
   * aborts. It subscribes when called, so no event is missed between this
   * call and the first read. A reader that falls more than
   * `eventBufferSize` events behind loses the oldest ones (counted in
   * `stats().eventsDropped`).
   */
  events(signal?: AbortSignal): AsyncGenerator<ClientEvent> {
    const inbox: EventInbox = { queue: [], wake: undefined };
    const unsubscribe = this.onEvent((event) => {
      if (inbox.queue.length >= this.#eventBufferSize) {
        inbox.queue.shift();
        this.#eventsDropped++;
      }
      inbox.queue.push(event);
      inbox.wake?.();
    });
    return this.#drain(inbox, unsubscribe, signal);
  }

  async *#drain(
    inbox: EventInbox,
    unsubscribe: () => void,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<ClientEvent> {
    const stop = () => inbox.wake?.();
    signal?.addEventListener("abort", stop);
    this.#abort.signal.addEventListener("abort", stop);
    try {
      while (true) {
        const event = inbox.queue.shift();
        if (event) {
          yield event;
          continue;
        }
        if (signal?.aborted || this.#abort.signal.aborted) return;
        await new Promise<void>((resolve) => inbox.wake = resolve);
        inbox.wake = undefined;
      }
    } finally {
      unsubscribe();
      signal?.removeEventListener("abort", stop);
      this.#abort.signal.removeEventListener("abort", stop);
    }
  }

  /**
   * Sends one message to the group. While the client is not registered
   * (re-registering after a NOTICE 1 or 5 or a kick, the server unreachable,
   * failing over, or checking a NOTICE 1 or 5 with a probe) the message waits
   * in a bounded outbox (`maxOutboxMessages`, `maxOutboxBytes`) and is sent,
   * in order with the others, once the client is registered again; a message
   * still there when the client closes is reported by an `undelivered` event
   * (reason `closed`).
   * @returns `sent` when the message went to the server at once, `queued` when it waits in the outbox
   * @throws {RangeError} when the message exceeds the maximum size
   * @throws {UndeliveredError} (reason `outbox_full`, also reported by an `undelivered` event) when the outbox is full
   * @throws {Error} when the client is closed
   */
  async send(message: string | Uint8Array): Promise<SendOutcome> {
    const data = typeof message === "string"
      ? encoder.encode(message)
      : message;
    if (data.length > this.#maxMessageBytes) {
      throw new RangeError(
        `Cannot send a message of ${data.length} bytes: the limit is ${this.#maxMessageBytes} bytes`,
      );
    }
    if (this.#abort.signal.aborted) {
      throw new Error(
        this.#bannedFor === undefined
          ? "The client is closed"
          : `The client is closed: ${this.#bannedFor}`,
      );
    }
    if (!this.#canSend || this.#outbox.length > 0 || this.#flushing) {
      this.#enqueue(data);
      return "queued";
    }
    await this.#transmit(data);
    return "sent";
  }

  /** Whether messages go out now: registered, and no NOTICE 1 or 5 being checked. */
  get #canSend(): boolean {
    return this.#ready && !this.#watch.probing;
  }

  /**
   * Puts a message in the outbox, or reports it undelivered when the outbox
   * is full (the newest message is refused: those already queued keep their
   * order).
   * @throws {UndeliveredError} when the outbox is full
   */
  #enqueue(data: Uint8Array): void {
    if (
      this.#outbox.length >= this.#maxOutboxMessages ||
      this.#outboxBytes + data.length > this.#maxOutboxBytes
    ) {
      this.#reportUndelivered(data, "outbox_full");
      throw new UndeliveredError(
        "outbox_full",
        `Cannot send the message: the client is not registered with the server and its outbox already holds ${this.#outbox.length} messages (${this.#outboxBytes} bytes; the limits are ${this.#maxOutboxMessages} messages and ${this.#maxOutboxBytes} bytes): send it again once the client is registered (the "ready" event), or raise maxOutboxMessages/maxOutboxBytes`,
      );
    }
    // A copy: the caller may reuse its buffer before the message goes out.
    this.#outbox.push({ data: data.slice() });
    this.#outboxBytes += data.length;
  }

  /** Sends the outbox in order while the client can send; a message goes out only after those before it. */
  #flushOutbox(): void {
    if (this.#flushing || this.#outbox.length === 0 || !this.#canSend) return;
    this.#flushing = (async () => {
      while (
        this.#outbox.length > 0 && this.#canSend && !this.#abort.signal.aborted
      ) {
        const next = this.#outbox[0];
        await this.#transmit(next.data);
        this.#outbox.shift();
        this.#outboxBytes -= next.data.length;
      }
    })().then(() => {
      this.#flushing = undefined;
      this.#flushOutbox(); // what was queued during the last send
    }, (error) => {
      // The message stays first in the outbox: tried again at the next
      // registration or keep-alive answer, or reported at close.
      this.#flushing = undefined;
      this.#log({
        level: "error",
        event: "internal_error",
        error: String((error as Error)?.stack ?? error),
      });
    });
  }

  /** Reports a message that will not be sent: an `undelivered` event, a log record and a count. */
  #reportUndelivered(data: Uint8Array, reason: UndeliveredReason): void {
    this.#undelivered++;
    this.#log({
      level: "warn",
      event: "undelivered",
      reason,
      bytes: data.length,
    });
    this.#emit({
      type: "undelivered",
      reason,
      text: decoder.decode(data),
      data,
    });
  }

  /** Seals a message under the current key (or RSA-encrypts it) and sends it to the server. */
  async #transmit(data: Uint8Array): Promise<void> {
    const records: TlvRecord[] = [];
    if (this.#profile === "hybrid") {
      records.push({
        type: RecordType.FERNET_MESSAGE,
        value: await this.#guard!.seal(data, this.#now()),
      });
    } else {
      for (const block of await this.#serverKey!.encryptChunks(data)) {
        records.push({ type: RecordType.RSA_BLOCK, value: block });
      }
    }
    this.#messagesSent++;
    this.#sentSeq++;
    if (this.#profile === "hybrid" && this.#watch.answering) {
      this.#unanswered.push({ seq: this.#sentSeq, data: data.slice() });
      this.#unansweredBytes += data.length;
      while (
        this.#unanswered.length > this.#maxOutboxMessages ||
        this.#unansweredBytes > this.#maxOutboxBytes
      ) {
        this.#unansweredBytes -= this.#unanswered.shift()!.data.length;
      }
    }
    await this.#sendStream(encodeRecords(records));
  }

  /**
   * A keep-alive answer: it answers the oldest keep-alive still out (or a
   * later one), so the messages sent before that one reached a server that
   * was there.
   */
  #confirmSent(): void {
    this.#forgetLostKeepalives();
    const answered = this.#keepalivesOut.shift();
    if (answered === undefined) return;
    while (
      this.#unanswered.length > 0 &&
      this.#unanswered[0].seq <= answered.seq
    ) {
      this.#unansweredBytes -= this.#unanswered.shift()!.data.length;
    }
  }

  /** Keep-alives out for longer than the answer window were lost, or their answers were: no answer counts for them. */
  #forgetLostKeepalives(): void {
    const oldest = this.#now() - KEEPALIVE_ANSWER_WINDOW_MS;
    while (
      this.#keepalivesOut.length > 0 &&
      (this.#keepalivesOut[0].at < oldest ||
        this.#keepalivesOut.length > MAX_KEEPALIVES_OUT)
    ) {
      this.#keepalivesOut.shift();
    }
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
  async confirm(): Promise<boolean> {
    if (this.#profile !== "hybrid") return false;
    const registration = this.#registrations;
    const unchanged = () =>
      this.#ready && !this.#abort.signal.aborted &&
      this.#registrations === registration;
    /** The answer count that proves a keep-alive sent after the messages was answered. */
    let target: number | undefined;
    let delay = this.#retryInitialMs;
    for (let i = 0; i < this.#retryAttempts; i++) {
      // Messages held in the outbox (a probe is out) go first: the
      // keep-alive must follow them.
      await this.#flushing;
      if (!unchanged()) return false;
      this.#progress({
        step: "confirm",
        server: this.serverAddress,
        attempt: i + 1,
        attempts: this.#retryAttempts,
        waitMs: delay,
      });
      const held = this.#outbox.length > 0;
      if (!held && target === undefined) {
        // Answers to the keep-alives already out may come first: one more
        // than those can only answer this keep-alive or a later one.
        this.#forgetLostKeepalives();
        target = this.#answersSeen + this.#keepalivesOut.length + 1;
      }
      let mine: Waiter<void> | undefined;
      const answered = this.#waitFor<true>((w) => {
        if (w) {
          this.#answerWaiters.push(
            mine = () => {
              if (held || this.#answersSeen >= target!) w(true);
            },
          );
        } else {
          this.#answerWaiters = this.#answerWaiters.filter((x) => x !== mine);
        }
      }, delay);
      // While messages are held, the probe's own answer releases them.
      if (!held) await this.#keepaliveNow();
      if (await answered && !held) return unchanged();
      if (!held) delay *= 2;
    }
    return false;
  }

  /**
   * Leaves the group: sends an authenticated DISCONNECT, stops timers and
   * closes the transport. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown(true);
    return this.#closing;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #shutdown(sayGoodbye: boolean): Promise<void> {
    this.#closing ??= Promise.resolve();
    this.#unlinkSignal?.();
    clearInterval(this.#keepalive);
    clearTimeout(this.#probeTimer);
    this.#abort.abort();
    // The message being sent when close() came goes out before the
    // DISCONNECT; the rest of the outbox is reported below.
    await this.#flushing;
    if (sayGoodbye && this.#ready) {
      const value = this.#profile === "hybrid"
        ? await this.#guard!.seal(DISCONNECT_TEXT, this.#now())
        : new Uint8Array(0);
      await this.#sendStream(
        encodeRecords([{ type: RecordType.DISCONNECT, value }]),
      );
    }
    this.#ready = false;
    await this.#reconnecting?.catch(() => {});
    for (const { data } of this.#outbox.splice(0)) {
      this.#reportUndelivered(data, "closed");
    }
    this.#outboxBytes = 0;
    await Promise.all(this.#pendingSends);
    this.#transport.close();
    await this.#receiving;
    await this.#downstream?.close();
    this.#group?.reset();
  }

  /** Resolves with the value `install` hands to its waiter, or undefined after `ms` or on close. */
  #waitFor<T>(
    install: (waiter: Waiter<T> | undefined) => void,
    ms: number,
  ): Promise<T | undefined> {
    return new Promise((resolve) => {
      const finish = (value: T | undefined) => {
        clearTimeout(timer);
        this.#abort.signal.removeEventListener("abort", onAbort);
        install(undefined);
        resolve(value);
      };
      const onAbort = () => finish(undefined);
      const timer = setTimeout(() => finish(undefined), ms);
      this.#abort.signal.addEventListener("abort", onAbort, { once: true });
      install(finish);
    });
  }

  /**
   * The key exchange of protocol.md section 4: key request until a (pinned)
   * server key answers, then the client key until WELCOME verifies. Each step
   * is tried `attempts` times with doubling delays from `initialMs`.
   */
  async #handshake(attempts: number, initialMs: number): Promise<void> {
    let mismatched: string | undefined;
    let restarts = 0;
    restart: while (true) {
      let answer: KeyAnswer | undefined;
      let delay = initialMs;
      let refused = false;
      for (let i = 0; i < attempts && !answer && !refused; i++) {
        this.#throwIfClosed();
        this.#progress({
          step: "key",
          server: formatAddress(this.#target),
          attempt: i + 1,
          attempts,
          waitMs: delay,
        });
        this.#sendKeyRequest();
        const result = await this.#waitFor<KeyAnswer | "refused">((w) => {
          this.#keyWaiter = w && ((a: KeyAnswer) => {
            const refusal = this.#refusal(a);
            if (refusal === undefined) return w(a);
            mismatched = refusal;
            // The unicast target itself answered with another key: nothing
            // else will answer for it, so fail now. Under multicast another
            // member of the group may still answer with the pinned key.
            if (
              !isMulticastIPv4(this.#target.hostname) &&
              formatAddress(a.from) === formatAddress(this.#target)
            ) {
              return w("refused");
            }
            this.#drops.drop("fingerprint_mismatch", formatAddress(a.from), {
              fingerprint: a.serverKey.fingerprint,
            });
          });
        }, delay);
        if (result === "refused") refused = true;
        else answer = result;
        delay *= 2;
      }
      this.#throwIfClosed();
      if (!answer) {
        if (mismatched) throw new ServerKeyError(mismatched);
        const total = Number(
          (initialMs * (2 ** attempts - 1) / 1000).toFixed(1),
        );
        throw new HandshakeError(
          `No answer to the key request sent to ${
            formatAddress(this.#target)
          } after ${attempts} tries over ${total} s: check that the server runs, and --server/--group/--port (use --server HOST:PORT where multicast does not route)`,
        );
      }
      const cookieReceivedAt = this.#now();
      const previous = this.#serverKey?.fingerprint;
      if (answer.serverKey.fingerprint !== previous) {
        this.#watch.serverChanged();
        if (previous !== undefined) {
          // Nothing pinned it (a pin or a known-servers record refuses a
          // change): say so loudly, once per change.
          this.#log({
            level: "warn",
            event: "server_key_changed",
            server: formatAddress(answer.from),
            previous,
            fingerprint: answer.serverKey.fingerprint,
            message:
              `the server's key changed from ${previous} to ${answer.serverKey.fingerprint}: the server restarted without --key-file, or something else answers at ${
                formatAddress(answer.from)
              }; pin the key (--fingerprint, or a known-servers file) to refuse a change`,
          });
        }
      }
      this.#server = answer.from;
      this.#serverKey = answer.serverKey;

      let registrationValue: Uint8Array;
      let guard: TokenGuard | undefined;
      if (this.#profile === "hybrid") {
        guard = this.#unconfirmed ??= new TokenGuard(
          await FernetKey.generate(this.#fernetBackend),
          this.#marker,
          this.#tokenMaxAge,
        );
        registrationValue = await answer.serverKey.encrypt(
          encoder.encode(guard.key.text),
        );
      } else {
        registrationValue = encoder.encode(this.#rsaKey!.publicKey.pem);
      }
      const records: TlvRecord[] = [
        { type: RecordType.COOKIE, value: answer.cookie },
        {
          type: this.#profile === "hybrid"
            ? RecordType.SYMMETRIC_KEY
            : RecordType.CLIENT_PUBLIC_KEY,
          value: registrationValue,
        },
      ];
      if (this.#guard) {
        // The server may still hold this client under its current key (a
        // spoofed NOTICE 1, a lost keep-alive): prove that key, so the
        // server takes the new one as a rekey (protocol.md section 10).
        records.push({
          type: RecordType.KEY_PROOF,
          value: await this.#guard.seal(
            sha256(registrationValue).subarray(0, 16),
            this.#now(),
          ),
        });
      }
      if (this.#group) {
        // Section 9: after the key record (and its proof). A new
        // registration starts from no group key.
        records.push({
          type: RecordType.GROUP_CAPABLE,
          value: new Uint8Array(0),
        });
        this.#group.reset();
      }
      // Encrypted once, resent as the same bytes on every try: the server
      // takes a cookie for one key record only (section 10).
      const registration = encodeRecords(records);
      delay = initialMs;
      this.#refusedFull = undefined;
      for (let i = 0; i < attempts; i++) {
        this.#throwIfClosed();
        if (this.#now() - cookieReceivedAt > COOKIE_REUSE_MS) {
          // The cookie is too old to register with: start again from step 1,
          // a bounded number of times.
          if (++restarts > attempts) break;
          continue restart;
        }
        this.#pendingGuard = guard;
        this.#progress({
          step: "register",
          server: this.serverAddress,
          fingerprint: answer.serverKey.fingerprint,
          attempt: i + 1,
          attempts,
          waitMs: delay,
        });
        await this.#sendStream(registration);
        const address = await this.#waitFor<PeerAddress>(
          (w) => this.#welcomeWaiter = w,
          delay,
        );
        if (address) {
          this.#guard = guard;
          this.#pendingGuard = undefined;
          this.#unconfirmed = undefined;
          this.#address = address;
          this.#ready = true;
          this.#watch.registered();
          this.#registrations++;
          this.#log({
            level: "info",
            event: "registered",
            server: this.serverAddress,
            address: this.address,
            fingerprint: this.serverFingerprint,
          });
          this.#emit({
            type: "ready",
            server: this.serverAddress,
            address: this.address,
            fingerprint: this.serverFingerprint,
          });
          this.#flushOutbox();
          // With other relays to move to, one keep-alive at once: its answer
          // tells a 1.1 server from a v1 one before the first interval, so a
          // relay that dies right after the WELCOME, and so never answered
          // a keep-alive, is noticed too (PROTOCOL.md section 11).
          if (this.#profile === "hybrid" && this.#targets.length > 1) {
            void this.#keepaliveNow();
          }
          return;
        }
        delay *= 2;
      }
      this.#pendingGuard = undefined;
      this.#throwIfClosed();
      if (this.#refusedFull !== undefined) {
        throw new HandshakeError(
          `The server at ${this.serverAddress} is full (NOTICE 4: "${this.#refusedFull}"): it has as many members as it takes in all, or from this client's IP address; try again later, or ask its operator to raise its member limits`,
        );
      }
      throw new HandshakeError(
        `The server at ${this.serverAddress} sent its key but no valid WELCOME after ${attempts} tries: check that client and server clocks agree within 60 s and that the server is not full or rate-limiting this address`,
      );
    }
  }

  /** Why a key answer is refused (one line for the user), or undefined when it is accepted. */
  #refusal(answer: KeyAnswer): string | undefined {
    const fingerprint = answer.serverKey.fingerprint;
    if (this.#pinned === undefined) {
      return this.#verifyKey?.(formatAddress(answer.from), fingerprint);
    }
    if (fingerprint === this.#pinned) return undefined;
    return `The server at ${
      formatAddress(answer.from)
    } answered with key ${fingerprint}, which does not match the pinned fingerprint ${this.#pinned}: check --fingerprint, or whether something else answers on that address`;
  }

  #progress(progress: HandshakeProgress): void {
    try {
      this.#onProgress?.(progress);
    } catch {
      // A failing listener must not break the key exchange.
    }
  }

  /** The key exchange with each target in turn, from the current one, until one succeeds. */
  async #handshakeAnyTarget(): Promise<void> {
    for (let tried = 1;; tried++) {
      try {
        await this.#handshake(this.#retryAttempts, this.#retryInitialMs);
        return;
      } catch (error) {
        if (tried >= this.#targets.length || this.#abort.signal.aborted) {
          throw error;
        }
        this.#nextTarget((error as Error).message);
      }
    }
  }

  /** Moves on to the next target (after a failed key exchange with this one). */
  #nextTarget(why: string): void {
    if (this.#targets.length < 2) return;
    const from = this.#target;
    this.#target = this.#targets[
      (this.#targets.indexOf(from) + 1) % this.#targets.length
    ];
    this.#server = undefined;
    this.#log({
      level: "warn",
      event: "failover",
      from: formatAddress(from),
      to: formatAddress(this.#target),
      reason: why,
    });
  }

  #throwIfClosed(): void {
    if (this.#abort.signal.aborted) {
      throw new HandshakeError("The client was closed during the key exchange");
    }
  }

  /** Re-runs the key exchange in the background (NOTICE 1 or 5), retrying until it succeeds or the client closes. */
  #reconnect(reason: string): void {
    if (this.#reconnecting || this.#abort.signal.aborted) return;
    clearTimeout(this.#probeTimer);
    this.#probeTimer = undefined;
    this.#ready = false;
    this.#members.clear();
    this.#emit({ type: "reconnecting", reason });
    this.#log({ level: "info", event: "reconnecting", reason });
    // Sent since the server last answered: they may not have arrived.
    for (const { data } of this.#unanswered.splice(0)) {
      this.#reportUndelivered(data, "unconfirmed");
    }
    this.#unansweredBytes = 0;
    this.#reconnecting = (async () => {
      let delay = this.#retryInitialMs;
      /** Key exchanges in a row that met only refused server keys. */
      let refused = 0;
      while (!this.#abort.signal.aborted) {
        try {
          await this.#handshake(this.#retryAttempts, this.#retryInitialMs);
          return;
        } catch (error) {
          if (this.#abort.signal.aborted) return;
          if (!(error instanceof ServerKeyError)) refused = 0;
          else if (++refused >= this.#targets.length) {
            // Every relay answered with a key this client refuses: trying
            // again cannot help. One clear error, then the client closes.
            this.#log({
              level: "info",
              event: "gave_up",
              error: error.message,
            });
            this.#emit({ type: "failed", reason: error.message });
            void this.close();
            return;
          }
          this.#log({
            level: "warn",
            event: "reconnect_failed",
            error: (error as Error).message,
          });
          if (this.#targets.length > 1) {
            // Another relay of the group may answer at once; wait only
            // after a whole round of them.
            this.#nextTarget((error as Error).message);
            if (this.#target !== this.#targets[0]) continue;
          }
          await this.#waitFor<never>(() => {}, delay);
          delay = Math.min(delay * 2, this.#retryMaxMs);
        }
      }
    })().finally(() => this.#reconnecting = undefined);
  }

  #sendKeyRequest(): void {
    const request = new Uint8Array(Math.max(this.#mtu, TLV_HEADER_SIZE));
    const padding = request.length - TLV_HEADER_SIZE;
    request.set(
      encodeRecords([{
        type: RecordType.KEY_REQUEST,
        value: new Uint8Array(padding),
      }]),
    );
    this.#track(this.#transport.send(request, this.#target));
  }

  /**
   * The periodic keep-alive. A server that answers keep-alives (section 10)
   * but left the last 3 unanswered is unreachable: the client says so and
   * runs the key exchange again.
   */
  async #sendKeepalive(): Promise<void> {
    if (!this.#ready) return;
    if (this.#watch.unreachable) {
      this.#log({
        level: "warn",
        event: "server_unreachable",
        server: this.serverAddress,
        missed: this.#watch.missLimit,
      });
      const why =
        `server unreachable: no answer to ${this.#watch.missLimit} keep-alives in a row`;
      // Another relay of the group can take the member at once: the one that
      // stopped answering is the last to try again.
      this.#nextTarget(why);
      this.#reconnect(why);
      return;
    }
    this.#watch.sent();
    await this.#keepaliveNow();
  }

  /** Sends one keep-alive (hybrid: a token of the empty plaintext). */
  async #keepaliveNow(): Promise<void> {
    if (this.#profile === "hybrid") {
      this.#forgetLostKeepalives();
      this.#keepalivesOut.push({ at: this.#now(), seq: this.#sentSeq });
    }
    const value = this.#profile === "hybrid"
      ? await this.#guard!.seal(EMPTY, this.#now())
      : RSA_KEEPALIVE;
    if (!this.#ready) return;
    await this.#sendStream(
      encodeRecords([{ type: RecordType.KEEPALIVE, value }]),
    );
  }

  /**
   * An unauthenticated hint (NOTICE 1 or 5) that the server lost this
   * client: a hybrid client probes with a keep-alive and re-registers only
   * when no authenticated answer comes within the probe's time (section
   * 10); an RSA-profile client, whose keep-alives are not answered,
   * re-registers at once.
   */
  #onLossHint(reason: string): void {
    if (this.#profile !== "hybrid") return this.#reconnect(reason);
    const delay = this.#watch.hint(this.#now());
    if (delay === "ignore") {
      this.#drops.count("notice_unconfirmed");
      return;
    }
    const probe = () => {
      this.#probeTimer = setTimeout(() => {
        this.#probeTimer = undefined;
        if (!this.#watch.probeExpired() || !this.#ready) return;
        // As after unanswered keep-alives: the relay that left the probe
        // unanswered is the last to be tried again.
        this.#nextTarget(reason);
        this.#reconnect(reason);
      }, this.#probeTimeoutMs);
      this.#watch.probeSent();
      void this.#keepaliveNow();
    };
    if (delay === 0) return probe();
    // An answer came within the probe interval: probe when it is over,
    // unless another answer ends the probe first (it clears this timer).
    this.#probeTimer = setTimeout(probe, delay);
  }

  /** The server's KEEPALIVE answer: counts only when its token passes every check under this client's key. */
  async #onKeepaliveAnswer(value: Uint8Array): Promise<void> {
    if (this.#profile !== "hybrid" || !this.#guard || !this.#ready) {
      this.#drops.count("unexpected_keepalive");
      return;
    }
    const opened = await this.#guard.open(value, this.#now());
    if (!opened.ok) {
      this.#drops.drop(`keepalive_${opened.reason}`, this.serverAddress);
    } else if (opened.plaintext.length !== 0) {
      this.#drops.drop("keepalive_not_empty", this.serverAddress);
    } else {
      this.#keepaliveAnswers++;
      this.#answersSeen++;
      this.#log({ level: "debug", event: "keepalive_answered" });
      this.#watch.answered(this.#now()); // ends a probe too
      clearTimeout(this.#probeTimer);
      this.#probeTimer = undefined;
      this.#confirmSent();
      this.#flushOutbox(); // what was held during a probe
      // Waiters (confirm) see the flush under way and wait for it.
      for (const waiter of [...this.#answerWaiters]) waiter();
    }
  }

  /**
   * Sends a stream (fragmented past the MTU) by unicast to the server that
   * answered the key request: once a client has that answer, nothing it sends
   * goes to the group, where other hosts would see its cookies and tokens
   * (protocol.md section 10).
   */
  async #sendStream(stream: Uint8Array): Promise<void> {
    const to = this.#server ?? this.#target;
    const datagrams = stream.length <= this.#mtu
      ? [stream]
      : fragmentStream(stream, this.#mtu, randomMsgId());
    await Promise.all(
      datagrams.map((d) => this.#track(this.#transport.send(d, to))),
    );
  }

  /** Keeps a send's promise until it settles, so close() can wait for it; errors are counted. */
  #track(sending: Promise<void>): Promise<void> {
    const tracked = sending.catch((error) => {
      this.#drops.drop("send_failed", formatAddress(this.#target), {
        error: String(error),
      });
    });
    this.#pendingSends.add(tracked);
    tracked.finally(() => this.#pendingSends.delete(tracked));
    return tracked;
  }

  async #receiveLoop(): Promise<void> {
    try {
      for await (const datagram of this.#transport) {
        if (this.#abort.signal.aborted) break;
        await this.#onDatagram(datagram.data, datagram.from);
      }
    } catch (error) {
      if (!this.#abort.signal.aborted) {
        this.#log({
          level: "error",
          event: "receive_failed",
          error: String(error),
        });
      }
    }
  }

  async #onDatagram(data: Uint8Array, from: PeerAddress): Promise<void> {
    const source = formatAddress(from);
    const fromServer = this.#server !== undefined &&
      formatAddress(this.#server) === source;
    let records: TlvRecord[];
    try {
      records = decodeRecords(data);
    } catch {
      this.#drops.drop("malformed", source);
      return;
    }
    if (!fromServer) {
      // Only a key answer may come from elsewhere, only while one is awaited,
      // only from the chosen server when it is a unicast address (section
      // 10), and only its COOKIE and SERVER_PUBLIC_KEY records are looked at:
      // presence, notices and fragments from a stranger are never processed.
      const key = records.find((r) => r.type === RecordType.SERVER_PUBLIC_KEY);
      const fromTarget = isMulticastIPv4(this.#target.hostname) ||
        formatAddress(this.#target) === source;
      if (this.#keyWaiter && key && !fromTarget) {
        this.#drops.drop("key_answer_not_from_server", source);
      } else if (this.#keyWaiter && key) {
        const cookie = records.find((r) => r.type === RecordType.COOKIE);
        await this.#onServerKey(key.value, cookie?.value, from);
      } else {
        this.#drops.drop("not_from_server", source);
      }
      return;
    }
    try {
      await this.#processStream(records, from);
    } catch (error) {
      this.#log({
        level: "error",
        event: "internal_error",
        error: String((error as Error)?.stack ?? error),
      });
    }
  }

  async #processStream(
    records: readonly TlvRecord[],
    from: PeerAddress,
  ): Promise<void> {
    const source = formatAddress(from);
    let cookie: Uint8Array | undefined;
    let sender: string | undefined;
    /** Whether this stream held the WELCOME: its members were there before. */
    let welcomed = false;
    const rsaBlocks: Uint8Array[] = [];
    for (const record of records) {
      switch (record.type) {
        case RecordType.FRAGMENT: {
          const outcome = this.#reassembler.addRecord(source, record.value);
          if (outcome.kind === "dropped") {
            this.#drops.drop(outcome.reason, source);
          }
          if (outcome.kind === "stream") {
            await this.#processStream(outcome.records, from);
          }
          break;
        }
        case RecordType.COOKIE:
          cookie = record.value;
          break;
        case RecordType.SERVER_PUBLIC_KEY:
          await this.#onServerKey(record.value, cookie, from);
          break;
        case RecordType.WELCOME:
          welcomed = await this.#onWelcome(record.value) || welcomed;
          break;
        case RecordType.NOTIFY_CONNECT:
        case RecordType.NOTIFY_DISCONNECT:
          this.#onPresence(record, welcomed);
          break;
        case RecordType.SENDER:
          try {
            sender = formatAddress(decodeAddress(record.value));
          } catch {
            this.#drops.drop("malformed_sender", source);
            sender = undefined;
          }
          break;
        case RecordType.FERNET_MESSAGE:
          await this.#onFernetMessage(record.value, sender);
          break;
        case RecordType.RSA_RELAY_BLOCK:
          rsaBlocks.push(record.value);
          break;
        case RecordType.NOTICE:
          await this.#onNotice(record.value);
          break;
        case RecordType.KEEPALIVE:
          await this.#onKeepaliveAnswer(record.value);
          break;
        case RecordType.GROUP_KEY:
          await this.#onGroupKey(record.value);
          break;
        case RecordType.GROUP_MESSAGE:
          if (this.#group && this.#ready) {
            await this.#group.onGroupMessage(record.value);
          } else this.#drops.count("group_message_unexpected");
          break;
        default:
          this.#drops.count("unexpected_type");
      }
    }
    if (rsaBlocks.length > 0) await this.#onRsaMessage(rsaBlocks, sender);
  }

  async #onServerKey(
    pem: Uint8Array,
    cookie: Uint8Array | undefined,
    from: PeerAddress,
  ): Promise<void> {
    const waiter = this.#keyWaiter;
    if (!waiter) {
      this.#drops.count("unexpected_key");
      return;
    }
    if (!cookie) {
      this.#drops.drop("key_without_cookie", formatAddress(from));
      return;
    }
    let serverKey: RsaPublicKey;
    try {
      serverKey = await RsaPublicKey.fromPem(decoder.decode(pem));
    } catch (error) {
      this.#drops.drop("bad_server_key", formatAddress(from), {
        error: (error as Error).message,
      });
      return;
    }
    waiter({ cookie: cookie.slice(), serverKey, from });
  }

  /** Checks a WELCOME; returns whether it confirmed the registration under way. */
  async #onWelcome(value: Uint8Array): Promise<boolean> {
    const waiter = this.#welcomeWaiter;
    if (!waiter) {
      if (await this.#isRepeatedWelcome(value)) {
        this.#log({ level: "debug", event: "welcome_repeated" });
      } else this.#drops.count("unexpected_welcome");
      return false;
    }
    let addressValue: Uint8Array;
    if (this.#profile === "hybrid") {
      const opened = await this.#pendingGuard!.open(value, this.#now());
      if (!opened.ok) {
        this.#drops.drop(`welcome_${opened.reason}`, this.serverAddress);
        return false;
      }
      addressValue = opened.plaintext;
    } else {
      try {
        addressValue = await this.#rsaKey!.decrypt(value);
      } catch {
        this.#drops.drop("welcome_undecryptable", this.serverAddress);
        return false;
      }
    }
    try {
      waiter(decodeAddress(addressValue));
      return true;
    } catch {
      this.#drops.drop("welcome_bad_address", this.serverAddress);
      return false;
    }
  }

  /**
   * Whether a WELCOME that came when none was awaited answers a copy of the
   * registration already confirmed: a retry sent while the first WELCOME
   * was on its way reaches the server too, which answers it with a WELCOME
   * of its own (PROTOCOL.md section 4, one cookie, one key), so it is
   * expected, not a drop. Hybrid only: a token under the current key that
   * passes every check (replay included) and names this client's address.
   * An RSA-profile WELCOME is not opened: that would be an RSA decryption
   * anyone could ask for.
   */
  async #isRepeatedWelcome(value: Uint8Array): Promise<boolean> {
    if (this.#profile !== "hybrid" || !this.#guard || !this.#address) {
      return false;
    }
    const opened = await this.#guard.open(value, this.#now());
    if (!opened.ok) return false;
    try {
      return formatAddress(decodeAddress(opened.plaintext)) === this.address;
    } catch {
      return false;
    }
  }

  /** @param present whether the record came with this client's WELCOME */
  #onPresence(record: TlvRecord, present: boolean): void {
    let address: string;
    try {
      address = formatAddress(decodeAddress(record.value));
    } catch {
      this.#drops.drop("malformed_presence", this.serverAddress);
      return;
    }
    if (record.type === RecordType.NOTIFY_CONNECT) {
      if (this.#members.has(address)) return;
      this.#members.add(address);
      this.#emit({
        type: "join",
        address,
        present,
      });
    } else {
      if (!this.#members.delete(address)) return;
      this.#emit({ type: "leave", address });
    }
  }

  async #onFernetMessage(
    token: Uint8Array,
    sender: string | undefined,
  ): Promise<void> {
    if (!this.#guard || !this.#ready) {
      this.#drops.count("message_before_ready");
      return;
    }
    if (!sender) {
      this.#drops.drop("message_without_sender", this.serverAddress);
      return;
    }
    const opened = await this.#guard.open(token, this.#now());
    if (!opened.ok) {
      this.#drops.drop(opened.reason, this.serverAddress);
      return;
    }
    this.#deliver(sender, opened.plaintext);
  }

  async #onRsaMessage(
    blocks: readonly Uint8Array[],
    sender: string | undefined,
  ): Promise<void> {
    if (this.#profile !== "rsa" || !this.#ready) {
      this.#drops.count("message_before_ready");
      return;
    }
    if (!sender) {
      this.#drops.drop("message_without_sender", this.serverAddress);
      return;
    }
    let plaintext: Uint8Array;
    try {
      plaintext = await this.#rsaKey!.decryptChunks(blocks);
    } catch (error) {
      if (error instanceof RsaDecryptError || error instanceof RangeError) {
        this.#drops.drop("bad_rsa_block", this.serverAddress);
        return;
      }
      throw error;
    }
    this.#deliver(sender, plaintext);
  }

  /** A GROUP_KEY: a token under this client's key (the one a WELCOME may just have confirmed). */
  async #onGroupKey(value: Uint8Array): Promise<void> {
    if (!this.#group) {
      this.#drops.count("group_key_unexpected");
      return;
    }
    for (const guard of [this.#pendingGuard, this.#guard]) {
      if (!guard) continue;
      const opened = await guard.open(value, this.#now());
      if (opened.ok) return this.#group.onGroupKey(opened.plaintext);
      if (opened.reason !== "token_signature") {
        this.#drops.drop(`group_key_${opened.reason}`, this.serverAddress);
        return;
      }
    }
    this.#drops.drop("group_key_token_signature", this.serverAddress);
  }

  /**
   * Asks the server again for the current group key (a GROUP_KEY was
   * missed): an authenticated keep-alive and GROUP_CAPABLE in one stream
   * (PROTOCOL.md "Group fan-out").
   */
  async #askGroupKeyAgain(): Promise<void> {
    if (!this.#ready || !this.#guard) return;
    const keepalive = await this.#guard.seal(new Uint8Array(0), this.#now());
    this.#log({ level: "info", event: "group_key_asked_again" });
    await this.#sendStream(
      encodeRecords([
        { type: RecordType.KEEPALIVE, value: keepalive },
        { type: RecordType.GROUP_CAPABLE, value: new Uint8Array(0) },
      ]),
    );
  }

  #deliver(from: string, data: Uint8Array): void {
    this.#messagesReceived++;
    this.#emit({ type: "message", from, text: decoder.decode(data), data });
  }

  async #onNotice(value: Uint8Array): Promise<void> {
    let notice;
    try {
      notice = decodeNotice(value);
    } catch {
      this.#drops.drop("malformed_notice", this.serverAddress);
      return;
    }
    if (isRemovalCode(notice.code)) {
      return await this.#onRemoval(notice.code, value.subarray(2));
    }
    this.#emit({ type: "notice", code: notice.code, text: notice.text });
    const full = notice.code === NoticeCode.SERVER_FULL;
    if (full && this.#welcomeWaiter) this.#refusedFull = notice.text;
    this.#log({
      // A full server is the user's to know at once (the CLI logs warnings).
      level: full ? "warn" : "info",
      event: "notice",
      code: notice.code,
      text: notice.text,
    });
    if (
      this.#ready &&
      (notice.code === NoticeCode.UNKNOWN_CLIENT ||
        notice.code === NoticeCode.SERVER_SHUTDOWN)
    ) {
      this.#onLossHint(
        notice.code === NoticeCode.UNKNOWN_CLIENT
          ? "server does not know this client"
          : "server shut down",
      );
    }
  }

  /**
   * NOTICE 6 (KICKED) or 7 (BANNED), PROTOCOL.md section 7. A hybrid client
   * acts only on a body that opens under the key derived from its own for
   * removal notices (every token check; a relayed message under its own key
   * does not open) and names the same code; anything else is ignored and
   * counted (`removal_notice_*`), so nobody but the server can make it leave. An
   * RSA-profile client has no key to check with and takes the plain text.
   * Kicked: it registers again at once. Banned: it closes, without
   * DISCONNECT (it is no longer a member), and does not come back.
   */
  async #onRemoval(code: number, body: Uint8Array): Promise<void> {
    let notice: RemovalNotice;
    try {
      if (this.#profile === "hybrid") {
        const guard = this.#guard;
        if (!guard) {
          this.#drops.count("removal_notice_unexpected");
          return;
        }
        let removal = this.#removalGuards.get(guard);
        if (!removal) {
          removal = guard.derive(REMOVAL_NOTICE_LABEL);
          this.#removalGuards.set(guard, removal);
        }
        const opened = await (await removal).open(body, this.#now());
        if (!opened.ok) {
          this.#drops.drop(
            `removal_notice_${opened.reason}`,
            this.serverAddress,
          );
          return;
        }
        notice = decodeRemoval(opened.plaintext);
        if (notice.code !== code) {
          this.#drops.drop("removal_notice_code_mismatch", this.serverAddress);
          return;
        }
      } else {
        notice = parseRemovalText(code, decoder.decode(body));
      }
    } catch {
      this.#drops.drop("removal_notice_malformed", this.serverAddress);
      return;
    }
    if (this.#abort.signal.aborted) return;
    const { reason } = notice;
    if (notice.code === NoticeCode.KICKED) {
      this.#log({ level: "warn", event: "kicked", reason });
      this.#emit({ type: "kicked", reason });
      this.#reconnect(`kicked by the server: ${reason}`);
      return;
    }
    const seconds = notice.seconds === 0 ? undefined : notice.seconds;
    this.#bannedFor = seconds === undefined
      ? `banned by the server: ${reason}`
      : `banned by the server for ${seconds} s: ${reason}`;
    this.#log({ level: "warn", event: "banned", seconds, reason });
    this.#ready = false; // no DISCONNECT: the server removed it already
    this.#emit({ type: "banned", seconds, reason });
    void this.close();
  }

  #emit(event: ClientEvent): void {
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // A failing listener must not break the client.
      }
    }
  }
}
