/**
 * The `client.ts` command: flags, an ephemeral UDP socket, the relay client,
 * and the local TCP control port (each line sent to the group; `exit`
 * stops; received events streamed to every connection).
 *
 * @module
 */
import { fstatSync } from "node:fs";
import { ConfigError, HandshakeError, UndeliveredError } from "../errors.ts";
import { isIPv6, type PeerAddress } from "../wire/address.ts";
import { UdpTransport } from "../runtime/udp.ts";
import {
  type ClientEvent,
  type HandshakeProgress,
  RelayClient,
} from "../relay/client/client.ts";
import { type BasicAck, BasicClient } from "../relay/basic/client.ts";
import { formatAddress } from "../wire/address.ts";
import { LOG_LEVELS, type LogLevel, type LogRecord } from "../relay/log.ts";
import { LineSplitter } from "../runtime/lines.ts";
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
  listenControl,
  portFlag,
  secondsFlag,
} from "./flags.ts";
import { CONFIG_FLAG, parseCommandLine } from "./config.ts";
import { INTERACTIVE_HELP, InteractiveSession } from "./interactive.ts";
import { escapeControl, formatLogRecord } from "./log_format.ts";
import { defaultKnownServersPath, KnownServers } from "./known_servers.ts";
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
    help:
      "pin the server key: refuse any other (the known-servers file is then not used)",
  },
  "known-servers": {
    type: "string",
    value: "PATH",
    help:
      "server keys met so far, one 'HOST:PORT SHA256:...' a line: a new server's key is recorded, a changed one refused (default: $XDG_CONFIG_HOME/mcrelay/known_servers, else ~/.config/mcrelay/known_servers)",
  },
  "no-known-servers": {
    type: "boolean",
    help:
      "neither read nor write a known-servers file (a key that changes while the client runs is only warned about)",
  },
  "connect-timeout": {
    type: "string",
    value: "SECONDS",
    help:
      "give up joining after this long, 5 key requests spread over it (default: 31 s per --server relay: waits of 1, 2, 4, 8, 16 s); also bounds the wait for the server to confirm piped lines and --file",
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
    value: "PORT",
    help:
      "control port (default: 9000), 0 picks a free one; with piped input, --file or --count there is none unless given",
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
    help:
      "stderr log level: debug, info, warn or error (error also hides the progress lines)",
  },
  config: CONFIG_FLAG,
  help: { type: "boolean", help: "show this help" },
  stdio: {
    type: "boolean",
    help:
      "interactive: read lines from stdin, print what arrives (the default when stdin is a terminal)",
  },
  count: {
    type: "string",
    value: "N",
    help: "exit after receiving N messages",
  },
  file: {
    type: "string",
    value: "PATH",
    help:
      "send this file as one message (at most 32 KiB, fragmented on the wire), wait for the server to confirm, exit",
  },
  version: { type: "boolean", help: "show the version" },
};

/** The exit status of a client the server banned (it does not rejoin). */
export const BANNED_EXIT_STATUS = 3;

