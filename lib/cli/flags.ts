/**
 * Command-line parsing helpers shared by the server and client CLIs: strict
 * `node:util` parseArgs, and validators that turn a bad value into a
 * {@linkcode ConfigError} whose one-line message says what to do.
 *
 * @module
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { BindError, ConfigError } from "../errors.ts";
import {
  ControlServer,
  type ControlServerOptions,
} from "../runtime/control.ts";
import {
  formatAddress,
  isIPv4,
  isIPv6,
  isLoopbackAddress,
  isMulticastIPv4,
  parseAddress,
  type PeerAddress,
} from "../wire/address.ts";
import { LOG_LEVELS, type LogLevel } from "../log.ts";

/** One flag of a CLI: its parseArgs type, default, and help text. */
export interface FlagSpec {
  /** "string" takes a value; "boolean" is a switch. */
  readonly type: "string" | "boolean";
  /** Default shown in --help (strings only). */
  readonly default?: string;
  /** Placeholder for the value in --help, e.g. "PORT". */
  readonly value?: string;
  /** One-line description. */
  readonly help: string;
}

/** A CLI's flags by long name. */
export type FlagSpecs = Readonly<Record<string, FlagSpec>>;

/** Parsed flag values: strings (defaults filled in) and booleans. */
export type FlagValues = Record<string, string | boolean | undefined>;

/**
 * Parses `args` strictly against `specs`; a flag `args` does not give takes
 * its value from `base` (a config file's), else its default.
 * @throws {ConfigError} on an unknown flag, a missing value or a stray argument
 */
export function parseFlags(
  args: readonly string[],
  specs: FlagSpecs,
  base: FlagValues = {},
): FlagValues {
  const options: NonNullable<ParseArgsConfig["options"]> = {};
  for (const [name, spec] of Object.entries(specs)) {
    options[name] = { type: spec.type };
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: [...args],
      options,
      strict: true,
      allowPositionals: false,
    });
  } catch (error) {
    const message = (error as Error).message.replace(/\. To specify.*$/s, "");
    const unknown = /^Unknown option '-{1,2}([^'=]+)/.exec(message)?.[1];
    const guess = unknown === undefined
      ? undefined
      : closestName(unknown, Object.keys(specs));
    throw new ConfigError(
      `${message}${guess ? `: did you mean --${guess}?` : ""} (see --help)`,
    );
  }
  const values: FlagValues = { ...parsed.values } as FlagValues;
  for (const [name, spec] of Object.entries(specs)) {
    if (values[name] === undefined) values[name] = base[name] ?? spec.default;
  }
  return values;
}

/**
 * The edit distance between two words: insertions, deletions,
 * substitutions and swaps of two neighbours (optimal string alignment).
 */
export function editDistance(a: string, b: string): number {
  const rows: number[][] = [];
  for (let i = 0; i <= a.length; i++) {
    rows.push([i]);
    for (let j = 1; j <= b.length; j++) {
      if (i === 0) {
        rows[i].push(j);
        continue;
      }
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let best = Math.min(
        rows[i - 1][j] + 1,
        rows[i][j - 1] + 1,
        rows[i - 1][j - 1] + cost,
      );
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        best = Math.min(best, rows[i - 2][j - 2] + 1);
      }
      rows[i].push(best);
    }
  }
  return rows[a.length][b.length];
}

/**
 * The name among `names` closest to a mistyped `word`, when one is close
 * enough to be what was meant (at most 2 edits, and fewer than half the
 * word's length); undefined otherwise.
 */
export function closestName(
  word: string,
  names: readonly string[],
): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const name of names) {
    const distance = editDistance(word, name);
    if (distance < bestDistance) {
      best = name;
      bestDistance = distance;
    }
  }
  return bestDistance <= 2 && bestDistance * 2 < word.length ? best : undefined;
}

/** Renders the flags as --help lines: `  --name VALUE  help (default: x)`. */
export function formatFlagHelp(specs: FlagSpecs): string {
  const rows = Object.entries(specs).map(([name, spec]) => {
    const left = spec.type === "string"
      ? `--${name} ${spec.value ?? "VALUE"}`
      : `--${name}`;
    const def = spec.default !== undefined ? ` (default: ${spec.default})` : "";
    return [left, spec.help + def] as const;
  });
  const width = Math.max(...rows.map(([left]) => left.length));
  return rows.map(([left, right]) => `  ${left.padEnd(width)}  ${right}`).join(
    "\n",
  );
}

/**
 * A port number.
 * @throws {ConfigError} unless an integer in range (0 allowed when `allowZero`)
 */
