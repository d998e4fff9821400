/**
 * A stream's records as typed messages, and back (protocol.md sections 2-10).
 * To the server: a COOKIE covers the next key record, a KEY_PROOF goes with
 * the key record right before it, at most {@linkcode MAX_RECORDS_PER_STREAM}
 * records other than RSA_BLOCK are acted on. To a client: a COOKIE goes with
 * the SERVER_PUBLIC_KEY records after it, a SENDER with the messages after it
 * (several SENDER/message pairs may follow one another, PROTOCOL.md 5.1), the
 * RSA_RELAY_BLOCK records are one message from the stream's last SENDER.
 * Decoders return messages and problems (drop and count reasons, named as
 * the server and client count them) in stream order. Pure: no I/O. The
 * codecs are in `message_codec.ts`.
 *
 * @module
 */
import type { PeerAddress } from "./address.ts";
import { RecordType, type TlvRecord } from "./tlv.ts";

/**
 * Records the server acts on per stream at most (RSA_BLOCK records, which
 * make one message together, aside): the next one drops the rest of the
 * stream, counted once (`records_over_limit`), so one datagram cannot buy
 * hundreds of MAC checks.
 */
export const MAX_RECORDS_PER_STREAM = 16;

/** Record types only a server sends: the server counts one it receives as `unexpected_type`. */
export const SERVER_ONLY_RECORD_TYPES: ReadonlySet<number> = new Set([
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

/** The kinds of {@linkcode ONE_RECORD_TO_SERVER}. */
export type OneRecordToServerKind =
  | "fragment"
  | "key_request"
  | "fernet_message"
  | "rsa_block"
  | "keepalive"
  | "group_capable"
  | "disconnect";

/**
 * The messages to the server that are one record each, and its type.
 * `rsa_block` is one RSA_BLOCK in its place: the server checks the member at
 * each block and acts on the stream's blocks together after its last message.
 */
export const ONE_RECORD_TO_SERVER: Readonly<
  Record<OneRecordToServerKind, number>
> = Object.freeze(
  {
    fragment: RecordType.FRAGMENT,
    key_request: RecordType.KEY_REQUEST,
    fernet_message: RecordType.FERNET_MESSAGE,
    rsa_block: RecordType.RSA_BLOCK,
    keepalive: RecordType.KEEPALIVE,
    group_capable: RecordType.GROUP_CAPABLE,
    disconnect: RecordType.DISCONNECT,
  } as const,
);

/** The kinds of {@linkcode ONE_RECORD_TO_CLIENT}. */
export type OneRecordToClientKind =
  | "fragment"
  | "welcome"
  | "notice"
  | "keepalive_answer"
  | "group_key"
  | "group_message";

/** The messages to a client that are one record each, and its type. */
export const ONE_RECORD_TO_CLIENT: Readonly<
  Record<OneRecordToClientKind, number>
> = Object.freeze(
  {
    fragment: RecordType.FRAGMENT,
    welcome: RecordType.WELCOME,
    notice: RecordType.NOTICE,
    keepalive_answer: RecordType.KEEPALIVE,
    group_key: RecordType.GROUP_KEY,
    group_message: RecordType.GROUP_MESSAGE,
  } as const,
);

/** A message that is one record: its kind, and the record's value (a view into the stream when decoded). */
export type OneRecordMessage<Kind extends string> = Kind extends string
  ? { readonly kind: Kind; readonly value: Uint8Array }
  : never;

/** A key record with the COOKIE that covers it and the KEY_PROOF that follows it. */
export interface Registration {
  /** Which message this is. */
  readonly kind: "registration";
  /** The key record: SYMMETRIC_KEY (hybrid) or CLIENT_PUBLIC_KEY (RSA). */
  readonly keyRecord: TlvRecord & {
    readonly type:
      | typeof RecordType.SYMMETRIC_KEY
      | typeof RecordType.CLIENT_PUBLIC_KEY;
  };
  /** The value of the last COOKIE since the previous key record, if any. */
  readonly cookie?: Uint8Array;
  /** The value of the KEY_PROOF right after the key record, if any. */
  readonly proof?: Uint8Array;
}

/** One message a client sends the server. */
export type ToServerMessage =
  | OneRecordMessage<OneRecordToServerKind>
  | Registration;

/** SERVER_PUBLIC_KEY with the last COOKIE before it in the stream. */
export interface ServerKey {
  /** Which message this is. */
  readonly kind: "server_key";
  /** The server's public key (PEM text). */
  readonly pem: Uint8Array;
  /** The value of the last COOKIE before it in the stream, if any. */
  readonly cookie?: Uint8Array;
}

/** NOTIFY_CONNECT or NOTIFY_DISCONNECT with a well-formed address. */
export interface Presence {
  /** Which message this is. */
  readonly kind: "presence";
  /** NOTIFY_CONNECT or NOTIFY_DISCONNECT. */
  readonly change: "connect" | "disconnect";
  /** The member that came or left. */
  readonly address: PeerAddress;
}

/** FERNET_MESSAGE with the sender that applies to it. */
export interface RelayedMessage {
  /** Which message this is. */
  readonly kind: "relayed_message";
  /** The last well-formed SENDER before it (none: no SENDER, or a malformed one since). */
  readonly sender?: PeerAddress;
  /** The Fernet token. */
  readonly token: Uint8Array;
}

/** The RSA_RELAY_BLOCK records of a stream, one message from its last sender. */
export interface RsaRelayed {
  /** Which message this is. */
  readonly kind: "rsa_relayed";
  /** The last SENDER of the stream, as for {@linkcode RelayedMessage}. */
  readonly sender?: PeerAddress;
  /** Every RSA_RELAY_BLOCK of the stream, in order (at least one). */
  readonly blocks: readonly Uint8Array[];
}

/** One message the server sends a client. */
export type ToClientMessage =
  | OneRecordMessage<OneRecordToClientKind>
  | ServerKey
  | Presence
  | RelayedMessage
  | RsaRelayed;

/** Why the server skips records: `unexpected_type` and `records_over_limit` are drops, `unknown_type` a count. */
export type ServerProblemReason =
  | "records_over_limit"
  | "unexpected_type"
  | "unknown_type";

/** Why a client skips records: `malformed_sender` and `malformed_presence` are drops, `unexpected_type` a count. */
export type ClientProblemReason =
  | "malformed_sender"
  | "malformed_presence"
  | "unexpected_type";

/** A record the decoder skipped, and where among the messages. */
export interface StreamProblem<Reason extends string = string> {
  /** Tells a problem from a message in {@linkcode inStreamOrder}. */
  /** Which message this is. */
  readonly kind: "problem";
  /** The drop or count reason, as the server or client names it. */
  readonly reason: Reason;
  /** How many messages came before it: it belongs just before `messages[at]`. */
  readonly at: number;
  /** Type of the record that caused it (`records_over_limit`: the first one not acted on). */
  readonly type: number;
}

/** What a decoder returns: messages and problems, each in stream order. */
export interface DecodedStream<Message, Reason extends string> {
  /** The messages, in stream order. */
  readonly messages: readonly Message[];
  /** The problems, in stream order; `at` places each among the messages. */
  readonly problems: readonly StreamProblem<Reason>[];
}

/**
 * The messages and problems of a decoded stream in one list, in stream
 * order: each problem just before the message that followed it. Without
 * problems it is `decoded.messages` itself.
 *
 * @example
 * ```ts
 * import { decodeToServer } from "./message_codec.ts";
 * import { inStreamOrder } from "./messages.ts";
 * const steps = inStreamOrder(decodeToServer([
 *   { type: 99, value: new Uint8Array(0) },
 *   { type: 9, value: new Uint8Array(4) },
 * ]));
 * if (steps.map((s) => s.kind).join() !== "problem,keepalive") throw new Error();
 * ```
 */
export function inStreamOrder<Message, Reason extends string>(
  decoded: DecodedStream<Message, Reason>,
): readonly (Message | StreamProblem<Reason>)[] {
  const { messages, problems } = decoded;
  if (problems.length === 0) return messages;
  const steps: (Message | StreamProblem<Reason>)[] = [];
  let next = 0;
  for (let i = 0; i <= messages.length; i++) {
    while (next < problems.length && problems[next].at <= i) {
      steps.push(problems[next++]);
    }
    if (i < messages.length) steps.push(messages[i]);
  }
  return steps;
}

/** Record type to one-record message kind, per direction. */
