/**
 * The codecs of {@link ./messages.ts}: a stream's records decoded into typed
 * messages and problems in stream order, and messages encoded back into
 * records (encode(decode(x)) gives x back for every stream the project
 * builds). Pure: no I/O.
 *
 * @module
 */
import { decodeAddress, encodeAddress, type PeerAddress } from "./address.ts";
import { isKnownRecordType, RecordType, type TlvRecord } from "./tlv.ts";
import {
  type ClientProblemReason,
  type DecodedStream,
  MAX_RECORDS_PER_STREAM,
  ONE_RECORD_TO_CLIENT,
  ONE_RECORD_TO_SERVER,
  SERVER_ONLY_RECORD_TYPES,
  type ServerProblemReason,
  type StreamProblem,
  type ToClientMessage,
  type ToServerMessage,
} from "./messages.ts";
const KIND_TO_SERVER = kindsByType(ONE_RECORD_TO_SERVER);
const KIND_TO_CLIENT = kindsByType(ONE_RECORD_TO_CLIENT);

function kindsByType<Kind extends string>(table: Record<Kind, number>) {
  const kinds = Object.keys(table) as Kind[];
  return new Map(kinds.map((kind) => [table[kind], kind]));
}

/**
 * Decodes the records of one stream a client sent, as the server reads them:
 * in order; a COOKIE covers the next key record; a KEY_PROOF right after a
 * key record goes with it (even when it is the record past the limit) and is
 * inert anywhere else; the record after the first `maxRecords` that are not
 * RSA_BLOCK ends the stream with `records_over_limit`. Server-only types are
 * `unexpected_type`, unknown ones `unknown_type`, and both skipped.
 *
 * @example
 * ```ts
 * import { decodeToServer } from "./message_codec.ts";
 * const { messages } = decodeToServer([
 *   { type: 17, value: new Uint8Array([1]) },
 *   { type: 13, value: new Uint8Array([2]) },
 * ]);
 * const [registration] = messages;
 * if (registration.kind !== "registration" || registration.cookie?.[0] !== 1) throw new Error();
 * ```
 * @param maxRecords records other than RSA_BLOCK acted on at most
 */
export function decodeToServer(
  records: readonly TlvRecord[],
  maxRecords: number = MAX_RECORDS_PER_STREAM,
): DecodedStream<ToServerMessage, ServerProblemReason> {
  const messages: ToServerMessage[] = [];
  const problems: StreamProblem<ServerProblemReason>[] = [];
  const problem = (reason: ServerProblemReason, type: number) =>
    problems.push({ kind: "problem", reason, at: messages.length, type });
  let cookie: Uint8Array | undefined;
  let acted = 0;
  for (let i = 0; i < records.length; i++) {
    const { type, value } = records[i];
    if (type !== RecordType.RSA_BLOCK && ++acted > maxRecords) {
      problem("records_over_limit", type); // logged with records.length
      break;
    }
    const kind = KIND_TO_SERVER.get(type);
    if (kind) messages.push({ kind, value });
    else if (type === RecordType.COOKIE) cookie = value;
    else if (
      type === RecordType.SYMMETRIC_KEY || type === RecordType.CLIENT_PUBLIC_KEY
    ) {
      const next = records[i + 1];
      const proof = next?.type === RecordType.KEY_PROOF
        ? next.value
        : undefined;
      messages.push({
        kind: "registration",
        keyRecord: { type, value },
        ...(cookie && { cookie }),
        ...(proof && { proof }),
      });
      cookie = undefined;
    } else if (type === RecordType.KEY_PROOF) {
      // Read with the key record it follows; anywhere else it is inert.
    } else if (SERVER_ONLY_RECORD_TYPES.has(type)) {
      problem("unexpected_type", type);
    } else if (!isKnownRecordType(type)) problem("unknown_type", type);
  }
  return { messages, problems };
}