export function portFlag(name: string, text: string, allowZero = true): number {
  const port = Number(text);
  if (
    !/^\d+$/.test(text) || !Number.isInteger(port) || port > 65535 ||
    (!allowZero && port === 0)
  ) {
    throw new ConfigError(
      `--${name} ${JSON.stringify(text)} is not a port: give a number from ${
        allowZero ? 0 : 1
      } to 65535${allowZero ? " (0 picks a free one)" : ""}`,
    );
  }
  return port;
}

/**
 * A whole number within [min, max].
 * @throws {ConfigError} otherwise
 */
export function integerFlag(
  name: string,
  text: string,
  min: number,
  max: number,
): number {
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < min || value > max) {
    throw new ConfigError(
      `--${name} ${
        JSON.stringify(text)
      } is out of range: give a whole number from ${min} to ${max}`,
    );
  }
  return value;
}

/**
 * A positive duration in seconds (fractions allowed), returned in milliseconds.
 * @throws {ConfigError} otherwise
 */
export function secondsFlag(
  name: string,
  text: string,
  minSeconds: number,
  maxSeconds: number,
): number {
  const value = Number(text);
  if (
    !/^\d+(\.\d+)?$/.test(text) || value < minSeconds || value > maxSeconds
  ) {
    throw new ConfigError(
      `--${name} ${
        JSON.stringify(text)
      } is not a duration: give seconds from ${minSeconds} to ${maxSeconds}`,
    );
  }
  return Math.round(value * 1000);
}

/**
 * A literal IP address to bind or listen on.
 * @throws {ConfigError} otherwise
 */
export function hostFlag(name: string, text: string): string {
  if (text === "localhost") return "127.0.0.1";
  if (!isIPv4(text) && !isIPv6(text)) {
    throw new ConfigError(
      `--${name} ${
        JSON.stringify(text)
      } is not an IP address: give one like 127.0.0.1, 0.0.0.0 or ::1 (or localhost)`,
    );
  }
  return text;
}

/**
 * An IPv4 multicast group.
 * @throws {ConfigError} otherwise
 */
export function groupFlag(name: string, text: string): string {
  if (!isMulticastIPv4(text)) {
    throw new ConfigError(
      `--${name} ${
        JSON.stringify(text)
      } is not an IPv4 multicast group: give an address from 224.0.0.0 to 239.255.255.255, e.g. 224.1.1.1`,
    );
  }
  return text;
}

/**
 * A `HOST:PORT` unicast address.
 * @throws {ConfigError} otherwise
 */
export function addressFlag(name: string, text: string): PeerAddress {
  try {
    const address = parseAddress(text);
    if (address.port === 0) throw new TypeError("port 0");
    return address;
  } catch {
    throw new ConfigError(
      `--${name} ${
        JSON.stringify(text)
      } is not an address: give IPv4:PORT, [IPv6]:PORT or localhost:PORT, e.g. 127.0.0.1:5007 (host names other than localhost are not looked up)`,
    );
  }
}

/**
 * An address to listen on: `PORT` (on 127.0.0.1), `IPv4:PORT` or
 * `[IPv6]:PORT`; port 0 picks a free one.
 * @throws {ConfigError} otherwise
 */
export function listenAddressFlag(name: string, text: string): PeerAddress {
  if (/^\d+$/.test(text)) {
    return { hostname: "127.0.0.1", port: portFlag(name, text) };
  }
  const match = /^\[?([^\]]*?)\]?:(\d+)$/.exec(text);
  let hostname = match?.[1];
  if (hostname === "localhost") hostname = "127.0.0.1";
  if (!match || !hostname || (!isIPv4(hostname) && !isIPv6(hostname))) {
    throw new ConfigError(
      `--${name} ${
        JSON.stringify(text)
      } is not an address to listen on: give PORT (on 127.0.0.1), IPv4:PORT or [IPv6]:PORT, e.g. 127.0.0.1:9464`,
    );
  }
  return { hostname, port: portFlag(name, match[2]) };
}

/**
 * A `GROUP:PORT` IPv4 multicast address and port.
 * @throws {ConfigError} otherwise
 */
export function multicastAddressFlag(name: string, text: string): PeerAddress {
  let address: PeerAddress | undefined;
  try {
    address = parseAddress(text);
  } catch {
    address = undefined;
  }
  if (!address || address.port === 0 || !isMulticastIPv4(address.hostname)) {
    throw new ConfigError(
      `--${name} ${
        JSON.stringify(text)
      } is not a multicast address: give GROUP:PORT with a group from 224.0.0.0 to 239.255.255.255, e.g. 224.1.1.1:5008`,
    );
  }
  return address;
}

