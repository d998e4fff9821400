/**
 * Bench helpers around processes: spawning a server script that prints its
 * address as a first JSON line, and reading CPU time, peak RSS, machine load
 * and kernel UDP drop counters from /proc (Linux only; elsewhere the figures
 * are reported as n/a).
 *
 * @module
 */
import { parseAddress, type PeerAddress } from "../lib/wire/address.ts";

/** Clock ticks per second of /proc/<pid>/stat (USER_HZ; 100 on Linux x86-64 and arm64). */
const CLOCK_TICKS = 100;

const SEPARATOR = "@@mcrelay-bench-end-of-file@@";
let directReads: boolean | undefined;

/**
 * Reads small files, each undefined when unreadable. Deno asks for
 * --allow-all to read /proc directly, so without it this runs one `sh` that
 * cats them all (the bench has --allow-run).
 */
export function readFiles(paths: readonly string[]): (string | undefined)[] {
  if (directReads !== false) {
    try {
      const texts = paths.map((p) => {
        try {
          return Deno.readTextFileSync(p);
        } catch (error) {
          if (error instanceof Deno.errors.NotFound) return undefined;
          throw error;
        }
      });
      directReads = true;
      return texts;
    } catch {
      directReads = false;
    }
  }
  try {
    const { stdout } = new Deno.Command("sh", {
      args: [
        "-c",
        `for f in "$@"; do cat "$f" 2>/dev/null || printf '\\0'; printf '\\n${SEPARATOR}\\n'; done`,
        "sh",
        ...paths,
      ],
      stdout: "piped",
      stderr: "null",
    }).outputSync();
    const parts = new TextDecoder().decode(stdout).split(`\n${SEPARATOR}\n`);
    return paths.map((_, i) => {
      const part = parts[i];
      return part === undefined || part === "\0" ? undefined : part;
    });
  } catch {
    return paths.map(() => undefined);
  }
}

/** CPU seconds (user + system) from the text of /proc/<pid>/stat. */
function parseCpuSeconds(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  // Fields after "(comm)": state is field 3, utime 14, stime 15.
  const rest = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return (utime + stime) / CLOCK_TICKS;
}

/** CPU seconds (user + system) a process has used, or undefined when /proc cannot tell. */
export function processCpuSeconds(pid: number): number | undefined {
  return parseCpuSeconds(readFiles([`/proc/${pid}/stat`])[0]);
}

/** Resident set size now and at its peak (VmRSS, VmHWM), in KiB. */
export function processMemoryKiB(
  pid: number,
): { rss: number; peak: number } | undefined {
  const text = readFiles([`/proc/${pid}/status`])[0];
  if (text === undefined) return undefined;
  const field = (name: string) => {
    const match = new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text);
    return match ? Number(match[1]) : NaN;
  };
  const rss = field("VmRSS");
  const peak = field("VmHWM");
  return Number.isFinite(peak) ? { rss, peak } : undefined;
}

/** Busy jiffies of the whole machine from the text of /proc/stat. */
function parseMachineBusy(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const fields = text.slice(0, text.indexOf("\n")).trim().split(/\s+/).slice(1)
    .map(Number);
  // user nice system idle iowait irq softirq steal (guest is inside user).
  const [user, nice, system, _idle, _iowait, irq, softirq, steal] = fields;
  const busy = user + nice + system + irq + softirq + (steal ?? 0);
  return Number.isFinite(busy) ? busy : undefined;
}

/** Kernel UDP receive-buffer overflows (all sockets of the machine) from /proc/net/snmp. */
function parseRcvbufErrors(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const lines = text.split("\n").filter((l) => l.startsWith("Udp:"));
  if (lines.length < 2) return undefined;
  const names = lines[0].trim().split(/\s+/);
  const values = lines[1].trim().split(/\s+/).map(Number);
  const value = values[names.indexOf("RcvbufErrors")];
  return Number.isFinite(value) ? value : undefined;
}

/** Receive-buffer drops per local UDP port on 127.0.0.1 or 0.0.0.0, from /proc/net/udp. */
function parseSocketDrops(
  text: string | undefined,
): Map<number, number> | undefined {
  if (text === undefined) return undefined;
  const drops = new Map<number, number>();
  for (const line of text.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 13) continue;
    const [ip, portHex] = fields[1].split(":");
    if (ip !== "0100007F" && ip !== "00000000") continue;
    const port = parseInt(portHex, 16);
    drops.set(port, (drops.get(port) ?? 0) + Number(fields[12]));
  }
  return drops;
}

