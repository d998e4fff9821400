/**
 * The client side of group fan-out (protocol.md section 9): epoch keys (the
 * current one, and the previous one for 10 s), the checks on GROUP_MESSAGE
 * (age, IV replay per epoch key, reflection, own echoes), reassembly of
 * fragmented group streams, and recovery of a missed GROUP_KEY: a message of
 * an epoch newer than every key held is kept (bounded) and the client asks
 * again (PROTOCOL.md "Group fan-out").
 *
 * @module
 */
import { FernetKey } from "../../crypto/fernet.ts";
import type { IvMarker } from "../../crypto/iv_mark.ts";
import { formatAddress, type PeerAddress } from "../../wire/address.ts";
import {
  decodeGroupKeyPlaintext,
  decodeGroupMessageValue,
  decodeGroupPlaintext,
} from "../../wire/group.ts";
import { Reassembler } from "../../core/reassembler.ts";
import { decodeRecords, RecordType, type TlvRecord } from "../../wire/tlv.ts";
import type { Datagram, DatagramTransport } from "../../runtime/transport.ts";
import type { DropCounter } from "../../core/drops.ts";
import type { LogSink } from "../../log.ts";
import { TokenGuard } from "../../crypto/token_guard.ts";
import type { Session } from "./session.ts";
import type { GroupReceiverStats } from "./types.ts";

/** How long a replaced epoch key still opens messages (section 9: 10 s). */
export const PREVIOUS_EPOCH_KEY_MS = 10_000;
/** Messages of an unknown newer epoch kept while the key is asked again. */
const MAX_WAITING = 64;
/** A kept message is dropped after this long without its key. */
const WAITING_MS = 10_000;
/** The client asks again for the current key at most once per this interval. */
export const ASK_AGAIN_MS = 1000;

/** Options of {@linkcode GroupReceiver}. */
export interface GroupReceiverOptions {
  /** The client's IV marker (tokens carrying its own mark are reflections). */
  readonly marker: IvMarker;
  /** Maximum token age and future skew, seconds. */
  readonly tokenMaxAgeSeconds: number;
  /** The client's drop counters. */
  readonly drops: DropCounter;
  /** Clock in milliseconds. */
  readonly now: () => number;
  /** This client's address as the server sees it (its own echoes are dropped). */
  readonly ownAddress: () => string;
  /** A message of the group was opened. */
  readonly onMessage: (sender: string, data: Uint8Array) => void;
  /** Ask the server again for the current key (a GROUP_KEY was missed). */
  readonly askAgain: () => void;
  /** A GROUP_KEY named a downstream multicast address: join it. */
  readonly onDownstream: (address: PeerAddress) => void;
}

interface EpochKey {
  readonly epoch: number;
  readonly guard: TokenGuard;
  /** Still usable until then (ms); Infinity for the current key. */
  until: number;
}

interface Waiting {
  readonly epoch: number;
  readonly token: Uint8Array;
  readonly at: number;
}

/** Epoch keys and group message checks of one client. */
export class GroupReceiver {
  readonly #options: GroupReceiverOptions;
  readonly #reassembler: Reassembler;
  #current: EpochKey | undefined;
  #previous: EpochKey | undefined;
  #waiting: Waiting[] = [];
  #lastAsk = -Infinity;
  #messages = 0;
  #asks = 0;

  /** Creates a receiver that holds no key yet. */
  constructor(options: GroupReceiverOptions) {
    this.#options = options;
    this.#reassembler = new Reassembler({}, options.now);
  }

  /** A snapshot of the counters. */
  stats(): GroupReceiverStats {
    return {
      epoch: this.#current?.epoch ?? 0,
      messages: this.#messages,
      asks: this.#asks,
    };
  }

  /** Forgets every key and kept message (a new registration starts afresh). */
  reset(): void {
    this.#current?.guard[Symbol.dispose]();
    this.#previous?.guard[Symbol.dispose]();
    this.#current = undefined;
    this.#previous = undefined;
    this.#waiting = [];
  }