/**
 * A key fingerprint `SHA256:` + 43 base64 characters.
 * @throws {ConfigError} otherwise
 */
export function fingerprintFlag(name: string, text: string): string {
  if (!/^SHA256:[A-Za-z0-9+/]{43}$/.test(text)) {
    throw new ConfigError(
      `--${name} ${
        JSON.stringify(text)
      } is not a key fingerprint: copy the SHA256:... value the server prints at start`,
    );
  }
  return text;
}

/**
 * One of a set of words.
 * @throws {ConfigError} otherwise
 */
export function choiceFlag<T extends string>(
  name: string,
  text: string,
  choices: readonly T[],
): T {
  if (!(choices as readonly string[]).includes(text)) {
    throw new ConfigError(
      `--${name} ${JSON.stringify(text)} is not one of ${choices.join(", ")}`,
    );
  }
  return text as T;
}

/**
 * An RSA key size in bits: 2048, 3072 or 4096.
 * @throws {ConfigError} otherwise
 */
export function keyBitsFlag(name: string, text: string): number {
  return Number(choiceFlag(name, text, ["2048", "3072", "4096"]));
}

/**
 * A log level: debug, info, warn or error.
 * @throws {ConfigError} otherwise
 */
export function logLevelFlag(name: string, text: string): LogLevel {
  return choiceFlag(name, text, LOG_LEVELS);
}

/** The environment variable that may hold the control-port token. */
export const CONTROL_TOKEN_ENV = "MCRELAY_CONTROL_TOKEN";

/**
 * The control-port token: `--control-token`, else the environment variable.
 * A control port off loopback must have one.
 * @throws {ConfigError} when `host` is not a loopback address and no token is given
 */
export function controlTokenFlag(
  flags: FlagValues,
  host: string,
): string | undefined {
  const token = (flags["control-token"] as string | undefined) ??
    Deno.env.get(CONTROL_TOKEN_ENV);
  const loopback = isLoopbackAddress(host);
  if (!loopback && !token) {
    throw new ConfigError(
      `--tcp-host ${host} is not a loopback address: give --control-token TOKEN (or set ${CONTROL_TOKEN_ENV}) so the control port asks for it`,
    );
  }
  return token;
}

/** A socket a program listens on, as the user names and sets it. */
export interface ListenTarget {
  /** What it is, e.g. "control port". */
  readonly what: string;
  /** The flag that sets the port, e.g. "--tcp-port". */
  readonly portFlag: string;
  /** The flag that sets the address, e.g. "--tcp-host". */
  readonly hostFlag: string;
}

/** The control port of the server and of the client. */
export const CONTROL_PORT: ListenTarget = {
  what: "control port",
  portFlag: "--tcp-port",
  hostFlag: "--tcp-host",
};

/**
 * The error to throw when listening on `hostname:port` failed: for the two
 * failures a user can fix, a {@linkcode BindError} naming the address, the
 * flag and the fix; any other error unchanged.
 * @example Naming the flag that sets a busy port
 * ```ts
 * import { bindError, CONTROL_PORT } from "./flags.ts";
 *
 * const error = bindError(CONTROL_PORT, "127.0.0.1", 9000, new Deno.errors.AddrInUse());
 * if (!error.message.includes("127.0.0.1:9000 is in use: choose another with --tcp-port")) {
 *   throw new Error(error.message);
 * }
 * ```
 */
export function bindError(
  target: ListenTarget,
  hostname: string,
  port: number,
  error: unknown,
): Error {
  const address = formatAddress({ hostname, port });
  if (error instanceof Deno.errors.AddrInUse) {
    return new BindError(
      `${target.what} ${address} is in use: choose another with ${target.portFlag}, or 0 for a free one`,
    );
  }
  if (error instanceof Deno.errors.AddrNotAvailable) {
    return new BindError(
      `${target.what} ${address} cannot be bound: ${hostname} is not an address of this machine; choose one of its addresses with ${target.hostFlag}, or 0.0.0.0 for all`,
    );
  }
  return error instanceof Error ? error : new Error(String(error));
}

/**
 * Listens on a control port.
 * @throws {BindError} naming the address and `--tcp-port`/`--tcp-host` when it cannot be bound
 */
export function listenControl(options: ControlServerOptions): ControlServer {
  try {
    return ControlServer.listen(options);
  } catch (error) {
    throw bindError(CONTROL_PORT, options.hostname, options.port, error);
  }
}
