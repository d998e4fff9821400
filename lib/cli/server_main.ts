/**
 * The `server.ts` command: start-up and shutdown. Reads the flags
 * (server_flags.ts, server_config.ts), loads the key, binds the UDP socket
 * (multicast group joined unless `--no-multicast`), starts the relay, the
 * NATS federation, the metrics endpoint and the TCP control port (its
 * commands in server_commands.ts), and stops them all on `exit`, SIGINT or
 * SIGTERM.
 *
 * @module
 */
import { ConfigError } from "../errors.ts";
import type { LogRecord, LogSink } from "../log.ts";
import { formatAddress, type PeerAddress } from "../wire/address.ts";
import { PROTOCOL_VERSION } from "../wire/tlv.ts";
import type { ControlServer } from "../runtime/control.ts";
import { UdpTransport } from "../runtime/udp.ts";
import { UdpMmsgTransport } from "../runtime/udp_mmsg.ts";
import type { DatagramTransport } from "../runtime/transport.ts";
import {
  KernelDropMeter,
  kernelDropsUnavailable,
} from "../runtime/kernel_drops.ts";
import { RelayServer } from "../relay/server/server.ts";
import { BasicServer } from "../relay/basic/server.ts";
import { bindError, listenControl, type ListenTarget } from "./flags.ts";
import { parseCommandLine } from "./config.ts";
import { METRICS_CONTENT_TYPE, renderMetrics } from "./prometheus.ts";
import { MetricsServer } from "../runtime/metrics_http.ts";
import { loadOrCreateClusterKey, loadOrCreateKey } from "./key_file.ts";
import { Federation } from "../relay/server/federation.ts";
import { NatsLink } from "../runtime/nats_link.ts";
import {
  createLogSink,
  onTerminationSignal,
  printLine,
  useColor,
  VERSION,
} from "./output.ts";
import { SERVER_FLAGS, SERVER_USAGE } from "./server_flags.ts";
import {
  checkServerKey,
  type NatsFlagOptions,
  resolveServerConfig,
} from "./server_config.ts";
import { CONTROL_HELP, handleControlCommand } from "./server_commands.ts";

/** The UDP socket, as the flags set it. */
const UDP_PORT: ListenTarget = {
  what: "UDP port",
  portFlag: "--port",
  hostFlag: "--bind",
};
/** The HTTP metrics endpoint, as the flag sets it. */
const METRICS_PORT: ListenTarget = {
  what: "metrics port",
  portFlag: "--metrics",
  hostFlag: "--metrics",
};

/**
 * Runs the server until `exit`, SIGINT or SIGTERM.
 * @returns the exit status
 * @throws {ConfigError} for a bad flag value
 */
export async function serverMain(args: readonly string[]): Promise<number> {
  const flags = await parseCommandLine(args, SERVER_FLAGS);
  if (flags.help) {
    printLine(
      `${SERVER_USAGE}\nControl port commands (nc 127.0.0.1 9999, then help):\n${
        CONTROL_HELP.slice(1).join("\n")
      }\n`,
    );
    return 0;
  }
  if (flags.version) {
    printLine(`mcrelay server ${VERSION}`);
    return 0;
  }
  const config = resolveServerConfig(flags);
  const {
    group,
    port,
    bind,
    fanout,
    basic,
    mtu,
    json,
    compat,
    maxClients,
    clientTimeoutMs,
    maxMessageBytes,
    messagesPerSecond,
    handshakesPerSecond,
    rsaSchedIdle,
    nats: natsOptions,
  } = config;

  const { key, created } = await loadOrCreateKey(
    config.keyFile,
    config.keyBits,
  );
  checkServerKey(config, key);
  // The basic profile is a unicast endpoint: it never joins the group.
  const multicast = config.noMulticast || basic
    ? undefined
    : { group, interfaceAddress: config.multicastInterface };

  const federation = natsOptions && await startFederation(natsOptions);
  let transport: DatagramTransport;
  try {
    transport = config.udpBatchSyscalls
      ? await UdpMmsgTransport.bind({ hostname: bind, port })
      : await UdpTransport.bind({ hostname: bind, port, multicast });
  } catch (error) {
    await federation?.close();
    throw bindError(UDP_PORT, bind, port, error);
  }
  const kernelDrops = new KernelDropMeter(transport.localAddress.port);
  // Section 9: by default the group address, port + 1; none without multicast.
  const downstream = fanout !== "group" || !multicast
    ? undefined
    : config.downstream ??
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
      config.token === undefined ? "" : "send auth TOKEN first, then "
    }type help for the commands`;
    control = listenControl({
      hostname: config.tcpHost,
      port: config.tcpPort,
      token: config.token,
      greeting: json
        ? JSON.stringify({
          event: "greeting",
          version: VERSION,
          text: greeting,
        })
        : greeting,
      onLine: (connection, line) =>
        server
          ? handleControlCommand(connection, line, {
            server,
            control: control!.stats(),
            json,
            stop: stopRequested,
          })
          // Before "listening": the relay is still starting its RSA threads.
          : connection.write(
            json
              ? JSON.stringify({ event: "error", error: "starting" })
              : "error: the server is starting, try again",
          ),
    });
    if (config.metricsAddress) {
      metrics = listenMetrics(config.metricsAddress, () => server);
    }
    const sink = createLogSink({
      json,
      level: config.logLevel,
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
    if (config.keyFile === undefined) {
      log({
        level: "warn",
        event: "ephemeral_key",
        hint:
          "no --key-file: the key changes at every start, so clients cannot pin it",
      });
    } else if (created) {
      log({ level: "info", event: "key_created", path: config.keyFile });
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

/** Serves the server's counters on `address` (`--metrics`). */
function listenMetrics(
  address: PeerAddress,
  server: () => RelayServer | BasicServer | undefined,
): MetricsServer {
  try {
    return MetricsServer.listen({
      ...address,
      contentType: METRICS_CONTENT_TYPE,
      // Opened before the server has started: 503 "starting" until then.
      ready: () => server() !== undefined,
      render: () =>
        renderMetrics(server()!.stats(), {
          residentBytes: Deno.memoryUsage().rss,
        }),
    });
  } catch (error) {
    throw bindError(METRICS_PORT, address.hostname, address.port, error);
  }
}

/** Loads the cluster key and connects to NATS. */
async function startFederation(
  options: NatsFlagOptions,
): Promise<Federation> {
  const { key } = await loadOrCreateClusterKey(options.clusterKeyFile);
  return new Federation({
    link: await NatsLink.connect(options),
    clusterKey: key,
  });
}