/**
 * Encodes messages for the server as the records of one stream, so that
 * {@linkcode decodeToServer} gives the same messages back: a registration as
 * COOKIE (if any), its key record, KEY_PROOF (if any).
 *
 * @example
 * ```ts
 * import { encodeToServer } from "./message_codec.ts";
 * const records = encodeToServer([
 *   { kind: "keepalive", value: new Uint8Array(4) },
 *   { kind: "group_capable", value: new Uint8Array(0) },
 * ]);
 * if (records.map((r) => r.type).join() !== "9,18") throw new Error();
 * ```
 * @param maxRecords records other than RSA_BLOCK the server acts on at most
 * @throws {RangeError} when the server would not act on every record (more than `maxRecords` that are not RSA_BLOCK)
 */
export function encodeToServer(
  messages: readonly ToServerMessage[],
  maxRecords: number = MAX_RECORDS_PER_STREAM,
): TlvRecord[] {
  const records: TlvRecord[] = [];
  for (const message of messages) {
    if (message.kind !== "registration") {
      const type = ONE_RECORD_TO_SERVER[message.kind];
      records.push({ type, value: message.value });
      continue;
    }
    const { keyRecord, cookie, proof } = message;
    if (cookie) records.push({ type: RecordType.COOKIE, value: cookie });
    records.push({ type: keyRecord.type, value: keyRecord.value });
    if (proof) records.push({ type: RecordType.KEY_PROOF, value: proof });
  }
  const acted = records.filter((r) => r.type !== RecordType.RSA_BLOCK).length;
  if (acted > maxRecords) {
    throw new RangeError(
      `Cannot encode a stream for the server: ${acted} records other than RSA_BLOCK exceed the ${maxRecords} it acts on`,
    );
  }
  return records;
}

/**
 * Decodes the records of one stream the server sent, as a client reads them:
 * in order; a COOKIE goes with every SERVER_PUBLIC_KEY after it; a SENDER
 * with every message after it until the next SENDER (a malformed one is
 * `malformed_sender` and leaves no sender); the RSA_RELAY_BLOCK records make
 * one `rsa_relayed` message, last, from the stream's last sender. A NOTIFY
 * whose address is malformed is `malformed_presence`; any type a server does
 * not send is `unexpected_type`.
 *
 * @example
 * ```ts
 * import { decodeToClient } from "./message_codec.ts";
 * const { messages } = decodeToClient([
 *   { type: 10, value: new Uint8Array([127, 0, 0, 1, 0x13, 0x8f]) },
 *   { type: 14, value: new Uint8Array([0x67]) },
 * ]);
 * const [relayed] = messages;
 * if (relayed.kind !== "relayed_message" || relayed.sender?.port !== 5007) throw new Error();
 * ```
 */
export function decodeToClient(
  records: readonly TlvRecord[],
): DecodedStream<ToClientMessage, ClientProblemReason> {
  const messages: ToClientMessage[] = [];
  const problems: StreamProblem<ClientProblemReason>[] = [];
  const problem = (reason: ClientProblemReason, type: number) =>
    problems.push({ kind: "problem", reason, at: messages.length, type });
  let cookie: Uint8Array | undefined;
  let sender: PeerAddress | undefined;
  const blocks: Uint8Array[] = [];
  for (const { type, value } of records) {
    const kind = KIND_TO_CLIENT.get(type);
    if (kind) messages.push({ kind, value });
    else if (type === RecordType.COOKIE) cookie = value;
    else if (type === RecordType.SERVER_PUBLIC_KEY) {
      messages.push({
        kind: "server_key",
        pem: value,
        ...(cookie && { cookie }),
      });
    } else if (
      type === RecordType.NOTIFY_CONNECT ||
      type === RecordType.NOTIFY_DISCONNECT
    ) {
      const address = addressOf(value);
      if (!address) problem("malformed_presence", type);
      else {
        const change = type === RecordType.NOTIFY_CONNECT
          ? "connect"
          : "disconnect";
        messages.push({ kind: "presence", change, address });
      }
    } else if (type === RecordType.SENDER) {
      sender = addressOf(value);
      if (!sender) problem("malformed_sender", type);
    } else if (type === RecordType.FERNET_MESSAGE) {
      messages.push({
        kind: "relayed_message",
        ...(sender && { sender }),
        token: value,
      });
    } else if (type === RecordType.RSA_RELAY_BLOCK) blocks.push(value);
    else problem("unexpected_type", type);
  }
  if (blocks.length > 0) {
    messages.push({ kind: "rsa_relayed", ...(sender && { sender }), blocks });
  }
  return { messages, problems };
}

