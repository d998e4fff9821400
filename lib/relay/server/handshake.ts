/**
 * The key exchange (protocol.md sections 4 and 10): answers to key requests
 * (a stateless cookie and the server's key, bounded by the request's size
 * and the handshake budgets), registration (cookie, one cookie one key, RSA
 * work, key proof of a rekey, the member limits), and the WELCOME.
 *
 * @module
 */
import { InvalidKeyError } from "../../errors.ts";
import { encodeBase64 } from "../../crypto/base64.ts";
import { FernetKey } from "../../crypto/fernet.ts";
import { constantTimeEqual, hmacSha256 } from "../../crypto/hmac.ts";
import type { IvMarker } from "../../crypto/iv_mark.ts";
import { RsaDecryptError, RsaPublicKey } from "../../crypto/rsa.ts";
import { sha256 } from "../../crypto/sha256.ts";
import { TokenGuard } from "../../crypto/token_guard.ts";
import type { DropCounter } from "../../core/drops.ts";
import { SourceRateLimiter, TokenBucket } from "../../core/limits.ts";
import type { Reassembler } from "../../core/reassembler.ts";
import type { RsaDecryptPool } from "../../runtime/rsa_pool.ts";
import { encodeAddress, type PeerAddress } from "../../wire/address.ts";
import { encodeToClient } from "../../wire/message_codec.ts";
import { NoticeCode } from "../../wire/notice.ts";
import { encodeRecords, RecordType, type TlvRecord } from "../../wire/tlv.ts";
import type { LogSink } from "../../log.ts";
import {
  createMember,
  type Member,
  type MemberKey,
  type MemberTable,
  replaceKey,
} from "./member.ts";
import { CookieGate } from "./cookies.ts";
import type { ServerConfig } from "./options.ts";
import type { Output } from "./output.ts";
import type { Presence } from "./presence.ts";
import type { ServerCounters } from "./stats.ts";
import type { StatusChannel } from "./status.ts";

/** Bytes of SHA-256 that a KEY_PROOF's plaintext carries (section 10). */
const KEY_PROOF_SIZE = 16;

const decoder = new TextDecoder();

/** Bytes of key answers one received datagram may still cause (section 10). */
export interface AnswerBudget {
  /** Bytes left. */
  bytes: number;
}

/** The records around a key record: the COOKIE before it, the KEY_PROOF after it. */
export interface KeyBundle {
  /** The COOKIE record's value, if the stream had one before the key. */
  readonly cookie?: Uint8Array | undefined;
  /** The KEY_PROOF record's value, if one follows the key. */
  readonly proof?: Uint8Array | undefined;
}

/** What {@linkcode Handshake} needs. */
export interface HandshakeContext {
  /** The server's settings (key, answer size, compat, limits, Fernet backend). */
  readonly config: Pick<
    ServerConfig,
    "publicPem" | "keyAnswerSize" | "compat" | "limits" | "fernetBackend"
  >;
  /** The members. */
  readonly members: MemberTable;
  /** Sends. */
  readonly output: Output;
  /** Tells the members of a join, and a newcomer who is here. */
  readonly presence: Pick<Presence, "joined" | "presentRecords">;
  /** Counts drops. */
  readonly drops: DropCounter;
  /** Logs joins and rekeys. */
  readonly log: LogSink;
  /** The clock (ms). */
  readonly now: () => number;
  /** Decrypts hybrid members' keys. */
  readonly rsa: Pick<RsaDecryptPool, "decrypt">;
  /** Marks the IVs of tokens the server sealed (reflection). */
  readonly marker: IvMarker;
  /** Registration and rekey counts. */
  readonly counters: ServerCounters;
  /** Unregistered sources' reassembly buffers (a new member's are forgotten). */
  readonly strangerReassembly: Pick<Reassembler, "forgetSource">;
  /** Server events for embedders. */
  readonly status: StatusChannel;
  /** Whether `from` is banned (and its datagram dropped). */
  readonly isBanned: (from: PeerAddress, source: string) => boolean;
  /** Whether the server is stopping. */
  readonly closing: () => boolean;
}

