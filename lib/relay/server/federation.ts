/**
 * Relays federated over a publish/subscribe link (NATS in production): every
 * message a local member sends is published once, sealed under the cluster
 * key; every relay delivers the messages of the others to its own members,
 * and tells them who joined and left elsewhere. The link is a thin interface
 * ({@linkcode FederationLink}; {@linkcode NatsLink} implements it over NATS);
 * what envelopes mean is {@linkcode ClusterView}'s.
 *
 * @module
 */
import { InvalidTokenError, MalformedDatagramError } from "../../errors.ts";
import type { FernetKey } from "../../crypto/fernet.ts";
import { constantTimeEqual } from "../../crypto/hmac.ts";
import {
  decodeEnvelope,
  encodeEnvelope,
  type Envelope,
  EnvelopeKind,
  MAX_HEARTBEAT_ADDRESSES,
  RELAY_ID_SIZE,
} from "../../wire/federation.ts";
import {
  type ClusterEvent,
  ClusterView,
  type RemoteMemberInfo,
} from "./cluster_view.ts";
import type { LogSink } from "../../log.ts";

/** What a {@linkcode Federation} is told by its link. */
export interface FederationLinkHandlers {
  /** One published payload of another relay (a sealed envelope). */
  message(payload: Uint8Array): void;
  /** The link went down (`false`) or came back (`true`). */
  status(connected: boolean): void;
}

/** A publish/subscribe channel shared by the relays of one cluster. */
export interface FederationLink {
  /** Whether publishing reaches the other relays now. */
  readonly connected: boolean;
  /** Starts delivering payloads and status changes to `handlers`. */
  start(handlers: FederationLinkHandlers): void;
  /** Publishes one payload to every other relay of the cluster. */
  publish(payload: Uint8Array): void;
  /** Flushes what was published and disconnects. */
  close(): Promise<void>;
}

/** What the local relay offers its federation. */
export interface FederationPeer {
  /** Address values of the local members (for heartbeats). */
  localMembers(): Iterable<Uint8Array>;
  /** Delivers a message of a member of another relay to every local member. */
  deliverRemote(sender: Uint8Array, message: Uint8Array): void;
  /** A member joined elsewhere (first relay to hold it). */
  remoteJoined(address: Uint8Array, key: string): void;
  /** A member is gone from every other relay. */
  remoteLeft(address: Uint8Array, key: string): void;
  /** Counts (and rate-logs) a dropped or lost envelope. */
  drop(reason: string, count?: number): void;
}

/** Options of {@linkcode Federation}. */
export interface FederationOptions {
  /** The cluster's channel. */
  readonly link: FederationLink;
  /** The cluster key: every envelope is a Fernet token under it. */
  readonly clusterKey: FernetKey;
  /** Heartbeat interval. Default 1,000 ms. */
  readonly heartbeatMs?: number;
  /** A remote member (or relay) unheard for this long is gone. Default 3.5 heartbeats. */
  readonly memberTimeoutMs?: number;
  /** Envelopes kept while the link is down, at most; older ones are dropped first. Default 4,096. */
  readonly maxBuffered?: number;
  /** Bytes of envelopes kept while the link is down, at most. Default 8 MiB. */
  readonly maxBufferedBytes?: number;
  /** Maximum age of a received envelope token. Default 60 s. */
  readonly tokenMaxAgeSeconds?: number;
  /** Receives log records. Default: the log given to {@linkcode Federation.attach}. */
  readonly log?: LogSink;
  /** Clock in milliseconds. Default Date.now. */
  readonly now?: () => number;
}

/** Federation counters, in the server's `stats`. */
export interface FederationStats {
  /** Whether the link is up. */
  readonly connected: boolean;
  /** Other relays heard from and alive. */
  readonly relays: number;
  /** Members of other relays. */
  readonly remoteMembers: number;
  /** Envelopes published. */
  readonly published: number;
  /** Envelopes of other relays accepted. */
  readonly received: number;
  /** Envelopes waiting for the link to come back. */
  readonly buffered: number;
}