/** The address of a SENDER or NOTIFY value, or undefined when it is malformed. */
function addressOf(value: Uint8Array): PeerAddress | undefined {
  try {
    return decodeAddress(value);
  } catch {
    return undefined;
  }
}

/**
 * Encodes messages for a client as the records of one stream, so that
 * {@linkcode decodeToClient} gives the same messages back: a server key as
 * COOKIE (if any) and SERVER_PUBLIC_KEY, a relayed message as SENDER (if
 * any) and FERNET_MESSAGE, an RSA relayed message as SENDER (if any) and its
 * RSA_RELAY_BLOCK records, a presence change as one NOTIFY record.
 *
 * @example
 * ```ts
 * import { encodeToClient } from "./message_codec.ts";
 * const records = encodeToClient([{
 *   kind: "relayed_message",
 *   sender: { hostname: "127.0.0.1", port: 5007 },
 *   token: new Uint8Array([0x67]),
 * }]);
 * if (records.map((r) => r.type).join() !== "10,14") throw new Error();
 * ```
 * @throws {RangeError} when the stream would decode otherwise: an `rsa_relayed` not last or without blocks, or a message without a sender (or a key without a cookie) after one with
 * @throws {TypeError} when an address is not a literal IP address with a valid port
 */
export function encodeToClient(
  messages: readonly ToClientMessage[],
): TlvRecord[] {
  const records: TlvRecord[] = [];
  let hadSender = false;
  let hadCookie = false;
  const cannot = (why: string) =>
    new RangeError(`Cannot encode a stream for a client: ${why}`);
  const pushSender = (sender: PeerAddress | undefined) => {
    if (sender) {
      records.push({ type: RecordType.SENDER, value: encodeAddress(sender) });
      hadSender = true;
    } else if (hadSender) {
      throw cannot("a message without a sender would take the SENDER before");
    }
  };
  for (const [i, message] of messages.entries()) {
    switch (message.kind) {
      case "server_key":
        if (message.cookie) {
          records.push({ type: RecordType.COOKIE, value: message.cookie });
          hadCookie = true;
        } else if (hadCookie) {
          throw cannot("a key without a cookie would take the COOKIE before");
        }
        records.push({
          type: RecordType.SERVER_PUBLIC_KEY,
          value: message.pem,
        });
        break;
      case "presence": {
        const type = message.change === "connect"
          ? RecordType.NOTIFY_CONNECT
          : RecordType.NOTIFY_DISCONNECT;
        records.push({ type, value: encodeAddress(message.address) });
        break;
      }
      case "relayed_message":
        pushSender(message.sender);
        records.push({ type: RecordType.FERNET_MESSAGE, value: message.token });
        break;
      case "rsa_relayed":
        if (i !== messages.length - 1 || message.blocks.length === 0) {
          throw cannot("an rsa_relayed message must come last and hold blocks");
        }
        pushSender(message.sender);
        for (const value of message.blocks) {
          records.push({ type: RecordType.RSA_RELAY_BLOCK, value });
        }
        break;
      default: {
        const type = ONE_RECORD_TO_CLIENT[message.kind];
        records.push({ type, value: message.value });
      }
    }
  }
  return records;
}
