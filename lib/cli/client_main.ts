/**
 * The `client.ts` command: flags, an ephemeral UDP socket, the relay client,
 * and the local TCP control port (each line sent to the group; `exit`
 * stops; received events streamed to every connection).
 *
 * @module
 */
import { ConfigError } from "../errors.ts";
import { isIPv6, type PeerAddress } from "../protocol/address.ts";
import { ControlServer } from "../net/control.ts";
import { UdpTransport } from "../net/udp.ts";
import { type ClientEvent, RelayClient } from "../relay/client.ts";
import { type BasicAck, BasicClient } from "../relay/basic_client.ts";
import { formatAddress } from "../protocol/address.ts";
import { LOG_LEVELS, type LogLevel } from "../relay/log.ts";
import {
  addressFlag,
  choiceFlag,
  controlTokenFlag,
  fingerprintFlag,
  type FlagSpecs,
  formatFlagHelp,
  groupFlag,
  hostFlag,
  integerFlag,
  parseFlags,
  portFlag,
  secondsFlag,
} from "./flags.ts";
import { INTERACTIVE_HELP, InteractiveSession } from "./interactive.ts";
import { escapeControl } from "./log_format.ts";
import {
  createLogSink,
  onTerminationSignal,
  printError,
  printLine,
  useColor,
  VERSION,
} from "./output.ts";

/** The client's flags, with defaults as shown in --help. */
export const CLIENT_FLAGS: FlagSpecs = {
  group: {
    type: "string",
    default: "224.1.1.1",
    value: "IP",
    help: "multicast group the server listens on",
  },
  port: {
    type: "string",
    default: "5007",
    value: "PORT",
    help: "UDP port of the group",
  },
  server: {
    type: "string",
    value: "HOST:PORT[,HOST:PORT...]",
    help:
      "send to this unicast address instead of the group; several: relays of one federated group, tried in turn when one stops answering",
  },
  fingerprint: {
    type: "string",
    value: "SHA256:...",
    help: "pin the server key: refuse any other",
  },
  profile: {
    type: "string",
    default: "hybrid",
    value: "NAME",
    help:
      "hybrid (RSA-OAEP + Fernet), rsa (RSA only, weaker: see SECURITY.md) or basic (the unicast RSA-4096 endpoint; needs --server)",
  },
  "no-group": {
    type: "boolean",
    help:
      "do not ask for group fan-out (no GROUP_CAPABLE, no downstream socket): every message per recipient",
  },
  "key-bits": {
    type: "string",
    default: "2048",
    value: "BITS",
    help: "size of the rsa profile's own key: 2048, 3072 or 4096",
  },
  "tcp-host": {
    type: "string",
    default: "127.0.0.1",
    value: "IP",
    help: "control port address",
  },
  "control-token": {
    type: "string",
    value: "TOKEN",
    help:
      "require 'auth TOKEN' on the control port (or MCRELAY_CONTROL_TOKEN); needed off loopback",
  },
  "tcp-port": {
    type: "string",
    default: "9000",
    value: "PORT",
    help: "control port (0 picks a free one)",
  },
  keepalive: {
    type: "string",
    default: "10",
    value: "SECONDS",
    help: "keep-alive interval",
  },
  mtu: {
    type: "string",
    default: "1200",
    value: "BYTES",
    help: "largest datagram sent; the key request is padded to it",
  },
  json: { type: "boolean", help: "JSON lines on stdout and the control port" },
  "log-level": {
    type: "string",
    default: "warn",
    value: "LEVEL",
    help: "stderr log level: debug, info, warn or error",
  },
  help: { type: "boolean", help: "show this help" },
  stdio: {
    type: "boolean",
    help:
      "interactive: read lines from stdin, print what arrives (the default when stdin is a terminal)",
  },
  version: { type: "boolean", help: "show the version" },
};

/** The exit status of a client the server banned (it does not rejoin). */
export const BANNED_EXIT_STATUS = 3;

const USAGE =
  `mcrelay client ${VERSION}: join a relay group; lines written to the control port are sent.

Usage: deno task client [flags]

Flags:
${formatFlagHelp(CLIENT_FLAGS)}

Examples:
  deno task client --tcp-port 9000                          # via the group 224.1.1.1:5007
  deno task client --server 127.0.0.1:5007 --tcp-port 9001  # unicast to a server
  deno task client --server 127.0.0.1:5007 --fingerprint SHA256:... --json

Exit status: 0 after exit, SIGINT or SIGTERM; 1 when it cannot join; 2 for a
bad flag; ${BANNED_EXIT_STATUS} when the server bans it: it prints "banned by the server ..."
and does not rejoin. Kicked, it prints "kicked by the server: ..." and
registers again at once.
`;

