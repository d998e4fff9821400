/**
 * The stream dispatch: the one switch over a stream's messages as lib/wire's
 * `decodeToServer` reads them (protocol.md sections 3-7; it also bounds the
 * records acted on per stream), which hands each message to the module that
 * acts on it, with the per-stream bounds (one key answer per stream) and
 * reassembly of FRAGMENT records.
 *
 * @module
 */
import type { DropCounter } from "../../core/drops.ts";
import type { Reassembler } from "../../core/reassembler.ts";
import type { PeerAddress } from "../../wire/address.ts";
import { decodeToServer } from "../../wire/message_codec.ts";
import { inStreamOrder } from "../../wire/messages.ts";
import { NoticeCode } from "../../wire/notice.ts";
import type { TlvRecord } from "../../wire/tlv.ts";
import type { Fanout } from "./fanout.ts";
import type { GroupFanout } from "./group_fanout.ts";
import type { AnswerBudget, Handshake } from "./handshake.ts";
import type { Member, MemberTable } from "./member.ts";
import type { Output } from "./output.ts";
import type { Presence } from "./presence.ts";

/** What {@linkcode Dispatch} needs: the modules messages go to, and the bounds. */
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

/** Acts on the messages of a stream, in order. */
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
    let keyRequestAnswered = false;
    /** An earlier message of this stream proved the member's key (GROUP_CAPABLE). */
    let authenticated = false;
    const rsaBlocks: Uint8Array[] = [];
    for (const step of inStreamOrder(decodeToServer(records))) {
      if (context.closing()) return;
      member = members.get(source);
      switch (step.kind) {
        case "problem":
          if (step.reason === "records_over_limit") {
            drops.drop("records_over_limit", source, {
              records: records.length,
            });
            return; // the rest of the stream, RSA blocks too, is not acted on
          }
          if (step.reason === "unexpected_type") {
            drops.drop("unexpected_type", source);
          } else drops.count("unknown_type");
          break;
        case "fragment":
          await this.#onFragment(
            step.value,
            from,
            source,
            member,
            requestSize,
            answerBudget,
          );
          break;
        case "key_request":
          // One answer per stream: the answer is already as large as the
          // request may be, so a second one would amplify.
          if (keyRequestAnswered) drops.count("extra_key_request");
          else if (context.overloaded()) drops.count("handshake_shed");
          else {
            handshake.answerKeyRequest(from, source, requestSize, answerBudget);
          }
          keyRequestAnswered = true;
          break;
        case "registration":
          if (context.overloaded()) drops.count("handshake_shed");
          else {
            await handshake.register(
              from,
              source,
              step.keyRecord,
              step,
              requestSize,
            );
            authenticated ||= context.group !== undefined &&
              handshake.registeredWith(source, step.keyRecord);
          }
          break;
        case "fernet_message":
          if (!member) return this.#unknownSource(from, source, requestSize);
          await fanout.onFernetMessage(member, step.value, requestSize);
          break;
        case "rsa_block":
          // Checked in place; the stream's blocks are one message, after the loop.
          if (!member) return this.#unknownSource(from, source, requestSize);
          if (member.profile !== "rsa") {
            drops.drop("profile_mismatch", source);
          } else rsaBlocks.push(step.value);
          break;
        case "keepalive":
          if (!member) return this.#unknownSource(from, source, requestSize);
          authenticated ||= await presence.onKeepalive(member, step.value);
          break;
        case "group_capable":
          if (!member) drops.drop("group_capable_unknown", source);
          else context.group?.onCapable(member, authenticated); // off: ignored
          break;
        case "disconnect":
          if (!member) drops.drop("disconnect_unknown", source);
          else await presence.onDisconnect(member, step.value);
          break;
        default:
          step satisfies never;
      }
    }
    if (rsaBlocks.length === 0 || context.closing()) return;
    member = members.get(source);
    if (member?.profile === "rsa") {
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
