/**
 * Helpers for the CLI tests: spawn `server.ts` / `client.ts` (or any
 * command), read their stdout line by line into a {@linkcode LineLog} (the
 * shared Recorder of tests/_support/recorder.ts), wait for a line matching a
 * predicate (with a safety timeout that only bounds a hung test, never
 * measures anything), and talk to a TCP control port.
 *
 * Everything here owns what it opens: {@linkcode Proc.kill} and
 * {@linkcode ControlClient.close} release every process, stream, socket and
 * timer, so the test sanitizers stay quiet.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  RSA2048_FINGERPRINT,
  RSA2048_PRIVATE_PEM,
} from "../fixtures/rsa_fixtures.ts";
import { Recorder, withTimeout } from "../_support/recorder.ts";

export { withTimeout } from "../_support/recorder.ts";

/** The fingerprint of {@linkcode writeFixtureKey}'s key, as the server prints it. */
export const FIXTURE_FINGERPRINT: string = RSA2048_FINGERPRINT;

/**
 * Writes the OpenSSL-made fixture key (PKCS#8) to `dir/name` with mode 0600,
 * so a server started with it skips key generation; returns the path.
 */
export async function writeFixtureKey(
  dir: string,
  name = "server_key.pem",
): Promise<string> {
  const path = `${dir}/${name}`;
  await Deno.writeTextFile(path, RSA2048_PRIVATE_PEM, { mode: 0o600 });
  await Deno.chmod(path, 0o600);
  return path;
}

/** The project root (where deno.json, server.ts and client.ts live). */
export const ROOT: string = decodeURIComponent(
  new URL("../../", import.meta.url).pathname,
);

/** Whether subprocess tests can run; they are `ignore`d otherwise. */
export const CAN_RUN: boolean = (await Promise.all(
  (["run", "read", "write", "env"] as const).map((name) =>
    Deno.permissions.query({ name })
  ),
)).every((status) => status.state === "granted");

/** Why subprocess tests are ignored, for a line at load time. */
export const NO_RUN_REASON =
  "needs --allow-run (and --allow-read --allow-write --allow-env) to start server.ts / client.ts";

/** Permissions the programs are started with (as the README's tasks give). */
export const PROGRAM_PERMISSIONS: readonly string[] = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
];

/** Server flags that keep all traffic on loopback and pick free ports. */
export const LOOPBACK_SERVER: readonly string[] = [
  "--no-multicast",
  "--bind",
  "127.0.0.1",
  "--port",
  "0",
  "--tcp-port",
  "0",
];

/** The server's control commands, as `help` and `--help` must list them. */
export const SERVER_CONTROL_COMMANDS: readonly string[] = [
  "help",
  "clients",
  "stats",
  "kick",
  "ban",
  "unban",
  "bans",
  "quit",
  "exit",
];

/** Upper bound for any single wait: only a hung test ever reaches it. */
export const SAFETY_MS = 20_000;

/** A JSON object line. */
export type JsonLine = Record<string, unknown>;

/** Parses a line as a JSON object, or undefined when it is not one. */
export function parseJson(line: string): JsonLine | undefined {
  try {
    const value = JSON.parse(line);
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? value as JsonLine
      : undefined;
  } catch {
    return undefined;
  }
}

/** A predicate on a JSON line: every given field equals the expected value. */
export function jsonWith(fields: JsonLine): (line: string) => boolean {
  return (line) => {
    const value = parseJson(line);
    if (!value) return false;
    return Object.entries(fields).every(([k, v]) => {
      try {
        assert.deepEqual(value[k], v);
        return true;
      } catch {
        return false;
      }
    });
  };
}

/**
 * Lines received so far (a {@linkcode Recorder} of strings), awaited by
 * predicate. Shared by the stdout of a process and a control connection.
 */
export class LineLog extends Recorder<string> {
  /** @param name what the lines come from, for error messages */
  constructor(name: string) {
    super(name, { timeoutMs: SAFETY_MS, tail: 20 });
  }

  /** Every line received, in order. */
  get lines(): string[] {
    return this.items;
  }

  /**
   * The first line at or after index `since` that satisfies `predicate`:
   * one already received, or the next that arrives.
   */
  waitLine(
    predicate: (line: string) => boolean,
    what: string,
    since = 0,
    ms = SAFETY_MS,
  ): Promise<string> {
    return this.waitFor(predicate, what, { from: since, timeoutMs: ms });
  }

  /** Like {@linkcode waitLine} for a JSON line with the given fields; returns it parsed. */
  async waitJson(
    fields: JsonLine,
    since = 0,
    ms = SAFETY_MS,
  ): Promise<JsonLine> {
    const line = await this.waitLine(
      jsonWith(fields),
      `a JSON line with ${JSON.stringify(fields)}`,
      since,
      ms,
    );
    return parseJson(line)!;
  }
}

