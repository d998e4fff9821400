/**
 * The `client.ts` command: start-up, running and shutdown. Reads the flags
 * (client_flags.ts, client_config.ts), joins (client_connect.ts), opens the
 * local TCP control port (client_control.ts), shows the client's events
 * (client_format.ts), and runs one mode: interactive (interactive.ts), a
 * pipe or `--file` (client_pipe.ts), `--count`, or the control port alone;
 * it stops when that mode is done, on `exit`, SIGINT or SIGTERM.
 *
 * @module
 */
import type { ClientEvent, HandshakeProgress } from "../relay/client/client.ts";
import { RelayClient } from "../relay/client/client.ts";
import type { BasicClient } from "../relay/basic/client.ts";
import { formatAddress } from "../wire/address.ts";
import type { LogRecord } from "../log.ts";
import type { UdpTransport } from "../runtime/udp.ts";
import { parseCommandLine } from "./config.ts";
import { INTERACTIVE_HELP, InteractiveSession } from "./interactive.ts";
import { formatLogRecord } from "./log_format.ts";
import { KnownServers } from "./known_servers.ts";
import {
  BANNED_EXIT_STATUS,
  createLogSink,
  EXIT_FAILED,
  EXIT_INTERRUPTED,
  onTerminationSignal,
  printError,
  printLine,
  useColor,
  VERSION,
} from "./output.ts";
import { CLIENT_FLAGS, CLIENT_USAGE } from "./client_flags.ts";
import { resolveClientConfig } from "./client_config.ts";
import {
  connectClient,
  connectTimeoutError,
  type SendMessage,
} from "./client_connect.ts";
import { listenClientControl } from "./client_control.ts";
import {
  formatClientEvent,
  formatProgress,
  formatReady,
} from "./client_format.ts";
import {
  readMessageFile,
  sendAndConfirm,
  stdinIsInput,
  stdinLines,
} from "./client_pipe.ts";

/**
 * Runs the client until its input is sent and confirmed, `--count` messages
 * have arrived, `exit` on the control port, SIGINT or SIGTERM.
 * @returns the exit status: 0 done, 1 failed, 3 banned, 130 interrupted
 * @throws {ConfigError} for a bad flag value; {@linkcode HandshakeError} when joining fails
 */
export async function clientMain(args: readonly string[]): Promise<number> {
  const flags = await parseCommandLine(args, CLIENT_FLAGS);
  if (flags.help) {
    printLine(
      `${CLIENT_USAGE}\nInteractive commands (on a terminal, or with --stdio):\n${
        INTERACTIVE_HELP.map((line) => `  ${line}`).join("\n")
      }\n`,
    );
    return 0;
  }
  if (flags.version) {
    printLine(`mcrelay client ${VERSION}`);
    return 0;
  }
  const config = resolveClientConfig(flags, (name) => Deno.env.get(name));
  const { json, logLevel, count, target } = config;
  const known = config.knownServersPath === undefined
    ? undefined
    : await KnownServers.load(config.knownServersPath);
  const fileData = config.file === undefined
    ? undefined
    : await readMessageFile(config.file);
  const interactive = fileData === undefined &&
    (config.stdio || Deno.stdin.isTerminal());
  const piped = fileData === undefined && !interactive && stdinIsInput();
  // One-shot runs (a pipe, a file, a count) open a control port only when
  // asked: several of them at once must not fight over port 9000.
  const withControl = config.tcpPortGiven ||
    (fileData === undefined && !piped && count === undefined);

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
  let send: SendMessage | undefined;
  let stopRequested!: (status: number) => void;
  let stopping = false;
  const stopped = new Promise<number>((resolve) =>
    stopRequested = (status) => {
      stopping = true;
      resolve(status);
    }
  );
  const control = withControl
    ? listenClientControl({
      hostname: config.tcpHost,
      port: config.tcpPort,
      token: config.token,
      json,
      sender: () => send,
      show: (line) => show(line),
      stop: () => stopRequested(0),
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
      formatProgress(progress, config.servers.length === 0),
    );
  };
  // Installed before the key exchange, so an interrupt there exits 130 too.
  const removeSignals = onTerminationSignal((signal) =>
    stopRequested(signal === "SIGINT" ? EXIT_INTERRUPTED : 0)
  );
  const connectAbort = new AbortController();
  let transport: UdpTransport | undefined;
  const connecting = (async () => {
    const connected = await connectClient(config, {
      log,
      known,
      onEvent,
      onProgress,
      signal: connectAbort.signal,
      onTransport: (bound) => transport = bound,
    });
    send = connected.send;
    return connected.client;
  })();
  connecting.catch(() => {}); // raced below; a late failure is not unhandled
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timedOut = new Promise<"timeout">((resolve) => {
    if (config.connectTimeoutMs !== undefined) {
      timer = setTimeout(() => resolve("timeout"), config.connectTimeoutMs);
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
    if (config.profile !== "basic") await connecting.catch(() => {});
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
    throw connectTimeoutError(config, lastProgress);
  }
  const client = outcome;
  const server = client instanceof RelayClient
    ? client.serverAddress
    : formatAddress(target);
  const address = client instanceof RelayClient
    ? client.address
    : formatAddress(transport!.localAddress);
  printLine(formatReady({
    server,
    address,
    fingerprint: client.serverFingerprint,
    ...(control ? { control: control.address } : {}),
  }, json));
  for (const line of early) printLine(line);
  early = undefined;

  // What ends the run by itself: input sent and confirmed, --count reached.
  const tasks: Promise<number>[] = [];
  /** Sends each message in turn; then the server must confirm them. */
  const sendAll = (messages: AsyncIterable<string | Uint8Array>) =>
    sendAndConfirm(messages, {
      client,
      server,
      send: send!,
      show: (line) => show(line),
      stopping: () => stopping,
      refusedByServer: () => refusedByServer,
    });
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
