/**
 * The server's members: the {@linkcode Member} record (a union by profile,
 * so a hybrid member always has its token guard and an RSA member its
 * public key), the {@linkcode MemberTable} that holds them with the count per
 * IP, and {@linkcode MemberInfo}, what the `clients` command shows.
 *
 * @module
 */
import type { RsaPublicKey } from "../../crypto/rsa.ts";
import type { TokenGuard } from "../../crypto/token_guard.ts";
import { ExpiringMap, TokenBucket } from "../../core/limits.ts";
import type { SilenceRecord } from "../../core/silence.ts";
import type { PeerAddress } from "../../wire/address.ts";
import type { MemberProfile } from "../types.ts";
import type { ServerLimits } from "./options.ts";

/** One member as shown by the `clients` command. */
export interface MemberInfo {
  /** `IP:PORT` as the server sees it. */
  readonly address: string;
  /** Its profile. */
  readonly profile: MemberProfile;
  /** When it registered (ms since the epoch). */
  readonly joinedAt: number;
  /** When it was last seen authenticated (ms since the epoch). */
  readonly lastSeen: number;
  /** Messages it sent that were relayed. */
  readonly messagesIn: number;
  /** Messages delivered to it. */
  readonly messagesOut: number;
}

/** The key a hybrid member registered: a Fernet key, held in its token guard. */
export interface HybridKey {
  /** The profile. */
  readonly profile: "hybrid";
  /** Opens and seals its tokens (MAC, age, replay, reflection). */
  readonly guard: TokenGuard;
  /** Never set for a hybrid member (lets `member.rsaKey` be read on any member). */
  readonly rsaKey?: undefined;
}

/** The key an RSA member registered: its public key. */
export interface RsaKey {
  /** The profile. */
  readonly profile: "rsa";
  /** Its public key: what the server encrypts to it with. */
  readonly rsaKey: RsaPublicKey;
  /** Never set for an RSA member (lets `member.guard` be read on any member). */
  readonly guard?: undefined;
}

/** A member's key, by profile. */
export type MemberKey = HybridKey | RsaKey;

/** What every member has, whatever its profile. */
export interface MemberState extends SilenceRecord {
  /** Its address. */
  readonly address: PeerAddress;
  /** Its address as `IP:PORT` (the members map's key). */
  readonly key: string;
  /** Its address as the wire encodes it. */
  readonly addressValue: Uint8Array;
  /** Identifies the key it registered with (never the key itself). */
  keyId: string;
  /** SHA-256 of the key record value it registered with (section 10 retransmissions). */
  registrationHash: Uint8Array;
  /** When it registered (ms). */
  readonly joinedAt: number;
  /** When it was last heard authenticated (ms). */
  lastSeen: number;
  /** Messages it sent that were relayed. */
  messagesIn: number;
  /** Messages delivered to it. */
  messagesOut: number;
  /** Its message budget. */
  readonly messageRate: TokenBucket;
  /** Its RSA block budget (RSA-profile messages). */
  readonly rsaBlockRate: TokenBucket;
  /** Its keep-alive budget (checked before any crypto). */
  readonly keepaliveRate: TokenBucket;
}

/** A hybrid member (both key fields present, one undefined: one object shape). */
export type HybridMember = MemberState & {
  readonly profile: "hybrid";
  readonly guard: TokenGuard;
  readonly rsaKey: undefined;
};
/** An RSA-profile member. */
export type RsaMember = MemberState & {
  readonly profile: "rsa";
  readonly guard: undefined;
  readonly rsaKey: RsaPublicKey;
};
/** A member: `member.profile` tells which key it holds. */
export type Member = HybridMember | RsaMember;

/** What makes a new member. */
export interface NewMember {
  /** Its address. */
  readonly address: PeerAddress;
  /** Its address as `IP:PORT`. */
  readonly key: string;
  /** Its address as the wire encodes it. */
  readonly addressValue: Uint8Array;
  /** Identifies its key. */
  readonly keyId: string;
  /** SHA-256 of its key record's value. */
  readonly registrationHash: Uint8Array;
}

/** Makes a member record registered now, its budgets full. */
export function createMember(
  fields: NewMember,
  memberKey: MemberKey,
  limits: ServerLimits,
  now: number,
): Member {
  // Every member has both key fields, in one order: one object shape for
  // the fan-out loop, whatever the profile.
  const keyFields: MemberKey = memberKey.profile === "hybrid"
    ? { profile: "hybrid", guard: memberKey.guard, rsaKey: undefined }
    : { profile: "rsa", guard: undefined, rsaKey: memberKey.rsaKey };
  return {
    address: fields.address,
    key: fields.key,
    addressValue: fields.addressValue,
    ...keyFields,
    keyId: fields.keyId,
    registrationHash: fields.registrationHash,
    joinedAt: now,
    lastSeen: now,
    messagesIn: 0,
    messagesOut: 0,
    messageRate: new TokenBucket(
      limits.messagesPerSecond,
      limits.messageBurst,
      now,
    ),
    rsaBlockRate: new TokenBucket(
      limits.rsaBlocksPerSecond,
      limits.rsaBlockBurst,
      now,
    ),
    keepaliveRate: new TokenBucket(
      limits.keepalivesPerSecond,
      limits.keepaliveBurst,
      now,
    ),
    extendedAt: -Infinity,
    extensions: 0,
  };
}

