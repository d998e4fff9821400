/**
 * The stream dispatch: the one switch over a stream's records (protocol.md
 * sections 3-7), which hands each record to the module that acts on it, with
 * the per-stream bounds (records acted on, one key answer per stream) and
 * reassembly of FRAGMENT records.
 *
 * @module
 */
import type { DropCounter } from "../../core/drops.ts";
import type { Reassembler } from "../../core/reassembler.ts";
import type { PeerAddress } from "../../wire/address.ts";
import { NoticeCode } from "../../wire/notice.ts";
import {
  isKnownRecordType,
  RecordType,
  type TlvRecord,
} from "../../wire/tlv.ts";
import type { Fanout } from "./fanout.ts";
import type { GroupFanout } from "./group_fanout.ts";
import type { AnswerBudget, Handshake } from "./handshake.ts";
import type { Member, MemberTable } from "./member.ts";
import { MAX_RECORDS_PER_STREAM } from "./options.ts";
import type { Output } from "./output.ts";
import type { Presence } from "./presence.ts";

/** Record types only a server sends: receiving one is unexpected. */
const SERVER_ONLY_TYPES: ReadonlySet<number> = new Set([
  RecordType.SERVER_PUBLIC_KEY,
  RecordType.RSA_RELAY_BLOCK,
  RecordType.SENDER,
  RecordType.NOTIFY_CONNECT,
  RecordType.NOTIFY_DISCONNECT,
  RecordType.WELCOME,
  RecordType.NOTICE,
  RecordType.GROUP_KEY,
  RecordType.GROUP_MESSAGE,
]);

/** What {@linkcode Dispatch} needs: the modules records go to, and the bounds. */
export interface DispatchContext {
  /** The members. */
  readonly members: MemberTable;
  /** Counts drops. */
  readonly drops: DropCounter;
  /** The clock (ms). */
  readonly now: () => number;
  /** Whether the event loop is too busy for key exchanges (they are shed). */
  readonly overloaded: () => boolean;
  /** Key requests and registrations. */
  readonly handshake: Handshake;
  /** Messages. */
  readonly fanout: Fanout;
  /** Keep-alives and disconnects. */
  readonly presence: Presence;
  /** The group fan-out, if on (GROUP_CAPABLE). */
  readonly group: GroupFanout<Member> | undefined;
  /** Members' reassembly. */
  readonly memberReassembly: Reassembler;
  /** Unregistered sources' reassembly (small bounds). */
  readonly strangerReassembly: Reassembler;
  /** Sends NOTICE 3 to unknown sources. */
  readonly output: Pick<Output, "sendNotice">;
  /** Whether `from` is banned (and its datagram dropped). */
  readonly isBanned: (from: PeerAddress, source: string) => boolean;
  /** Whether the server is stopping. */
  readonly closing: () => boolean;
}

/** Acts on the records of a stream, in order. */
export class Dispatch {
  readonly #context: DispatchContext;

  /** @param context the modules and bounds */
  constructor(context: DispatchContext) {
    this.#context = context;
  }

