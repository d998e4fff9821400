/**
 * A UDP {@linkcode DatagramTransport} on its own libc socket, driven through
 * `Deno.dlopen` with Linux's batch syscalls (issue 13): one `recvmmsg`
 * drains up to {@linkcode UdpMmsgBindOptions.batchSize} datagrams per
 * wake-up, and the sends made in one turn of the event loop leave in one
 * `sendmmsg` (flushed in a microtask, before the loop waits again).
 *
 * Receiving: a non-blocking `recvmmsg` on the event loop's thread first;
 * when the socket is empty, one blocking `recvmmsg` (`MSG_WAITFORONE`) on
 * a Deno FFI worker thread waits for the next datagram. `close()` wakes that
 * call with `shutdown()`, and the socket and libc are released once it has
 * returned. Sending: `MSG_DONTWAIT`; when the socket's send buffer is full
 * the rest goes out by a blocking `sendmmsg` on a worker thread.
 *
 * IPv4 on Linux (x86_64, aarch64) only; no multicast membership. Loading
 * libc needs `--allow-ffi`, which lifts Deno's sandbox: hence opt-in (the
 * server's `--udp-batch-syscalls`). Measured in PERFORMANCE.md.
 *
 * @module
 */
import type { PeerAddress } from "../wire/address.ts";
import type { Datagram, DatagramTransport } from "./transport.ts";
import {
  address,
  destinationOf,
  errnoError,
  IOVEC,
  type Libc,
  LINUX,
  MAX_SEND_BATCH,
  MMSGHDR,
  offHeap,
  openUdpSocket,
  peerOf,
  SEND_ARENA_BYTES,
  setHeader,
  SOCKADDR_IN,
  udpBatchSyscallsUnavailable,
  type UdpMmsgBindOptions,
  UdpMmsgError,
} from "./udp_mmsg_libc.ts";

export { udpBatchSyscallsUnavailable, UdpMmsgError };
export type { UdpMmsgBindOptions };

/** Counters of a {@linkcode UdpMmsgTransport}, syscalls included. */
export interface UdpMmsgStats {
  /** `recvmmsg` calls (non-blocking and blocking). */
  readonly recvmmsgCalls: number;
  /** `recvmmsg` calls that blocked on a worker thread. */
  readonly blockingReceives: number;
  /** `sendmmsg` calls (non-blocking and blocking). */
  readonly sendmmsgCalls: number;
  /** Datagrams received. */
  readonly datagramsReceived: number;
  /** Datagrams sent. */
  readonly datagramsSent: number;
}

/** A pending send: its bytes, where to, and its promise's settlers. */
interface QueuedSend {
  readonly data: Uint8Array;
  readonly to: PeerAddress;
  readonly resolve: () => void;
  readonly reject: (error: Error) => void;
}

