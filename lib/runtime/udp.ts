/**
 * The Deno UDP adapter: the only place that touches `Deno.listenDatagram`.
 * Reuses one receive buffer and copies each datagram out of it.
 *
 * @module
 */
import type { PeerAddress } from "../wire/address.ts";
import type { Datagram, DatagramTransport } from "./transport.ts";

/** Multicast membership for {@linkcode UdpTransport.bind}. */
export interface MulticastOptions {
  /** IPv4 group to join, e.g. 224.1.1.1. */
  readonly group: string;
  /** Local interface address to join on; "0.0.0.0" lets the OS choose. */
  readonly interfaceAddress?: string;
}

/** Options of {@linkcode UdpTransport.bind}. */
export interface UdpBindOptions {
  /** Local address to bind. */
  readonly hostname: string;
  /** Local port; 0 picks a free one. */
  readonly port: number;
  /** Set SO_REUSEADDR (lets several processes share a multicast port). */
  readonly reuseAddress?: boolean;
  /** Join this multicast group after binding. */
  readonly multicast?: MulticastOptions;
  /** Largest datagram accepted; larger ones are truncated by the OS. Default 65535. */
  readonly receiveBufferSize?: number;
}

/** A UDP socket as a {@linkcode DatagramTransport}. */
export class UdpTransport implements DatagramTransport, Disposable {
  readonly localAddress: PeerAddress;
  readonly #conn: Deno.DatagramConn;
  readonly #buffer: Uint8Array;
  #membership: Deno.MulticastV4Membership | undefined;
  #closed = false;

  private constructor(conn: Deno.DatagramConn, bufferSize: number) {
    this.#conn = conn;
    this.#buffer = new Uint8Array(bufferSize);
    const addr = conn.addr as Deno.NetAddr;
    this.localAddress = { hostname: addr.hostname, port: addr.port };
  }

  /**
   * Binds a UDP socket (and joins a multicast group when asked).
   * @throws {Deno.errors.AddrInUse} when the port is taken
   */
  static async bind(options: UdpBindOptions): Promise<UdpTransport> {
    const conn = Deno.listenDatagram({
      transport: "udp",
      hostname: options.hostname,
      port: options.port,
      reuseAddress: options.reuseAddress ?? false,
      loopback: true,
    });
    const transport = new UdpTransport(
      conn,
      options.receiveBufferSize ?? 65535,
    );
    if (options.multicast) {
      try {
        transport.#membership = await conn.joinMulticastV4(
          options.multicast.group,
          options.multicast.interfaceAddress ?? "0.0.0.0",
        );
      } catch (error) {
        transport.close();
        throw error;
      }
    }
    return transport;
  }

  /** Yields received datagrams until the transport is closed. */
  async *[Symbol.asyncIterator](): AsyncIterator<Datagram> {
    while (!this.#closed) {
      let received: [Uint8Array, Deno.Addr];
      try {
        received = await this.#conn.receive(this.#buffer);
      } catch (error) {
        if (this.#closed || error instanceof Deno.errors.Interrupted) return;
        if (error instanceof Deno.errors.BadResource) return;
        throw error;
      }
      yield datagramOf(...received);
    }
  }

  /**
   * Yields received datagrams in batches until the transport is closed: up
   * to {@linkcode MAX_RECEIVES_IN_FLIGHT} receives wait on the socket at
   * once, so when it holds several datagrams one wake-up of the reader gets
   * all that completed together. Deno offers no batch or non-blocking
   * receive; the number of receives in flight follows the load: it doubles
   * when the reader comes back to datagrams already waiting, and falls by
   * one when it had to wait for a batch that filled at most half of them,
   * so a quiet socket has one. Ends when the transport is closed (a reader
   * that stops earlier leaves its receives to end at the close).
   */
  async *receiveBatches(): AsyncIterableIterator<readonly Datagram[]> {
    let ready: Datagram[] = [];
    let failure: unknown;
    let wake: (() => void) | undefined;
    let inFlight = 0;
    let depth = MAX_RECEIVES_IN_FLIGHT;
    const receiver = async () => {
      inFlight++;
      const buffer = new Uint8Array(this.#buffer.length);
      try {
        while (!this.#closed && inFlight <= depth) {
          const [view, addr] = await this.#conn.receive(buffer);
          ready.push(datagramOf(view, addr));
          wake?.();
        }
      } catch (error) {
        if (
          !this.#closed && !(error instanceof Deno.errors.Interrupted) &&
          !(error instanceof Deno.errors.BadResource)
        ) failure ??= error;
      } finally {
        inFlight--;
        wake?.();
      }
    };
    const receivers = new Set<Promise<void>>();
    try {
      while (true) {
        while (inFlight < depth && !this.#closed) {
          const running = receiver();
          receivers.add(running);
          void running.then(() => receivers.delete(running));
        }
        // Datagrams waiting when the reader comes back: a backlog.
        let waited = false;
        while (ready.length === 0 && failure === undefined && !this.#closed) {
          waited = true;
          await new Promise<void>((resolve) => wake = resolve);
          wake = undefined;
        }
        if (ready.length > 0) {
          const batch = ready;
          ready = [];
          if (!waited) depth = Math.min(MAX_RECEIVES_IN_FLIGHT, depth * 2);
          else if (depth > 1 && batch.length * 2 <= depth) depth--;
          yield batch;
        }
        if (failure !== undefined) throw failure;
        if (this.#closed) break;
      }
    } finally {
      depth = 0;
      if (this.#closed) await Promise.all(receivers);
    }
  }

  async send(data: Uint8Array, to: PeerAddress): Promise<void> {
    await this.#conn.send(data, netAddr(to));
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const membership = this.#membership;
    this.#membership = undefined;
    if (membership) {
      // Leaving is best effort: the socket closes right after, which leaves too.
      membership.leave().catch(() => {});
    }
    this.#conn.close();
  }

  /** Closes the transport (`using transport = ...`). */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** Receives a batch keeps waiting on one socket at most. */
export const MAX_RECEIVES_IN_FLIGHT = 16;

/** A received datagram, copied out of the receive buffer. */
function datagramOf(view: Uint8Array, addr: Deno.Addr): Datagram {
  const from = addr as Deno.NetAddr;
  return {
    data: view.slice(),
    // A link-local IPv6 source may carry a zone id ("fe80::1%eth0"),
    // which address values cannot express: the address alone is kept.
    from: { hostname: stripZone(from.hostname), port: from.port },
  };
}

/** Removes an IPv6 zone id (`%eth0`) from a literal address. */
function stripZone(hostname: string): string {
  const percent = hostname.indexOf("%");
  return percent < 0 ? hostname : hostname.slice(0, percent);
}

/** Deno socket addresses, made once per address object (members keep theirs). */
const netAddrs = new WeakMap<PeerAddress, Deno.NetAddr>();

function netAddr(to: PeerAddress): Deno.NetAddr {
  let addr = netAddrs.get(to);
  if (addr === undefined) {
    addr = { transport: "udp", hostname: to.hostname, port: to.port };
    netAddrs.set(to, addr);
  }
  return addr;
}