/** Splits a byte stream into lines and pushes them into `log`; resolves at EOF. */
async function pumpLines(
  stream: ReadableStream<Uint8Array>,
  log: LineLog,
): Promise<void> {
  const decoder = new TextDecoder();
  let pending = "";
  try {
    for await (const chunk of stream) {
      pending += decoder.decode(chunk, { stream: true });
      let newline: number;
      while ((newline = pending.indexOf("\n")) >= 0) {
        log.push(pending.slice(0, newline).replace(/\r$/, ""));
        pending = pending.slice(newline + 1);
      }
    }
    pending += decoder.decode();
    if (pending.length > 0) log.push(pending);
    log.end("EOF");
  } catch (error) {
    log.end(String(error));
  }
}

/** Reads a whole byte stream as text. */
async function collectText(
  stream: ReadableStream<Uint8Array>,
  sink: { text: string },
): Promise<void> {
  const decoder = new TextDecoder();
  try {
    for await (const chunk of stream) {
      sink.text += decoder.decode(chunk, { stream: true });
    }
    sink.text += decoder.decode();
  } catch {
    // The process went away; what was read is kept.
  }
}

/** Options of {@linkcode Proc.spawn}. */
export interface SpawnOptions {
  /** Working directory; the project root by default. */
  readonly cwd?: string;
  /** A short name for error messages. */
  readonly name?: string;
  /** Extra environment variables. */
  readonly env?: Record<string, string>;
  /** "piped" to write to the process's stdin with {@linkcode Proc.write}; closed by default. */
  readonly stdin?: "piped" | "null";
  /** Deno permissions beyond {@linkcode PROGRAM_PERMISSIONS} ({@linkcode Proc.deno} only). */
  readonly denoFlags?: readonly string[];
}

/** A child process whose stdout is read line by line and stderr collected. */
export class Proc implements AsyncDisposable {
  /** The stdout lines. */
  readonly stdout: LineLog;
  /** The stderr lines (to wait for one; {@linkcode stderr} has the text). */
  readonly stderrLines: LineLog;
  /** The exit status, once it has exited. */
  readonly status: Promise<Deno.CommandStatus>;
  /** The process id. */
  readonly pid: number;
  readonly #child: Deno.ChildProcess;
  readonly #stderr = { text: "" };
  readonly #readers: Promise<void>;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array> | undefined;
  #exited = false;
  /** A config directory of its own ({@linkcode Proc.deno}), removed by {@linkcode kill}. */
  #configHome: string | undefined;

