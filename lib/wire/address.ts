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

/** Size of an IPv4 address value: 4 address bytes + port u16. */
export const IPV4_ADDRESS_VALUE_SIZE = 6;
/** Size of an IPv6 address value: 16 address bytes + port u16. */
export const IPV6_ADDRESS_VALUE_SIZE = 18;

const OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])";
const IPV4_PATTERN = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);
const HEX_GROUP_PATTERN = /^[0-9a-fA-F]{1,4}$/;
const PORT_PATTERN = /^[0-9]{1,5}$/;
const EXPECTED_FORM = "expected IPv4:PORT, [IPv6]:PORT or localhost:PORT";

/**
 * Whether `text` is a dotted-quad IPv4 address (no leading zeros beyond "0").
 *
 * @example
 * ```ts
 * import { isIPv4 } from "./address.ts";
 * if (!isIPv4("127.0.0.1") || isIPv4("127.0.0.01")) throw new Error();
 * ```
 */
export function isIPv4(text: string): boolean {
  return IPV4_PATTERN.test(text);
}

/** The 4 bytes of a valid dotted-quad, or undefined. */
function parseIPv4(text: string): Uint8Array | undefined {
  if (!isIPv4(text)) return undefined;
  return Uint8Array.from(text.split("."), Number);
}

/** Parses hex groups (the last may be a dotted IPv4 when `ipv4Tail`) into 16-bit words. */
function parseGroups(
  groups: readonly string[],
  ipv4Tail: boolean,
): number[] | undefined {
  const words: number[] = [];
  for (let i = 0; i < groups.length; i++) {
    const group = groups[i];
    if (ipv4Tail && i === groups.length - 1 && group.includes(".")) {
      const v4 = parseIPv4(group);
      if (v4 === undefined) return undefined;
      words.push((v4[0] << 8) | v4[1], (v4[2] << 8) | v4[3]);
    } else if (HEX_GROUP_PATTERN.test(group)) {
      words.push(parseInt(group, 16));
    } else {
      return undefined;
    }
  }
  return words;
}

/** The 16 bytes of a literal IPv6 address (RFC 4291 section 2.2 text forms), or undefined. */
function parseIPv6(text: string): Uint8Array | undefined {
  const gap = text.indexOf("::");
  if (gap !== text.lastIndexOf("::")) return undefined; // at most one "::"
  let words: number[] | undefined;
  if (gap === -1) {
    words = parseGroups(text.split(":"), true);
    if (words === undefined || words.length !== 8) return undefined;
  } else {
    const headText = text.slice(0, gap);
    const tailText = text.slice(gap + 2);
    const head = headText === "" ? [] : parseGroups(headText.split(":"), false);
    const tail = tailText === "" ? [] : parseGroups(tailText.split(":"), true);
    if (head === undefined || tail === undefined) return undefined;
    const zeros = 8 - head.length - tail.length;
    if (zeros < 1) return undefined;
    words = [...head, ...new Array<number>(zeros).fill(0), ...tail];
  }
  const bytes = new Uint8Array(16);
  words.forEach((word, i) => {
    bytes[2 * i] = word >>> 8;
    bytes[2 * i + 1] = word & 0xff;
  });
  return bytes;
}

/**
 * Whether `text` is a literal IPv6 address (with `::` compression, optional embedded IPv4 tail; no zone id).
 *
 * @example
 * ```ts
 * import { isIPv6 } from "./address.ts";
 * if (!isIPv6("::ffff:1.2.3.4") || isIPv6("fe80::1%eth0")) throw new Error();
 * ```
 */
export function isIPv6(text: string): boolean {
  return parseIPv6(text) !== undefined;
}

/**
 * Whether `text` is an IPv4 multicast address (224.0.0.0/4).
 *
 * @example
 * ```ts
 * import { isMulticastIPv4 } from "./address.ts";
 * if (!isMulticastIPv4("224.1.1.1") || isMulticastIPv4("240.0.0.1")) throw new Error();
 * ```
 */
