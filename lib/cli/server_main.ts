/**
 * The `server.ts` command: flags, key file, UDP socket (multicast group
 * joined unless `--no-multicast`), the relay, and the TCP control port with
 * its commands (`help`, `clients`, `stats`, `kick`, `ban`, `unban`, `bans`,
 * `quit`, `exit`).
 *
 * @module
 */
import { ConfigError, ServerClosedError } from "../errors.ts";
import { formatAddress, type PeerAddress } from "../wire/address.ts";
import { PROTOCOL_VERSION } from "../wire/tlv.ts";
import type {
  ControlConnection,
  ControlServer,
  ControlStats,
} from "../runtime/control.ts";
import { UdpTransport } from "../runtime/udp.ts";
import {
  KernelDropMeter,
  kernelDropsUnavailable,
} from "../runtime/kernel_drops.ts";
import { keyAnswerSize, RelayServer } from "../relay/server/server.ts";
import { BasicServer } from "../relay/basic/server.ts";
import { schedIdleUnavailable } from "../runtime/sched_idle.ts";
import type { LogLevel, LogRecord, LogSink } from "../relay/log.ts";
import { LOG_LEVELS } from "../relay/log.ts";
import {
  bindError,
  choiceFlag,
  controlTokenFlag,
  type FlagSpecs,
  formatFlagHelp,
  groupFlag,
  hostFlag,
  integerFlag,
  listenAddressFlag,
  listenControl,
  multicastAddressFlag,
  portFlag,
  secondsFlag,
} from "./flags.ts";
import { CONFIG_FLAG, parseCommandLine } from "./config.ts";
import { METRICS_CONTENT_TYPE, renderMetrics } from "./prometheus.ts";
import { MetricsServer } from "../runtime/metrics_http.ts";
import { loadOrCreateClusterKey, loadOrCreateKey } from "./key_file.ts";
import { Federation } from "../relay/server/federation.ts";
import {
  clusterSubject,
  NatsLink,
  type NatsLinkOptions,
} from "../runtime/nats_link.ts";
import { roundNumbers } from "./log_format.ts";
import {
  createLogSink,
  onTerminationSignal,
  printLine,
  useColor,
  VERSION,
} from "./output.ts";