  private constructor(
    child: Deno.ChildProcess,
    name: string,
    pipedStdin: boolean,
  ) {
    this.#child = child;
    this.#stdin = pipedStdin ? child.stdin.getWriter() : undefined;
    this.pid = child.pid;
    this.stdout = new LineLog(name);
    this.stderrLines = new LineLog(`${name} (stderr)`);
    const [stderrText, stderrLines] = child.stderr.tee();
    this.status = child.status.then((status) => {
      this.#exited = true;
      return status;
    });
    this.#readers = Promise.all([
      pumpLines(child.stdout, this.stdout),
      collectText(stderrText, this.#stderr),
      pumpLines(stderrLines, this.stderrLines),
    ]).then(() => {});
  }

  /** Starts `command args` with stdin closed and stdout/stderr piped. */
  static spawn(
    command: string,
    args: readonly string[],
    options: SpawnOptions = {},
  ): Proc {
    const child = new Deno.Command(command, {
      args: [...args],
      cwd: options.cwd ?? ROOT,
      env: { NO_COLOR: "1", ...options.env },
      stdin: options.stdin ?? "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    return new Proc(
      child,
      options.name ?? `${command} ${args.join(" ")}`,
      options.stdin === "piped",
    );
  }

  /**
   * Starts `deno run --lock=deno.lock <program permissions> [denoFlags]
   * <script> args` in the project root (the lock file as the tasks give it:
   * deno.json does not read it by itself, see README "Dependencies"). Unless
   * `options.env` sets `XDG_CONFIG_HOME`, the process gets a config directory
   * of its own (removed by {@linkcode kill}), so a client started here never
   * reads or writes the user's known-servers file.
   */
  static deno(
    script: string,
    args: readonly string[],
    options: SpawnOptions = {},
  ): Proc {
    const configHome = options.env?.XDG_CONFIG_HOME === undefined
      ? Deno.makeTempDirSync({ prefix: "mcrelay_cli_config_" })
      : undefined;
    const proc = Proc.spawn(
      Deno.execPath(),
      [
        "run",
        `--lock=${ROOT}deno.lock`,
        ...PROGRAM_PERMISSIONS,
        ...options.denoFlags ?? [],
        script,
        ...args,
      ],
      {
        name: `${script} ${args.join(" ")}`,
        ...options,
        env: {
          ...(configHome ? { XDG_CONFIG_HOME: configHome } : {}),
          ...options.env,
        },
      },
    );
    proc.#configHome = configHome;
    return proc;
  }

  /** Writes text to the process's stdin (spawned with `stdin: "piped"`). */
  async write(text: string): Promise<void> {
    if (!this.#stdin) throw new Error("stdin is not piped");
    await this.#stdin.write(new TextEncoder().encode(text));
  }

  /** Closes the process's stdin (end of input; spawned with `stdin: "piped"`). */
  async closeStdin(): Promise<void> {
    if (!this.#stdin) throw new Error("stdin is not piped");
    await this.#stdin.close();
  }

  /** The stderr text read so far (all of it once the process has exited). */
  get stderr(): string {
    return this.#stderr.text;
  }

  /** Waits for the process to exit by itself and its output to be read. */
  async exited(
    what = "the process to exit",
    ms = SAFETY_MS,
  ): Promise<Deno.CommandStatus> {
    const status = await withTimeout(this.status, what, ms);
    await withTimeout(this.#readers, `${what} (its output)`, ms);
    return status;
  }

  /** Sends a signal if the process still runs. */
  signal(signal: Deno.Signal): void {
    if (this.#exited) return;
    try {
      this.#child.kill(signal);
    } catch {
      // It exited meanwhile.
    }
  }

  /** Kills the process if it still runs and waits until everything is released. Safe to call twice. */
  async kill(): Promise<void> {
    this.signal("SIGKILL");
    await this.status;
    await this.#readers;
    await this.#stdin?.close().catch(() => {});
    const configHome = this.#configHome;
    this.#configHome = undefined;
    if (configHome) await Deno.remove(configHome, { recursive: true });
  }

  /** Same as {@linkcode kill}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.kill();
  }
}

/** Kills every process given (ignoring undefined), in parallel. */
export async function killAll(
  ...procs: readonly (Proc | undefined)[]
): Promise<void> {
  await Promise.all(procs.map((p) => p?.kill()));
}

/** A running server and what its first JSON line says. */
export interface ServerInfo {
  /** The process. */
  readonly proc: Proc;
  /** The first stdout line, parsed. */
  readonly first: JsonLine;
  /** UDP `HOST:PORT`. */
  readonly udp: string;
  /** Control `HOST:PORT`. */
  readonly control: string;
  /** `SHA256:...`. */
  readonly fingerprint: string;
}

/**
 * Starts `server.ts --json` with `args` (loopback-only flags by default) and
 * waits for its first line.
 */
export async function startServer(
  args: readonly string[] = LOOPBACK_SERVER,
  options: SpawnOptions = {},
): Promise<ServerInfo> {
  const proc = Proc.deno("server.ts", ["--json", ...args], {
    name: "server",
    ...options,
  });
  try {
    const line = await proc.stdout.waitLine(
      () => true,
      "the first line (listening)",
    );
    const first = parseJson(line);
    assert.ok(first, `the server's first line is not JSON: ${line}`);
    assert.equal(first.event, "listening", line);
    const level = args[args.indexOf("--log-level") + 1];
    if (
      !args.includes("--log-level") || level === "info" || level === "debug"
    ) {
      // Key exchanges wait for the RSA threads, whose first start (the
      // worker compiled on a cold module cache) can outlast a client's
      // retries: a test starts talking once the server says they run.
      await proc.stdout.waitJson({ event: "rsa_threads" });
    }
    return {
      proc,
      first,
      udp: String(first.udp),
      control: String(first.control),
      fingerprint: String(first.fingerprint),
    };
  } catch (error) {
    await proc.kill();
    throw new Error(`${(error as Error).message}\nstderr: ${proc.stderr}`);
  }
}

/** A running client and what its ready line says. */
export interface ClientInfo {
  /** The process. */
  readonly proc: Proc;
  /** Its address as the server sees it. */
  readonly address: string;
  /** Its control `HOST:PORT`. */
  readonly control: string;
  /** The server address it registered with. */
  readonly server: string;
}

/**
 * Starts `client.ts --json --tcp-port 0` with `args` and waits for its ready
 * line (the first stdout line).
 */
export async function startClient(
  args: readonly string[],
  options: SpawnOptions = {},
): Promise<ClientInfo> {
  const proc = Proc.deno("client.ts", ["--json", "--tcp-port", "0", ...args], {
    name: "client",
    ...options,
  });
  try {
    const line = await proc.stdout.waitLine(
      () => true,
      "the first line (ready)",
    );
    const ready = parseJson(line);
    assert.ok(ready, `the client's first line is not JSON: ${line}`);
    assert.equal(ready.event, "ready", line);
    return {
      proc,
      address: String(ready.address),
      control: String(ready.control),
      server: String(ready.server),
    };
  } catch (error) {
    await proc.kill();
    throw new Error(`${(error as Error).message}\nstderr: ${proc.stderr}`);
  }
}

/** Splits `HOST:PORT` (IPv4 or `[IPv6]:PORT`). */
export function splitHostPort(address: string): { host: string; port: number } {
  const match = /^\[?([^\]]*?)\]?:(\d+)$/.exec(address);
  assert.ok(match, `not a HOST:PORT: ${address}`);
  return { host: match[1], port: Number(match[2]) };
}

const encoder = new TextEncoder();

/** A TCP control-port connection: send lines, read reply and broadcast lines. */
export class ControlClient implements AsyncDisposable {
  /** Every line received. */
  readonly log: LineLog;
  readonly #conn: Deno.TcpConn;
  readonly #name: string;
  readonly #reading: Promise<void>;
  #closed = false;

  private constructor(conn: Deno.TcpConn, name: string) {
    this.#conn = conn;
    this.#name = name;
    this.log = new LineLog(name);
    this.#reading = this.#readLoop();
  }

  /** Connects to `HOST:PORT`. */
  static async connect(address: string): Promise<ControlClient> {
    const { host, port } = splitHostPort(address);
    const conn = await withTimeout(
      Deno.connect({ hostname: host, port, transport: "tcp" }),
      `a TCP connection to ${address}`,
      SAFETY_MS,
    );
    return new ControlClient(conn, `control ${address}`);
  }

  /**
   * Connects to a server's control port and waits for the reply to `help`,
   * so the connection is known to be registered (it receives the live log
   * from then on).
   */
  static async connectServer(
    address: string,
    json = true,
  ): Promise<ControlClient> {
    const client = await ControlClient.connect(address);
    try {
      await client.request(
        "help",
        json ? jsonWith({ event: "help" }) : (l) => l === "commands:",
      );
    } catch (error) {
      await client.close();
      throw error;
    }
    return client;
  }

  /** Sends one line (a newline is appended). */
  async send(line: string): Promise<void> {
    const bytes = encoder.encode(line + "\n");
    let written = 0;
    while (written < bytes.length) {
      written += await this.#conn.write(bytes.subarray(written));
    }
  }

  /** Sends `line` and waits for the first later line satisfying `predicate`. */
  async request(
    line: string,
    predicate: (line: string) => boolean,
    what = `the reply to ${JSON.stringify(line)}`,
  ): Promise<string> {
    const since = this.log.mark();
    await this.send(line);
    return await this.log.waitLine(predicate, what, since);
  }

  /** Sends a command to a `--json` server and returns its JSON reply with `event`. */
  async command(line: string, event: string): Promise<JsonLine> {
    const reply = await this.request(
      line,
      jsonWith({ event }),
      `the "${event}" reply to ${JSON.stringify(line)}`,
    );
    return parseJson(reply)!;
  }

  /** Resolves when the other side has closed the connection (EOF). */
  async closedByPeer(): Promise<void> {
    await withTimeout(
      this.#reading,
      `${this.#name} to be closed by the peer`,
      SAFETY_MS,
    );
  }

  /** Closes the connection and waits for the reader. Safe to call twice. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.#conn.close();
      } catch {
        // Already closed.
      }
    }
    await this.#reading;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #readLoop(): Promise<void> {
    const decoder = new TextDecoder();
    const buffer = new Uint8Array(64 * 1024);
    let pending = "";
    try {
      while (true) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        pending += decoder.decode(buffer.subarray(0, n), { stream: true });
        let newline: number;
        while ((newline = pending.indexOf("\n")) >= 0) {
          this.log.push(pending.slice(0, newline));
          pending = pending.slice(newline + 1);
        }
      }
      this.log.end("EOF");
    } catch (error) {
      this.log.end(this.#closed ? "closed here" : String(error));
    }
  }
}

/** Closes every control connection given (ignoring undefined). */
export async function closeAll(
  ...clients: readonly (ControlClient | undefined)[]
): Promise<void> {
  await Promise.all(clients.map((c) => c?.close()));
}

/** Asserts that `text` holds no JavaScript stack trace. */
export function assertNoStackTrace(text: string): void {
  assert.doesNotMatch(text, /^\s+at .+[:(]\d+:\d+\)?$/m, text);
  assert.doesNotMatch(text, /Uncaught|error: Uncaught|\.ts:\d+:\d+/, text);
}

/** Makes a temporary directory for a test and removes it afterwards. */
export async function withTempDir<T>(
  fn: (dir: string) => Promise<T>,
): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "mcrelay_cli_test_" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}
