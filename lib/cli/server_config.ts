/**
 * The server's settings: the parsed flags (command line over config file
 * over defaults) checked and resolved into one {@linkcode ServerConfig},
 * and the checks that need the loaded key. No sockets: the wiring is in
 * server_main.ts, the flag table in server_flags.ts.
 *
 * @module
 */
import { ConfigError } from "../errors.ts";
import type { PeerAddress } from "../wire/address.ts";
import type { RsaPrivateKey } from "../crypto/rsa.ts";
import { keyAnswerSize } from "../relay/server/server.ts";
import { schedIdleUnavailable } from "../runtime/sched_idle.ts";
import { udpBatchSyscallsUnavailable } from "../runtime/udp_mmsg_libc.ts";
import { clusterSubject, type NatsLinkOptions } from "../runtime/nats_link.ts";
import type { LogLevel } from "../log.ts";
import {
  choiceFlag,
  controlTokenFlag,
  type FlagValues,
  groupFlag,
  hostFlag,
  integerFlag,
  keyBitsFlag,
  listenAddressFlag,
  logLevelFlag,
  multicastAddressFlag,
  portFlag,
  secondsFlag,
} from "./flags.ts";
import { SERVER_FLAGS } from "./server_flags.ts";

/** The NATS link's options from the flags, with the cluster key's file. */
export type NatsFlagOptions = NatsLinkOptions & {
  /** The cluster's Fernet key file (`--cluster-key-file`). */
  readonly clusterKeyFile: string;
};

/** The server's settings, checked, as the flags give them. */
export interface ServerConfig {
  /** The multicast group (`--group`). */
  readonly group: string;
  /** The UDP port (`--port`; 0 picks a free one). */
  readonly port: number;
  /** The UDP address to bind (`--bind`). */
  readonly bind: string;
  /** Whether the group is left alone (`--no-multicast`). */
  readonly noMulticast: boolean;
  /** The interface to join the group on (`--multicast-interface`). */
  readonly multicastInterface: string;
  /** The control port's address (`--tcp-host`). */
  readonly tcpHost: string;
  /** The control port (`--tcp-port`). */
  readonly tcpPort: number;
  /** The control port's token, if any (`--control-token` or the environment). */
  readonly token: string | undefined;
  /** How messages fan out (`--fanout`). */
  readonly fanout: "unicast" | "group";
  /** Where group messages are multicast, when `--downstream` gives it. */
  readonly downstream: PeerAddress | undefined;
  /** Whether this is the basic profile's unicast endpoint (`--profile basic`). */
  readonly basic: boolean;
  /** The key file (`--key-file`), or undefined for an ephemeral key. */
  readonly keyFile: string | undefined;
  /** The size of a generated key (`--key-bits`). */
  readonly keyBits: number;
  /** Members silent this long are removed (`--client-timeout`). */
  readonly clientTimeoutMs: number;
  /** The largest datagram sent (`--mtu`). */
  readonly mtu: number;
  /** Members at most (`--max-clients`). */
  readonly maxClients: number;
  /** The largest message relayed (`--max-message`). */
  readonly maxMessageBytes: number;
  /** Messages per second relayed per member (`--message-rate`). */
  readonly messagesPerSecond: number;
  /** Key exchanges per second per source IP (`--handshake-rate`). */
  readonly handshakesPerSecond: number;
  /** The log level (`--log-level`). */
  readonly logLevel: LogLevel;
  /** JSON lines in the log and on the control port (`--json`). */
  readonly json: boolean;
  /** Whether clients of the original design are accepted (`--compat`). */
  readonly compat: boolean;
  /** RSA key exchanges under SCHED_IDLE (`--rsa-sched-idle`). */
  readonly rsaSchedIdle: boolean;
  /** The UDP socket is driven by recvmmsg/sendmmsg through FFI (`--udp-batch-syscalls`). */
  readonly udpBatchSyscalls: boolean;
  /** Where `/metrics` is served (`--metrics`), if anywhere. */
  readonly metricsAddress: PeerAddress | undefined;
  /** The NATS federation (`--nats` and its companions), if any. */
  readonly nats: NatsFlagOptions | undefined;
}

