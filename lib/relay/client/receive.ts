/**
 * What a relay client does with a datagram: who may send what (only a key
 * answer from anyone but the server, and only while one is awaited), the
 * one dispatch over the messages of a stream from the server as lib/wire's
 * `decodeToClient` reads them ({@linkcode StreamReceiver.dispatch}), and the
 * checks of each: server key, WELCOME, presence, relayed messages (Fernet
 * and RSA), GROUP_KEY, notices and removal notices.
 *
 * @module
 */
import { RsaDecryptError, RsaPublicKey } from "../../crypto/rsa.ts";
import { Reassembler } from "../../core/reassembler.ts";
import {
  decodeAddress,
  formatAddress,
  isMulticastIPv4,
  type PeerAddress,
} from "../../wire/address.ts";
import { decodeNotice, isRemovalCode, NoticeCode } from "../../wire/notice.ts";
import { decodeToClient } from "../../wire/message_codec.ts";
import { inStreamOrder, type Presence } from "../../wire/messages.ts";
import { decodeRecords, RecordType, type TlvRecord } from "../../wire/tlv.ts";
import type { GroupReceiver } from "./group_receiver.ts";
import type { KeyExchange } from "./handshake.ts";
import type { Liveness } from "./liveness.ts";
import { RemovalNotices } from "./removal.ts";
import type { Session } from "./session.ts";
import type { ClientEvent } from "./types.ts";

const decoder = new TextDecoder();

/** The sender of a relayed message, as the client names members. */
function senderOf(
  message: { readonly sender?: PeerAddress },
): string | undefined {
  return message.sender && formatAddress(message.sender);
}

/** What a {@linkcode StreamReceiver} hands on to its client. */
export interface ReceiverHooks {
  /** Group fan-out, when the client asks for it. */
  readonly group: GroupReceiver | undefined;
  /** A message to deliver. */
  readonly deliver: (sender: string, data: Uint8Array) => void;
  /** A status event to emit. */
  readonly emit: (event: ClientEvent) => void;
  /** The server removed this client (verified NOTICE 6). */
  readonly onKicked: (reason: string) => void;
  /** The server banned this client (verified NOTICE 7). */
  readonly onBanned: (seconds: number | undefined, reason: string) => void;
}

/** Takes a client's datagrams apart and acts on them; see the module comment. */
export class StreamReceiver {
  readonly #session: Session;
  readonly #keys: KeyExchange;
  readonly #liveness: Liveness;
  readonly #group: GroupReceiver | undefined;
  readonly #hooks: ReceiverHooks;
  readonly #reassembler: Reassembler;
  readonly #removals: RemovalNotices;

  /**
   * @param session the client's shared state
   * @param keys the key exchange (key answers and WELCOMEs go there)
   * @param liveness keep-alive answers and loss hints go there
   * @param hooks group fan-out, and what is handed on to the client
   */
  constructor(
    session: Session,
    keys: KeyExchange,
    liveness: Liveness,
    hooks: ReceiverHooks,
  ) {
    this.#session = session;
    this.#keys = keys;
    this.#liveness = liveness;
    this.#group = hooks.group;
    this.#hooks = hooks;
    this.#reassembler = new Reassembler({}, session.now);
    this.#removals = new RemovalNotices(session);
  }

