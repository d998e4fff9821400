/**
 * The server side of group fan-out (protocol.md section 9): the epoch key,
 * its GROUP_KEY grants under each member's own key, and the relay of one
 * message as one group token sent once to the downstream multicast address
 * (or as identical datagrams by unicast to every holder). Epoch decisions
 * live in {@linkcode GroupEpochs}; the server calls the hooks
 * {@linkcode GroupFanout.onCapable}, {@linkcode GroupFanout.onLeave} and
 * {@linkcode GroupFanout.relay}.
 *
 * @module
 */
import { FernetKey } from "../../crypto/fernet.ts";
import type { IvMarker } from "../../crypto/iv_mark.ts";
import { encodeAddress, type PeerAddress } from "../../wire/address.ts";
import { fragmentStream } from "../../wire/fragment.ts";
import {
  encodeGroupKeyPlaintext,
  EPOCH_SIZE,
  groupPlaintextSize,
  writeGroupMessageEpoch,
} from "../../wire/group.ts";
import {
  encodeRecords,
  MAX_TLV_VALUE_SIZE,
  RecordType,
  TLV_HEADER_SIZE,
  writeRecordHeader,
} from "../../wire/tlv.ts";
import type { DropCounter } from "../../core/drops.ts";
import { GroupEpochs } from "../../core/group_epochs.ts";
import { OncePerInterval } from "../../core/limits.ts";
import type { LogSink } from "../../log.ts";
import { randomMsgId } from "../../crypto/msg_id.ts";
import { TokenGuard } from "../../crypto/token_guard.ts";

/** What the fan-out needs of a member (the server's member record fits). */
export interface GroupMemberRef {
  /** `IP:PORT`, the member's identity. */
  readonly key: string;
  /** Where its datagrams go. */
  readonly address: PeerAddress;
  /** Its address value (section 2.1), the sender field of its messages. */
  readonly addressValue: Uint8Array;
  /** Its own key's token rules (hybrid members; undefined for RSA ones). */
  readonly guard: TokenGuard | undefined;
}

/** Options of {@linkcode GroupFanout}. */
export interface GroupFanoutOptions {
  /** The server's IV marker: group tokens carry the server's mark. */
  readonly marker: IvMarker;
  /** Largest datagram sent. */
  readonly mtu: number;
  /** Maximum token age of the server's keys (group tokens are sealed with it). */
  readonly tokenMaxAgeSeconds: number;
  /** Multicast address and port for GROUP_MESSAGE; absent: unicast to each holder. */
  readonly downstream?: PeerAddress;
  /** Changes of membership within this interval share one epoch. Default 1000 ms. */
  readonly batchMs?: number;
  /** See {@linkcode NEWCOMER_UNICAST_MS} (the default). */
  readonly newcomerUnicastMs?: number;
  /** Sends one datagram (the server's counted send). */
  readonly send: (datagram: Uint8Array, to: PeerAddress) => void;
  /** The server's drop counters. */
  readonly drops: DropCounter;
  /** The server's log. */
  readonly log: LogSink;
  /** Clock in milliseconds. */
  readonly now: () => number;
}

/** Group counters for the `stats` command. */
export interface GroupStats {
  /** The current epoch (0 before the first key). */
  readonly epoch: number;
  /** Members that sent GROUP_CAPABLE. */
  readonly capable: number;
  /** Members that hold the current epoch's key. */
  readonly holders: number;
  /** Epochs started. */
  readonly rekeys: number;
  /** GROUP_KEY grants sent (rekeys and answers to members that asked again). */
  readonly keysSent: number;
  /** Messages relayed as one group token. */
  readonly messages: number;
  /** Datagrams those messages took (one per fragment per destination). */
  readonly datagrams: number;
  /** Milliseconds the last rekey took, grants included. */
  readonly lastRekeyMs: number;
}

/**
 * A member that asks again for the current key (it missed a GROUP_KEY) is
 * answered at most once per this interval and epoch.
 */
const ASK_AGAIN_INTERVAL_MS = 1000;
/**
 * A member's first GROUP_KEY makes it bind and join the downstream group,
 * which takes a moment: for this long after its first key it also gets each
 * group datagram by unicast (identical bytes: the copy it reads second is a
 * replay to it, dropped and counted), so nothing sent meanwhile is missed.
 */
export const NEWCOMER_UNICAST_MS = 2000;