/** The server's flags, with defaults as shown in --help. */
export const SERVER_FLAGS: FlagSpecs = {
  profile: {
    type: "string",
    default: "hybrid",
    value: "NAME",
    help:
      "hybrid or rsa: the relay (serves hybrid and rsa members in one group); basic: the unicast RSA-4096 endpoint with ACKs",
  },
  group: {
    type: "string",
    default: "224.1.1.1",
    value: "IP",
    help: "multicast group to join",
  },
  port: {
    type: "string",
    default: "5007",
    value: "PORT",
    help: "UDP port (0 picks a free one)",
  },
  bind: {
    type: "string",
    default: "0.0.0.0",
    value: "IP",
    help: "UDP address to bind",
  },
  "no-multicast": {
    type: "boolean",
    help:
      "unicast only: do not join the group (hosts without a multicast route, tests)",
  },
  fanout: {
    type: "string",
    default: "unicast",
    value: "MODE",
    help:
      "unicast: one token per recipient; group: one token per message under an epoch key for group-capable members (PROTOCOL.md section 9)",
  },
  downstream: {
    type: "string",
    value: "GROUP:PORT",
    help:
      "with --fanout group: where group messages are multicast (default: the group, port + 1; none with --no-multicast: by unicast)",
  },
  "multicast-interface": {
    type: "string",
    default: "0.0.0.0",
    value: "IP",
    help: "local interface address to join the group on (0.0.0.0: as routed)",
  },
  "tcp-host": {
    type: "string",
    default: "127.0.0.1",
    value: "IP",
    help: "control port address",
  },
  "tcp-port": {
    type: "string",
    default: "9999",
    value: "PORT",
    help: "control port (0 picks a free one)",
  },
  "control-token": {
    type: "string",
    value: "TOKEN",
    help:
      "require 'auth TOKEN' on the control port (or MCRELAY_CONTROL_TOKEN); needed off loopback",
  },
  "key-file": {
    type: "string",
    value: "PATH",
    help:
      "RSA key (PKCS#8 PEM): loaded, or generated and saved with mode 0600; without it a new key every start",
  },
  "key-bits": {
    type: "string",
    value: "BITS",
    help:
      "size of a generated key: 2048, 3072 or 4096 (default: 2048; 4096 with --profile basic)",
  },
  "client-timeout": {
    type: "string",
    default: "30",
    value: "SECONDS",
    help: "remove members silent this long",
  },
  mtu: {
    type: "string",
    default: "1200",
    value: "BYTES",
    help: "largest datagram sent (576-65507)",
  },
  "max-clients": {
    type: "string",
    default: "1024",
    value: "N",
    help: "members at most; more get NOTICE 4",
  },
  "max-message": {
    type: "string",
    default: "32768",
    value: "BYTES",
    help: "largest message plaintext relayed; larger get NOTICE 2",
  },
  "message-rate": {
    type: "string",
    default: "200",
    value: "N",
    help:
      "messages per second relayed per member (burst: twice that); more get NOTICE 3",
  },
  "handshake-rate": {
    type: "string",
    default: "5",
    value: "N",
    help:
      "key exchanges per second per source IP (burst: twice that); more are dropped",
  },
  "rsa-sched-idle": {
    type: "boolean",
    help:
      "run RSA key exchanges under Linux's SCHED_IDLE so they never delay relaying (needs deno run --allow-ffi)",
  },
  compat: {
    type: "boolean",
    help:
      "accept clients of the original design (short key requests, cookieless registration, empty keep-alives): reopens amplification and spoofing",
  },
  nats: {
    type: "string",
    value: "URL[,URL...]",
    help:
      "federate with the other relays of --cluster over these NATS servers (needs --cluster-key-file)",
  },
  cluster: {
    type: "string",
    default: "mcrelay",
    value: "NAME",
    help: "cluster of relays that serve one group together (with --nats)",
  },
  "cluster-key-file": {
    type: "string",
    value: "PATH",
    help:
      "the cluster's Fernet key, the same file on every relay: loaded, or generated and saved with mode 0600",
  },
  "nats-creds": {
    type: "string",
    value: "PATH",
    help:
      "NATS credentials file (also: MCRELAY_NATS_TOKEN, or MCRELAY_NATS_USER with MCRELAY_NATS_PASSWORD)",
  },
  "nats-tls-ca": {
    type: "string",
    value: "PATH",
    help: "CA certificate to verify the NATS servers with (turns TLS on)",
  },
  "nats-tls-cert": {
    type: "string",
    value: "PATH",
    help: "client certificate for NATS TLS (with --nats-tls-key)",
  },
  "nats-tls-key": {
    type: "string",
    value: "PATH",
    help: "client key for NATS TLS",
  },
  metrics: {
    type: "string",
    value: "[HOST:]PORT",
    help:
      "serve GET /healthz and /metrics (Prometheus text) over HTTP here (HOST: 127.0.0.1 when left out; no authentication)",
  },
  json: { type: "boolean", help: "log JSON lines (ts, level, event, ...)" },
  "log-level": {
    type: "string",
    default: "info",
    value: "LEVEL",
    help: "debug, info, warn or error",
  },
  config: CONFIG_FLAG,
  help: { type: "boolean", help: "show this help" },
  version: { type: "boolean", help: "show the version" },
};

const USAGE =
  `mcrelay server ${VERSION}: a secure group-messaging relay over UDP multicast.

Usage: deno task server [flags]

Flags:
${formatFlagHelp(SERVER_FLAGS)}

Examples:
  deno task server                                   # join 224.1.1.1:5007, control on 127.0.0.1:9999
  deno task server --no-multicast --bind 127.0.0.1   # unicast on loopback only
  deno task server --key-file ~/.config/mcrelay/server.pem --json
                                                     # stable key clients can pin, JSON logs
  deno task server --nats nats://10.0.0.5:4222 --cluster-key-file cluster.key
                                                     # one of several relays of one group
`;