/** Busy seconds of the whole machine so far (all cores), or undefined. */
export function machineBusySeconds(): number | undefined {
  const busy = parseMachineBusy(readFiles(["/proc/stat"])[0]);
  return busy === undefined ? undefined : busy / CLOCK_TICKS;
}

/** The 1, 5 and 15 minute load averages, or undefined. */
export function loadAverage(): string | undefined {
  try {
    return Deno.loadavg().map((v) => v.toFixed(2)).join(" ");
  } catch {
    return undefined;
  }
}

interface Snapshot {
  readonly t: number;
  readonly bench: number | undefined;
  readonly server: number | undefined;
  readonly machine: number | undefined;
  readonly rcvbufErrors: number | undefined;
  readonly socketDrops: Map<number, number> | undefined;
}

function snapshot(serverPid: number | undefined): Snapshot {
  const paths = [
    `/proc/${Deno.pid}/stat`,
    "/proc/stat",
    "/proc/net/snmp",
    "/proc/net/udp",
  ];
  if (serverPid !== undefined) paths.push(`/proc/${serverPid}/stat`);
  const [bench, machine, snmp, udp, server] = readFiles(paths);
  return {
    t: performance.now(),
    bench: parseCpuSeconds(bench),
    server: parseCpuSeconds(server),
    machine: parseMachineBusy(machine),
    rcvbufErrors: parseRcvbufErrors(snmp),
    socketDrops: parseSocketDrops(udp),
  };
}

/** What one measured window cost: wall time, CPU of this process and of the server, other load. */
export interface WindowUsage {
  /** Wall-clock seconds. */
  readonly wallS: number;
  /** CPU seconds of the bench process (load generator). */
  readonly benchCpuS: number | undefined;
  /** CPU seconds of the server process, when it is local. */
  readonly serverCpuS: number | undefined;
  /** Average cores kept busy by everything else on the machine (noise indicator). */
  readonly otherCores: number | undefined;
  /** Kernel UDP receive-buffer overflows during the window (machine-wide). */
  readonly udpRcvbufErrors: number | undefined;
  /** Datagrams the server's socket dropped (receive buffer full), from /proc/net/udp. */
  readonly serverSocketDrops: number | undefined;
  /** Datagrams the clients' sockets dropped (receive buffer full), from /proc/net/udp. */
  readonly clientSocketDrops: number | undefined;
}

function dropsOf(
  start: Snapshot,
  end: Snapshot,
  ports: readonly number[],
): number | undefined {
  if (!start.socketDrops || !end.socketDrops) return undefined;
  let total = 0;
  for (const port of ports) {
    total += (end.socketDrops.get(port) ?? 0) -
      (start.socketDrops.get(port) ?? 0);
  }
  return total;
}

const minus = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined ? undefined : a - b;

/** Measures one window: call {@linkcode UsageMeter.stop} at its end. */
export class UsageMeter {
  readonly #serverPid: number | undefined;
  readonly #serverPort: number | undefined;
  readonly #clientPorts: readonly number[];
  readonly #start: Snapshot;

  /**
   * @param serverPid the local server process, if any
   * @param serverPort the server's UDP port on 127.0.0.1, to count its socket drops
   * @param clientPorts the clients' UDP ports, to count theirs
   */
  constructor(
    serverPid: number | undefined,
    serverPort?: number,
    clientPorts: readonly number[] = [],
  ) {
    this.#serverPid = serverPid;
    this.#serverPort = serverPort;
    this.#clientPorts = clientPorts;
    this.#start = snapshot(serverPid);
  }