/** Formats an event as a line for people, or a JSON object. */
export function formatClientEvent(event: ClientEvent, json: boolean): string {
  if (json) {
    switch (event.type) {
      case "message":
        return JSON.stringify({
          event: "message",
          from: event.from,
          text: event.text,
        });
      case "join":
        return JSON.stringify({
          event: "join",
          address: event.address,
          present: event.present,
        });
      case "leave":
        return JSON.stringify({ event: "leave", address: event.address });
      case "notice":
        return JSON.stringify({
          event: "notice",
          code: event.code,
          text: event.text,
        });
      case "ready":
        return JSON.stringify({
          event: "registered",
          server: event.server,
          address: event.address,
        });
      case "reconnecting":
        return JSON.stringify({ event: "reconnecting", reason: event.reason });
      case "kicked":
        return JSON.stringify({ event: "kicked", reason: event.reason });
      case "banned":
        return JSON.stringify({
          event: "banned",
          seconds: event.seconds ?? null,
          reason: event.reason,
        });
    }
  }
  switch (event.type) {
    case "message":
      return `[${event.from}] ${escapeControl(event.text)}`;
    case "join":
      return `* ${event.address} ${event.present ? "present" : "joined"}`;
    case "leave":
      return `* ${event.address} left`;
    case "notice":
      return `! notice ${event.code}: ${escapeControl(event.text)}`;
    case "ready":
      return `* registered with ${event.server} as ${event.address}`;
    case "reconnecting":
      return `* reconnecting: ${event.reason}`;
    case "kicked":
      return `! kicked by the server: ${
        escapeControl(event.reason)
      } (registering again)`;
    case "banned":
      return `! banned by the server${
        event.seconds === undefined ? "" : ` for ${event.seconds} s`
      }: ${escapeControl(event.reason)}`;
  }
}

/** Formats a basic-profile ACK for stdout and the control port. */
function formatAck(ack: BasicAck, json: boolean): string {
  return json
    ? JSON.stringify({
      event: "ack",
      text: ack.text,
      msgId: ack.msgId,
      encrypted: ack.encrypted,
    })
    : `ack: ${ack.text}${ack.encrypted ? "" : " (unencrypted)"}`;
}

/**
 * Runs the client until `exit` on the control port, SIGINT or SIGTERM.
 * @returns the exit status
 * @throws {ConfigError} for a bad flag value; {@linkcode HandshakeError} when joining fails
 */
