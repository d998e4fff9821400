/**
 * Address values (protocol.md section 2.1): 6 bytes (IPv4 + port) or 18 bytes
 * (IPv6 + port), and their text forms `1.2.3.4:5007` / `[::1]:5007`. Pure.
 *
 * @module
 */
import { MalformedDatagramError } from "../errors.ts";

/** A UDP endpoint. `hostname` is a literal IPv4 or IPv6 address (no brackets). */
export interface PeerAddress {
  /** Literal IP address: dotted IPv4, or IPv6 in any valid form (RFC 5952 form when produced here). */
  readonly hostname: string;
  /** UDP port, 0..65535. */
  readonly port: number;
}

/** Whether `text` is a dotted-quad IPv4 address (no leading zeros beyond "0"). */
export function isIPv4(text: string): boolean {
  throw new Error("not implemented" + text);
}

/** Whether `text` is a literal IPv6 address (with `::` compression, optional embedded IPv4 tail; no zone id). */
export function isIPv6(text: string): boolean {
  throw new Error("not implemented" + text);
}

/** Whether `text` is an IPv4 multicast address (224.0.0.0/4). */
export function isMulticastIPv4(text: string): boolean {
  throw new Error("not implemented" + text);
}

/**
 * Encodes an address value: 6 bytes for IPv4, 18 for IPv6, port big-endian last.
 * @throws {TypeError} when hostname is not a literal IP address or the port is out of range
 */
export function encodeAddress(address: PeerAddress): Uint8Array {
  throw new Error("not implemented" + address);
}

/**
 * Decodes a 6- or 18-byte address value. IPv6 comes back in RFC 5952 form (lowercase, longest zero run as `::`).
 * @throws {MalformedDatagramError} for any other length
 */
export function decodeAddress(value: Uint8Array): PeerAddress {
  throw new MalformedDatagramError("not implemented" + value);
}

/**
 * Text form: `1.2.3.4:5007`, `[2001:db8::1]:5007` (IPv6 normalised to RFC 5952).
 * Also the key under which the server tracks a client.
 */
export function formatAddress(address: PeerAddress): string {
  throw new Error("not implemented" + address);
}

/**
 * Parses `HOST:PORT` or `[IPv6]:PORT` where HOST is a literal IP address (IPv6
 * normalised to RFC 5952). `localhost` is accepted as 127.0.0.1.
 * @throws {TypeError} with a message naming the bad part, e.g. "Invalid address \"1.2.3:80\": \"1.2.3\" is not an IPv4 or IPv6 address"
 */
export function parseAddress(text: string): PeerAddress {
  throw new Error("not implemented" + text);
}