  /**
   * Acts on one stream of `source` (a datagram, or a stream reassembled from
   * fragments). `requestSize` bounds NOTICEs; `answerBudget` bounds the key
   * answers of the datagram and the streams it completes (section 10).
   */
  async processStream(
    records: readonly TlvRecord[],
    from: PeerAddress,
    source: string,
    requestSize: number,
    answerBudget: AnswerBudget,
  ): Promise<void> {
    const context = this.#context;
    const { drops, members, handshake, fanout, presence } = context;
    // Queued before a ban, or completed by reassembly: still nothing done.
    if (context.isBanned(from, source)) return;
    let member = members.get(source);
    if (member?.profile === "rsa") member.lastSeen = context.now();
    let cookie: Uint8Array | undefined;
    let keyRequestAnswered = false;
    /** An earlier record of this stream proved the member's key (GROUP_CAPABLE). */
    let authenticated = false;
    const rsaBlocks: Uint8Array[] = [];
    let acted = 0;
    for (let i = 0; i < records.length; i++) {
      const record = records[i];
      if (context.closing()) return;
      if (
        record.type !== RecordType.RSA_BLOCK && ++acted > MAX_RECORDS_PER_STREAM
      ) {
        drops.drop("records_over_limit", source, { records: records.length });
        return;
      }
      member = members.get(source);
      switch (record.type) {
        case RecordType.FRAGMENT:
          await this.#onFragment(
            record.value,
            from,
            source,
            member,
            requestSize,
            answerBudget,
          );
          break;
        case RecordType.KEY_REQUEST:
          // One answer per stream: the answer is already as large as the
          // request may be, so a second one would amplify.
          if (keyRequestAnswered) drops.count("extra_key_request");
          else if (context.overloaded()) drops.count("handshake_shed");
          else {
            handshake.answerKeyRequest(from, source, requestSize, answerBudget);
          }
          keyRequestAnswered = true;
          break;
        case RecordType.COOKIE:
          cookie = record.value;
          break;
        case RecordType.SYMMETRIC_KEY:
        case RecordType.CLIENT_PUBLIC_KEY: {
          // A KEY_PROOF belongs to the key record right before it.
          const next = records[i + 1];
          const proof = next?.type === RecordType.KEY_PROOF
            ? next.value
            : undefined;
          if (context.overloaded()) drops.count("handshake_shed");
          else {
            await handshake.register(
              from,
              source,
              record,
              { cookie, proof },
              requestSize,
            );
            authenticated ||= context.group !== undefined &&
              handshake.registeredWith(source, record);
          }
          cookie = undefined;
          break;
        }
        case RecordType.KEY_PROOF:
          // Read with the key record it follows; anywhere else it is inert.
          break;
        case RecordType.FERNET_MESSAGE:
          if (!member) return this.#unknownSource(from, source, requestSize);
          await fanout.onFernetMessage(member, record.value, requestSize);
          break;
        case RecordType.RSA_BLOCK:
          if (!member) return this.#unknownSource(from, source, requestSize);
          if (member.profile !== "rsa") {
            drops.drop("profile_mismatch", source);
          } else rsaBlocks.push(record.value);
          break;
        case RecordType.KEEPALIVE:
          if (!member) return this.#unknownSource(from, source, requestSize);
          authenticated ||= await presence.onKeepalive(member, record.value);
          break;
        case RecordType.GROUP_CAPABLE:
          if (!member) drops.drop("group_capable_unknown", source);
          else context.group?.onCapable(member, authenticated); // off: ignored
          break;
        case RecordType.DISCONNECT:
          if (!member) drops.drop("disconnect_unknown", source);
          else await presence.onDisconnect(member, record.value);
          break;
        default:
          if (SERVER_ONLY_TYPES.has(record.type)) {
            drops.drop("unexpected_type", source);
          } else if (!isKnownRecordType(record.type)) {
            drops.count("unknown_type");
          }
      }
    }
    member = members.get(source);
    if (rsaBlocks.length > 0 && member?.profile === "rsa") {
      await fanout.onRsaMessage(member, rsaBlocks, requestSize);
    }
  }

  async #onFragment(
    value: Uint8Array,
    from: PeerAddress,
    source: string,
    member: Member | undefined,
    requestSize: number,
    answerBudget: AnswerBudget,
  ): Promise<void> {
    const reassembler = member
      ? this.#context.memberReassembly
      : this.#context.strangerReassembly;
    const outcome = reassembler.addRecord(source, value);
    if (outcome.kind === "dropped") {
      this.#context.drops.drop(outcome.reason, source);
    }
    if (outcome.kind !== "stream") return;
    // Answers stay bounded by the datagram that completed the stream.
    await this.processStream(
      outcome.records,
      from,
      source,
      requestSize,
      answerBudget,
    );
  }

  #unknownSource(from: PeerAddress, source: string, requestSize: number): void {
    this.#context.drops.drop("unknown_source", source);
    this.#context.output.sendNotice(
      from,
      NoticeCode.UNKNOWN_CLIENT,
      requestSize,
    );
  }
}
