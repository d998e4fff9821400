/**
 * The Deno UDP adapter: the only place that touches `Deno.listenDatagram`.
 * Reuses one receive buffer and copies each datagram out of it.
 *
 * @module
 */
import type { PeerAddress } from "../protocol/address.ts";
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
export class UdpTransport implements DatagramTransport {
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
      const [view, addr] = received;
      const from = addr as Deno.NetAddr;
      yield {
        data: view.slice(),
        // A link-local IPv6 source may carry a zone id ("fe80::1%eth0"),
        // which address values cannot express: the address alone is kept.
        from: { hostname: stripZone(from.hostname), port: from.port },
      };
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
