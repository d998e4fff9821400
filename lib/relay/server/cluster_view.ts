/**
 * What one relay knows of the other relays of its cluster: which relays are
 * alive, which members each holds, and which envelopes were already seen.
 * Stateful but I/O-free: envelopes go in with the time, events come out.
 *
 * @module
 */
import { decodeAddress, formatAddress } from "../../wire/address.ts";
import { type Envelope, EnvelopeKind } from "../../wire/federation.ts";
import { encodeBase64Url } from "../../crypto/base64.ts";
import { ExpiringMap } from "../../core/limits.ts";

/** Bounds and timings of a {@linkcode ClusterView}. */
export interface ClusterViewOptions {
  /** A remote member not listed by its relay's heartbeats for this long is gone. Default 3,500 ms. */
  readonly memberTimeoutMs?: number;
  /** How long the last sequence number of a vanished relay is kept, so its envelopes cannot be replayed. Default 180,000 ms (longer than a token's life). */
  readonly rememberRelayMs?: number;
  /** Remote relays tracked at most; envelopes of more are dropped. Default 256. */
  readonly maxRelays?: number;
  /** Remote members tracked at most (all relays). Default 65,536. */
  readonly maxMembers?: number;
}

/** What an envelope or the passing of time means for the local relay. */
export type ClusterEvent =
  | {
    readonly type: "message";
    /** The sender's address value. */
    readonly sender: Uint8Array;
    /** The message plaintext. */
    readonly message: Uint8Array;
  }
  | {
    readonly type: "joined" | "left";
    /** The member's address value. */
    readonly address: Uint8Array;
    /** The member as `IP:PORT`. */
    readonly key: string;
  }
  | {
    readonly type: "dropped";
    /** Why the envelope was not used (a drop reason). */
    readonly reason:
      | "federation_replayed"
      | "federation_relays_full"
      | "federation_members_full";
  }
  | {
    readonly type: "gap";
    /** Envelopes of one relay that never arrived. */
    readonly lost: number;
  };

/** A member of another relay, as `clients` lists it. */
export interface RemoteMemberInfo {
  /** `IP:PORT` as its relay sees it. */
  readonly address: string;
  /** The relay that holds it: the first 8 characters of its id in base64url. */
  readonly relay: string;
  /** When its relay last listed it (ms since the epoch). */
  readonly lastSeen: number;
}

interface RemoteMember {
  readonly address: Uint8Array;
  lastSeen: number;
}

interface RemoteRelay {
  readonly name: string;
  lastSeq: number;
  lastHeard: number;
  readonly members: Map<string, RemoteMember>;
}

/** The cluster as one relay sees it (see the module doc). */
export class ClusterView {
  readonly #memberTimeoutMs: number;
  readonly #rememberRelayMs: number;
  readonly #maxRelays: number;
  readonly #maxMembers: number;
  readonly #relays = new Map<string, RemoteRelay>();
  /** Relay id (base64url) → last sequence number, for relays that vanished. */
  readonly #vanished: ExpiringMap<number>;
  /** Member key → how many remote relays hold it. */
  readonly #holders = new Map<string, number>();
  #members = 0;

  /** @param options bounds and timings */
  constructor(options: ClusterViewOptions = {}) {
    this.#memberTimeoutMs = options.memberTimeoutMs ?? 3_500;
    this.#rememberRelayMs = options.rememberRelayMs ?? 180_000;
    this.#maxRelays = options.maxRelays ?? 256;
    this.#maxMembers = options.maxMembers ?? 65_536;
    this.#vanished = new ExpiringMap(4 * this.#maxRelays);
  }

  /** Relays heard from and not yet timed out. */
  get relays(): number {
    return this.#relays.size;
  }

  /** Whether some remote relay holds the member `key` (`IP:PORT`). */
  has(key: string): boolean {
    return this.#holders.has(key);
  }

  /** Remote members, one row per relay that holds them. */
  members(): RemoteMemberInfo[] {
    const rows: RemoteMemberInfo[] = [];
    for (const relay of this.#relays.values()) {
      for (const [address, member] of relay.members) {
        rows.push({ address, relay: relay.name, lastSeen: member.lastSeen });
      }
    }
    return rows;
  }

  /** Remote members' address values, each once. */
  addresses(): Uint8Array[] {
    const seen = new Map<string, Uint8Array>();
    for (const relay of this.#relays.values()) {
      for (const [key, member] of relay.members) seen.set(key, member.address);
    }
    return [...seen.values()];
  }

