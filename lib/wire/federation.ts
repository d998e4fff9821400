/**
 * The envelope that relays of one cluster exchange over NATS (PROTOCOL.md,
 * "Federation"): pure encoding and decoding, no sockets, no timers. The
 * envelope travels as the plaintext of a Fernet token under the cluster key;
 * this module only lays out its bytes.
 *
 * ```text
 * version u8 (1) | kind u8 | relay id (16 bytes) | seq u32 | body
 * MESSAGE   body: alen u8 | sender address value | message
 * JOIN      body: alen u8 | address value
 * LEAVE     body: alen u8 | address value
 * HEARTBEAT body: count u16 | count x (alen u8 | address value)
 * ```
 *
 * @module
 */
import { MalformedDatagramError } from "../errors.ts";
import { IPV4_ADDRESS_VALUE_SIZE, IPV6_ADDRESS_VALUE_SIZE } from "./address.ts";

/** The envelope layout version this module writes and reads. */
export const FEDERATION_VERSION = 1;
/** Bytes of a relay id: random per relay process, so a restart is a new relay. */
export const RELAY_ID_SIZE = 16;
/** Version, kind, relay id and sequence number. */
export const ENVELOPE_HEADER_SIZE = 2 + RELAY_ID_SIZE + 4;
/** Addresses one HEARTBEAT envelope carries at most (a relay sends several when it has more members). */
export const MAX_HEARTBEAT_ADDRESSES = 2048;

/** What an envelope says. */
export enum EnvelopeKind {
  /** A message of a member of the sending relay, for every member elsewhere. */
  MESSAGE = 1,
  /** A member registered at the sending relay. */
  JOIN = 2,
  /** A member left the sending relay. */
  LEAVE = 3,
  /** The sending relay is alive; these are (some of) its members. */
  HEARTBEAT = 4,
}

/** Fields every envelope has. */
interface EnvelopeHeader {
  /** The sending relay's id ({@linkcode RELAY_ID_SIZE} bytes). */
  readonly relayId: Uint8Array;
  /** The sending relay's sequence number: one more for each envelope it publishes. */
  readonly seq: number;
}

/** One decoded envelope. */
export type Envelope =
  | EnvelopeHeader & {
    readonly kind: EnvelopeKind.MESSAGE;
    /** The sender's address value (protocol.md section 2.1). */
    readonly sender: Uint8Array;
    /** The message plaintext. */
    readonly message: Uint8Array;
  }
  | EnvelopeHeader & {
    readonly kind: EnvelopeKind.JOIN | EnvelopeKind.LEAVE;
    /** The member's address value. */
    readonly address: Uint8Array;
  }
  | EnvelopeHeader & {
    readonly kind: EnvelopeKind.HEARTBEAT;
    /** Address values of members of the sending relay. */
    readonly members: readonly Uint8Array[];
  };