  /**
   * The plaintext of a GROUP_KEY that opened under the client's own key:
   * installs the epoch key (a newer one becomes current, the replaced one
   * stays usable 10 s) and opens kept messages of that epoch.
   */
  async onGroupKey(plaintext: Uint8Array): Promise<void> {
    const drops = this.#options.drops;
    let grant;
    try {
      grant = decodeGroupKeyPlaintext(plaintext);
    } catch {
      drops.count("group_key_malformed");
      return;
    }
    const { epoch } = grant;
    if (this.#current?.epoch === epoch || this.#previous?.epoch === epoch) {
      drops.count("group_key_repeated");
      return;
    }
    let key: FernetKey;
    try {
      key = await FernetKey.fromText(grant.keyText);
    } catch {
      drops.count("group_key_malformed");
      return;
    }
    if (grant.downstream) this.#options.onDownstream(grant.downstream);
    const now = this.#options.now();
    const entry: EpochKey = {
      epoch,
      guard: new TokenGuard(
        key,
        this.#options.marker,
        this.#options.tokenMaxAgeSeconds,
      ),
      until: Infinity,
    };
    if (this.#current === undefined || epoch > this.#current.epoch) {
      this.#previous?.guard[Symbol.dispose]();
      this.#previous = this.#current;
      if (this.#previous) this.#previous.until = now + PREVIOUS_EPOCH_KEY_MS;
      this.#current = entry;
    } else if (this.#previous === undefined || epoch > this.#previous.epoch) {
      // A late key of an older epoch than the current one.
      this.#previous?.guard[Symbol.dispose]();
      entry.until = now + PREVIOUS_EPOCH_KEY_MS;
      this.#previous = entry;
    } else {
      entry.guard[Symbol.dispose]();
      drops.count("group_key_stale");
      return;
    }
    const ready = this.#waiting.filter((w) => w.epoch === epoch);
    this.#waiting = this.#waiting.filter((w) => w.epoch !== epoch);
    for (const waiting of ready) await this.#open(waiting.epoch, waiting.token);
  }

  /**
   * A datagram from the downstream socket: only FRAGMENT and GROUP_MESSAGE
   * records count; `fromServer` says whether its source is the server's address.
   */
  async onDownstreamDatagram(
    data: Uint8Array,
    from: PeerAddress,
    fromServer: boolean,
  ): Promise<void> {
    const drops = this.#options.drops;
    const source = formatAddress(from);
    if (!fromServer) {
      drops.drop("group_not_from_server", source);
      return;
    }
    let records: TlvRecord[];
    try {
      records = decodeRecords(data);
    } catch {
      drops.drop("malformed", source);
      return;
    }
    await this.onGroupRecords(records, source, false);
  }

  /**
   * Group records from the server (its unicast socket or the downstream
   * group): GROUP_MESSAGE values, and FRAGMENT records of group streams
   * (`nested`: inside a reassembled stream, where FRAGMENT is malformed).
   */
  async onGroupRecords(
    records: readonly TlvRecord[],
    source: string,
    nested: boolean,
  ): Promise<void> {
    const drops = this.#options.drops;
    for (const record of records) {
      if (record.type === RecordType.GROUP_MESSAGE) {
        await this.onGroupMessage(record.value);
      } else if (record.type === RecordType.FRAGMENT && !nested) {
        const outcome = this.#reassembler.addRecord(
          `group ${source}`,
          record.value,
        );
        if (outcome.kind === "dropped") drops.drop(outcome.reason, source);
        if (outcome.kind === "stream") {
          await this.onGroupRecords(outcome.records, source, true);
        }
      } else {
        drops.drop("group_unexpected_type", source);
      }
    }
  }

  /** A GROUP_MESSAGE value: `epoch u32` then a token under that epoch's key. */
  async onGroupMessage(value: Uint8Array): Promise<void> {
    let epoch: number;
    let token: Uint8Array;
    try {
      ({ epoch, token } = decodeGroupMessageValue(value));
    } catch {
      this.#options.drops.count("group_message_malformed");
      return;
    }
    await this.#open(epoch, token);
  }

  async #open(epoch: number, token: Uint8Array): Promise<void> {
    const drops = this.#options.drops;
    const now = this.#options.now();
    const key = this.#keyOf(epoch, now);
    if (key === undefined) {
      if (this.#current === undefined || epoch > this.#current.epoch) {
        this.#keep(epoch, token, now);
      } else drops.count("group_epoch_stale");
      return;
    }
    const opened = await key.guard.open(token, now);
    if (!opened.ok) {
      drops.count(`group_${opened.reason}`);
      return;
    }
    let message;
    try {
      message = decodeGroupPlaintext(opened.plaintext);
    } catch {
      drops.count("group_plaintext_malformed");
      return;
    }
    const sender = formatAddress(message.sender);
    if (sender === this.#options.ownAddress()) {
      drops.count("group_own_echo");
      return;
    }
    this.#messages++;
    this.#options.onMessage(sender, message.message);
  }

  #keyOf(epoch: number, now: number): EpochKey | undefined {
    if (this.#current?.epoch === epoch) return this.#current;
    const previous = this.#previous;
    if (previous?.epoch !== epoch) return undefined;
    if (now <= previous.until) return previous;
    previous.guard[Symbol.dispose]();
    this.#previous = undefined;
    return undefined;
  }

  /** Keeps a message of a newer epoch (bounded) and asks again for the key. */
  #keep(epoch: number, token: Uint8Array, now: number): void {
    const fresh = this.#waiting.filter((w) => now - w.at <= WAITING_MS);
    for (let i = fresh.length; i < this.#waiting.length; i++) {
      this.#options.drops.count("group_key_never_came");
    }
    this.#waiting = fresh;
    if (this.#waiting.length >= MAX_WAITING) {
      this.#options.drops.count("group_waiting_full");
    } else {
      this.#waiting.push({ epoch, token: token.slice(), at: now });
      this.#options.drops.count("group_waiting_for_key");
    }
    if (now - this.#lastAsk >= ASK_AGAIN_MS) {
      this.#lastAsk = now;
      this.#asks++;
      this.#options.askAgain();
    }
  }
}