const USAGE =
  `mcrelay client ${VERSION}: join a relay group, send lines, print what arrives.

Usage: deno task client [flags]

Where the lines to send come from:
  a terminal       interactive: type a line, Enter sends it (/help)
  a pipe or file   each line is sent, then the client waits for the server to
                   confirm and exits ("echo hi | deno task client --server ...")
  --file PATH      the whole file, as one message, then the same
  otherwise        (stdin /dev/null) lines written to the control port

Flags:
${formatFlagHelp(CLIENT_FLAGS)}

Exit status: 0 done (end of input confirmed, --count reached, 'exit' on the
control port, SIGTERM); 1 the server did not answer, refused the key or did not
confirm what was sent; 2 a bad flag or file; ${BANNED_EXIT_STATUS} banned by the server (it
prints "banned by the server ..." and does not rejoin; kicked, it prints
"kicked by the server: ..." and registers again at once); 130 interrupted
(SIGINT).

Examples:
  deno task client --tcp-port 9000                          # via the group 224.1.1.1:5007
  deno task client --server 127.0.0.1:5007 --tcp-port 9001  # unicast to a server
  echo hello | deno task client --server 127.0.0.1:5007     # send a line, exit
  deno task client --server 127.0.0.1:5007 --count 1        # print one message, exit
  deno task client --server 127.0.0.1:5007 --fingerprint SHA256:... --json
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
      case "failed":
        return JSON.stringify({ event: "failed", reason: event.reason });
      case "undelivered":
        return JSON.stringify({
          event: "undelivered",
          reason: event.reason,
          text: event.text,
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
    case "failed":
      return `* failed: ${event.reason}`;
    case "undelivered":
      return `! not delivered (${UNDELIVERED_TEXT[event.reason]}): ${
        escapeControl(event.text)
      }`;
  }
}

/** Why a message was not delivered, for people. */
const UNDELIVERED_TEXT: Readonly<Record<string, string>> = {
  outbox_full: "the outbox of messages waiting for the server is full",
  closed: "the client stopped before the server came back",
  unconfirmed:
    "the server stopped answering after it was sent: it may not have arrived",
};

/** The line shown for a message kept in the outbox (the client is not registered). */
function formatQueued(text: string, json: boolean): string {
  return json
    ? JSON.stringify({ event: "queued", text })
    : `* queued until the server is back: ${escapeControl(text)}`;
}

/** A progress line of the key exchange (or of a confirmation), for stderr. */
export function formatProgress(
  progress: HandshakeProgress,
  group: boolean,
): string {
  const tries = `try ${progress.attempt} of ${progress.attempts} ...`;
  switch (progress.step) {
    case "key":
      return group
        ? `asking the group ${progress.server} for a server key, ${tries}`
        : `asking ${progress.server} for its key, ${tries}`;
    case "register":
      return `registering with ${progress.server} (server key ${progress.fingerprint}), ${tries}`;
    case "confirm":
      return `waiting for ${progress.server} to confirm what was sent, ${tries}`;
  }
}

/** Exit status: the server did not answer, refused or did not confirm. */
const EXIT_FAILED = 1;
/** Exit status: interrupted by SIGINT (128 + 2, as shells report it). */
const EXIT_INTERRUPTED = 130;

/** Whether stdin is a pipe, a file or a socket: input to send, then exit. */
function stdinIsInput(): boolean {
  try {
    const stat = fstatSync(0);
    return stat.isFIFO() || stat.isFile() || stat.isSocket();
  } catch {
    return false;
  }
}

/**
 * Reads `--file`.
 * @throws {ConfigError} when it cannot be read or is larger than a message
 */
async function readMessageFile(path: string): Promise<Uint8Array> {
  let data: Uint8Array;
  try {
    data = await Deno.readFile(path);
  } catch (error) {
    throw new ConfigError(
      `--file ${JSON.stringify(path)} cannot be read (${
        (error as Error).message
      }): give a readable file`,
    );
  }
  if (data.length > MAX_FILE_BYTES) {
    throw new ConfigError(
      `--file ${
        JSON.stringify(path)
      } is ${data.length} bytes: one message holds at most ${MAX_FILE_BYTES} bytes; split it`,
    );
  }
  return data;
}

/** The largest message a client sends (the server's default --max-message). */
const MAX_FILE_BYTES = 32 * 1024;

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
 * Runs the client until its input is sent and confirmed, `--count` messages
 * have arrived, `exit` on the control port, SIGINT or SIGTERM.
 * @returns the exit status: 0 done, 1 failed, 130 interrupted
 * @throws {ConfigError} for a bad flag value; {@linkcode HandshakeError} when joining fails
 */
export async function clientMain(args: readonly string[]): Promise<number> {
  const flags = await parseCommandLine(args, CLIENT_FLAGS);
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
  const json = flags.json === true;
  const logLevel = choiceFlag(
    "log-level",
    flags["log-level"] as string,
    LOG_LEVELS,
  ) as LogLevel;
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
      defaultKnownServersPath((name) => Deno.env.get(name));
  const known = knownPath === undefined
    ? undefined
    : await KnownServers.load(knownPath);
  const fileData = flags.file === undefined
    ? undefined
    : await readMessageFile(flags.file as string);
  const interactive = fileData === undefined &&
    (flags.stdio === true || Deno.stdin.isTerminal());
  const piped = fileData === undefined && !interactive && stdinIsInput();
  // One-shot runs (a pipe, a file, a count) open a control port only when
  // asked: several of them at once must not fight over port 9000.
  const withControl = flags["tcp-port"] !== undefined ||
    (fileData === undefined && !piped && count === undefined);
  // --connect-timeout spreads the tries of each relay over its share.
  const attempts = 5;
  const retryInitialMs = connectTimeoutMs === undefined
    ? undefined
    : connectTimeoutMs / ((2 ** attempts - 1) * (1 + fallbackTargets.length));

  let session: InteractiveSession | undefined;
  /** A log or status line: on stderr, or above the prompt on a terminal like messages. */
  const printStatus = (line: string) =>
    session?.raw ? session.print(line) : printError(line);
  const log = createLogSink({
    json,
    level: logLevel,
    color: Deno.stderr.isTerminal() && !Deno.noColor,
    write: printStatus,
  });
  /** Status lines for the user on stderr (progress, known servers), unless --log-level error. */
  const say = (record: LogRecord, text: string) => {
    if (logLevel === "error") return;
    printStatus(
      json ? formatLogRecord(record, { json, color: false }) : text,
    );
  };
  /** Sends one line; resolves with a line to show (the basic profile's ACK) or nothing. */
  let send:
    | ((message: string | Uint8Array) => Promise<string | undefined>)
    | undefined;
  let stopRequested!: (status: number) => void;
  let stopping = false;
  const stopped = new Promise<number>((resolve) =>
    stopRequested = (status) => {
      stopping = true;
      resolve(status);
    }
  );
  const control = withControl
    ? listenControl({
      hostname: tcpHost,
      port: tcpPort,
      token,
      onLine: (connection, line) => {
        if (line === "exit") {
          connection.write(
            json ? JSON.stringify({ event: "stopping" }) : "ok: stopping",
          );
          stopRequested(0);
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
    })
    : undefined;
  const color = useColor();
  /** Where lines for the user go: stdout, or above the prompt when interactive. */
  let show: (line: string) => void = printLine;
  // Events of the first key exchange (present members) wait until the ready
  // line is out, so that it is the first stdout line.
  let early: string[] | undefined = [];
  let received = 0;
  /** NOTICEs 2 and 3: the server refused a message (too large, rate). */
  let refusedByServer = 0;
  let countReached: (() => void) | undefined;
  /** Known-servers lines being written: awaited before exit. */
  let recording: Promise<void> = Promise.resolve();
  const onEvent = (event: ClientEvent) => {
    if (event.type === "banned") {
      // The client closes itself; so does the program, and says why.
      stopRequested(BANNED_EXIT_STATUS);
    }
    if (event.type === "ready" && known && !known.has(event.server)) {
      recording = recording.then(() =>
        recordServer(event.server, event.fingerprint)
      );
    }
    if (event.type === "failed") {
      control?.broadcast(formatClientEvent(event, json));
      printError(`error: ${event.reason}`);
      stopRequested(EXIT_FAILED);
      return;
    }
    if (event.type === "ready" && early) return; // announced by the ready line
    if (
      event.type === "message" &&
      (stopping || (count !== undefined && received >= count))
    ) return; // leaving: --count is reached, or the client stops
    if (event.type === "notice" && (event.code === 2 || event.code === 3)) {
      refusedByServer++;
    }
    const line = formatClientEvent(event, json);
    control?.broadcast(line);
    const shown = color && event.type !== "message"
      ? `\x1b[2m${line}\x1b[0m`
      : line;
    if (early) early.push(shown);
    else show(shown);
    if (event.type === "message" && ++received === count) countReached?.();
  };
  /** Records a server met for the first time (trust on first use). */
  const recordServer = async (server: string, key: string) => {
    try {
      if (!await known!.record(server, key)) return;
      say(
        {
          level: "info",
          event: "known_server_added",
          server,
          fingerprint: key,
          path: known!.path,
        },
        `the server ${server} is new: its key ${key} is now recorded in ${
          known!.path
        }`,
      );
    } catch (error) {
      log({
        level: "warn",
        event: "known_server_not_recorded",
        server,
        path: known!.path,
        error: (error as Error).message,
        message:
          "the key is not recorded (needs --allow-write, and a writable directory); give --known-servers PATH or --no-known-servers",
      });
    }
  };
  let lastProgress: HandshakeProgress | undefined;
  const onProgress = (progress: HandshakeProgress) => {
    lastProgress = progress;
    // Every key request is announced; a registration or a confirmation
    // only when its first try went unanswered.
    if (progress.step !== "key" && progress.attempt === 1) return;
    say(
      {
        level: "info",
        event: "progress",
        step: progress.step,
        server: progress.server,
        try: progress.attempt,
        tries: progress.attempts,
        wait_ms: Math.round(progress.waitMs),
      },
      formatProgress(progress, servers.length === 0),
    );
  };
  // Installed before the key exchange, so an interrupt there exits 130 too.
  const removeSignals = onTerminationSignal((signal) =>
    stopRequested(signal === "SIGINT" ? EXIT_INTERRUPTED : 0)
  );
  const connectAbort = new AbortController();
  let transport: UdpTransport | undefined;
  const connecting = (async () => {
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
        retryInitialMs,
        retryAttempts: attempts,
      });
      send = async (line) => formatAck(await basic.send(line), json);
      return basic;
    }
    const relay = await RelayClient.connect({
      transport,
      target,
      fallbackTargets,
      profile,
      rsaKeyBits,
      fingerprint,
      verifyKey: known && ((server, key) => known.check(server, key)),
      onProgress,
      mtu,
      keepaliveMs,
      retryInitialMs,
      retryAttempts: attempts,
      log,
      onEvent,
      signal: connectAbort.signal,
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
    send = async (message) => {
      try {
        if (await relay.send(message) === "sent") return undefined;
        return formatQueued(
          typeof message === "string"
            ? message
            : `(${message.length} bytes of --file)`,
          json,
        );
      } catch (error) {
        // Already shown by the client's "undelivered" event.
        if (error instanceof UndeliveredError) return undefined;
        throw error;
      }
    };
    return relay;
  })();
  connecting.catch(() => {}); // raced below; a late failure is not unhandled
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    if (connectTimeoutMs !== undefined) {
      timer = setTimeout(() => resolve("timeout"), connectTimeoutMs);
    }
  });
  let outcome: RelayClient | BasicClient | number | "timeout";
  try {
    outcome = await Promise.race([connecting, stopped, timedOut]);
  } catch (error) {
    outcome = -1;
    await stopConnecting(error);
  } finally {
    clearTimeout(timer);
  }
  async function stopConnecting(error?: unknown): Promise<never | number> {
    connectAbort.abort();
    if (profile !== "basic") await connecting.catch(() => {});
    transport?.close();
    await control?.close();
    removeSignals();
    if (error !== undefined) throw error;
    return 0;
  }
  if (typeof outcome === "number") {
    await stopConnecting();
    return outcome; // SIGINT or SIGTERM while joining
  }
  if (outcome === "timeout") {
    await stopConnecting();
    const seconds = connectTimeoutMs! / 1000;
    throw new HandshakeError(
      lastProgress?.step === "register"
        ? `The server at ${lastProgress.server} sent its key but did not confirm the registration within --connect-timeout ${seconds} s: check that client and server clocks agree within 60 s and that the server is not full or rate-limiting this address`
        : `No answer from ${
          lastProgress?.server ?? formatAddress(target)
        } within --connect-timeout ${seconds} s (${
          lastProgress?.attempt ?? 0
        } key requests sent): check that the server runs, and --server/--group/--port (use --server HOST:PORT where multicast does not route)`,
    );
  }
  const client = outcome;
  const server = client instanceof RelayClient
    ? client.serverAddress
    : formatAddress(target);
  const address = client instanceof RelayClient
    ? client.address
    : formatAddress(transport!.localAddress);
  printLine(
    json
      ? JSON.stringify({
        event: "ready",
        server,
        address,
        ...(control ? { control: control.address } : {}),
      })
      : `ready: registered with ${server} as ${address} (server key ${client.serverFingerprint})${
        control ? `; control port ${control.address}` : ""
      }`,
  );
  for (const line of early) printLine(line);
  early = undefined;

  // What ends the run by itself: input sent and confirmed, --count reached.
  const tasks: Promise<number>[] = [];
  /** Sends each message in turn; then the server must confirm them. */
  const sendAll = async (messages: AsyncIterable<string | Uint8Array>) => {
    let sent = 0;
    let failed = 0;
    // A registration since the first message (a restart, a kick) may have
    // taken messages with it; an outbox refusal is not a message sent.
    const before = client instanceof RelayClient ? client.stats() : undefined;
    for await (const message of messages) {
      if (stopping) return 0;
      try {
        const shown = await send!(message);
        if (shown !== undefined) show(shown);
        sent++;
      } catch (error) {
        if (stopping) return 0;
        failed++;
        printError(`error: not sent: ${(error as Error).message}`);
      }
    }
    if (!(client instanceof RelayClient) || client.profile !== "hybrid") {
      // The basic profile's sends waited for each ACK; the rsa profile's
      // server never answers keep-alives: nothing more to wait for.
      return failed > 0 ? EXIT_FAILED : 0;
    }
    if (!await client.confirm()) {
      if (stopping) return 0;
      printError(
        `error: ${server} did not confirm the ${sent} messages sent (no answer to the keep-alives after them): they may be lost; check that the server runs`,
      );
      return EXIT_FAILED;
    }
    const after = client.stats();
    if (after.registrations !== before!.registrations) {
      printError(
        `error: the client registered again while sending (${
          after.registrations - before!.registrations
        } time(s): a server restart, a kick or a failover): messages sent before that may be lost; send them again`,
      );
      return EXIT_FAILED;
    }
    if (after.undelivered !== before!.undelivered) {
      // Each was reported by an "undelivered" line.
      return EXIT_FAILED;
    }
    if (refusedByServer > 0) {
      // The server rate-limits its NOTICEs too: how many messages it
      // refused is not known here, only that it refused some.
      printError(
        `error: the server refused some of the ${sent} messages sent (${refusedByServer} NOTICE 2: too large, or 3: rate limited, came back; the server sends few of them, so more may be lost): send fewer (by default at most 200 a second) or smaller ones`,
      );
      return EXIT_FAILED;
    }
    return failed > 0 ? EXIT_FAILED : 0;
  };
  if (fileData !== undefined) {
    tasks.push(sendAll((async function* () {
      yield fileData;
    })()));
  } else if (interactive) {
    const relay = client instanceof RelayClient ? client : undefined;
    session = new InteractiveSession({
      send: send!,
      who: () => [
        `you: ${address}`,
        ...(relay
          ? relay.members().map((member) => `member: ${member}`)
          : ["(the basic profile has no group)"]),
      ],
      quit: () => stopRequested(0),
      state: () => ({
        connected: relay?.ready ?? true,
        others: relay?.members().length ?? 1,
      }),
    }, Deno.stdin.isTerminal());
    show = (line) => session!.print(line);
    session.start();
  } else if (piped) {
    tasks.push(sendAll(stdinLines()));
  }
  if (count !== undefined) {
    tasks.push(
      received >= count
        ? Promise.resolve(0)
        : new Promise((resolve) => countReached = () => resolve(0)),
    );
  }
  for (const task of tasks) {
    task.then((status) => {
      if (status !== 0) stopRequested(status);
    });
  }
  if (tasks.length > 0) {
    Promise.all(tasks).then(() => stopRequested(0));
  }
  const status = await stopped;
  session?.stop();
  removeSignals();
  await client.close();
  await control?.close();
  await recording;
  return status;
}

/** Stdin's lines (an unterminated last line included), empty lines skipped. */
async function* stdinLines(): AsyncGenerator<string> {
  const splitter = new LineSplitter();
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    const n = await Deno.stdin.read(buffer);
    if (n === null) break;
    for (const line of splitter.push(buffer.subarray(0, n))) {
      if (line !== "") yield line;
    }
  }
  for (const line of splitter.end()) if (line !== "") yield line;
}