  /**
   * Receives until the transport ends; a receive error other than the one a
   * deliberate close causes is logged and handed to `onFailure`.
   */
  async receiveAll(onFailure: (error: Error) => void): Promise<void> {
    const session = this.#session;
    try {
      for await (const datagram of session.transport) {
        if (session.closed) break;
        await this.onDatagram(datagram.data, datagram.from);
      }
    } catch (error) {
      if (session.closed) return;
      session.log({
        level: "error",
        event: "receive_failed",
        error: String(error),
      });
      onFailure(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /** One received datagram. */
  async onDatagram(data: Uint8Array, from: PeerAddress): Promise<void> {
    const session = this.#session;
    const source = formatAddress(from);
    let records: TlvRecord[];
    try {
      records = decodeRecords(data);
    } catch {
      session.drops.drop("malformed", source);
      return;
    }
    if (!session.isServer(source)) {
      // Only a key answer may come from elsewhere, only while one is awaited,
      // only from the chosen server when it is a unicast address (section
      // 10), and only its COOKIE and SERVER_PUBLIC_KEY records are looked at:
      // presence, notices and fragments from a stranger are never processed.
      // Read from the records, not decoded: the first COOKIE anywhere goes
      // with the first key (the decoder's "last COOKIE before the key" is
      // the same for the one key answer a server sends, COOKIE then key).
      const key = records.find((r) => r.type === RecordType.SERVER_PUBLIC_KEY);
      const fromTarget = isMulticastIPv4(session.target.hostname) ||
        formatAddress(session.target) === source;
      if (this.#keys.awaitingKey && key && !fromTarget) {
        session.drops.drop("key_answer_not_from_server", source);
      } else if (this.#keys.awaitingKey && key) {
        const cookie = records.find((r) => r.type === RecordType.COOKIE);
        await this.#onServerKey(key.value, cookie?.value, from);
      } else {
        session.drops.drop("not_from_server", source);
      }
      return;
    }
    try {
      await this.dispatch(records, from, source);
    } catch (error) {
      session.log({
        level: "error",
        event: "internal_error",
        error: String((error as Error)?.stack ?? error),
      });
    }
  }

  /**
   * The one dispatch over a stream from the server: its messages and
   * problems as `decodeToClient` reads them, in stream order (an RSA message
   * last, from the stream's last sender).
   */
  async dispatch(
    records: readonly TlvRecord[],
    from: PeerAddress,
    source: string,
  ): Promise<void> {
    const session = this.#session;
    /** Whether this stream held the WELCOME: its members were there before. */
    let welcomed = false;
    for (const step of inStreamOrder(decodeToClient(records))) {
      switch (step.kind) {
        case "problem":
          if (step.reason === "malformed_sender") {
            session.drops.drop("malformed_sender", source);
          } else if (step.reason === "malformed_presence") {
            session.drops.drop("malformed_presence", session.serverAddress);
          } else session.drops.count("unexpected_type");
          break;
        case "fragment": {
          const outcome = this.#reassembler.addRecord(source, step.value);
          if (outcome.kind === "dropped") {
            session.drops.drop(outcome.reason, source);
          }
          if (outcome.kind === "stream") {
            await this.dispatch(outcome.records, from, source);
          }
          break;
        }
        case "server_key":
          await this.#onServerKey(step.pem, step.cookie, from);
          break;
        case "welcome":
          welcomed = await this.#onWelcome(step.value) || welcomed;
          break;
        case "presence":
          this.#onPresence(step.change, formatAddress(step.address), welcomed);
          break;
        case "relayed_message":
          await this.#onFernetMessage(step.token, senderOf(step));
          break;
        case "rsa_relayed":
          await this.#onRsaMessage(step.blocks, senderOf(step));
          break;
        case "notice":
          await this.#onNotice(step.value);
          break;
        case "keepalive_answer":
          await this.#liveness.onKeepaliveAnswer(step.value);
          break;
        case "group_key":
          await this.#onGroupKey(step.value);
          break;
        case "group_message":
          if (this.#group && session.ready) {
            await this.#group.onGroupMessage(step.value);
          } else session.drops.count("group_message_unexpected");
          break;
        default:
          step satisfies never;
      }
    }
  }

  async #onServerKey(
    pem: Uint8Array,
    cookie: Uint8Array | undefined,
    from: PeerAddress,
  ): Promise<void> {
    const drops = this.#session.drops;
    if (!this.#keys.awaitingKey) return drops.count("unexpected_key");
    if (!cookie) return drops.drop("key_without_cookie", formatAddress(from));
    let serverKey: RsaPublicKey;
    try {
      serverKey = await RsaPublicKey.fromPem(decoder.decode(pem));
    } catch (error) {
      drops.drop("bad_server_key", formatAddress(from), {
        error: (error as Error).message,
      });
      return;
    }
    this.#keys.offerKey({ cookie: cookie.slice(), serverKey, from });
  }

  /** Checks a WELCOME; returns whether it confirmed the registration under way. */
  async #onWelcome(value: Uint8Array): Promise<boolean> {
    const session = this.#session;
    if (!this.#keys.awaitingWelcome) {
      if (await this.#isRepeatedWelcome(value)) {
        session.log({ level: "debug", event: "welcome_repeated" });
      } else session.drops.count("unexpected_welcome");
      return false;
    }
    let addressValue: Uint8Array;
    if (session.profile === "hybrid") {
      const opened = await this.#keys.pendingGuard!.open(value, session.now());
      if (!opened.ok) {
        session.drops.drop(`welcome_${opened.reason}`, session.serverAddress);
        return false;
      }
      addressValue = opened.plaintext;
    } else {
      try {
        addressValue = await session.rsaKey!.decrypt(value);
      } catch {
        session.drops.drop("welcome_undecryptable", session.serverAddress);
        return false;
      }
    }
    try {
      this.#keys.confirmWelcome(decodeAddress(addressValue));
      return true;
    } catch {
      session.drops.drop("welcome_bad_address", session.serverAddress);
      return false;
    }
  }

  /**
   * Whether a WELCOME that came when none was awaited answers a copy of the
   * registration already confirmed: a retry sent while the first WELCOME
   * was on its way reaches the server too, which answers it with a WELCOME
   * of its own (PROTOCOL.md section 4, one cookie, one key), so it is
   * expected, not a drop. Hybrid only: a token under the current key that
   * passes every check (replay included) and names this client's address.
   * An RSA-profile WELCOME is not opened: that would be an RSA decryption
   * anyone could ask for.
   */
  async #isRepeatedWelcome(value: Uint8Array): Promise<boolean> {
    const session = this.#session;
    if (session.profile !== "hybrid" || !session.guard || !session.address) {
      return false;
    }
    const opened = await session.guard.open(value, session.now());
    if (!opened.ok) return false;
    try {
      return formatAddress(decodeAddress(opened.plaintext)) ===
        session.ownAddress;
    } catch {
      return false;
    }
  }

  /**
   * A member came or left (a malformed address is the decoder's
   * `malformed_presence`, dropped in {@linkcode dispatch}).
   * @param present whether the change came with this client's WELCOME
   */
  #onPresence(
    change: Presence["change"],
    address: string,
    present: boolean,
  ): void {
    const members = this.#session.members;
    if (change === "connect") {
      if (members.has(address)) return;
      members.add(address);
      this.#hooks.emit({ type: "join", address, present });
    } else {
      if (!members.delete(address)) return;
      this.#hooks.emit({ type: "leave", address });
    }
  }