/** Options of {@linkcode DownstreamSocket}. */
export interface DownstreamSocketOptions {
  /** Binds a socket to the group's port (address reuse) joined to the group; absent: none can be. */
  readonly bind:
    | ((group: PeerAddress) => Promise<DatagramTransport>)
    | undefined;
  /** Handles one datagram (awaited: datagrams are handled in order). */
  readonly receive: (datagram: Datagram) => Promise<void>;
  /** The client's drop counters. */
  readonly drops: DropCounter;
  /** The client's log. */
  readonly log: LogSink;
}

/** The client's second socket: the downstream group a GROUP_KEY names. */
export class DownstreamSocket {
  readonly #options: DownstreamSocketOptions;
  #address: string | undefined;
  #transport: DatagramTransport | undefined;
  #receiving: Promise<void> = Promise.resolve();
  #closed = false;

  /** Creates the socket holder; nothing is bound until {@linkcode join}. */
  constructor(options: DownstreamSocketOptions) {
    this.#options = options;
  }

  /** Binds and reads the socket for `address` (once per address; another address replaces it). */
  join(address: PeerAddress): void {
    const text = formatAddress(address);
    if (this.#address === text || this.#closed) return;
    const { bind, drops, log } = this.#options;
    if (!bind) {
      drops.drop("group_no_downstream_socket", text);
      return;
    }
    this.#address = text;
    this.#transport?.close();
    this.#transport = undefined;
    const previous = this.#receiving;
    this.#receiving = (async () => {
      await previous;
      let transport: DatagramTransport;
      try {
        transport = await bind(address);
      } catch (error) {
        log({
          level: "warn",
          event: "downstream_failed",
          address: text,
          error: String(error),
          message:
            "cannot join the downstream group: group messages the server multicasts will not be heard (try --no-group)",
        });
        return;
      }
      if (this.#closed || this.#address !== text) return transport.close();
      this.#transport = transport;
      log({ level: "info", event: "downstream_joined", address: text });
      try {
        for await (const datagram of transport) {
          if (this.#closed) break;
          await this.#options.receive(datagram);
        }
      } catch (error) {
        if (!this.#closed) {
          log({
            level: "error",
            event: "receive_failed",
            error: String(error),
          });
        }
      }
    })();
  }

  /** Closes the socket and waits for its reader. Safe to call twice. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#transport?.close();
    await this.#receiving;
  }
}

/**
 * The group receiver and downstream socket of a client that asks for
 * fan-out, wired to its session: group messages count only while it is
 * registered.
 */
export function groupFanout(
  session: Session,
  bind: DownstreamSocketOptions["bind"],
  onMessage: (sender: string, data: Uint8Array) => void,
  askAgain: () => void,
): { group: GroupReceiver; downstream: DownstreamSocket } {
  const group: GroupReceiver = new GroupReceiver({
    marker: session.marker,
    tokenMaxAgeSeconds: session.config.tokenMaxAgeSeconds,
    drops: session.drops,
    now: session.now,
    ownAddress: () => session.ownAddress,
    onMessage,
    askAgain,
    onDownstream: (address) => downstream.join(address),
  });
  const downstream: DownstreamSocket = new DownstreamSocket({
    bind,
    receive: (datagram) =>
      session.ready
        ? group.onDownstreamDatagram(
          datagram.data,
          datagram.from,
          session.isServer(formatAddress(datagram.from)),
        )
        : Promise.resolve(session.drops.count("group_message_unexpected")),
    drops: session.drops,
    log: session.log,
  });
  return { group, downstream };
}