  /** Takes in one decoded envelope of another relay, received at `nowMs`. */
  receive(envelope: Envelope, nowMs: number): ClusterEvent[] {
    const id = encodeBase64Url(envelope.relayId);
    const events: ClusterEvent[] = [];
    let relay = this.#relays.get(id);
    if (relay === undefined) {
      const last = this.#vanished.get(id, nowMs);
      if (last !== undefined && envelope.seq <= last) {
        return [{ type: "dropped", reason: "federation_replayed" }];
      }
      if (this.#relays.size >= this.#maxRelays) {
        return [{ type: "dropped", reason: "federation_relays_full" }];
      }
      relay = {
        name: id.slice(0, 8),
        lastSeq: envelope.seq,
        lastHeard: nowMs,
        members: new Map(),
      };
      this.#relays.set(id, relay);
      if (last !== undefined && envelope.seq > last + 1) {
        events.push({ type: "gap", lost: envelope.seq - last - 1 });
      }
    } else if (envelope.seq <= relay.lastSeq) {
      return [{ type: "dropped", reason: "federation_replayed" }];
    } else {
      if (envelope.seq > relay.lastSeq + 1) {
        events.push({ type: "gap", lost: envelope.seq - relay.lastSeq - 1 });
      }
      relay.lastSeq = envelope.seq;
      relay.lastHeard = nowMs;
    }
    switch (envelope.kind) {
      case EnvelopeKind.MESSAGE:
        events.push({
          type: "message",
          sender: envelope.sender,
          message: envelope.message,
        });
        break;
      case EnvelopeKind.JOIN:
        this.#moveTo(relay, envelope.address, events);
        this.#refresh(relay, envelope.address, nowMs, events);
        break;
      case EnvelopeKind.LEAVE:
        this.#forget(
          relay,
          formatAddress(decodeAddress(envelope.address)),
          events,
        );
        break;
      case EnvelopeKind.HEARTBEAT:
        for (const address of envelope.members) {
          this.#refresh(relay, address, nowMs, events);
        }
        break;
    }
    return events;
  }

  /**
   * Forgets members their relay stopped listing, and relays left with no
   * member and no envelope within the member timeout: a relay that dies
   * takes its members with it. Call it from a timer.
   */
  expire(nowMs: number): ClusterEvent[] {
    const events: ClusterEvent[] = [];
    for (const [id, relay] of this.#relays) {
      for (const [key, member] of relay.members) {
        if (nowMs - member.lastSeen > this.#memberTimeoutMs) {
          this.#forget(relay, key, events);
        }
      }
      if (
        relay.members.size === 0 &&
        nowMs - relay.lastHeard > this.#memberTimeoutMs
      ) {
        this.#relays.delete(id);
        this.#vanished.set(
          id,
          relay.lastSeq,
          nowMs + this.#rememberRelayMs,
          nowMs,
        );
      }
    }
    return events;
  }

  #refresh(
    relay: RemoteRelay,
    address: Uint8Array,
    nowMs: number,
    events: ClusterEvent[],
  ): void {
    const key = formatAddress(decodeAddress(address));
    const member = relay.members.get(key);
    if (member !== undefined) {
      member.lastSeen = nowMs;
      return;
    }
    if (this.#members >= this.#maxMembers) {
      events.push({ type: "dropped", reason: "federation_members_full" });
      return;
    }
    relay.members.set(key, { address, lastSeen: nowMs });
    this.#members++;
    const holders = this.#holders.get(key) ?? 0;
    this.#holders.set(key, holders + 1);
    if (holders === 0) events.push({ type: "joined", address, key });
  }

  /**
   * A member registers with one relay at a time: a JOIN from `relay` for a
   * member other relays still list means it moved (its relay died or it
   * failed over), so it leaves them first, and members see it leave and
   * come back (PROTOCOL.md section 11).
   */
  #moveTo(
    relay: RemoteRelay,
    address: Uint8Array,
    events: ClusterEvent[],
  ): void {
    const key = formatAddress(decodeAddress(address));
    if (!this.#holders.has(key) || relay.members.has(key)) return;
    for (const other of this.#relays.values()) {
      if (other !== relay) this.#forget(other, key, events);
    }
  }

  #forget(relay: RemoteRelay, key: string, events: ClusterEvent[]): void {
    const member = relay.members.get(key);
    if (member === undefined) return;
    relay.members.delete(key);
    this.#members--;
    const holders = (this.#holders.get(key) ?? 1) - 1;
    if (holders > 0) {
      this.#holders.set(key, holders);
      return;
    }
    this.#holders.delete(key);
    events.push({ type: "left", address: member.address, key });
  }
}