export function isMulticastIPv4(text: string): boolean {
  if (!isIPv4(text)) return false;
  const first = Number(text.slice(0, text.indexOf(".")));
  return first >= 224 && first <= 239;
}

/**
 * Whether `text` is a literal loopback address: 127.0.0.0/8, `::1`, or
 * 127.0.0.0/8 mapped into IPv6 (`::ffff:127.0.0.1`).
 *
 * @example
 * ```ts
 * import { isLoopbackAddress } from "./address.ts";
 * if (!isLoopbackAddress("127.0.0.2") || isLoopbackAddress("10.0.0.1")) throw new Error();
 * ```
 */
export function isLoopbackAddress(text: string): boolean {
  if (isIPv4(text)) return text.startsWith("127.");
  const bytes = parseIPv6(text);
  if (bytes === undefined) return false;
  const zeros = (end: number) => bytes.subarray(0, end).every((b) => b === 0);
  if (zeros(15) && bytes[15] === 1) return true; // ::1
  return zeros(10) && bytes[10] === 0xff && bytes[11] === 0xff &&
    bytes[12] === 127;
}

/** Formats 16 address bytes in RFC 5952 form; `::ffff:0:0/96` in mixed notation. */
function formatIPv6(bytes: Uint8Array): string {
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push((bytes[i] << 8) | bytes[i + 1]);
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  }
  // Longest run of at least two zero words; the first one wins a tie.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let end = i;
    while (end < 8 && words[end] === 0) end++;
    if (end - i > bestLength) {
      bestStart = i;
      bestLength = end - i;
    }
    i = end;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(":");
  if (bestStart === -1) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${
    hex(words.slice(bestStart + bestLength))
  }`;
}

function checkPort(port: number, what: string): void {
  if (!Number.isInteger(port) || port < 0 || port > 0xffff) {
    throw new TypeError(
      `${what}: port ${port} is not an integer from 0 to 65535`,
    );
  }
}

/**
 * Encodes an address value: 6 bytes for IPv4, 18 for IPv6, port big-endian last.
 *
 * @example
 * ```ts
 * import { encodeAddress } from "./address.ts";
 * const value = encodeAddress({ hostname: "127.0.0.1", port: 5007 });
 * if (value.join() !== "127,0,0,1,19,143") throw new Error();
 * ```
 * @throws {TypeError} when hostname is not a literal IP address or the port is out of range
 */
export function encodeAddress(address: PeerAddress): Uint8Array {
  const what = "Cannot encode address";
  checkPort(address.port, what);
  const ip = parseIPv4(address.hostname) ?? parseIPv6(address.hostname);
  if (ip === undefined) {
    throw new TypeError(
      `${what}: ${
        JSON.stringify(address.hostname)
      } is not a literal IPv4 or IPv6 address`,
    );
  }
  const value = new Uint8Array(ip.length + 2);
  value.set(ip);
  value[ip.length] = address.port >>> 8;
  value[ip.length + 1] = address.port & 0xff;
  return value;
}

/**
 * Decodes a 6- or 18-byte address value. IPv6 comes back in RFC 5952 form (lowercase, longest zero run as `::`).
 *
 * @example
 * ```ts
 * import { decodeAddress } from "./address.ts";
 * const { hostname, port } = decodeAddress(new Uint8Array([127, 0, 0, 1, 0x13, 0x8f]));
 * if (hostname !== "127.0.0.1" || port !== 5007) throw new Error();
 * ```
 * @throws {MalformedDatagramError} for any other length
 */
export function decodeAddress(value: Uint8Array): PeerAddress {
  const n = value.length;
  if (n !== IPV4_ADDRESS_VALUE_SIZE && n !== IPV6_ADDRESS_VALUE_SIZE) {
    throw new MalformedDatagramError(
      `Cannot decode address: value is ${n} bytes, expected 6 (IPv4) or 18 (IPv6)`,
    );
  }
  const port = (value[n - 2] << 8) | value[n - 1];
  const hostname = n === IPV4_ADDRESS_VALUE_SIZE
    ? value.subarray(0, 4).join(".")
    : formatIPv6(value.subarray(0, 16));
  return { hostname, port };
}

/**
 * The canonical text of a literal IP address (IPv6 in RFC 5952 form), or
 * undefined when `hostname` is not one.
 *
 * @example
 * ```ts
 * import { canonicalHost } from "./address.ts";
 * if (canonicalHost("0:0::1") !== "::1" || canonicalHost("host") !== undefined) throw new Error();
 * ```
 */
export function canonicalHost(hostname: string): string | undefined {
  if (isIPv4(hostname)) return hostname;
  const v6 = parseIPv6(hostname);
  return v6 === undefined ? undefined : formatIPv6(v6);
}

/**
 * Text form: `1.2.3.4:5007`, `[2001:db8::1]:5007` (IPv6 normalised to RFC 5952).
 * Also the key under which the server tracks a client.
 *
 * @example
 * ```ts
 * import { formatAddress } from "./address.ts";
 * if (formatAddress({ hostname: "0:0::1", port: 5007 }) !== "[::1]:5007") throw new Error();
 * ```
 * @throws {TypeError} when hostname is not a literal IP address or the port is out of range
 */
export function formatAddress(address: PeerAddress): string {
  const what = "Cannot format address";
  checkPort(address.port, what);
  const host = canonicalHost(address.hostname);
  if (host === undefined) {
    throw new TypeError(
      `${what}: ${
        JSON.stringify(address.hostname)
      } is not a literal IPv4 or IPv6 address`,
    );
  }
  return host.includes(":")
    ? `[${host}]:${address.port}`
    : `${host}:${address.port}`;
}

/**
 * Parses `HOST:PORT` or `[IPv6]:PORT` where HOST is a literal IP address (IPv6
 * normalised to RFC 5952). `localhost` is accepted as 127.0.0.1.
 *
 * @example
 * ```ts
 * import { parseAddress } from "./address.ts";
 * const { hostname, port } = parseAddress("[2001:DB8:0::1]:5007");
 * if (hostname !== "2001:db8::1" || port !== 5007) throw new Error();
 * ```
 * @throws {TypeError} with a message naming the bad part, e.g. "Invalid address \"1.2.3:80\": \"1.2.3\" is not an IPv4 or IPv6 address"
 */
export function parseAddress(text: string): PeerAddress {
  const fail = (why: string): never => {
    throw new TypeError(`Invalid address ${JSON.stringify(text)}: ${why}`);
  };
  let hostText: string;
  let portText: string;
  let hostname: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close === -1 || text[close + 1] !== ":") {
      return fail(`missing "]:PORT" after the IPv6 address; ${EXPECTED_FORM}`);
    }
    hostText = text.slice(1, close);
    portText = text.slice(close + 2);
    const v6 = parseIPv6(hostText);
    if (v6 === undefined) {
      return fail(
        `${JSON.stringify(hostText)} is not an IPv6 address; ${EXPECTED_FORM}`,
      );
    }
    hostname = formatIPv6(v6);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon === -1) return fail(`missing ":PORT"; ${EXPECTED_FORM}`);
    hostText = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (hostText.toLowerCase() === "localhost") {
      hostname = "127.0.0.1";
    } else if (isIPv4(hostText)) {
      hostname = hostText;
    } else if (hostText.includes(":")) {
      return fail(`an IPv6 address needs brackets; ${EXPECTED_FORM}`);
    } else {
      return fail(
        `${
          JSON.stringify(hostText)
        } is not an IPv4 or IPv6 address; ${EXPECTED_FORM}`,
      );
    }
  }
  const port = Number(portText);
  if (!PORT_PATTERN.test(portText) || port > 0xffff) {
    return fail(
      `port ${JSON.stringify(portText)} is not an integer from 0 to 65535`,
    );
  }
  return { hostname, port };
}
