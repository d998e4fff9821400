/**
 * Who is here, for the members: NOTIFY_CONNECT and NOTIFY_DISCONNECT
 * (batched past the first few per interval), the present members told to a
 * newcomer, removal (and telling a removed member why), the silence sweep
 * (with the kernel's drop counter, the server's own loss), and the liveness
 * records of a member: KEEPALIVE and DISCONNECT.
 *
 * @module
 */
import { REMOVAL_NOTICE_LABEL } from "../../crypto/derive_key.ts";
import { constantTimeEqual } from "../../crypto/hmac.ts";
import type { DropCounter } from "../../core/drops.ts";
import type { Reassembler } from "../../core/reassembler.ts";
import type { PresenceJudge } from "../../core/silence.ts";
import { decodeAddress, formatAddress } from "../../wire/address.ts";
import { encodeToClient } from "../../wire/message_codec.ts";
import {
  encodeRemoval,
  formatRemovalText,
  noticeRecord,
  type RemovalNotice,
} from "../../wire/notice.ts";
import { encodeRecords, RecordType, type TlvRecord } from "../../wire/tlv.ts";
import type { LogSink } from "../../log.ts";
import type { Federation } from "./federation.ts";
import type { GroupFanout } from "./group_fanout.ts";
import type { Member, MemberTable } from "./member.ts";
import type { Output } from "./output.ts";
import type { LeaveReason, StatusChannel } from "./status.ts";

/** The kernel's drop counter is read at most this often. */
const KERNEL_DROPS_POLL_MS = 1000;

/** Presence changes sent at once per batch interval; more wait for its end (`presenceBatchMs`). */
export const PRESENCE_AT_ONCE = 8;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const DISCONNECT_TEXT = encoder.encode("DISCONNECT");
const EMPTY = new Uint8Array(0);

/** A presence record type. */
export type PresenceType =
  | typeof RecordType.NOTIFY_CONNECT
  | typeof RecordType.NOTIFY_DISCONNECT;

/** What {@linkcode Presence} needs. */
export interface PresenceContext {
  /** Largest datagram sent (removal notices). */
  readonly mtu: number;
  /** Presence batch interval (ms; 0: every change at once). */
  readonly presenceBatchMs: number;
  /** Empty keep-alives accepted (protocol.md 6.1). */
  readonly compat: boolean;
  /** The members. */
  readonly members: MemberTable;
  /** Sends. */
  readonly output: Output;
  /** Counts drops. */
  readonly drops: DropCounter;
  /** Logs joins, leaves, stalls. */
  readonly log: LogSink;
  /** The clock (ms). */
  readonly now: () => number;
  /** Judges silence (and knows the server's own loss). */
  readonly judge: PresenceJudge;
  /** Datagrams the kernel dropped on the server's socket so far, if known. */
  readonly kernelDrops: (() => number | undefined) | undefined;
  /** The group fan-out, if on (told of leaves). */
  readonly group: GroupFanout<Member> | undefined;
  /** The federation, if any (told of leaves; knows remote members). */
  readonly federation: Federation | undefined;
  /** Members' reassembly buffers (a leaver's are forgotten). */
  readonly memberReassembly: Pick<Reassembler, "forgetSource">;
  /** Server events for embedders. */
  readonly status: StatusChannel;
  /** Whether the server is stopping (it then sends what is queued itself). */
  readonly closing: () => boolean;
}

/** Presence: notices of joins and leaves, removal, silence, liveness. */
export class Presence {
  readonly #context: PresenceContext;
  /** Presence records waiting for the end of the batch interval, each with the member it is about (who does not get it). */
  readonly #queue: { record: TlvRecord; about?: Member }[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** Presence changes sent at once in the current batch interval. */
  #atOnce = 0;
  #kernelDropped: number | undefined;
  #kernelPolledAt = -Infinity;

  /** @param context what it reads and whom it tells */
  constructor(context: PresenceContext) {
    this.#context = context;
  }

  /**
   * Sends one NOTIFY_CONNECT or NOTIFY_DISCONNECT record to every member but
   * `except`: at once when no other change went out within the batch
   * interval, else with the changes of the interval when it ends.
   */
  notify(type: PresenceType, addressValue: Uint8Array, except?: Member): void {
    const context = this.#context;
    this.#queue.push({ record: { type, value: addressValue }, about: except });
    if (context.closing()) return; // the shutdown sends what is queued
    if (context.presenceBatchMs <= 0) return this.flush();
    if (this.#atOnce < PRESENCE_AT_ONCE) {
      this.#atOnce++;
      this.flush();
    }
    this.#timer ??= setTimeout(this.#endInterval, context.presenceBatchMs);
  }