/** A key record opened: the key and what identifies it. */
type OpenedKey =
  | {
    readonly profile: "hybrid";
    readonly keyId: string;
    /** Undefined when the member already held this key when it was opened. */
    readonly fernetKey: FernetKey | undefined;
  }
  | {
    readonly profile: "rsa";
    readonly keyId: string;
    readonly rsaKey: RsaPublicKey;
  };

/** The key exchange: key request answers and registrations. */
export class Handshake {
  readonly #context: HandshakeContext;
  readonly #cookies: CookieGate;
  readonly #keyIdSecret = crypto.getRandomValues(new Uint8Array(32));
  readonly #limiter: SourceRateLimiter;
  readonly #budget: TokenBucket;
  #pending = 0;

  /** @param context what it reads and whom it tells */
  constructor(context: HandshakeContext) {
    this.#context = context;
    const { limits } = context.config;
    this.#cookies = new CookieGate(context.drops, context.now);
    this.#limiter = new SourceRateLimiter(
      limits.handshakesPerSecond,
      limits.handshakeBurst,
    );
    this.#budget = new TokenBucket(
      limits.globalHandshakesPerSecond,
      limits.globalHandshakeBurst,
      context.now(),
    );
  }

  /** Answers a KEY_REQUEST with a cookie and the server's key, when the request and the budgets allow. */
  answerKeyRequest(
    from: PeerAddress,
    source: string,
    requestSize: number,
    answerBudget: AnswerBudget,
  ): void {
    const { config, drops, output } = this.#context;
    const answerSize = config.keyAnswerSize;
    if (!config.compat && requestSize < answerSize) {
      drops.drop("short_key_request", source);
      return;
    }
    if (!config.compat && answerBudget.bytes < answerSize) {
      // Earlier answers to this datagram used up what it may cause.
      drops.drop("answer_budget", source);
      return;
    }
    const now = this.#context.now();
    if (!this.#limiter.allow(source, now)) {
      drops.drop("handshake_rate", source);
      return;
    }
    // Key requests leave half of the global budget to validated cookies.
    const reserve = this.#budget.burst / 2;
    if (!this.#budget.take(now, 1, reserve)) {
      drops.drop("handshake_global_rate", source);
      return;
    }
    answerBudget.bytes -= answerSize;
    const cookie = this.#cookies.issue(encodeAddress(from));
    output.sendStream(
      encodeRecords(encodeToClient([
        { kind: "server_key", pem: config.publicPem, cookie },
      ])),
      from,
    );
  }

  /**
   * A key record (SYMMETRIC_KEY or CLIENT_PUBLIC_KEY) with the COOKIE before
   * it and the KEY_PROOF after it: protocol.md sections 4 and 10. The cookie
   * is checked, and one cookie is taken for one key record only, before any
   * RSA work; a hybrid member's key is replaced only with a proof made under
   * its current key.
   */
  async register(
    from: PeerAddress,
    source: string,
    record: TlvRecord,
    bundle: KeyBundle,
    requestSize: number,
  ): Promise<void> {
    const context = this.#context;
    const { config, drops, members } = context;
    const { cookie, proof } = bundle;
    const addressValue = encodeAddress(from);
    const recordHash = sha256(record.value);
    /** The cookie as the key of the accepted-cookie memory. */
    let cookieId: string | undefined;
    if (cookie === undefined) {
      if (!config.compat) {
        drops.drop("cookie_missing", source);
        return;
      }
    } else {
      cookieId = this.#cookies.verify(cookie, addressValue, source);
      if (cookieId === undefined) return;
      const use = this.#cookies.use(cookieId, recordHash, source);
      if (use === "refused") return;
      if (use === "same_key") {
        // The same cookie with the same key record: a retransmission (its
        // WELCOME was lost), answered again without RSA work while that
        // registration is still in force; a replay of one that is not (the
        // member left or changed key since) is refused.
        const existing = members.get(source);
        if (
          existing !== undefined &&
          constantTimeEqual(existing.registrationHash, recordHash)
        ) {
          await this.#welcomeAgain(existing);
        } else drops.drop("registration_replayed", source);
        return;
      }
    }
    const now = context.now();
    if (!this.#limiter.allow(source, now)) {
      drops.drop("handshake_rate", source);
      return;
    }
    if (!this.#budget.take(now)) {
      drops.drop("handshake_global_rate", source);
      return;
    }
    if (this.#pending >= config.limits.maxPendingHandshakes) {
      drops.drop("handshake_busy", source);
      return;
    }
    const profile = record.type === RecordType.SYMMETRIC_KEY ? "hybrid" : "rsa";
    // A hybrid member's identity is its key: nothing but a rekey proven
    // under that key replaces it (an RSA registration would not carry one).
    if (members.get(source)?.profile === "hybrid" && profile === "rsa") {
      drops.drop("rekey_without_proof", source);
      return;
    }
    const opened = await this.#openKey(profile, record.value, source);
    if (opened === undefined) return;
    const refuse = () => {
      if (opened.profile === "hybrid") opened.fernetKey?.[Symbol.dispose]();
    };
    if (context.closing()) return refuse();
    // Banned while the RSA work ran: not let in.
    if (context.isBanned(from, source)) return refuse();
    // Another stream may have spent this cookie while the RSA work ran.
    if (
      cookieId !== undefined &&
      this.#cookies.use(cookieId, recordHash, source) === "refused"
    ) return refuse();
    const remember = () => {
      if (cookieId !== undefined) this.#cookies.remember(cookieId, recordHash);
    };

    const existing = members.get(source);
    if (existing?.keyId === opened.keyId) {
      // Its current key again (its WELCOME was lost): answer again, change
      // nothing, so the member's replay window survives.
      refuse();
      remember();
      await this.#welcomeAgain(existing);
      return;
    }
    // A key another member holds or held: refused (PROTOCOL.md section 4).
    const keyTaken = () => members.keyTaken(opened.keyId, existing);
    if (keyTaken()) {
      drops.drop("key_in_use", source);
      return refuse();
    }
    if (existing?.profile === "hybrid") {
      // The proof check may wait: the member may leave, or its key be taken.
      const verdict: string | undefined =
        await this.#checkKeyProof(existing, proof, recordHash) ??
          (members.get(source) !== existing
            ? "registration_raced"
            : keyTaken()
            ? "key_in_use"
            : undefined);
      if (verdict !== undefined) {
        drops.drop(verdict, source);
        return refuse();
      }
    }
    let memberKey: MemberKey;
    if (opened.profile === "rsa") {
      memberKey = { profile: "rsa", rsaKey: opened.rsaKey };
    } else if (opened.fernetKey === undefined) {
      // The member held this key when it was opened and changed key or left
      // while the RSA work ran: the client's retry starts over.
      drops.drop("registration_raced", source);
      return;
    } else {
      memberKey = {
        profile: "hybrid",
        guard: new TokenGuard(
          opened.fernetKey,
          context.marker,
          config.limits.tokenMaxAgeSeconds,
          config.limits.replayEntries,
        ),
      };
    }
    if (existing) {
      remember();
      replaceKey(existing, memberKey);
      members.setKeyId(existing, opened.keyId);
      existing.registrationHash = recordHash;
      existing.lastSeen = now;
      context.counters.rekeys++;
      context.log({ level: "info", event: "rekey", client: source, profile });
      if (context.status.listening) {
        context.status.emit({ type: "rekey", address: source, profile });
      }
      context.output.sendStream(
        encodeRecords([await this.#welcome(existing)]),
        existing.address,
      );
      return;
    }
    const full = members.size >= config.limits.maxClients;
    const fromIp = members.countFromIp(from.hostname);
    if (full || fromIp >= config.limits.maxClientsPerIp) {
      memberKey.guard?.[Symbol.dispose]();
      if (full) drops.drop("server_full", source);
      else {
        drops.drop("ip_full", source, {
          limit: config.limits.maxClientsPerIp,
        });
      }
      context.output.sendNotice(from, NoticeCode.SERVER_FULL, requestSize);
      return;
    }
    remember();
    const member = createMember(
      {
        address: from,
        key: source,
        addressValue,
        keyId: opened.keyId,
        registrationHash: recordHash,
      },
      memberKey,
      config.limits,
      now,
    );
    members.add(member);
    context.strangerReassembly.forgetSource(source);
    context.counters.registrations++;
    context.log({ level: "info", event: "join", client: source, profile });
    if (context.status.listening) {
      context.status.emit({ type: "join", address: source, profile });
    }
    context.presence.joined(member);
    context.output.sendPacked(
      [await this.#welcome(member), ...context.presence.presentRecords(member)],
      from,
    );
  }

  /** Whether the member at `source` now holds the key of this registration record. */
  registeredWith(source: string, record: TlvRecord): boolean {
    const member = this.#context.members.get(source);
    return member?.profile === "hybrid" &&
      constantTimeEqual(member.registrationHash, sha256(record.value));
  }

  /**
   * Opens a key record in an RSA slot: a hybrid member's Fernet key (made
   * only when it is not the key the member already holds), or an RSA
   * member's public key. Undefined (dropped and counted) when it is bad.
   */
  async #openKey(
    profile: "hybrid" | "rsa",
    value: Uint8Array,
    source: string,
  ): Promise<OpenedKey | undefined> {
    const { drops, members, config } = this.#context;
    this.#pending++;
    try {
      if (profile === "hybrid") {
        const keyText = await this.#context.rsa.decrypt(value);
        const keyId = encodeBase64(
          hmacSha256(this.#keyIdSecret, keyText).subarray(0, 16),
        );
        // One long-lived AES cipher per member key (PERFORMANCE.md),
        // released when the key is replaced or the member leaves.
        const fernetKey = members.get(source)?.keyId === keyId
          ? undefined
          : await FernetKey.fromText(keyText, config.fernetBackend, {
            persistentCiphers: true,
          });
        return { profile, keyId, fernetKey };
      }
      const rsaKey = await RsaPublicKey.fromPem(decoder.decode(value));
      if (rsaKey.modulusBits < 2048 || rsaKey.modulusBits > 4096) {
        drops.drop("client_key_size", source, { bits: rsaKey.modulusBits });
        return undefined;
      }
      return { profile, keyId: rsaKey.fingerprint, rsaKey };
    } catch (error) {
      if (
        error instanceof RsaDecryptError || error instanceof RangeError ||
        error instanceof InvalidKeyError
      ) {
        drops.drop(
          profile === "hybrid" ? "bad_symmetric_key" : "bad_client_key",
          source,
          { error: error.message },
        );
        return undefined;
      }
      throw error;
    } finally {
      this.#pending--;
    }
  }

  /** Answers a repeated registration again: WELCOME and the present members, nothing changed. */
  async #welcomeAgain(member: Member): Promise<void> {
    const { drops, output, presence } = this.#context;
    drops.count("registration_repeated");
    output.sendPacked(
      [await this.#welcome(member), ...presence.presentRecords(member)],
      member.address,
    );
  }

  /**
   * Checks a rekey's KEY_PROOF under the member's current key (MAC, age,
   * replay, reflection): its plaintext must be the first 16 bytes of the
   * SHA-256 of the new key record's value. Returns the drop reason, or
   * undefined when the proof holds.
   */
  async #checkKeyProof(
    member: Member,
    proof: Uint8Array | undefined,
    recordHash: Uint8Array,
  ): Promise<string | undefined> {
    if (proof === undefined || member.profile !== "hybrid") {
      return "rekey_without_proof";
    }
    const opened = await member.guard.open(proof, this.#context.now());
    if (!opened.ok) return `rekey_proof_${opened.reason}`;
    return constantTimeEqual(
        opened.plaintext,
        recordHash.subarray(0, KEY_PROOF_SIZE),
      )
      ? undefined
      : "rekey_proof_mismatch";
  }

  /** The WELCOME record for `member`: its address under its own key. */
  async #welcome(member: Member): Promise<TlvRecord> {
    const value = member.profile === "hybrid"
      ? await member.guard.seal(member.addressValue, this.#context.now())
      : await member.rsaKey.encrypt(member.addressValue);
    return { type: RecordType.WELCOME, value };
  }
}