/**
 * Gives a member a new key in place (a rekey: the record stays the same
 * object, which the group fan-out and the presence queue refer to). The old
 * guard is released.
 */
export function replaceKey(member: Member, memberKey: MemberKey): void {
  member.guard?.[Symbol.dispose]();
  if (memberKey.profile === "hybrid") {
    Object.assign(member, {
      profile: "hybrid",
      guard: memberKey.guard,
      rsaKey: undefined,
    });
  } else {
    Object.assign(member, {
      profile: "rsa",
      guard: undefined,
      rsaKey: memberKey.rsaKey,
    });
  }
}

/** Options of {@linkcode MemberTable}. */
export interface MemberTableOptions {
  /** The clock (ms). Default `Date.now`. */
  readonly now?: () => number;
  /**
   * How long a hybrid member's key stays refused after the member left or
   * rekeyed (ms): as long as its tokens can still pass the age and skew
   * checks (2 x the maximum token age, plus a second). Default 0: not at all.
   */
  readonly retireKeysMs?: number;
  /** Retired key ids remembered at most (the oldest are forgotten first). Default 65,536. */
  readonly maxRetiredKeys?: number;
}

/** The members by `IP:PORT`, with how many each IP holds. */
export class MemberTable {
  readonly #members = new Map<string, Member>();
  readonly #perIp = new Map<string, number>();
  /** Hybrid members by key id: a Fernet key belongs to one member at a time. */
  readonly #keyHolders = new Map<string, Member>();
  /** Key ids of hybrid members that left or rekeyed, until they may return. */
  readonly #retiredKeys: ExpiringMap<true>;
  readonly #now: () => number;
  readonly #retireKeysMs: number;

  /** @param options the clock and how long a released key stays refused */
  constructor(options: MemberTableOptions = {}) {
    this.#now = options.now ?? Date.now;
    this.#retireKeysMs = options.retireKeysMs ?? 0;
    this.#retiredKeys = new ExpiringMap(options.maxRetiredKeys ?? 65_536);
  }

  /** Members now. */
  get size(): number {
    return this.#members.size;
  }

  /** The member at `key` (`IP:PORT`), if any. */
  get(key: string): Member | undefined {
    return this.#members.get(key);
  }

  /** Whether a member is at `key`. */
  has(key: string): boolean {
    return this.#members.has(key);
  }

  /** Members registered from `hostname`. */
  countFromIp(hostname: string): number {
    return this.#perIp.get(hostname) ?? 0;
  }

  /** The members, in registration order. */
  values(): IterableIterator<Member> {
    return this.#members.values();
  }

  /**
   * Whether the key of `keyId` is another's than `asker`'s: held by another
   * hybrid member, or released (that member left or rekeyed) less than
   * `retireKeysMs` ago. A key is one member's: replay windows are per
   * member, so a second member with the key, or a new one while the old
   * tokens still pass the age checks, could replay them as its own. Always
   * false for RSA keys, which are neither held here nor retired.
   */
  keyTaken(keyId: string, asker: Member | undefined): boolean {
    const holder = this.#keyHolders.get(keyId);
    return (holder !== undefined && holder !== asker) ||
      this.#retiredKeys.get(keyId, this.#now()) !== undefined;
  }

  /**
   * Records that `member`, a member of this table, now holds the key of
   * `keyId` (a rekey, after `replaceKey`); its previous key is retired.
   */
  setKeyId(member: Member, keyId: string): void {
    if (this.#members.get(member.key) !== member) return;
    this.#release(member);
    member.keyId = keyId;
    if (member.profile === "hybrid") this.#keyHolders.set(keyId, member);
  }

  /** Drops `member`'s key from the index and retires it. */
  #release(member: Member): void {
    if (this.#keyHolders.get(member.keyId) !== member) return;
    this.#keyHolders.delete(member.keyId);
    if (this.#retireKeysMs <= 0) return;
    const now = this.#now();
    this.#retiredKeys.set(member.keyId, true, now + this.#retireKeysMs, now);
  }

  /** Adds a new member. */
  add(member: Member): void {
    this.#members.set(member.key, member);
    if (member.profile === "hybrid") this.#keyHolders.set(member.keyId, member);
    const hostname = member.address.hostname;
    this.#perIp.set(hostname, this.countFromIp(hostname) + 1);
  }

  /** Removes `member` if it is still the one at its address; returns whether it was. */
  delete(member: Member): boolean {
    if (this.#members.get(member.key) !== member) return false;
    this.#release(member);
    this.#members.delete(member.key);
    const hostname = member.address.hostname;
    const fromIp = (this.#perIp.get(hostname) ?? 1) - 1;
    if (fromIp > 0) this.#perIp.set(hostname, fromIp);
    else this.#perIp.delete(hostname);
    return true;
  }

  /** Releases every member's key and forgets them all (shutdown). */
  clear(): void {
    for (const member of this.#members.values()) {
      member.guard?.[Symbol.dispose]();
    }
    this.#members.clear();
    this.#perIp.clear();
    this.#keyHolders.clear();
    this.#retiredKeys.clear();
  }

  /** What the `clients` command shows. */
  info(): MemberInfo[] {
    return [...this.#members.values()].map((m) => ({
      address: m.key,
      profile: m.profile,
      joinedAt: m.joinedAt,
      lastSeen: m.lastSeen,
      messagesIn: m.messagesIn,
      messagesOut: m.messagesOut,
    }));
  }
}