export async function clientMain(args: readonly string[]): Promise<number> {
  const flags = parseFlags(args, CLIENT_FLAGS);
  if (flags.help) {
    printLine(
      `${USAGE}\nInteractive commands (on a terminal, or with --stdio):\n${
        INTERACTIVE_HELP.map((line) => `  ${line}`).join("\n")
      }\n`,
    );
    return 0;
  }
  if (flags.version) {
    printLine(`mcrelay client ${VERSION}`);
    return 0;
  }
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
  const rsaKeyBits = Number(
    choiceFlag("key-bits", flags["key-bits"] as string, [
      "2048",
      "3072",
      "4096",
    ]),
  );
  const tcpHost = hostFlag("tcp-host", flags["tcp-host"] as string);
  const token = controlTokenFlag(flags, tcpHost);
  const tcpPort = portFlag("tcp-port", flags["tcp-port"] as string);
  const keepaliveMs = secondsFlag(
    "keepalive",
    flags.keepalive as string,
    0.05,
    3600,
  );
  const mtu = integerFlag("mtu", flags.mtu as string, 576, 65507);
  const json = flags.json === true;
  const logLevel = choiceFlag(
    "log-level",
    flags["log-level"] as string,
    LOG_LEVELS,
  ) as LogLevel;

  let session: InteractiveSession | undefined;
  const log = createLogSink({
    json,
    level: logLevel,
    color: Deno.stderr.isTerminal() && !Deno.noColor,
    // On a terminal, log lines go above the prompt like messages.
    write: (line) => session?.raw ? session.print(line) : printError(line),
  });
  let client: RelayClient | BasicClient | undefined;
  /** Sends one line; resolves with a line to show (the basic profile's ACK) or nothing. */
  let send: ((line: string) => Promise<string | undefined>) | undefined;
  let stopRequested!: () => void;
  const stopped = new Promise<void>((resolve) => stopRequested = resolve);
  const control = ControlServer.listen({
    hostname: tcpHost,
    port: tcpPort,
    token,
    onLine: (connection, line) => {
      if (line === "exit") {
        connection.write(
          json ? JSON.stringify({ event: "stopping" }) : "ok: stopping",
        );
        stopRequested();
        return;
      }
      if (line.length === 0) return;
      if (!send) {
        connection.write("error: not connected yet");
        return;
      }
      send(line).then((shown) => {
        if (shown === undefined) return;
        connection.write(shown);
        show(shown);
      }).catch((error) => {
        connection.write(
          json
            ? JSON.stringify({
              event: "error",
              error: (error as Error).message,
            })
            : `error: ${(error as Error).message}`,
        );
      });
    },
  });
  const color = useColor();
  /** Where lines for the user go: stdout, or above the prompt when interactive. */
  let show: (line: string) => void = printLine;
  // Events of the first key exchange (present members) wait until the ready
  // line is out, so that it is the first stdout line.
  let early: string[] | undefined = [];
  let status = 0;
  const onEvent = (event: ClientEvent) => {
    if (event.type === "banned") {
      // The client closes itself; so does the program, and says why.
      status = BANNED_EXIT_STATUS;
      stopRequested();
    }
    if (event.type === "ready" && early) return; // announced by the ready line
    const line = formatClientEvent(event, json);
    control.broadcast(line);
    const shown = color && event.type !== "message"
      ? `\x1b[2m${line}\x1b[0m`
      : line;
    if (early) early.push(shown);
    else show(shown);
  };
  let transport: UdpTransport | undefined;
  try {
    transport = await UdpTransport.bind({
      hostname: isIPv6(target.hostname) ? "::" : "0.0.0.0",
      port: 0,
    });
    if (profile === "basic") {
      const basic = await BasicClient.connect({
        transport,
        server: target,
        keyBits: rsaKeyBits,
        fingerprint,
        mtu,
        log,
      });
      client = basic;
      send = async (line) => formatAck(await basic.send(line), json);
    } else {
      const relay = await RelayClient.connect({
        transport,
        target,
        fallbackTargets,
        profile,
        rsaKeyBits,
        fingerprint,
        mtu,
        keepaliveMs,
        log,
        onEvent,
        group: flags["no-group"] !== true,
        // The downstream group a GROUP_KEY names: bound to its port with
        // address reuse so several clients of one host can join it.
        bindDownstream: (group) =>
          UdpTransport.bind({
            hostname: "0.0.0.0",
            port: group.port,
            reuseAddress: true,
            multicast: { group: group.hostname },
          }),
      });
      client = relay;
      send = async (line) => {
        await relay.send(line);
        return undefined;
      };
    }
  } catch (error) {
    transport?.close();
    await control.close();
    throw error;
  }
  const server = client instanceof RelayClient
    ? client.serverAddress
    : formatAddress(target);
  const address = client instanceof RelayClient
    ? client.address
    : formatAddress(transport.localAddress);
  // Before the ready line: whoever reads it may send SIGTERM at once.
  const removeSignals = onTerminationSignal(stopRequested);
  printLine(
    json
      ? JSON.stringify({
        event: "ready",
        server,
        address,
        control: control.address,
      })
      : `ready: registered with ${server} as ${address} (server key ${client.serverFingerprint}); control port ${control.address}`,
  );
  for (const line of early) printLine(line);
  early = undefined;
  if (flags.stdio === true || Deno.stdin.isTerminal()) {
    const relay = client instanceof RelayClient ? client : undefined;
    session = new InteractiveSession({
      send: send!,
      who: () => [
        `you: ${address}`,
        ...(relay
          ? relay.members().map((member) => `member: ${member}`)
          : ["(the basic profile has no group)"]),
      ],
      quit: stopRequested,
      state: () => ({
        connected: relay?.ready ?? true,
        others: relay?.members().length ?? 1,
      }),
    }, Deno.stdin.isTerminal());
    show = (line) => session!.print(line);
    session.start();
  }
  await stopped;
  session?.stop();
  removeSignals();
  await client.close();
  await control.close();
  return status;
}