/**
 * Checks the parsed flags and turns them into the server's settings.
 * @throws {ConfigError} for a bad value or flags that contradict each other
 */
export function resolveServerConfig(flags: FlagValues): ServerConfig {
  const group = groupFlag("group", flags.group as string);
  const port = portFlag("port", flags.port as string);
  const bind = hostFlag("bind", flags.bind as string);
  const multicastInterface = hostFlag(
    "multicast-interface",
    flags["multicast-interface"] as string,
  );
  const tcpHost = hostFlag("tcp-host", flags["tcp-host"] as string);
  const tcpPort = portFlag("tcp-port", flags["tcp-port"] as string);
  const fanout = choiceFlag("fanout", flags.fanout as string, [
    "unicast",
    "group",
  ]);
  const downstream = flags.downstream === undefined
    ? undefined
    : multicastAddressFlag("downstream", flags.downstream as string);
  if (downstream && fanout !== "group") {
    throw new ConfigError(
      "--downstream is where group fan-out multicasts: give --fanout group with it, or leave it out",
    );
  }
  if (downstream && flags["no-multicast"]) {
    throw new ConfigError(
      "--downstream multicasts, --no-multicast forbids it: leave one out (with --no-multicast group messages go by unicast)",
    );
  }
  const profile = choiceFlag("profile", flags.profile as string, [
    "hybrid",
    "rsa",
    "basic",
  ]);
  const basic = profile === "basic";
  const keyBits = flags["key-bits"] === undefined
    ? (basic ? 4096 : 2048)
    : keyBitsFlag("key-bits", flags["key-bits"] as string);
  if (basic && keyBits !== 4096) {
    throw new ConfigError(
      `--profile basic uses an RSA-4096 server key (protocol.md section 8): drop --key-bits ${keyBits}`,
    );
  }
  const clientTimeoutMs = secondsFlag(
    "client-timeout",
    flags["client-timeout"] as string,
    0.05,
    86400,
  );
  const mtu = integerFlag("mtu", flags.mtu as string, 576, 65507);
  const maxClients = integerFlag(
    "max-clients",
    flags["max-clients"] as string,
    1,
    1_000_000,
  );
  const maxMessageBytes = integerFlag(
    "max-message",
    flags["max-message"] as string,
    1,
    16 * 1024 * 1024,
  );
  const messagesPerSecond = integerFlag(
    "message-rate",
    flags["message-rate"] as string,
    1,
    1_000_000_000,
  );
  const handshakesPerSecond = integerFlag(
    "handshake-rate",
    flags["handshake-rate"] as string,
    1,
    1_000_000_000,
  );
  const logLevel = logLevelFlag("log-level", flags["log-level"] as string);
  const rsaSchedIdle = flags["rsa-sched-idle"] === true;
  const schedIdleProblem = rsaSchedIdle ? schedIdleUnavailable() : undefined;
  if (schedIdleProblem) {
    throw new ConfigError(
      `--rsa-sched-idle: ${schedIdleProblem}: run the server with deno run --allow-ffi (the README's server:sched-idle task), or leave the flag out (RSA threads then run at niceness 19 where --allow-sys=setPriority allows it)`,
    );
  }
  const udpBatchSyscalls = flags["udp-batch-syscalls"] === true;
  if (udpBatchSyscalls) {
    checkBatchSyscalls(bind, flags["no-multicast"] === true || basic);
  }
  const token = controlTokenFlag(flags, tcpHost);
  const metricsAddress = flags.metrics === undefined
    ? undefined
    : listenAddressFlag("metrics", flags.metrics as string);
  return {
    group,
    port,
    bind,
    noMulticast: flags["no-multicast"] === true,
    multicastInterface,
    tcpHost,
    tcpPort,
    token,
    fanout,
    downstream,
    basic,
    keyFile: flags["key-file"] as string | undefined,
    keyBits,
    clientTimeoutMs,
    mtu,
    maxClients,
    maxMessageBytes,
    messagesPerSecond,
    handshakesPerSecond,
    logLevel,
    json: flags.json === true,
    compat: flags.compat === true,
    rsaSchedIdle,
    udpBatchSyscalls,
    metricsAddress,
    nats: natsFlags(flags, basic),
  };
}