/** The UDP socket, as the flags set it. */
const UDP_PORT = { what: "UDP port", portFlag: "--port", hostFlag: "--bind" };
/** The HTTP metrics endpoint, as the flag sets it. */
const METRICS_PORT = {
  what: "metrics port",
  portFlag: "--metrics",
  hostFlag: "--metrics",
};

const CONTROL_HELP = [
  "commands:",
  "  help             this list",
  "  clients          members: address, profile, last seen, messages in/out (and those of other relays)",
  "  stats            counters: datagrams, bytes, relayed, dropped by reason",
  "  kick IP:PORT [REASON]",
  "                   remove a member, tell it why and tell the others; it may rejoin",
  "  ban IP[:PORT] [SECONDS] [REASON]",
  "                   drop everything from an IP (every port) or one address, for",
  "                   SECONDS or until unban; members it covers are removed and told",
  "  unban IP[:PORT]  lift the ban of exactly that IP or address (bans lists them)",
  "  bans             the bans in force, with the time each has left",
  "  quit             close this connection",
  "  exit             stop the server",
];

/**
 * Runs the server until `exit`, SIGINT or SIGTERM.
 * @returns the exit status
 * @throws {ConfigError} for a bad flag value
 */
export async function serverMain(args: readonly string[]): Promise<number> {
  const flags = await parseCommandLine(args, SERVER_FLAGS);
  if (flags.help) {
    printLine(
      `${USAGE}\nControl port commands (nc 127.0.0.1 9999, then help):\n${
        CONTROL_HELP.slice(1).join("\n")
      }\n`,
    );
    return 0;
  }
  if (flags.version) {
    printLine(`mcrelay server ${VERSION}`);
    return 0;
  }
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
  const downstreamFlag = flags.downstream === undefined
    ? undefined
    : multicastAddressFlag("downstream", flags.downstream as string);
  if (downstreamFlag && fanout !== "group") {
    throw new ConfigError(
      "--downstream is where group fan-out multicasts: give --fanout group with it, or leave it out",
    );
  }
  if (downstreamFlag && flags["no-multicast"]) {
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
    : Number(
      choiceFlag("key-bits", flags["key-bits"] as string, [
        "2048",
        "3072",
        "4096",
      ]),
    );
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
  const logLevel = choiceFlag(
    "log-level",
    flags["log-level"] as string,
    LOG_LEVELS,
  ) as LogLevel;
  const json = flags.json === true;
  const compat = flags.compat === true;
  const rsaSchedIdle = flags["rsa-sched-idle"] === true;
  const schedIdleProblem = rsaSchedIdle ? schedIdleUnavailable() : undefined;
  if (schedIdleProblem) {
    throw new ConfigError(
      `--rsa-sched-idle: ${schedIdleProblem}: run the server with deno run --allow-ffi (the README's server:sched-idle task), or leave the flag out (RSA threads then run at niceness 19 where --allow-sys=setPriority allows it)`,
    );
  }
  const token = controlTokenFlag(flags, tcpHost);
  const metricsAddress = flags.metrics === undefined
    ? undefined
    : listenAddressFlag("metrics", flags.metrics as string);
  const natsOptions = natsFlags(flags, basic);

  const { key, created } = await loadOrCreateKey(
    flags["key-file"] as string | undefined,
    keyBits,
  );
  if (basic && key.publicKey.modulusBits !== 4096) {
    throw new ConfigError(
      `--profile basic needs an RSA-4096 key, and ${
        flags["key-file"]
      } holds a ${key.publicKey.modulusBits}-bit one: give another --key-file`,
    );
  }
  if (!basic && mtu < keyAnswerSize(key)) {
    throw new ConfigError(
      `--mtu ${mtu} is smaller than the key answer (${
        keyAnswerSize(key)
      } bytes for a ${key.publicKey.modulusBits}-bit key), which must fit one datagram: give --mtu ${
        keyAnswerSize(key)
      } or more`,
    );
  }
  // The basic profile is a unicast endpoint: it never joins the group.
  const multicast = flags["no-multicast"] || basic
    ? undefined
    : { group, interfaceAddress: multicastInterface };

  const federation = natsOptions && await startFederation(natsOptions);
  let transport: UdpTransport;
  try {
    transport = await UdpTransport.bind({ hostname: bind, port, multicast });
  } catch (error) {
    await federation?.close();
    throw bindError(UDP_PORT, bind, port, error);
  }
  const kernelDrops = new KernelDropMeter(transport.localAddress.port);
  // Section 9: by default the group address, port + 1; none without multicast.
  const downstream = fanout !== "group" || !multicast
    ? undefined
    : downstreamFlag ??
      { hostname: group, port: transport.localAddress.port + 1 };
  if (
    downstream?.hostname === group &&
    downstream.port === transport.localAddress.port
  ) {
    transport.close();
    await federation?.close();
    throw new ConfigError(
      `--downstream ${group}:${downstream.port} is the group's own port: the server never sends group messages there; use another port, e.g. ${group}:${
        downstream.port + 1
      }`,
    );
  }
  let control: ControlServer | undefined;
  let metrics: MetricsServer | undefined;
  let server: RelayServer | BasicServer | undefined;
  let stopRequested!: () => void;
  const stopped = new Promise<void>((resolve) => stopRequested = resolve);
  // Before the first line: whoever reads "listening" may send SIGTERM at once.
  const removeSignals = onTerminationSignal(stopRequested);
  /** Prints what the server logged while it started (after "listening"). */
  let printStarting: (() => void) | undefined;
  try {
    const greeting = `mcrelay server ${VERSION} control port: ${
      token === undefined ? "" : "send auth TOKEN first, then "
    }type help for the commands`;
    control = listenControl({
      hostname: tcpHost,
      port: tcpPort,
      token,
      greeting: json
        ? JSON.stringify({
          event: "greeting",
          version: VERSION,
          text: greeting,
        })
        : greeting,
      onLine: (connection, line) =>
        server
          ? handleCommand(
            connection,
            line,
            server,
            control!.stats(),
            json,
            stopRequested,
          )
          // Before "listening": the relay is still starting its RSA threads.
          : connection.write(
            json
              ? JSON.stringify({ event: "error", error: "starting" })
              : "error: the server is starting, try again",
          ),
    });
    if (metricsAddress) {
      metrics = listenMetrics(metricsAddress, () => server!);
    }
    const sink = createLogSink({
      json,
      level: logLevel,
      color: useColor(),
      write: printLine,
      forward: (line) => control?.broadcast(line),
    });
    // "listening" is the first line, printed once the server can serve:
    // what the server logs while it starts (its RSA threads) follows it.
    let starting: LogRecord[] | undefined = [];
    const log: LogSink = (record) => {
      if (starting) starting.push(record);
      else sink(record);
    };
    printStarting = () => {
      const held = starting ?? [];
      starting = undefined;
      for (const record of held) sink(record);
    };
    server = basic
      ? BasicServer.start({
        transport,
        privateKey: key,
        compat,
        maxClients,
        rsaSchedIdle,
        log,
      })
      : await RelayServer.start({
        transport,
        privateKey: key,
        mtu,
        clientTimeoutMs,
        compat,
        maxClients,
        maxMessageBytes,
        messagesPerSecond,
        messageBurst: 2 * messagesPerSecond,
        handshakesPerSecond,
        handshakeBurst: 2 * handshakesPerSecond,
        rsaSchedIdle,
        kernelDrops: () => kernelDrops.read(),
        fanout,
        downstream,
        log,
        federation,
      });
    sink({
      level: "info",
      event: "listening",
      udp: formatAddress(transport.localAddress),
      control: control.address,
      metrics: metrics?.address,
      fingerprint: server.fingerprint,
      profile: basic ? "basic" : "relay",
      protocol: basic ? "1" : PROTOCOL_VERSION,
      multicast: multicast
        ? `${group}:${transport.localAddress.port}`
        : undefined,
      ...(basic ? {} : { fanout }),
      downstream: downstream ? formatAddress(downstream) : undefined,
      ...(natsOptions
        ? {
          nats: natsOptions.servers.join(","),
          cluster: natsOptions.cluster,
        }
        : {}),
      ...(compat
        ? {
          compat: true,
          warning:
            "compat mode accepts short key requests, cookieless registration and empty keep-alives",
        }
        : {}),
    });
    printStarting();
    const noKernelDrops = basic ? undefined : kernelDropsUnavailable();
    if (noKernelDrops) {
      log({
        level: "warn",
        event: "kernel_drops_unavailable",
        hint:
          `${noKernelDrops}: datagrams the kernel drops on the server's socket are not counted (stats kernelDropped)`,
      });
    }
    if (flags["key-file"] === undefined) {
      log({
        level: "warn",
        event: "ephemeral_key",
        hint:
          "no --key-file: the key changes at every start, so clients cannot pin it",
      });
    } else if (created) {
      log({ level: "info", event: "key_created", path: flags["key-file"] });
    }
  } catch (error) {
    printStarting?.();
    removeSignals();
    await metrics?.close();
    await control?.close();
    if (server) await server.close();
    else {
      await federation?.close();
      transport.close();
    }
    throw error;
  }

  // A relay that stops on its own (its socket failed to receive; logged as
  // receive_failed) ends the process with status 1.
  let failure: Error | undefined;
  if (server instanceof RelayServer) {
    void server.closed().then((outcome) => {
      if (outcome instanceof Error) {
        failure = outcome;
        stopRequested();
      }
    });
  }
  await stopped;
  removeSignals();
  await metrics?.close();
  await server.close();
  await control.close();
  return failure ? 1 : 0;
}

function handleCommand(
  connection: ControlConnection,
  line: string,
  server: RelayServer | BasicServer,
  control: ControlStats,
  json: boolean,
  stop: () => void,
): void {
  const [command = "", ...rest] = line.trim().split(/\s+/);
  const reply = (
    event: string,
    text: string[],
    data: Record<string, unknown>,
  ) => {
    // One queue entry per reply, so a long `clients` list is never cut.
    connection.write(
      json ? JSON.stringify({ event, ...data }) : text.join("\n"),
    );
  };
  switch (command) {
    case "":
      return;
    case "help":
      return reply("help", CONTROL_HELP, {
        commands: [
          "help",
          "clients",
          "stats",
          "kick",
          "ban",
          "unban",
          "bans",
          "quit",
          "exit",
        ],
      });
    case "clients": {
      const now = Date.now();
      const members = server.members();
      const remote = server instanceof RelayServer
        ? server.remoteMembers()
        : [];
      const ago = (lastSeen: number) =>
        `last_seen=${((now - lastSeen) / 1000).toFixed(1)}s_ago`;
      const lines = [
        ...members.map((m) =>
          `${m.address} ${m.profile} ${ago(m.lastSeen)} in=${m.messagesIn}${
            "messagesOut" in m ? ` out=${m.messagesOut}` : ""
          }`
        ),
        ...remote.map((m) =>
          `${m.address} remote relay=${m.relay} ${ago(m.lastSeen)}`
        ),
      ];
      const heading = remote.length > 0
        ? `${members.length} member(s) here, ${remote.length} at other relays`
        : `${members.length} member(s)`;
      return reply("clients", [heading, ...lines], {
        clients: members,
        ...(remote.length > 0 ? { remote } : {}),
      });
    }
    case "stats": {
      const stats = roundNumbers({ ...server.stats(), control });
      // What the server does not have (kernelDropped without /proc) is left
      // out, as JSON leaves it out.
      const lines = Object.entries(stats).filter(([, v]) => v !== undefined)
        .map(([k, v]) =>
          `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`
        );
      return reply("stats", lines, { stats });
    }
    case "kick": {
      const target = rest[0];
      if (!target) {
        return reply("error", ["error: usage: kick IP:PORT"], {
          error: "usage: kick IP:PORT",
        });
      }
      const reason = rest.slice(1).join(" ");
      let kicked: boolean;
      try {
        kicked = server instanceof RelayServer && reason !== ""
          ? server.kick(target, reason)
          : server.kick(target);
      } catch (error) {
        const message =
          error instanceof RangeError || error instanceof ServerClosedError
            ? error.message
            : `"${target}" is not an IP:PORT address`;
        return reply("error", [`error: ${message}`], { error: message });
      }
      return kicked
        ? reply("kicked", [`ok: kicked ${target}`], { address: target })
        : reply("error", [`error: no member ${target}`], {
          error: `no member ${target}`,
        });
    }
    case "ban":
    case "unban":
    case "bans":
      if (!(server instanceof RelayServer)) {
        return reply("error", [
          "error: bans are for the hybrid and rsa profiles",
        ], { error: "bans are for the hybrid and rsa profiles" });
      }
      return handleBanCommand(command, rest, server, reply);
    case "quit":
      connection.close();
      return;
    case "exit":
      reply("stopping", ["ok: stopping"], {});
      stop();
      return;
    default:
      reply("error", [`error: unknown command "${command}": try help`], {
        error: `unknown command "${command}"`,
      });
  }
}

/** `ban`, `unban` and `bans` on the control port. */
function handleBanCommand(
  command: string,
  args: readonly string[],
  server: RelayServer,
  reply: (event: string, text: string[], data: Record<string, unknown>) => void,
): void {
  const fail = (error: string) =>
    reply("error", [`error: ${error}`], { error });
  if (command === "bans") {
    const bans = server.bans();
    const left = (seconds: number | undefined) =>
      seconds === undefined ? "until_unban" : `${seconds}s_left`;
    return reply("bans", [
      `${bans.length} ban(s)`,
      ...bans.map((b) =>
        `${b.target} ${left(b.secondsLeft)} reason=${JSON.stringify(b.reason)}`
      ),
    ], {
      bans: bans.map((b) => ({
        target: b.target,
        secondsLeft: b.secondsLeft ?? null,
        reason: b.reason,
      })),
    });
  }
  const [target, ...more] = args;
  if (!target) {
    return fail(
      `usage: ${command} IP[:PORT]${
        command === "ban" ? " [SECONDS] [REASON]" : ""
      }`,
    );
  }
  try {
    if (command === "unban") {
      return server.unban(target)
        ? reply("unbanned", [`ok: unbanned ${target}`], { target })
        : fail(`no ban of ${target} (bans lists them)`);
    }
    const seconds = /^[0-9]+$/.test(more[0] ?? "")
      ? Number(more.shift())
      : undefined;
    const reason = more.join(" ");
    const banned = server.ban(target, {
      seconds,
      ...(reason === "" ? {} : { reason }),
    });
    const how = seconds === undefined ? "until unban" : `for ${seconds} s`;
    return reply(
      "banned",
      [
        `ok: banned ${banned.target} ${how}; removed ${banned.removed.length} member(s)${
          banned.removed.map((a) => ` ${a}`).join("")
        }`,
      ],
      {
        target: banned.target,
        seconds: seconds ?? null,
        removed: banned.removed,
      },
    );
  } catch (error) {
    return fail((error as Error).message);
  }
}

/** Serves the server's counters on `address` (`--metrics`). */
function listenMetrics(
  address: PeerAddress,
  server: () => RelayServer | BasicServer,
): MetricsServer {
  try {
    return MetricsServer.listen({
      ...address,
      contentType: METRICS_CONTENT_TYPE,
      render: () =>
        renderMetrics(server().stats(), {
          residentBytes: Deno.memoryUsage().rss,
        }),
    });
  } catch (error) {
    throw bindError(METRICS_PORT, address.hostname, address.port, error);
  }
}

/** The NATS link's options from the flags, or undefined without `--nats`. */
function natsFlags(
  flags: Record<string, unknown>,
  basic: boolean,
): (NatsLinkOptions & { readonly clusterKeyFile: string }) | undefined {
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

/** Loads the cluster key and connects to NATS. */
async function startFederation(
  options: NatsLinkOptions & { readonly clusterKeyFile: string },
): Promise<Federation> {
  const { key } = await loadOrCreateClusterKey(options.clusterKeyFile);
  return new Federation({
    link: await NatsLink.connect(options),
    clusterKey: key,
  });
}