/** A UDP socket driven by recvmmsg/sendmmsg, as a {@linkcode DatagramTransport}. */
export class UdpMmsgTransport implements DatagramTransport {
  readonly localAddress: PeerAddress;
  readonly #lib: Libc;
  readonly #fd: number;
  readonly #errno: Deno.UnsafePointerView;
  readonly #batch: number;
  readonly #slotSize: number;
  /** Receive: datagram slots, source addresses, iovecs, headers. */
  readonly #rxData: Uint8Array;
  readonly #rxNames: Uint8Array;
  readonly #rxIovecs: Uint8Array;
  readonly #rxHeaders: Uint8Array;
  readonly #rxView: DataView;
  /** Send: the staged bytes, destination addresses, iovecs, headers. */
  readonly #txArena = offHeap(SEND_ARENA_BYTES);
  readonly #txNames = offHeap(MAX_SEND_BATCH * SOCKADDR_IN);
  readonly #txIovecs = offHeap(MAX_SEND_BATCH * IOVEC);
  readonly #txHeaders = offHeap(MAX_SEND_BATCH * MMSGHDR);
  readonly #txView = new DataView(this.#txHeaders.buffer);
  readonly #txIovecView = new DataView(this.#txIovecs.buffer);
  readonly #txArenaAddress: bigint;
  #queue: QueuedSend[] = [];
  #flushScheduled = false;
  /** Whether receiveBatches() was called (one reader at most). */
  #hasReader = false;
  /** A blocking call on a worker thread (the socket must outlive it). */
  #receiving = false;
  #sendingBlocked = false;
  #closed = false;
  #released = false;
  #stats = {
    recvmmsgCalls: 0,
    blockingReceives: 0,
    sendmmsgCalls: 0,
    datagramsReceived: 0,
    datagramsSent: 0,
  };

  private constructor(
    lib: Libc,
    fd: number,
    batchSize: number,
    receiveBufferSize: number,
  ) {
    this.#lib = lib;
    this.#fd = fd;
    this.#errno = new Deno.UnsafePointerView(
      lib.symbols.__errno_location()!,
    );
    this.#batch = batchSize;
    this.#slotSize = receiveBufferSize;
    this.#rxData = offHeap(this.#batch * this.#slotSize);
    this.#rxNames = offHeap(this.#batch * SOCKADDR_IN);
    this.#rxIovecs = offHeap(this.#batch * IOVEC);
    this.#rxHeaders = offHeap(this.#batch * MMSGHDR);
    this.#rxView = new DataView(this.#rxHeaders.buffer);
    const data = address(this.#rxData);
    const names = address(this.#rxNames);
    const iovecs = address(this.#rxIovecs);
    const iovecView = new DataView(this.#rxIovecs.buffer);
    for (let i = 0; i < this.#batch; i++) {
      iovecView.setBigUint64(
        i * IOVEC,
        data + BigInt(i * this.#slotSize),
        true,
      );
      iovecView.setBigUint64(i * IOVEC + 8, BigInt(this.#slotSize), true);
      setHeader(this.#rxView, i, names, iovecs);
    }
    this.#txArenaAddress = address(this.#txArena);
    const txNames = address(this.#txNames);
    const txIovecs = address(this.#txIovecs);
    for (let i = 0; i < MAX_SEND_BATCH; i++) {
      setHeader(this.#txView, i, txNames, txIovecs);
    }
    const name = new Uint8Array(SOCKADDR_IN);
    const length = new Uint32Array([SOCKADDR_IN]);
    this.#check(lib.symbols.getsockname(fd, name, length), "getsockname");
    this.localAddress = peerOf(name, 0);
  }

  /**
   * Opens and binds the socket.
   * @throws {UdpMmsgError} without `--allow-ffi`, off Linux, for an address that is not IPv4
   * @throws {Deno.errors.AddrInUse} when the port is taken
   * @throws {Deno.errors.AddrNotAvailable} when the address is not this machine's
   */
  static bind(options: UdpMmsgBindOptions): Promise<UdpMmsgTransport> {
    try {
      return Promise.resolve(UdpMmsgTransport.#open(options));
    } catch (error) {
      return Promise.reject(error);
    }
  }

  /** {@linkcode bind}'s work, throwing. */
  static #open(options: UdpMmsgBindOptions): UdpMmsgTransport {
    const { lib, fd, batchSize, receiveBufferSize } = openUdpSocket(options);
    try {
      return new UdpMmsgTransport(lib, fd, batchSize, receiveBufferSize);
    } catch (error) {
      lib.symbols.close(fd);
      lib.close();
      throw error;
    }
  }

  /** Counters, syscalls included (tests and the bench read them). */
  stats(): UdpMmsgStats {
    return { ...this.#stats };
  }

  /** Yields received datagrams until the transport is closed. */
  async *[Symbol.asyncIterator](): AsyncIterator<Datagram> {
    for await (const batch of this.receiveBatches()) yield* batch;
  }

  /**
   * Yields received datagrams in batches until the transport is closed:
   * each batch is what one `recvmmsg` drained (up to the batch size). A
   * failing receive throws a {@linkcode UdpMmsgError}.
   */
  async *receiveBatches(): AsyncIterableIterator<readonly Datagram[]> {
    if (this.#hasReader) {
      throw new UdpMmsgError("the transport has a reader already");
    }
    this.#hasReader = true;
    let interrupted = 0;
    while (!this.#closed) {
      this.#resetNames();
      this.#stats.recvmmsgCalls++;
      let count = this.#lib.symbols.recvmmsg(
        this.#fd,
        this.#rxHeaders,
        this.#batch,
        LINUX.MSG_DONTWAIT,
        null,
      );
      if (count < 0) {
        const errno = this.#errno.getInt32();
        if (errno === LINUX.EINTR) continue;
        if (errno !== LINUX.EAGAIN) {
          if (this.#closed) break;
          throw errnoError("recvmmsg", errno);
        }
        this.#resetNames();
        this.#receiving = true;
        this.#stats.recvmmsgCalls++;
        this.#stats.blockingReceives++;
        try {
          count = await this.#lib.symbols.recvmmsg_blocking(
            this.#fd,
            this.#rxHeaders,
            this.#batch,
            LINUX.MSG_WAITFORONE,
            null,
          );
        } finally {
          this.#receiving = false;
          if (this.#closed) this.#release();
        }
        if (this.#closed) break;
        // The worker thread's errno is out of reach: the non-blocking
        // call that follows reports an error that persists.
        if (count < 0) {
          if (++interrupted > 1000) {
            throw new UdpMmsgError("recvmmsg keeps failing on its thread");
          }
          continue;
        }
      }
      interrupted = 0;
      if (count > 0) yield this.#received(count);
    }
  }

  /** Queues one datagram; the turn's sends leave in one `sendmmsg`. */
  send(data: Uint8Array, to: PeerAddress): Promise<void> {
    if (this.#closed) {
      return Promise.reject(new Deno.errors.BadResource("transport closed"));
    }
    return new Promise<void>((resolve, reject) => {
      this.#queue.push({ data, to, resolve, reject });
      if (!this.#flushScheduled && !this.#sendingBlocked) {
        this.#flushScheduled = true;
        queueMicrotask(this.#flush);
      }
    });
  }

  /** Sends what is queued, then closes the socket (once no thread uses it). Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    if (!this.#sendingBlocked) this.#flush();
    this.#closed = true;
    for (const queued of this.#queue.splice(0)) {
      queued.reject(new Deno.errors.BadResource("transport closed"));
    }
    // Wakes a blocking recvmmsg (it returns at once on a shut-down socket).
    this.#lib.symbols.shutdown(this.#fd, LINUX.SHUT_RDWR);
    this.#release();
  }

  /** Closes the socket and libc once no worker thread is in a call on them. */
  #release(): void {
    if (this.#released || this.#receiving || this.#sendingBlocked) return;
    this.#released = true;
    this.#lib.symbols.close(this.#fd);
    this.#lib.close();
  }

  /** Sends the queued datagrams, as many per `sendmmsg` as fit. */
  readonly #flush = (): void => {
    this.#flushScheduled = false;
    while (this.#queue.length > 0 && !this.#released) {
      const staged = this.#stage();
      let done = 0;
      while (done < staged.length) {
        this.#stats.sendmmsgCalls++;
        const sent = this.#lib.symbols.sendmmsg(
          this.#fd,
          this.#txHeaders.subarray(done * MMSGHDR),
          staged.length - done,
          LINUX.MSG_DONTWAIT,
        );
        if (sent > 0) {
          for (let i = done; i < done + sent; i++) staged[i].resolve();
          this.#stats.datagramsSent += sent;
          done += sent;
          continue;
        }
        const errno = this.#errno.getInt32();
        if (errno === LINUX.EINTR) continue;
        if (errno === LINUX.EAGAIN) {
          this.#sendBlocking(staged.slice(done), done);
          return;
        }
        staged[done++].reject(errnoError("sendmmsg", errno));
      }
    }
  };

  /** Sends the rest of a staged batch from a worker thread (the send buffer was full). */
  async #sendBlocking(rest: QueuedSend[], offset: number): Promise<void> {
    this.#sendingBlocked = true;
    this.#stats.sendmmsgCalls++;
    let sent = -1;
    try {
      sent = await this.#lib.symbols.sendmmsg_blocking(
        this.#fd,
        this.#txHeaders.subarray(offset * MMSGHDR),
        rest.length,
        0,
      );
    } finally {
      this.#sendingBlocked = false;
    }
    const delivered = Math.max(0, sent);
    for (let i = 0; i < delivered; i++) rest[i].resolve();
    this.#stats.datagramsSent += delivered;
    // What the thread did not send goes back to the front of the queue.
    this.#queue.unshift(...rest.slice(delivered));
    if (this.#closed) {
      for (const queued of this.#queue.splice(0)) {
        queued.reject(new Deno.errors.BadResource("transport closed"));
      }
      this.#release();
    } else if (sent <= 0) {
      // Nothing went: the non-blocking retry reports the error.
      const first = this.#queue.shift();
      first?.reject(new UdpMmsgError("sendmmsg failed on its thread"));
      this.#flush();
    } else this.#flush();
  }

  /** Copies queued sends into the arena and fills their headers; returns them. */
  #stage(): QueuedSend[] {
    const staged: QueuedSend[] = [];
    let bytes = 0;
    let taken = 0;
    const queue = this.#queue;
    for (; taken < queue.length && staged.length < MAX_SEND_BATCH; taken++) {
      const queued = queue[taken];
      const { data } = queued;
      if (bytes + data.length > SEND_ARENA_BYTES && staged.length > 0) break;
      let name: Uint8Array;
      try {
        if (data.length > SEND_ARENA_BYTES) {
          throw new UdpMmsgError(`a ${data.length}-byte datagram is too large`);
        }
        name = destinationOf(queued.to);
      } catch (error) {
        queued.reject(error as Error);
        continue;
      }
      const count = staged.length;
      this.#txArena.set(data, bytes);
      this.#txNames.set(name, count * SOCKADDR_IN);
      const iovec = count * IOVEC;
      this.#txIovecView.setBigUint64(
        iovec,
        this.#txArenaAddress + BigInt(bytes),
        true,
      );
      this.#txIovecView.setBigUint64(iovec + 8, BigInt(data.length), true);
      bytes += data.length;
      staged.push(queued);
    }
    queue.splice(0, taken);
    return staged;
  }

  /** The first `count` received datagrams, copied out of their slots. */
  #received(count: number): Datagram[] {
    const batch: Datagram[] = new Array(count);
    for (let i = 0; i < count; i++) {
      const length = this.#rxView.getUint32(i * MMSGHDR + 56, true);
      const start = i * this.#slotSize;
      batch[i] = {
        data: this.#rxData.slice(
          start,
          start + Math.min(length, this.#slotSize),
        ),
        from: peerOf(this.#rxNames, i * SOCKADDR_IN),
      };
    }
    this.#stats.datagramsReceived += count;
    return batch;
  }

  /** Resets each receive header's address length, which the kernel overwrites. */
  #resetNames(): void {
    for (let i = 0; i < this.#batch; i++) {
      this.#rxView.setUint32(i * MMSGHDR + 8, SOCKADDR_IN, true);
    }
  }

  /** Throws for a failed call on the event loop's thread. */
  #check(result: number, call: string): void {
    if (result < 0) throw errnoError(call, this.#errno.getInt32());
  }
}
