/**
 * Datagrams the kernel dropped on a UDP socket (its receive queue was full):
 * the `drops` column of the socket's row in Linux's `/proc/net/udp` and
 * `/proc/net/udp6`. The relay's own counters cannot see these losses, so
 * the server shows them (`kernelDropped` in `stats`, issue 17 item 6(a)).
 *
 * {@linkcode parseProcNetUdp} is the pure parser; {@linkcode KernelDropMeter}
 * the thin I/O around it (reads the two files and this process's
 * `/proc/self/fd` links, so that a row is matched by local port and by the
 * socket inode this process holds).
 *
 * @module
 */

/** One socket row of `/proc/net/udp` or `/proc/net/udp6`. */
export interface UdpSocketRow {
  /** Local port. */
  readonly localPort: number;
  /** The socket's inode (as in `/proc/self/fd/N -> socket:[inode]`). */
  readonly inode: number;
  /** Bytes waiting in its receive queue. */
  readonly rxQueueBytes: number;
  /** Datagrams the kernel dropped on it since it was made. */
  readonly drops: number;
}

/**
 * Parses the text of `/proc/net/udp` or `/proc/net/udp6`: a header line,
 * then one row per socket (`sl local_address rem_address st
 * tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode ref pointer
 * drops`; addresses `HEX:PORT`, queues hexadecimal). Lines that are not
 * such rows are skipped.
 *
 * @example
 * ```ts
 * import { parseProcNetUdp } from "./kernel_drops.ts";
 * const text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n" +
 *   " 2307: 0100007F:EBA2 00000000:0000 07 00000000:00033C00 00:00000000 00000000     0        0 82892 2 00000000ff9d62b2 4908\n";
 * const [row] = parseProcNetUdp(text);
 * console.assert(row.localPort === 60322 && row.drops === 4908);
 * ```
 */
export function parseProcNetUdp(text: string): UdpSocketRow[] {
  const rows: UdpSocketRow[] = [];
  for (const line of text.split("\n")) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 13 || !/^\d+:$/.test(fields[0])) continue;
    const local = /:([0-9A-Fa-f]{4})$/.exec(fields[1]);
    const queues = /^[0-9A-Fa-f]+:([0-9A-Fa-f]+)$/.exec(fields[4]);
    if (!local || !queues) continue;
    if (!/^\d+$/.test(fields[9]) || !/^\d+$/.test(fields[12])) continue;
    const inode = Number(fields[9]);
    const drops = Number(fields[12]);
    rows.push({
      localPort: parseInt(local[1], 16),
      inode,
      rxQueueBytes: parseInt(queues[1], 16),
      drops,
    });
  }
  return rows;
}

/**
 * The socket inodes among `/proc/self/fd` link targets (`socket:[82892]`).
 *
 * @example
 * ```ts
 * import { socketInodes } from "./kernel_drops.ts";
 * console.assert(socketInodes(["/dev/null", "socket:[82892]"]).has(82892));
 * ```
 */
export function socketInodes(links: Iterable<string>): Set<number> {
  const inodes = new Set<number>();
  for (const link of links) {
    const match = /^socket:\[(\d+)\]$/.exec(link);
    if (match) inodes.add(Number(match[1]));
  }
  return inodes;
}

const TABLES = ["/proc/net/udp", "/proc/net/udp6"] as const;
/** File descriptors looked at for this process's socket (once per meter). */
const MAX_FD_SCANNED = 1024;

/** How the meter reads /proc: what it needs, each step of it. */
interface ProcAccess {
  /** A file's text, or undefined when it cannot be read. */
  readText(path: string): string | undefined;
  /** A symlink's target, or undefined. */
  readLink(path: string): string | undefined;
  /** Releases what the access holds. */
  close(): void;
}

/**
 * Why /proc cannot be read by this process, or undefined when it can.
 * Deno lets only `--allow-all` read /proc through its file API; with
 * `--allow-ffi` the meter reads it through libc instead.
 */