/**
 * Checks that the server key suits the settings: RSA-4096 for the basic
 * profile; a key answer that fits `--mtu` otherwise.
 * @throws {ConfigError} when it does not
 */
export function checkServerKey(config: ServerConfig, key: RsaPrivateKey): void {
  if (config.basic && key.publicKey.modulusBits !== 4096) {
    throw new ConfigError(
      `--profile basic needs an RSA-4096 key, and ${config.keyFile} holds a ${key.publicKey.modulusBits}-bit one: give another --key-file`,
    );
  }
  if (!config.basic && config.mtu < keyAnswerSize(key)) {
    throw new ConfigError(
      `--mtu ${config.mtu} is smaller than the key answer (${
        keyAnswerSize(key)
      } bytes for a ${key.publicKey.modulusBits}-bit key), which must fit one datagram: give --mtu ${
        keyAnswerSize(key)
      } or more`,
    );
  }
}

/**
 * Checks that `--udp-batch-syscalls` can work here: Linux, `--allow-ffi`,
 * an IPv4 `--bind`, and no multicast membership (the transport joins none).
 * @throws {ConfigError} saying what to change
 */
function checkBatchSyscalls(bind: string, unicastOnly: boolean): void {
  const problem = udpBatchSyscallsUnavailable();
  if (problem) {
    throw new ConfigError(
      `--udp-batch-syscalls: ${problem} (deno task server:mmsg), or leave the flag out (the default transport needs no FFI)`,
    );
  }
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(bind)) {
    throw new ConfigError(
      `--udp-batch-syscalls takes an IPv4 --bind, not ${bind}: give one (e.g. 0.0.0.0), or leave the flag out for IPv6`,
    );
  }
  if (!unicastOnly) {
    throw new ConfigError(
      "--udp-batch-syscalls does not join multicast groups: add --no-multicast, or leave the flag out",
    );
  }
}

/** The NATS link's options from the flags, or undefined without `--nats`. */
function natsFlags(
  flags: FlagValues,
  basic: boolean,
): NatsFlagOptions | undefined {
  const natsFlagsGiven = Object.keys(SERVER_FLAGS).filter((name) =>
    (name.startsWith("nats-") || name === "cluster-key-file") &&
    flags[name] !== undefined
  );
  if (flags.nats === undefined) {
    if (natsFlagsGiven.length > 0) {
      throw new ConfigError(
        `--${
          natsFlagsGiven[0]
        } needs --nats URL: give the NATS servers to federate over`,
      );
    }
    return undefined;
  }
  if (basic) {
    throw new ConfigError(
      "--profile basic is a unicast endpoint of its own: it cannot federate; drop --nats",
    );
  }
  const servers = (flags.nats as string).split(",").map((url) => url.trim())
    .filter((url) => url.length > 0);
  if (servers.length === 0) {
    throw new ConfigError(
      "--nats needs at least one URL, e.g. --nats nats://127.0.0.1:4222",
    );
  }
  const clusterKeyFile = flags["cluster-key-file"] as string | undefined;
  if (clusterKeyFile === undefined) {
    throw new ConfigError(
      "--nats needs --cluster-key-file PATH: what crosses NATS is sealed under the cluster key (the same file on every relay; generated when missing)",
    );
  }
  const cluster = flags.cluster as string;
  clusterSubject(cluster); // throws a ConfigError for a bad name
  const env = (name: string) => Deno.env.get(name) || undefined;
  return {
    servers,
    cluster,
    clusterKeyFile,
    credentialsFile: flags["nats-creds"] as string | undefined,
    token: env("MCRELAY_NATS_TOKEN"),
    user: env("MCRELAY_NATS_USER"),
    password: env("MCRELAY_NATS_PASSWORD"),
    tls: {
      caFile: flags["nats-tls-ca"] as string | undefined,
      certFile: flags["nats-tls-cert"] as string | undefined,
      keyFile: flags["nats-tls-key"] as string | undefined,
    },
  };
}
