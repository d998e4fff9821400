/**
 * Relaying a message (protocol.md section 5): open the sender's token (or
 * its RSA blocks), check size and rate, and deliver a copy under each
 * member's key, with the sender's address. Members whose key seals
 * synchronously are served in place in the receive loop's turn (the hot
 * path: one datagram written per recipient, no promise in between); RSA
 * members and WebCrypto keys after. The recipients' tokens of one message
 * share one marked IV, each under its member's own key, and their datagrams
 * come from a {@linkcode ByteSlab} (PERFORMANCE.md, "Cost at a fixed pace").
 *
 * @module
 */
import { ByteSlab } from "../../core/byte_slab.ts";
import { FernetKey } from "../../crypto/fernet.ts";
import { RsaDecryptError } from "../../crypto/rsa.ts";
import type { DropCounter } from "../../core/drops.ts";
import type { RsaDecryptPool } from "../../runtime/rsa_pool.ts";
import { decodeAddress, formatAddress } from "../../wire/address.ts";
import { NoticeCode } from "../../wire/notice.ts";
import {
  encodeRecords,
  encodeRecordsInto,
  MAX_TLV_VALUE_SIZE,
  RecordType,
  TLV_HEADER_SIZE,
  type TlvRecord,
  writeRecordHeader,
} from "../../wire/tlv.ts";
import type { LogSink } from "../../log.ts";
import type { Federation } from "./federation.ts";
import type { GroupFanout } from "./group_fanout.ts";
import type { Member, MemberTable } from "./member.ts";
import type { ServerConfig } from "./options.ts";
import type { Output } from "./output.ts";
import type { Presence } from "./presence.ts";
import type { ServerCounters } from "./stats.ts";

/** What {@linkcode Fanout} needs. */
export interface FanoutContext {
  /** The server's settings (MTU, limits). */
  readonly config: Pick<ServerConfig, "mtu" | "limits">;
  /** The members. */
  readonly members: MemberTable;
  /** Sends. */
  readonly output: Output;
  /** Presence changes go out before a message (members hear of a join first). */
  readonly presence: Pick<Presence, "flush">;
  /** Counts drops. */
  readonly drops: DropCounter;
  /** Logs each relay (debug) and failures. */
  readonly log: LogSink;
  /** The clock (ms). */
  readonly now: () => number;
  /** Decrypts RSA-profile messages. */
  readonly rsa: Pick<RsaDecryptPool, "decrypt">;
  /** The group fan-out, if on. */
  readonly group: GroupFanout<Member> | undefined;
  /** The federation, if any (local messages are published to it). */
  readonly federation: Federation | undefined;
  /** Relay counters. */
  readonly counters: ServerCounters;
  /** Whether the server is stopping. */
  readonly closing: () => boolean;
}

/** The relay: members' messages to every other member. */
export class Fanout {
  readonly #context: FanoutContext;
  /** The in-place datagrams: each is handed to a send and dropped. */
  readonly #slab = new ByteSlab();
  #pendingRsaMessages = 0;

  /** @param context what it reads and sends with */
  constructor(context: FanoutContext) {
    this.#context = context;
  }

  /** A hybrid member's FERNET_MESSAGE: opened (synchronously when the key allows) and relayed. */
  async onFernetMessage(
    member: Member,
    token: Uint8Array,
    requestSize: number,
  ): Promise<void> {
    if (member.profile !== "hybrid") {
      this.#context.drops.drop("profile_mismatch", member.key);
      return;
    }
    const now = this.#context.now();
    // Synchronously when the key allows: then the whole relay runs in the
    // receive loop's turn (no promise in between), which is also what the
    // load meter's measure of waiting needs.
    const guard = member.guard;
    const opened = guard.canSealSync
      ? guard.openSync(token, now)
      : await guard.open(token, now);
    if (!opened.ok) {
      this.#context.drops.drop(opened.reason, member.key);
      return;
    }
    member.lastSeen = now;
    await this.#relayChecked(member, opened.plaintext, requestSize);
  }