/** Group fan-out state of one server. */
export class GroupFanout<M extends GroupMemberRef> {
  readonly #options: GroupFanoutOptions;
  readonly #epochs: GroupEpochs<M>;
  readonly #downstreamValue: Uint8Array | undefined;
  readonly #askAgain = new OncePerInterval(ASK_AGAIN_INTERVAL_MS);
  /** Members within {@linkcode NEWCOMER_UNICAST_MS} of their first key → until when. */
  readonly #newcomers = new Map<M, number>();
  /** Members that were ever granted a key (a rejoin is a new member record). */
  readonly #granted = new WeakSet<M>();
  #guard: TokenGuard | undefined;
  #keyText: Uint8Array | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt: number | undefined;
  #rekeying: Promise<void> | undefined;
  #closed = false;

  #rekeys = 0;
  #keysSent = 0;
  #messages = 0;
  #datagrams = 0;
  #lastRekeyMs = 0;

  /** @throws {TypeError} when the downstream address is not a literal IP address */
  constructor(options: GroupFanoutOptions) {
    this.#options = options;
    this.#epochs = new GroupEpochs(options.batchMs);
    this.#downstreamValue = options.downstream
      ? encodeAddress(options.downstream)
      : undefined;
  }

  /** A snapshot of the counters. */
  stats(): GroupStats {
    return {
      epoch: this.#epochs.epoch,
      capable: this.#epochs.capableCount,
      holders: this.#epochs.holders.size,
      rekeys: this.#rekeys,
      keysSent: this.#keysSent,
      messages: this.#messages,
      datagrams: this.#datagrams,
      lastRekeyMs: this.#lastRekeyMs,
    };
  }