  stop(): WindowUsage {
    const end = snapshot(this.#serverPid);
    const start = this.#start;
    const wallS = (end.t - start.t) / 1000;
    const benchCpuS = minus(end.bench, start.bench);
    const serverCpuS = minus(end.server, start.server);
    const machine = minus(end.machine, start.machine);
    const otherCores = machine === undefined || benchCpuS === undefined
      ? undefined
      : Math.max(0, machine / CLOCK_TICKS - benchCpuS - (serverCpuS ?? 0)) /
        wallS;
    return {
      wallS,
      benchCpuS,
      serverCpuS,
      otherCores,
      udpRcvbufErrors: minus(end.rcvbufErrors, start.rcvbufErrors),
      serverSocketDrops: this.#serverPort === undefined
        ? undefined
        : dropsOf(start, end, [this.#serverPort]),
      clientSocketDrops: this.#clientPorts.length === 0
        ? undefined
        : dropsOf(start, end, this.#clientPorts),
    };
  }
}

/** Lines of a child's stdout, read in the background and handed out in order. */
class LineQueue {
  readonly #lines: string[] = [];
  #waiter: (() => void) | undefined;
  #ended = false;
  readonly done: Promise<void>;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = this.#pump(stream);
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    let buffer = "";
    try {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) {
        buffer += text;
        let newline: number;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          this.#lines.push(buffer.slice(0, newline));
          buffer = buffer.slice(newline + 1);
        }
        this.#waiter?.();
      }
    } catch {
      // The child went away: treat as the end of its output.
    }
    this.#ended = true;
    this.#waiter?.();
  }

  /** The next line, or undefined at the end of output or after `timeoutMs`. */
  async next(timeoutMs: number): Promise<string | undefined> {
    const deadline = performance.now() + timeoutMs;
    while (this.#lines.length === 0) {
      const left = deadline - performance.now();
      if (this.#ended || left <= 0) return undefined;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await new Promise<void>((resolve) => {
        this.#waiter = resolve;
        timer = setTimeout(resolve, left);
      });
      clearTimeout(timer);
      this.#waiter = undefined;
    }
    return this.#lines.shift();
  }
}

/** A server script run as a child process: its UDP address, pid, and a `stats` request. */
export class ChildServer implements AsyncDisposable {
  readonly address: PeerAddress;
  readonly pid: number;
  readonly #child: Deno.ChildProcess;
  readonly #lines: LineQueue;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array>;
  #closed = false;

  private constructor(
    child: Deno.ChildProcess,
    lines: LineQueue,
    address: PeerAddress,
  ) {
    this.#child = child;
    this.#lines = lines;
    this.#stdin = child.stdin.getWriter();
    this.address = address;
    this.pid = child.pid;
  }

  /**
   * Spawns `deno run --allow-net [denoFlags] script [scriptArgs]` and waits for its first JSON line (`{"udp": ...}`).
   * @throws {Error} when the child exits or stays silent for 30 s
   */
  static async spawn(
    script: string,
    denoFlags: readonly string[] = [],
    scriptArgs: readonly string[] = [],
  ): Promise<ChildServer> {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", ...denoFlags, script, ...scriptArgs],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const lines = new LineQueue(child.stdout);
    const first = await lines.next(30_000);
    if (first === undefined) {
      try {
        child.kill("SIGKILL");
      } catch { /* already gone */ }
      await child.status;
      await lines.done;
      throw new Error(`${script} did not print its address`);
    }
    const { udp } = JSON.parse(first) as { udp: string };
    return new ChildServer(child, lines, parseAddress(udp));
  }

  /** CPU seconds the child has used so far. */
  cpuSeconds(): number | undefined {
    return processCpuSeconds(this.pid);
  }

  /** Its memory (VmRSS, VmHWM) in KiB. */
  memoryKiB(): { rss: number; peak: number } | undefined {
    return processMemoryKiB(this.pid);
  }

  /** Asks the child for its counters (`stats` on stdin). */
  stats(): Promise<Record<string, unknown> | undefined> {
    return this.#ask("stats");
  }

  /** Asks the child for `Deno.memoryUsage()` after full collections when it runs with `--expose-gc` (`memory` on stdin). */
  memory(): Promise<Record<string, unknown> | undefined> {
    return this.#ask("memory");
  }

  /** Writes `command` on the child's stdin; its answer is `{"<command>": {...}}`. */
  async #ask(command: string): Promise<Record<string, unknown> | undefined> {
    await this.#stdin.write(new TextEncoder().encode(`${command}\n`));
    const line = await this.#lines.next(5_000);
    if (line === undefined) return undefined;
    try {
      return (JSON.parse(line) as Record<string, Record<string, unknown>>)[
        command
      ];
    } catch {
      return undefined;
    }
  }

  /** Closes its stdin (it shuts down), waits up to 5 s, then kills it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#stdin.close().catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exited = await Promise.race([
      this.#child.status.then(() => true),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), 5_000);
      }),
    ]);
    clearTimeout(timer);
    if (!exited) {
      try {
        this.#child.kill("SIGKILL");
      } catch { /* already gone */ }
      await this.#child.status;
    }
    await this.#lines.done;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
