/**
 * The client's settings: the parsed flags (command line over config file
 * over defaults) checked and resolved into one {@linkcode ClientConfig}.
 * No sockets and no files: the wiring is in client_main.ts, the flag table
 * in client_flags.ts.
 *
 * @module
 */
import { ConfigError } from "../errors.ts";
import type { PeerAddress } from "../wire/address.ts";
import type { LogLevel } from "../log.ts";
import {
  addressFlag,
  choiceFlag,
  controlTokenFlag,
  fingerprintFlag,
  type FlagValues,
  groupFlag,
  hostFlag,
  integerFlag,
  keyBitsFlag,
  logLevelFlag,
  portFlag,
  secondsFlag,
} from "./flags.ts";
import { defaultKnownServersPath } from "./known_servers.ts";

/** Key requests sent to each relay before giving up on it. */
const RETRY_ATTEMPTS = 5;

/** The client's settings, checked, as the flags give them. */
export interface ClientConfig {
  /** The `--server` addresses given (none: the group). */
  readonly servers: readonly PeerAddress[];
  /** Where the first key request goes: the first `--server`, else the group. */
  readonly target: PeerAddress;
  /** The other `--server` relays, tried in turn. */
  readonly fallbackTargets: readonly PeerAddress[];
  /** The pinned server key (`--fingerprint`), if any. */
  readonly fingerprint: string | undefined;
  /** The profile (`--profile`). */
  readonly profile: "hybrid" | "rsa" | "basic";
  /** The size of the rsa profile's own key (`--key-bits`). */
  readonly rsaKeyBits: number;
  /** The control port's address (`--tcp-host`). */
  readonly tcpHost: string;
  /** The control port (`--tcp-port`, default 9000). */
  readonly tcpPort: number;
  /** Whether `--tcp-port` was given. */
  readonly tcpPortGiven: boolean;
  /** The control port's token, if any (`--control-token` or the environment). */
  readonly token: string | undefined;
  /** The keep-alive interval (`--keepalive`). */
  readonly keepaliveMs: number;
  /** The largest datagram sent (`--mtu`). */
  readonly mtu: number;
  /** JSON lines on stdout and the control port (`--json`). */
  readonly json: boolean;
  /** The stderr log level (`--log-level`). */
  readonly logLevel: LogLevel;
  /** Exit after this many messages (`--count`), if given. */
  readonly count: number | undefined;
  /** Give up joining after this long (`--connect-timeout`), if given. */
  readonly connectTimeoutMs: number | undefined;
  /** The known-servers file, or undefined when none is used. */
  readonly knownServersPath: string | undefined;
  /** The file to send as one message (`--file`), if any. */
  readonly file: string | undefined;
  /** Interactive even when stdin is not a terminal (`--stdio`). */
  readonly stdio: boolean;
  /** Whether group fan-out is asked for (not `--no-group`). */
  readonly groupFanout: boolean;
  /** Key requests sent to each relay. */
  readonly retryAttempts: number;
  /** The first wait for an answer, when `--connect-timeout` spreads the tries. */
  readonly retryInitialMs: number | undefined;
}

/**
 * Checks the parsed flags and turns them into the client's settings.
 * @param env reads an environment variable (for the known-servers file's default)
 * @throws {ConfigError} for a bad value or flags that contradict each other
 */
export function resolveClientConfig(
  flags: FlagValues,
  env: (name: string) => string | undefined,
): ClientConfig {
  const port = portFlag("port", flags.port as string, false);
  const servers = flags.server === undefined
    ? []
    : (flags.server as string).split(",").map((text) =>
      addressFlag("server", text.trim())
    );
  const [target, ...fallbackTargets]: PeerAddress[] = servers.length > 0
    ? servers
    : [{ hostname: groupFlag("group", flags.group as string), port }];
  const fingerprint = flags.fingerprint === undefined
    ? undefined
    : fingerprintFlag("fingerprint", flags.fingerprint as string);
  const profile = choiceFlag("profile", flags.profile as string, [
    "hybrid",
    "rsa",
    "basic",
  ]);
  if (profile === "basic" && servers.length !== 1) {
    throw new ConfigError(
      "--profile basic talks to one unicast endpoint: give --server HOST:PORT",
    );
  }
  const rsaKeyBits = keyBitsFlag("key-bits", flags["key-bits"] as string);
  const tcpHost = hostFlag("tcp-host", flags["tcp-host"] as string);
  const token = controlTokenFlag(flags, tcpHost);
  const tcpPort = portFlag(
    "tcp-port",
    (flags["tcp-port"] as string | undefined) ?? "9000",
  );
  const keepaliveMs = secondsFlag(
    "keepalive",
    flags.keepalive as string,
    0.05,
    3600,
  );
  const mtu = integerFlag("mtu", flags.mtu as string, 576, 65507);
  const logLevel = logLevelFlag("log-level", flags["log-level"] as string);
  const count = flags.count === undefined
    ? undefined
    : integerFlag("count", flags.count as string, 1, 1_000_000_000);
  const connectTimeoutMs = flags["connect-timeout"] === undefined
    ? undefined
    : secondsFlag(
      "connect-timeout",
      flags["connect-timeout"] as string,
      1,
      3600,
    );
  if (
    flags["no-known-servers"] === true && flags["known-servers"] !== undefined
  ) {
    throw new ConfigError(
      "--known-servers and --no-known-servers contradict each other: give one",
    );
  }
  const knownPath = fingerprint !== undefined || profile === "basic" ||
      flags["no-known-servers"] === true
    ? undefined
    : (flags["known-servers"] as string | undefined) ??
      defaultKnownServersPath(env);
  // --connect-timeout spreads the tries of each relay over its share.
  const retryInitialMs = connectTimeoutMs === undefined
    ? undefined
    : connectTimeoutMs /
      ((2 ** RETRY_ATTEMPTS - 1) * (1 + fallbackTargets.length));
  return {
    servers,
    target,
    fallbackTargets,
    fingerprint,
    profile,
    rsaKeyBits,
    tcpHost,
    tcpPort,
    tcpPortGiven: flags["tcp-port"] !== undefined,
    token,
    keepaliveMs,
    mtu,
    json: flags.json === true,
    logLevel,
    count,
    connectTimeoutMs,
    knownServersPath: knownPath,
    file: flags.file as string | undefined,
    stdio: flags.stdio === true,
    groupFanout: flags["no-group"] !== true,
    retryAttempts: RETRY_ATTEMPTS,
    retryInitialMs,
  };
}