  async #onFernetMessage(
    token: Uint8Array,
    sender: string | undefined,
  ): Promise<void> {
    const session = this.#session;
    if (!session.guard || !session.ready) {
      return session.drops.count("message_before_ready");
    }
    if (!sender) {
      return session.drops.drop(
        "message_without_sender",
        session.serverAddress,
      );
    }
    const opened = await session.guard.open(token, session.now());
    if (!opened.ok) {
      return session.drops.drop(opened.reason, session.serverAddress);
    }
    this.#hooks.deliver(sender, opened.plaintext);
  }

  async #onRsaMessage(
    blocks: readonly Uint8Array[],
    sender: string | undefined,
  ): Promise<void> {
    const session = this.#session;
    if (session.profile !== "rsa" || !session.ready) {
      return session.drops.count("message_before_ready");
    }
    if (!sender) {
      return session.drops.drop(
        "message_without_sender",
        session.serverAddress,
      );
    }
    let plaintext: Uint8Array;
    try {
      plaintext = await session.rsaKey!.decryptChunks(blocks);
    } catch (error) {
      if (error instanceof RsaDecryptError || error instanceof RangeError) {
        return session.drops.drop("bad_rsa_block", session.serverAddress);
      }
      throw error;
    }
    this.#hooks.deliver(sender, plaintext);
  }

  /** A GROUP_KEY: a token under this client's key (the one a WELCOME may just have confirmed). */
  async #onGroupKey(value: Uint8Array): Promise<void> {
    const session = this.#session;
    if (!this.#group) return session.drops.count("group_key_unexpected");
    for (const guard of [this.#keys.pendingGuard, session.guard]) {
      if (!guard) continue;
      const opened = await guard.open(value, session.now());
      if (opened.ok) return this.#group.onGroupKey(opened.plaintext);
      if (opened.reason !== "token_signature") {
        session.drops.drop(`group_key_${opened.reason}`, session.serverAddress);
        return;
      }
    }
    session.drops.drop("group_key_token_signature", session.serverAddress);
  }

  async #onNotice(value: Uint8Array): Promise<void> {
    const session = this.#session;
    let notice;
    try {
      notice = decodeNotice(value);
    } catch {
      return session.drops.drop("malformed_notice", session.serverAddress);
    }
    if (isRemovalCode(notice.code)) {
      return await this.#onRemoval(notice.code, value.subarray(2));
    }
    this.#hooks.emit({ type: "notice", code: notice.code, text: notice.text });
    const full = notice.code === NoticeCode.SERVER_FULL;
    if (full) this.#keys.noteServerFull(notice.text);
    session.log({
      // A full server is the user's to know at once (the CLI logs warnings).
      level: full ? "warn" : "info",
      event: "notice",
      code: notice.code,
      text: notice.text,
    });
    if (
      session.ready &&
      (notice.code === NoticeCode.UNKNOWN_CLIENT ||
        notice.code === NoticeCode.SERVER_SHUTDOWN)
    ) {
      this.#liveness.onLossHint(
        notice.code === NoticeCode.UNKNOWN_CLIENT
          ? "server does not know this client"
          : "server shut down",
      );
    }
  }

  /** A verified NOTICE 6 (KICKED) or 7 (BANNED), see removal.ts. */
  async #onRemoval(code: number, body: Uint8Array): Promise<void> {
    const notice = await this.#removals.open(code, body);
    if (notice === undefined || this.#session.closed) return;
    if (notice.code === NoticeCode.KICKED) {
      return this.#hooks.onKicked(notice.reason);
    }
    const seconds = notice.seconds === 0 ? undefined : notice.seconds;
    this.#hooks.onBanned(seconds, notice.reason);
  }
}