  /** An RSA member's message: its budgets spent first, then its blocks decrypted one by one and relayed. */
  async onRsaMessage(
    member: Member,
    blocks: readonly Uint8Array[],
    requestSize: number,
  ): Promise<void> {
    const { config, drops, output } = this.#context;
    if (blocks.length > config.limits.maxRsaBlocksPerMessage) {
      drops.drop("message_too_large", member.key);
      output.sendNotice(
        member.address,
        NoticeCode.MESSAGE_TOO_LARGE,
        requestSize,
      );
      return;
    }
    // Spend the member's budgets before any RSA work: one message, and one
    // RSA block per block.
    const now = this.#context.now();
    if (
      !member.rsaBlockRate.take(now, blocks.length) ||
      !member.messageRate.take(now)
    ) {
      drops.drop("rate_limited", member.key);
      output.sendNotice(member.address, NoticeCode.RATE_LIMITED, requestSize);
      return;
    }
    if (this.#pendingRsaMessages >= config.limits.maxPendingHandshakes) {
      drops.drop("rsa_busy", member.key);
      return;
    }
    const parts: Uint8Array[] = [];
    this.#pendingRsaMessages++;
    try {
      // Block by block, each in an RSA slot, so a long message shares the
      // crypto threads fairly with registrations and keeps the core cap.
      for (const block of blocks) {
        parts.push(await this.#context.rsa.decrypt(block));
      }
    } catch (error) {
      if (error instanceof RsaDecryptError || error instanceof RangeError) {
        drops.drop("bad_rsa_block", member.key);
        return;
      }
      throw error;
    } finally {
      this.#pendingRsaMessages--;
    }
    const plaintext = new Uint8Array(
      parts.reduce((total, part) => total + part.length, 0),
    );
    let offset = 0;
    for (const part of parts) {
      plaintext.set(part, offset);
      offset += part.length;
    }
    await this.#relayChecked(member, plaintext, requestSize, true);
  }

  /** Delivers a message of another relay's member to every local member. */
  relayRemote(sender: Uint8Array, message: Uint8Array): void {
    const { closing, config, drops, members, log } = this.#context;
    if (closing()) return;
    if (message.length > config.limits.maxMessageBytes) {
      drops.drop("federation_too_large", "federation");
      return;
    }
    // A member that moved here from another relay must not get its own
    // messages back.
    const local = members.get(formatAddress(decodeAddress(sender)));
    Promise.resolve(this.#fanOut(sender, message, local, this.#context.now()))
      .catch((error) =>
        log({ level: "error", event: "relay_failed", error: String(error) })
      );
  }

  async #relayChecked(
    sender: Member,
    plaintext: Uint8Array,
    requestSize: number,
    rateAlreadyTaken = false,
  ): Promise<void> {
    const context = this.#context;
    const now = context.now();
    if (plaintext.length > context.config.limits.maxMessageBytes) {
      context.drops.drop("message_too_large", sender.key);
      context.output.sendNotice(
        sender.address,
        NoticeCode.MESSAGE_TOO_LARGE,
        requestSize,
      );
      return;
    }
    if (!rateAlreadyTaken && !sender.messageRate.take(now)) {
      context.drops.drop("rate_limited", sender.key);
      context.output.sendNotice(
        sender.address,
        NoticeCode.RATE_LIMITED,
        requestSize,
      );
      return;
    }
    sender.messagesIn++;
    context.counters.messagesRelayed++;
    context.federation?.publishMessage(sender.addressValue, plaintext);
    const fanned = this.#fanOut(sender.addressValue, plaintext, sender, now);
    // Awaited only when some member's key seals asynchronously: the hot path
    // stays inside the receive loop's turn (the load meter relies on it).
    const recipients = typeof fanned === "number" ? fanned : await fanned;
    context.log({
      level: "debug",
      event: "relay",
      from: sender.key,
      bytes: plaintext.length,
      recipients,
    });
  }

  /**
   * Encrypts `plaintext` for every member but `except` and sends it with
   * the sender's address. Returns the number of recipients, as a promise
   * only when some member's key seals asynchronously.
   */
  #fanOut(
    senderAddress: Uint8Array,
    plaintext: Uint8Array,
    except: Member | undefined,
    now: number,
  ): number | Promise<number> {
    const { config, counters, group, members, output, presence } =
      this.#context;
    // Members hear of a join before the newcomer's messages.
    presence.flush();
    counters.messagesFannedOut++;
    // Group fan-out first: one token for every member holding the epoch key.
    const grouped = group?.relay(senderAddress, except, plaintext, now);
    const senderRecord: TlvRecord = {
      type: RecordType.SENDER,
      value: senderAddress,
    };
    // Members whose key seals synchronously (the hot path) are served in
    // this loop, each with one datagram written in place when the relay
    // stream fits one; the others (RSA, or a WebCrypto Fernet backend) after.
    const tokenLength = FernetKey.tokenLength(plaintext.length);
    const tokenAt = 2 * TLV_HEADER_SIZE + senderAddress.length;
    const inPlace = tokenLength <= MAX_TLV_VALUE_SIZE &&
      tokenAt + tokenLength <= config.mtu;
    let prefix: Uint8Array | undefined;
    if (inPlace) {
      prefix = new Uint8Array(tokenAt);
      writeRecordHeader(
        prefix,
        encodeRecordsInto([senderRecord], prefix, 0),
        RecordType.FERNET_MESSAGE,
        tokenLength,
      );
    }
    const later: Promise<void>[] = [];
    // One marked IV (the server's mark, which every member's guard carries)
    // for the recipients' tokens of this message, each under the
    // recipient's own key (made at the first one; PROTOCOL.md section 6).
    let sharedIv: Uint8Array | undefined;
    let recipients = 0;
    for (const member of members.values()) {
      if (member === except) continue;
      recipients++;
      if (grouped?.has(member)) {
        this.#countDelivery(member);
        continue;
      }
      const guard = member.guard;
      if (!guard?.canSealSync) {
        later.push(this.#deliverAsync(member, senderRecord, plaintext, now));
      } else if (prefix) {
        const datagram = this.#slab.take(tokenAt + tokenLength);
        datagram.set(prefix);
        sharedIv ??= guard.marker.create();
        guard.sealInto(plaintext, now, datagram, tokenAt, sharedIv);
        this.#countDelivery(member);
        output.sendRelay(datagram, member.address);
      } else {
        this.#deliver(member, [senderRecord, {
          type: RecordType.FERNET_MESSAGE,
          value: guard.sealSync(plaintext, now),
        }]);
      }
    }
    return later.length === 0
      ? recipients
      : Promise.all(later).then(() => recipients);
  }

  /** Encrypts for `member` asynchronously (RSA members, WebCrypto keys) and sends. */
  async #deliverAsync(
    member: Member,
    senderRecord: TlvRecord,
    plaintext: Uint8Array,
    now: number,
  ): Promise<void> {
    const records: TlvRecord[] = [senderRecord];
    if (member.profile === "hybrid") {
      records.push({
        type: RecordType.FERNET_MESSAGE,
        value: await member.guard.seal(plaintext, now),
      });
    } else {
      for (const block of await member.rsaKey.encryptChunks(plaintext)) {
        records.push({ type: RecordType.RSA_RELAY_BLOCK, value: block });
      }
    }
    this.#deliver(member, records);
  }

  /** Sends one relay stream (SENDER + the message for `member`). */
  #deliver(member: Member, records: readonly TlvRecord[]): void {
    this.#countDelivery(member);
    this.#context.output.sendRelayStream(
      encodeRecords(records),
      member.address,
    );
  }

  #countDelivery(member: Member): void {
    member.messagesOut++;
    this.#context.counters.deliveries++;
  }
}