/** This relay's part in a cluster (see the module doc). */
export class Federation {
  /** This relay's id: random per process, so a restarted relay is a new one. */
  readonly relayId: Uint8Array<ArrayBuffer> = crypto.getRandomValues(
    new Uint8Array(RELAY_ID_SIZE),
  );
  readonly #link: FederationLink;
  readonly #key: FernetKey;
  readonly #heartbeatMs: number;
  readonly #maxBuffered: number;
  readonly #maxBufferedBytes: number;
  readonly #tokenMaxAge: number;
  readonly #view: ClusterView;
  readonly #now: () => number;
  #log: LogSink | undefined;
  #peer: FederationPeer | undefined;
  #seq = 0;
  #published = 0;
  #received = 0;
  readonly #buffer: Uint8Array[] = [];
  #bufferedBytes = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** Set while the link is back but the buffer waits for another relay to be heard. */
  #flushTimer: ReturnType<typeof setTimeout> | undefined;
  #closed = false;

  /**
   * Makes the federation; {@linkcode Federation.attach} starts it.
   * @param options link, cluster key, timings and bounds
   * @throws {TypeError} when the cluster key cannot seal synchronously
   */
  constructor(options: FederationOptions) {
    this.#link = options.link;
    this.#key = options.clusterKey;
    if (!this.#key.canRunSync) {
      throw new TypeError(
        "A cluster key must seal synchronously (the node Fernet backend), so envelopes leave in order",
      );
    }
    this.#heartbeatMs = options.heartbeatMs ?? 1_000;
    this.#maxBuffered = options.maxBuffered ?? 4_096;
    this.#maxBufferedBytes = options.maxBufferedBytes ?? 8 * 1024 * 1024;
    this.#tokenMaxAge = options.tokenMaxAgeSeconds ?? 60;
    this.#view = new ClusterView({
      memberTimeoutMs: options.memberTimeoutMs ??
        Math.round(3.5 * this.#heartbeatMs),
    });
    this.#now = options.now ?? Date.now;
    this.#log = options.log;
  }

  /** Starts serving `peer`: subscribes, heartbeats, expires silent relays (logging to `log` unless a log was given). */
  attach(peer: FederationPeer, log?: LogSink): void {
    if (this.#peer) throw new Error("A federation serves one relay");
    this.#peer = peer;
    this.#log ??= log;
    this.#link.start({
      message: (payload) => this.#onPayload(payload),
      status: (connected) => this.#onStatus(connected),
    });
    this.#timer = setInterval(() => this.tick(), this.#heartbeatMs);
    this.tick();
  }

  /** Publishes a local member's message (called once per relayed message). */
  publishMessage(sender: Uint8Array, message: Uint8Array): void {
    this.#publish({ kind: EnvelopeKind.MESSAGE, sender, message });
  }

  /** Tells the other relays that a member registered here. */
  announceJoin(address: Uint8Array): void {
    this.#publish({ kind: EnvelopeKind.JOIN, address });
  }

  /** Tells the other relays that a member left here. */
  announceLeave(address: Uint8Array): void {
    this.#publish({ kind: EnvelopeKind.LEAVE, address });
  }

  /** Whether another relay holds the member `key` (`IP:PORT`). */
  hasRemote(key: string): boolean {
    return this.#view.has(key);
  }

  /** Members of other relays. */
  remoteMembers(): RemoteMemberInfo[] {
    return this.#view.members();
  }

  /** Address values of members of other relays, each once. */
  remoteAddresses(): Uint8Array[] {
    return this.#view.addresses();
  }

  /** A snapshot of the counters. */
  stats(): FederationStats {
    return {
      connected: this.#link.connected,
      relays: this.#view.relays,
      remoteMembers: this.#view.members().length,
      published: this.#published,
      received: this.#received,
      buffered: this.#buffer.length,
    };
  }

  /** Heartbeat and expiry; called by the timer. */
  tick(): void {
    if (this.#closed || !this.#peer) return;
    this.#apply(this.#view.expire(this.#now()));
    if (!this.#link.connected) return; // a stale heartbeat helps nobody
    const members = [...this.#peer.localMembers()];
    for (
      let i = 0;
      i === 0 || i < members.length;
      i += MAX_HEARTBEAT_ADDRESSES
    ) {
      this.#publish({
        kind: EnvelopeKind.HEARTBEAT,
        members: members.slice(i, i + MAX_HEARTBEAT_ADDRESSES),
      });
    }
  }

  /** Stops the timer, flushes and closes the link. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#flushTimer);
    if (this.#buffer.length > 0) {
      this.#peer?.drop("federation_unsent", this.#buffer.length);
    }
    this.#buffer.length = 0;
    await this.#link.close();
  }

  #publish(
    body:
      | Omit<
        Extract<Envelope, { kind: EnvelopeKind.MESSAGE }>,
        "relayId" | "seq"
      >
      | Omit<
        Extract<Envelope, { kind: EnvelopeKind.JOIN | EnvelopeKind.LEAVE }>,
        "relayId" | "seq"
      >
      | Omit<
        Extract<Envelope, { kind: EnvelopeKind.HEARTBEAT }>,
        "relayId" | "seq"
      >,
  ): void {
    if (this.#closed) return;
    const plaintext = encodeEnvelope(
      { ...body, relayId: this.relayId, seq: this.#seq } as Envelope,
    );
    this.#seq = (this.#seq + 1) >>> 0;
    const payload = this.#key.encryptSync(plaintext, {
      nowSeconds: Math.floor(this.#now() / 1000),
    });
    if (this.#link.connected && this.#buffer.length === 0) {
      this.#send(payload);
      return;
    }
    this.#buffer.push(payload);
    this.#bufferedBytes += payload.length;
    while (
      this.#buffer.length > this.#maxBuffered ||
      this.#bufferedBytes > this.#maxBufferedBytes
    ) {
      this.#bufferedBytes -= this.#buffer.shift()!.length;
      this.#peer?.drop("federation_buffer_full");
    }
  }

  #send(payload: Uint8Array): void {
    try {
      this.#link.publish(payload);
      this.#published++;
    } catch (error) {
      this.#peer?.drop("federation_publish_failed");
      this.#log?.({
        level: "warn",
        event: "federation_publish_failed",
        error: String(error),
      });
    }
  }

  #onStatus(connected: boolean): void {
    this.#log?.({
      level: connected ? "info" : "warn",
      event: connected ? "federation_up" : "federation_down",
      buffered: this.#buffer.length,
    });
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    if (!connected || this.#buffer.length === 0) return;
    // NATS keeps nothing for a relay that has not subscribed again yet: hold
    // what was buffered until another relay is heard (it is back), or two
    // heartbeats at most (there may be no other relay).
    this.#flushTimer = setTimeout(() => this.#flush(), 2 * this.#heartbeatMs);
  }

  #flush(): void {
    clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    if (this.#closed || !this.#link.connected) return;
    const waiting = this.#buffer.splice(0);
    this.#bufferedBytes = 0;
    for (const payload of waiting) this.#send(payload);
  }

  #onPayload(payload: Uint8Array): void {
    const peer = this.#peer;
    if (!peer || this.#closed) return;
    let envelope: Envelope;
    try {
      const opened = this.#key.decryptSync(payload, {
        nowSeconds: Math.floor(this.#now() / 1000),
        ttlSeconds: this.#tokenMaxAge,
        maxClockSkewSeconds: this.#tokenMaxAge,
      });
      envelope = decodeEnvelope(opened.plaintext);
    } catch (error) {
      if (error instanceof InvalidTokenError) {
        peer.drop(`federation_${error.reason}`);
        return;
      }
      if (
        error instanceof MalformedDatagramError || error instanceof RangeError
      ) {
        peer.drop("federation_malformed");
        return;
      }
      throw error;
    }
    if (constantTimeEqual(envelope.relayId, this.relayId)) {
      peer.drop("federation_own");
      return;
    }
    this.#received++;
    if (this.#flushTimer !== undefined) this.#flush();
    this.#apply(this.#view.receive(envelope, this.#now()));
  }

  #apply(events: readonly ClusterEvent[]): void {
    const peer = this.#peer!;
    for (const event of events) {
      switch (event.type) {
        case "message":
          peer.deliverRemote(event.sender, event.message);
          break;
        case "joined":
          peer.remoteJoined(event.address, event.key);
          break;
        case "left":
          peer.remoteLeft(event.address, event.key);
          break;
        case "dropped":
          peer.drop(event.reason);
          break;
        case "gap":
          peer.drop("federation_lost", event.lost);
          break;
      }
    }
  }
}