  /** Resolves when no rekey is running (tests, benchmarks). */
  async settled(): Promise<void> {
    while (this.#rekeying) await this.#rekeying;
  }

  /**
   * A GROUP_CAPABLE record from `member`. `authenticated`: the same stream
   * proved the member's key (its registration, or a keep-alive that passed
   * every check). A new capable member joins (the next epoch is planned); a
   * holder asking again gets the current key again (at most once a second).
   */
  onCapable(member: M, authenticated: boolean): void {
    const drops = this.#options.drops;
    if (!member.guard) {
      drops.drop("group_capable_rsa", member.key);
      return;
    }
    if (!authenticated) {
      drops.drop("group_capable_unauthenticated", member.key);
      return;
    }
    const now = this.#options.now();
    if (!this.#epochs.isCapable(member)) {
      this.#schedule(this.#epochs.join(member, now), now);
      return;
    }
    if (!this.#epochs.holds(member)) {
      drops.count("group_key_pending"); // its key comes with the next epoch
      return;
    }
    const epoch = this.#epochs.epoch;
    if (!this.#askAgain.allow(`${member.key} ${epoch}`, now)) {
      drops.count("group_key_asked_too_often");
      return;
    }
    const keyText = this.#keyText;
    if (!keyText) return;
    void this.#grant(member, epoch, keyText, now).then((sent) => {
      if (sent) this.#keysSent++;
    });
  }

  /** `member` left the group (timeout, DISCONNECT, kick): the epoch changes. */
  onLeave(member: M): void {
    const now = this.#options.now();
    this.#schedule(this.#epochs.leave(member, now), now);
  }

  /**
   * Relays `message` from the member at `senderValue` (an address value,
   * section 2.1) as one group token, when the current epoch allows; `sender`
   * is that member when it is a local one (it gets no copy by unicast).
   * Returns the members it reached (the caller serves the others per
   * recipient), or undefined when nothing was sent.
   */
  relay(
    senderValue: Uint8Array,
    sender: M | undefined,
    message: Uint8Array,
    nowMs: number,
  ): ReadonlySet<M> | undefined {
    const guard = this.#guard;
    if (!guard || !this.#epochs.canFanOut(nowMs)) return undefined;
    const holders = this.#epochs.holders;
    const others = holders.size - (sender && holders.has(sender) ? 1 : 0);
    if (others === 0) return undefined;
    const plaintextSize = groupPlaintextSize(
      senderValue.length,
      message.length,
    );
    const tokenLength = FernetKey.tokenLength(plaintextSize);
    const valueLength = EPOCH_SIZE + tokenLength;
    if (valueLength > MAX_TLV_VALUE_SIZE) return undefined;
    const plaintext = new Uint8Array(plaintextSize);
    plaintext[0] = senderValue.length;
    plaintext.set(senderValue, 1);
    plaintext.set(message, 1 + senderValue.length);
    const stream = new Uint8Array(TLV_HEADER_SIZE + valueLength);
    const at = writeRecordHeader(
      stream,
      0,
      RecordType.GROUP_MESSAGE,
      valueLength,
    );
    writeGroupMessageEpoch(stream, at, this.#epochs.epoch);
    guard.sealInto(plaintext, nowMs, stream, at + EPOCH_SIZE);
    const datagrams = stream.length <= this.#options.mtu
      ? [stream]
      : fragmentStream(stream, this.#options.mtu, randomMsgId());
    const send = this.#options.send;
    const downstream = this.#options.downstream;
    if (downstream) {
      for (const datagram of datagrams) send(datagram, downstream);
      this.#datagrams += datagrams.length;
      for (const [member, until] of this.#newcomers) {
        if (nowMs >= until || !holders.has(member)) {
          this.#newcomers.delete(member);
        } else if (member !== sender) {
          for (const datagram of datagrams) send(datagram, member.address);
          this.#datagrams += datagrams.length;
        }
      }
    } else {
      for (const member of holders) {
        if (member === sender) continue;
        for (const datagram of datagrams) send(datagram, member.address);
      }
      this.#datagrams += datagrams.length * others;
    }
    this.#messages++;
    return holders;
  }

  /** Stops the rekey timer; later hooks do nothing. Safe to call twice. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#guard?.[Symbol.dispose]();
  }

  /** Runs the rekey at `dueAt`: now when it is due, else by a timer. */
  #schedule(dueAt: number | undefined, now: number): void {
    if (dueAt === undefined || this.#closed) return;
    if (dueAt <= now) {
      this.#startRekey();
      return;
    }
    if (this.#timerAt === dueAt) return;
    clearTimeout(this.#timer);
    this.#timerAt = dueAt;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = undefined;
      this.#startRekey();
    }, dueAt - now);
  }

  #startRekey(): void {
    if (this.#rekeying || this.#closed) return; // it reschedules when done
    this.#rekeying = this.#rekey().catch((error) => {
      this.#options.log({
        level: "error",
        event: "internal_error",
        error: String(error?.stack ?? error),
      });
    }).finally(() => {
      this.#rekeying = undefined;
      const now = this.#options.now();
      this.#schedule(this.#epochs.dueAt, now);
    });
  }

  /**
   * A new epoch: a fresh key, granted to every capable member under its own
   * key, then made current (so every holder was sent its key before the
   * first GROUP_MESSAGE of the epoch).
   */
  async #rekey(): Promise<void> {
    const started = performance.now();
    const now = this.#options.now();
    const planned = this.#epochs.plan(now);
    if (!planned) return;
    // The node backend seals synchronously: the relay's hot path.
    const key = await FernetKey.generate("node", {
      persistentCiphers: true,
    });
    const keyText = new TextEncoder().encode(key.text);
    let sent = 0;
    for (const member of planned.holders) {
      if (await this.#grant(member, planned.epoch, keyText, now)) sent++;
    }
    if (this.#closed) {
      key[Symbol.dispose]();
      return;
    }
    const next = new TokenGuard(
      key,
      this.#options.marker,
      this.#options.tokenMaxAgeSeconds,
    );
    this.#guard?.[Symbol.dispose]();
    this.#guard = next;
    this.#keyText = keyText;
    const committedAt = this.#options.now();
    this.#epochs.commit(planned, committedAt);
    if (this.#options.downstream) {
      for (const member of this.#epochs.holders) {
        if (this.#granted.has(member)) continue;
        this.#granted.add(member);
        this.#newcomers.set(
          member,
          committedAt +
            (this.#options.newcomerUnicastMs ?? NEWCOMER_UNICAST_MS),
        );
      }
    }
    this.#rekeys++;
    this.#keysSent += sent;
    this.#lastRekeyMs = performance.now() - started;
    this.#options.log({
      level: "info",
      event: "group_epoch",
      epoch: planned.epoch,
      holders: this.#epochs.holders.size,
      ms: Math.round(this.#lastRekeyMs * 1000) / 1000,
    });
  }

  /** Sends `member` the GROUP_KEY of `epoch` under its own key. */
  async #grant(
    member: M,
    epoch: number,
    keyText: Uint8Array,
    now: number,
  ): Promise<boolean> {
    const guard = member.guard;
    if (!guard) return false;
    const plaintext = encodeGroupKeyPlaintext(
      epoch,
      keyText,
      this.#downstreamValue,
    );
    const token = guard.canSealSync
      ? guard.sealSync(plaintext, now)
      : await guard.seal(plaintext, now);
    this.#options.send(
      encodeRecords([{ type: RecordType.GROUP_KEY, value: token }]),
      member.address,
    );
    return true;
  }
}
