/**
 * Linux's socket ABI as the batch-syscall transport (udp_mmsg.ts) needs it:
 * libc's symbols for `Deno.dlopen`, the constants and struct layouts
 * (LP64: x86_64, aarch64), errno to typed errors, and `struct sockaddr_in`
 * to and from address values, and the opening of a bound socket.
 *
 * @module
 */
import type { PeerAddress } from "../wire/address.ts";
import { LIBC } from "./sched_idle.ts";

/** Why the batch-syscall transport cannot be made or used. */
export class UdpMmsgError extends Error {
  override name = "UdpMmsgError";
}

/** Options of `UdpMmsgTransport.bind` (udp_mmsg.ts). */
export interface UdpMmsgBindOptions {
  /** Local IPv4 address to bind (a literal, e.g. 127.0.0.1 or 0.0.0.0). */
  readonly hostname: string;
  /** Local port; 0 picks a free one. */
  readonly port: number;
  /** Set SO_REUSEADDR and SO_REUSEPORT. */
  readonly reuseAddress?: boolean;
  /** Largest datagram accepted; larger ones are truncated. Default 65535. */
  readonly receiveBufferSize?: number;
  /** Datagrams one `recvmmsg` drains at most. Default 32. */
  readonly batchSize?: number;
}

/** Linux constants (`<sys/socket.h>`, `<errno.h>`; the same on x86_64 and aarch64). */
export const LINUX = {
  AF_INET: 2,
  SOCK_DGRAM: 2,
  SOCK_CLOEXEC: 0o2000000,
  SOL_SOCKET: 1,
  SO_REUSEADDR: 2,
  SO_REUSEPORT: 15,
  SHUT_RDWR: 2,
  MSG_DONTWAIT: 0x40,
  MSG_WAITFORONE: 0x10000,
  EINTR: 4,
  EAGAIN: 11,
} as const;
/** Errno names for messages (Linux, generic table). */
const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  4: "EINTR",
  9: "EBADF",
  11: "EAGAIN",
  13: "EACCES",
  22: "EINVAL",
  90: "EMSGSIZE",
  97: "EAFNOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  101: "ENETUNREACH",
  105: "ENOBUFS",
  111: "ECONNREFUSED",
};
/** `struct mmsghdr` (LP64): a 56-byte msghdr, msg_len, padding. */
export const MMSGHDR = 64;
/** `struct iovec` (LP64). */
export const IOVEC = 16;
/** `struct sockaddr_in`. */
export const SOCKADDR_IN = 16;
/** Messages one `sendmmsg` takes at most (UIO_MAXIOV). */
export const MAX_SEND_BATCH = 1024;
/** Bytes staged for one `sendmmsg` before a flush splits. */
export const SEND_ARENA_BYTES = 1 << 20;

/** The libc functions the transport calls; `_blocking` ones run on a Deno FFI worker thread. */
export const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  getsockname: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  setsockopt: {
    parameters: ["i32", "i32", "i32", "buffer", "u32"],
    result: "i32",
  },
  recvmmsg: {
    parameters: ["i32", "buffer", "u32", "i32", "pointer"],
    result: "i32",
  },
  recvmmsg_blocking: {
    name: "recvmmsg",
    parameters: ["i32", "buffer", "u32", "i32", "pointer"],
    result: "i32",
    nonblocking: true,
  },
  sendmmsg: { parameters: ["i32", "buffer", "u32", "i32"], result: "i32" },
  sendmmsg_blocking: {
    name: "sendmmsg",
    parameters: ["i32", "buffer", "u32", "i32"],
    result: "i32",
    nonblocking: true,
  },
  shutdown: { parameters: ["i32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

/** libc, opened with {@linkcode SYMBOLS}. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

/**
 * Why this process cannot use the batch-syscall transport (another system,
 * no `--allow-ffi`), in words that say what to do; undefined when it can.
 */
export function udpBatchSyscallsUnavailable(): string | undefined {
  if (Deno.build.os !== "linux") {
    return `recvmmsg/sendmmsg exist on Linux only, not on ${Deno.build.os}`;
  }
  if (Deno.build.arch !== "x86_64" && Deno.build.arch !== "aarch64") {
    return `the batch-syscall transport knows the struct layouts of x86_64 and aarch64 only, not ${Deno.build.arch}`;
  }
  const { state } = Deno.permissions.querySync({ name: "ffi" });
  return state === "granted"
    ? undefined
    : `the batch-syscall transport calls ${LIBC} and needs deno run --allow-ffi`;
}

/**
 * A zeroed buffer outside V8's heap (an explicit ArrayBuffer; a small typed
 * array may live on the heap, where the garbage collector moves it), so its
 * address can be handed to the kernel.
 */
export function offHeap(length: number): Uint8Array {
  return new Uint8Array(new ArrayBuffer(length));
}

/** The address of a buffer's first byte (the buffer must stay referenced). */
export function address(buffer: Uint8Array): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer)));
}

/** errno of the event loop's thread, after a call that failed. */
function errnoOf(lib: Libc): number {
  return new Deno.UnsafePointerView(lib.symbols.__errno_location()!)
    .getInt32();
}

