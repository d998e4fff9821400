/**
 * The relay client's public types: its options, the events it reports (split
 * into received messages and status events), its counters, its states, and
 * what a send did.
 *
 * @module
 */
import type { UndeliveredReason } from "../../errors.ts";
import type { FernetBackend } from "../../crypto/fernet.ts";
import type { RsaPrivateKey } from "../../crypto/rsa.ts";
import type { PeerAddress } from "../../wire/address.ts";
import type { DatagramTransport } from "../../runtime/transport.ts";
import type { LogSink } from "../../log.ts";
import type { MemberProfile } from "../types.ts";

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
  /** Events kept for a slow `events()` reader before the oldest are dropped (a positive whole number). Default 10_000. */
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

/** A received message: what {@linkcode RelayClient.messages} yields. */
export type MessageEvent = Extract<ClientEvent, { type: "message" }>;

/**
 * Everything else the client reports: state changes (`ready`,
 * `reconnecting`, `kicked`, `banned`, `failed`), presence (`join`, `leave`),
 * notices and `undelivered` reports. What
 * {@linkcode RelayClient.statusEvents} yields.
 */
export type StatusEvent = Exclude<ClientEvent, { type: "message" }>;

/**
 * Where a client is in its life: running its first key exchange
 * (`connecting`), registered (`ready`), registering again after a loss
 * (`reconnecting`), or stopped for good (`closed`).
 */
export type ClientState = "connecting" | "ready" | "reconnecting" | "closed";

/** Options of one {@linkcode RelayClient.send}. */
export interface SendOptions {
  /**
   * Aborting it gives up on a message still waiting in the outbox: send
   * rejects with a `SendCancelledError` (reason `aborted`) and the message
   * is not sent later.
   */
  readonly signal?: AbortSignal;
  /**
   * How long the message may wait in the outbox before send gives up on it
   * and rejects with a `SendCancelledError` (reason `timeout`).
   */
  readonly timeoutMs?: number;
}

/** Counters of the client's group receiver (group fan-out, PROTOCOL.md section 9). */
export interface GroupReceiverStats {
  /** The newest epoch whose key this client holds (0: none). */
  readonly epoch: number;
  /** Messages delivered from group tokens. */
  readonly messages: number;
  /** Times this client asked again for the key. */
  readonly asks: number;
}