export function kernelDropsUnavailable(): string | undefined {
  if (Deno.build.os !== "linux") {
    return `kernel drop counters come from Linux's /proc, not on ${Deno.build.os}`;
  }
  const granted = (name: "ffi" | "read" | "run" | "sys" | "env" | "net") =>
    Deno.permissions.querySync({ name }).state === "granted";
  if (granted("ffi")) return undefined;
  const all = (["read", "run", "sys", "env", "net"] as const).every(granted);
  return all
    ? undefined
    : "reading /proc/net/udp needs --allow-ffi (or --allow-all)";
}

/**
 * Reads the kernel's drop counter of this process's UDP socket bound on
 * `port`. Linux only; where /proc cannot be read (another system, neither
 * `--allow-ffi` nor `--allow-all`) {@linkcode read} returns undefined and
 * never throws.
 */
export class KernelDropMeter {
  #inode: number | undefined;

  /**
   * Creates a meter for this process's socket on `port`.
   * @param port the socket's local port
   */
  constructor(readonly port: number) {}

  /** Datagrams dropped so far on the socket, or undefined when unknown. */
  read(): number | undefined {
    if (kernelDropsUnavailable() !== undefined) return undefined;
    const access = openProcAccess();
    if (access === undefined) return undefined;
    try {
      const rows: UdpSocketRow[] = [];
      for (const path of TABLES) {
        const text = access.readText(path);
        if (text !== undefined) rows.push(...parseProcNetUdp(text));
      }
      if (this.#inode === undefined) {
        const candidates = rows.filter((r) => r.localPort === this.port);
        if (candidates.length === 0) return undefined;
        const own = ownSocketInodes(access);
        const mine = candidates.filter((r) => own.has(r.inode));
        if (mine.length !== 1) return undefined;
        this.#inode = mine[0].inode;
      }
      return rows.find((r) => r.inode === this.#inode)?.drops;
    } finally {
      access.close();
    }
  }
}

/** Socket inodes among this process's file descriptors. */
function ownSocketInodes(access: ProcAccess): Set<number> {
  const links: string[] = [];
  for (let fd = 0; fd < MAX_FD_SCANNED; fd++) {
    const link = access.readLink(`/proc/self/fd/${fd}`);
    if (link !== undefined) links.push(link);
  }
  return socketInodes(links);
}

/** Deno's file API under --allow-all, else libc through FFI; undefined when neither works. */
function openProcAccess(): ProcAccess | undefined {
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    return {
      readText: (path) => attempt(() => Deno.readTextFileSync(path)),
      readLink: (path) => attempt(() => Deno.readLinkSync(path)),
      close: () => {},
    };
  }
  let lib;
  try {
    lib = Deno.dlopen("libc.so.6", {
      open: { parameters: ["buffer", "i32"], result: "i32" },
      read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
      close: { parameters: ["i32"], result: "i32" },
      readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
    });
  } catch {
    return undefined;
  }
  const libc = lib.symbols;
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const cString = (path: string) => encoder.encode(`${path}\0`);
  return {
    readText(path) {
      const fd = libc.open(cString(path), 0);
      if (fd < 0) return undefined;
      try {
        const chunks: Uint8Array[] = [];
        let total = 0;
        while (true) {
          const chunk = new Uint8Array(64 * 1024);
          const n = Number(libc.read(fd, chunk, BigInt(chunk.length)));
          if (n < 0) return undefined;
          if (n === 0) break;
          chunks.push(chunk.subarray(0, n));
          total += n;
        }
        const text = new Uint8Array(total);
        let at = 0;
        for (const chunk of chunks) {
          text.set(chunk, at);
          at += chunk.length;
        }
        return decoder.decode(text);
      } finally {
        libc.close(fd);
      }
    },
    readLink(path) {
      const target = new Uint8Array(256);
      const n = Number(
        libc.readlink(cString(path), target, BigInt(target.length)),
      );
      return n < 0 ? undefined : decoder.decode(target.subarray(0, n));
    },
    close: () => lib.close(),
  };
}

/** `read()`'s value, or undefined when it throws. */
function attempt<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch {
    return undefined;
  }
}