/** Encodes `envelope` (the plaintext to seal under the cluster key). */
export function encodeEnvelope(envelope: Envelope): Uint8Array<ArrayBuffer> {
  if (envelope.relayId.length !== RELAY_ID_SIZE) {
    throw new RangeError(`A relay id is ${RELAY_ID_SIZE} bytes`);
  }
  if (!Number.isInteger(envelope.seq) || envelope.seq < 0) {
    throw new RangeError("A sequence number is a u32");
  }
  let body: Uint8Array[];
  switch (envelope.kind) {
    case EnvelopeKind.MESSAGE:
      body = [addressField(envelope.sender), envelope.message];
      break;
    case EnvelopeKind.JOIN:
    case EnvelopeKind.LEAVE:
      body = [addressField(envelope.address)];
      break;
    case EnvelopeKind.HEARTBEAT: {
      if (envelope.members.length > MAX_HEARTBEAT_ADDRESSES) {
        throw new RangeError(
          `A heartbeat carries at most ${MAX_HEARTBEAT_ADDRESSES} addresses`,
        );
      }
      const count = new Uint8Array(2);
      new DataView(count.buffer).setUint16(0, envelope.members.length);
      body = [count, ...envelope.members.map(addressField)];
      break;
    }
  }
  const size = body.reduce((total, part) => total + part.length, 0);
  const out = new Uint8Array(ENVELOPE_HEADER_SIZE + size);
  out[0] = FEDERATION_VERSION;
  out[1] = envelope.kind;
  out.set(envelope.relayId, 2);
  new DataView(out.buffer).setUint32(2 + RELAY_ID_SIZE, envelope.seq >>> 0);
  let offset = ENVELOPE_HEADER_SIZE;
  for (const part of body) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/**
 * Decodes an envelope's bytes.
 * @throws {MalformedDatagramError} on an unknown version or kind, a bad
 * address length, or a truncated or overlong body
 */
export function decodeEnvelope(bytes: Uint8Array): Envelope {
  if (bytes.length < ENVELOPE_HEADER_SIZE) {
    throw new MalformedDatagramError("Envelope shorter than its header");
  }
  if (bytes[0] !== FEDERATION_VERSION) {
    throw new MalformedDatagramError(
      `Envelope version ${bytes[0]} is not ${FEDERATION_VERSION}`,
    );
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const relayId = bytes.slice(2, 2 + RELAY_ID_SIZE);
  const seq = view.getUint32(2 + RELAY_ID_SIZE);
  const kind = bytes[1];
  const reader = { offset: ENVELOPE_HEADER_SIZE };
  switch (kind) {
    case EnvelopeKind.MESSAGE: {
      const sender = readAddress(bytes, reader);
      return {
        kind,
        relayId,
        seq,
        sender,
        message: bytes.slice(reader.offset),
      };
    }
    case EnvelopeKind.JOIN:
    case EnvelopeKind.LEAVE: {
      const address = readAddress(bytes, reader);
      expectEnd(bytes, reader);
      return { kind, relayId, seq, address };
    }
    case EnvelopeKind.HEARTBEAT: {
      if (bytes.length < reader.offset + 2) {
        throw new MalformedDatagramError("Heartbeat without a count");
      }
      const count = view.getUint16(reader.offset);
      if (count > MAX_HEARTBEAT_ADDRESSES) {
        throw new MalformedDatagramError(
          `Heartbeat of ${count} addresses (at most ${MAX_HEARTBEAT_ADDRESSES})`,
        );
      }
      reader.offset += 2;
      const members: Uint8Array[] = [];
      for (let i = 0; i < count; i++) members.push(readAddress(bytes, reader));
      expectEnd(bytes, reader);
      return { kind, relayId, seq, members };
    }
    default:
      throw new MalformedDatagramError(`Unknown envelope kind ${kind}`);
  }
}

function addressField(address: Uint8Array): Uint8Array {
  checkAddressLength(address.length);
  const field = new Uint8Array(1 + address.length);
  field[0] = address.length;
  field.set(address, 1);
  return field;
}

function checkAddressLength(length: number): void {
  if (
    length !== IPV4_ADDRESS_VALUE_SIZE && length !== IPV6_ADDRESS_VALUE_SIZE
  ) {
    throw new MalformedDatagramError(
      `Address value of ${length} bytes (6 or 18)`,
    );
  }
}

function readAddress(
  bytes: Uint8Array,
  reader: { offset: number },
): Uint8Array {
  const length = bytes[reader.offset];
  if (length === undefined) {
    throw new MalformedDatagramError("Envelope ends before an address");
  }
  checkAddressLength(length);
  const start = reader.offset + 1;
  if (start + length > bytes.length) {
    throw new MalformedDatagramError("Envelope ends inside an address");
  }
  reader.offset = start + length;
  return bytes.slice(start, start + length);
}

function expectEnd(bytes: Uint8Array, reader: { offset: number }): void {
  if (reader.offset !== bytes.length) {
    throw new MalformedDatagramError(
      `${bytes.length - reader.offset} bytes after the envelope's end`,
    );
  }
}