  /** The batch interval is over: what it queued goes out, and a new one starts if there was any. */
  readonly #endInterval = (): void => {
    this.#timer = undefined;
    this.#atOnce = 0;
    if (this.#queue.length === 0) return;
    this.flush();
    this.#timer = setTimeout(
      this.#endInterval,
      this.#context.presenceBatchMs,
    );
  };

  /**
   * Sends the queued presence records, in order, to every member: one
   * packing shared by all, except for the members a record is about (they
   * do not get their own).
   */
  flush(): void {
    if (this.#queue.length === 0) return;
    const { members, output } = this.#context;
    const queued = this.#queue.splice(0);
    const shared = output.pack(queued.map((q) => q.record));
    const subjects = new Set(queued.map((q) => q.about));
    for (const member of members.values()) {
      const datagrams = subjects.has(member)
        ? output.pack(
          queued.filter((q) => q.about !== member).map((q) => q.record),
        )
        : shared;
      for (const datagram of datagrams) output.send(datagram, member.address);
    }
  }

  /** Stops the batch timer (shutdown; {@linkcode flush} still sends what is queued). */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** A new member is here: the others (and the federation) hear of it. */
  joined(member: Member): void {
    const { federation } = this.#context;
    federation?.announceJoin(member.addressValue);
    if (federation?.hasRemote(member.key)) {
      // It moved here from another relay, where the members here saw it:
      // they see it leave and come back, as at the other relays.
      this.notify(RecordType.NOTIFY_DISCONNECT, member.addressValue, member);
    }
    this.notify(RecordType.NOTIFY_CONNECT, member.addressValue, member);
  }

  /** One NOTIFY_CONNECT per member other than `member`, here or at the other relays of a federation. */
  presentRecords(member: Member): TlvRecord[] {
    const { members, federation } = this.#context;
    const present: TlvRecord[] = [];
    for (const other of members.values()) {
      if (other !== member) {
        present.push({
          type: RecordType.NOTIFY_CONNECT,
          value: other.addressValue,
        });
      }
    }
    for (const remote of federation?.remoteAddresses() ?? []) {
      const key = formatAddress(decodeAddress(remote));
      if (!members.has(key)) {
        present.push({ type: RecordType.NOTIFY_CONNECT, value: remote });
      }
    }
    return present;
  }

  /** Removes `member` (when it is still the one at its address) and tells the others. */
  remove(member: Member, reason: LeaveReason): void {
    const context = this.#context;
    if (!context.members.delete(member)) return;
    context.group?.onLeave(member);
    member.guard?.[Symbol.dispose]();
    context.memberReassembly.forgetSource(member.key);
    context.log({ level: "info", event: "leave", client: member.key, reason });
    if (context.status.listening) {
      context.status.emit({
        type: "leave",
        address: member.key,
        profile: member.profile,
        reason,
      });
    }
    context.federation?.announceLeave(member.addressValue);
    if (!context.federation?.hasRemote(member.key)) {
      this.notify(RecordType.NOTIFY_DISCONNECT, member.addressValue);
    }
  }

  /**
   * Tells a member it is removed (NOTICE 6 or 7, PROTOCOL.md section 7):
   * for a hybrid member the value after the code is a token of the removal
   * body under the key derived from its key for removal notices only (no
   * relayed message can pass for one), so nobody else can make it give up;
   * an RSA member gets the body as plain text. Sent before the member is
   * removed, at most the MTU; the operator caused it, so no datagram bounds
   * it.
   */
  tellRemoved(member: Member, notice: RemovalNotice): void {
    const { mtu, output, drops, now } = this.#context;
    const send = (text: string) => {
      const record = noticeRecord(notice.code, mtu, text);
      if (record) output.send(encodeRecords([record]), member.address);
    };
    const guard = member.guard;
    if (!guard) return send(formatRemovalText(notice));
    const body = encodeRemoval(notice);
    if (guard.canSealSync) {
      const removal = guard.deriveSync(REMOVAL_NOTICE_LABEL);
      send(decoder.decode(removal.sealSync(body, now())));
    } else {
      guard.derive(REMOVAL_NOTICE_LABEL).then((removal) =>
        removal.seal(body, now())
      ).then(
        (token) => send(decoder.decode(token)),
        (error) =>
          drops.drop("notice_unsealed", member.key, { error: String(error) }),
      );
    }
  }

  /**
   * The silence sweep: members silent past the timeout are removed. After a
   * stall (this sweep ran late) nobody is judged until a whole timeout has
   * passed, and a member whose window saw the server drop datagrams itself
   * gets its window extended instead ({@linkcode PresenceJudge}).
   */
  sweep(now: number, overloaded: boolean): void {
    const { judge, members, log } = this.#context;
    if (judge.sweep(now)) {
      log({
        level: "warn",
        event: "stall",
        message:
          "the presence sweep ran late (the process was stopped or its event loop blocked): silence counts from now, so queued datagrams are read before anyone is judged",
      });
    }
    this.#pollKernelDrops(now);
    if (overloaded) judge.selfDrop(now);
    for (const member of [...members.values()]) {
      const verdict = judge.judge(member, now);
      if (verdict === "silent") this.remove(member, "timeout");
      else if (verdict === "extended") {
        log({
          level: "warn",
          event: "timeout_extended",
          client: member.key,
          extensions: member.extensions,
          message:
            "silent past the timeout, but the server itself dropped datagrams meanwhile: its window is extended",
        });
      }
    }
  }

  /** Datagrams the kernel dropped on the server's socket (undefined: not measurable here). */
  get kernelDropped(): number | undefined {
    return this.#kernelDropped;
  }

  /** Reads the kernel's drop counter (at most once a second); a rise is the server's own loss. */
  #pollKernelDrops(now: number): void {
    const { kernelDrops, judge, log } = this.#context;
    if (!kernelDrops || now - this.#kernelPolledAt < KERNEL_DROPS_POLL_MS) {
      return;
    }
    this.#kernelPolledAt = now;
    const total = kernelDrops();
    const before = this.#kernelDropped ?? 0;
    this.#kernelDropped = total;
    if (total === undefined || total <= before) return;
    judge.selfDrop(now);
    log({
      level: "warn",
      event: "kernel_drops",
      kernel_dropped: total,
      new: total - before,
      message:
        "the kernel dropped datagrams on the server's socket (its receive queue was full): the server does not keep up",
    });
  }

  /**
   * A hybrid member's keep-alive: rate-limited before any crypto, checked
   * (MAC, age, replay, reflection, empty plaintext), and answered with a
   * KEEPALIVE token of the empty plaintext under the member's key
   * (protocol.md section 10), so the client can tell that the server still
   * holds it. Returns whether the keep-alive proved the member's key.
   */
  async onKeepalive(member: Member, value: Uint8Array): Promise<boolean> {
    if (member.profile === "rsa") return false; // refreshed at stream start
    const { compat, drops, members, output } = this.#context;
    const now = this.#context.now();
    if (!member.keepaliveRate.take(now)) {
      drops.drop("keepalive_rate", member.key);
      return false;
    }
    if (value.length === 0 || value.every((b) => b === 0)) {
      if (compat) member.lastSeen = now;
      else drops.drop("keepalive_unauthenticated", member.key);
      return false;
    }
    const guard = member.guard;
    const opened = await guard.open(value, now);
    if (!opened.ok) {
      drops.drop(opened.reason, member.key);
      return false;
    }
    if (opened.plaintext.length !== 0) {
      drops.drop("keepalive_not_empty", member.key);
      return false;
    }
    member.lastSeen = now;
    if (members.get(member.key) !== member) return true; // left meanwhile
    output.send(
      encodeRecords(encodeToClient([{
        kind: "keepalive_answer",
        value: await guard.seal(EMPTY, now),
      }])),
      member.address,
    );
    return true;
  }

  /** A DISCONNECT: an RSA member's is empty; a hybrid member's is a token of "DISCONNECT" under its key. */
  async onDisconnect(member: Member, value: Uint8Array): Promise<void> {
    const { drops, members, now } = this.#context;
    if (member.profile === "rsa") {
      if (value.length === 0) this.remove(member, "disconnect");
      else drops.drop("forged_disconnect", member.key);
      return;
    }
    const opened = await member.guard.open(value, now());
    if (!opened.ok) {
      drops.drop(
        opened.reason === "token_signature"
          ? "forged_disconnect"
          : opened.reason,
        member.key,
      );
    } else if (!constantTimeEqual(opened.plaintext, DISCONNECT_TEXT)) {
      drops.drop("forged_disconnect", member.key);
    } else if (members.get(member.key) === member) {
      this.remove(member, "disconnect");
    }
  }
}