/** The Deno error a bind failure maps to (as `Deno.listenDatagram` throws), else a {@linkcode UdpMmsgError}. */
export function errnoError(call: string, errno: number): Error {
  const message = `${call}: ${ERRNO_NAMES[errno] ?? `errno ${errno}`}`;
  if (errno === 98) return new Deno.errors.AddrInUse(message);
  if (errno === 99) return new Deno.errors.AddrNotAvailable(message);
  if (errno === 13 || errno === 1) {
    return new Deno.errors.PermissionDenied(message);
  }
  return new UdpMmsgError(message);
}

/** Parses a dotted IPv4 literal; undefined for anything else. */
function ipv4Bytes(hostname: string): number[] | undefined {
  const parts = hostname.split(".");
  if (parts.length !== 4) return undefined;
  const bytes = parts.map((part) =>
    /^\d{1,3}$/.test(part) ? Number(part) : 256
  );
  return bytes.every((byte) => byte <= 255) ? bytes : undefined;
}

/** `struct sockaddr_in` for an IPv4 address and port. */
function sockaddrOf(to: PeerAddress): Uint8Array {
  const bytes = ipv4Bytes(to.hostname);
  if (
    bytes === undefined || !Number.isInteger(to.port) || to.port < 0 ||
    to.port > 65535
  ) {
    throw new UdpMmsgError(
      `the batch-syscall transport takes IPv4 literals only, not ${to.hostname}:${to.port}: use the default UDP transport for IPv6 or host names`,
    );
  }
  const name = new Uint8Array(SOCKADDR_IN);
  name[0] = LINUX.AF_INET;
  name[2] = to.port >> 8;
  name[3] = to.port & 0xff;
  name.set(bytes, 4);
  return name;
}

/** Destination addresses, made once per address object (members keep theirs). */
const destinations = new WeakMap<PeerAddress, Uint8Array>();

/** {@linkcode sockaddrOf}, cached per address object. */
export function destinationOf(to: PeerAddress): Uint8Array {
  let name = destinations.get(to);
  if (name === undefined) {
    name = sockaddrOf(to);
    destinations.set(to, name);
  }
  return name;
}

/** The address in a `struct sockaddr_in` at `at`. */
export function peerOf(names: Uint8Array, at: number): PeerAddress {
  return {
    hostname: `${names[at + 4]}.${names[at + 5]}.${names[at + 6]}.${
      names[at + 7]
    }`,
    port: (names[at + 2] << 8) | names[at + 3],
  };
}

/** Fills `struct mmsghdr` number `i` of `view`: its address, one iovec, no control data. */
export function setHeader(
  view: DataView,
  i: number,
  names: bigint,
  iovecs: bigint,
): void {
  const at = i * MMSGHDR;
  view.setBigUint64(at, names + BigInt(i * SOCKADDR_IN), true);
  view.setUint32(at + 8, SOCKADDR_IN, true);
  view.setBigUint64(at + 16, iovecs + BigInt(i * IOVEC), true);
  view.setBigUint64(at + 24, 1n, true);
}

/**
 * Loads libc and opens a UDP socket bound as `options` say; the caller
 * owns both (closes the socket, then the library).
 * @throws {UdpMmsgError} when unavailable, or for an address that is not IPv4
 * @throws {Deno.errors.AddrInUse} when the port is taken
 */
export function openUdpSocket(
  options: UdpMmsgBindOptions,
): { lib: Libc; fd: number; batchSize: number; receiveBufferSize: number } {
  const unavailable = udpBatchSyscallsUnavailable();
  if (unavailable) throw new UdpMmsgError(unavailable);
  const { batchSize = 32, receiveBufferSize = 65535 } = options;
  if (!Number.isInteger(batchSize) || batchSize < 1 || batchSize > 1024) {
    throw new RangeError(`batchSize ${batchSize}: give 1 to 1024`);
  }
  if (
    !Number.isInteger(receiveBufferSize) || receiveBufferSize < 1 ||
    receiveBufferSize > 65535
  ) {
    throw new RangeError(
      `receiveBufferSize ${receiveBufferSize}: give 1 to 65535`,
    );
  }
  const name = sockaddrOf(options);
  let lib: Libc;
  try {
    lib = Deno.dlopen(LIBC, SYMBOLS);
  } catch (error) {
    throw new UdpMmsgError(
      `cannot load ${LIBC}: ${(error as Error).message}`,
    );
  }
  const libc = lib.symbols;
  const fd = libc.socket(
    LINUX.AF_INET,
    LINUX.SOCK_DGRAM | LINUX.SOCK_CLOEXEC,
    0,
  );
  try {
    if (fd < 0) throw errnoError("socket", errnoOf(lib));
    if (options.reuseAddress) {
      const on = new Int32Array([1]);
      for (const option of [LINUX.SO_REUSEADDR, LINUX.SO_REUSEPORT]) {
        if (libc.setsockopt(fd, LINUX.SOL_SOCKET, option, on, 4) !== 0) {
          throw errnoError("setsockopt", errnoOf(lib));
        }
      }
    }
    if (libc.bind(fd, name, SOCKADDR_IN) !== 0) {
      throw errnoError("bind", errnoOf(lib));
    }
    return { lib, fd, batchSize, receiveBufferSize };
  } catch (error) {
    if (fd >= 0) libc.close(fd);
    lib.close();
    throw error;
  }
}
