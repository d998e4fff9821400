/**
 * An in-memory datagram network for fast protocol tests: transports bound on
 * a {@linkcode MemoryNetwork} deliver to each other without sockets, and a
 * test can inject datagrams with any source address (spoofing).
 *
 * @module
 */
import { formatAddress, type PeerAddress } from "../protocol/address.ts";
import type { Datagram, DatagramTransport } from "./transport.ts";

/** A set of in-memory endpoints that can reach each other. */
export class MemoryNetwork {
  readonly #endpoints = new Map<string, MemoryTransport>();
  #nextPort = 40000;

  /** Binds an endpoint; port 0 picks the next free one. */
  bind(hostname = "127.0.0.1", port = 0): MemoryTransport {
    const address = { hostname, port: port === 0 ? this.#nextPort++ : port };
    const key = formatAddress(address);
    if (this.#endpoints.has(key)) {
      throw new Deno.errors.AddrInUse(`Address ${key} is already bound`);
    }
    const transport = new MemoryTransport(this, address);
    this.#endpoints.set(key, transport);
    return transport;
  }

  /** Delivers `data` to whatever is bound at `to`, as if sent from `from`. Returns whether anyone was there. */
  deliver(data: Uint8Array, from: PeerAddress, to: PeerAddress): boolean {
    const target = this.#endpoints.get(formatAddress(to));
    if (!target) return false;
    target.enqueue({ data: data.slice(), from });
    return true;
  }

  /** @internal */
  unbind(transport: MemoryTransport): void {
    this.#endpoints.delete(formatAddress(transport.localAddress));
  }
}

/** One endpoint of a {@linkcode MemoryNetwork}. */
export class MemoryTransport implements DatagramTransport {
  readonly localAddress: PeerAddress;
  readonly #network: MemoryNetwork;
  readonly #queue: Datagram[] = [];
  #wake: (() => void) | undefined;
  #closed = false;

  /** @internal use {@linkcode MemoryNetwork.bind} */
  constructor(network: MemoryNetwork, address: PeerAddress) {
    this.#network = network;
    this.localAddress = address;
  }

  /** @internal */
  enqueue(datagram: Datagram): void {
    if (this.#closed) return;
    this.#queue.push(datagram);
    this.#wake?.();
  }

  /** Yields received datagrams until the transport is closed. */
  async *[Symbol.asyncIterator](): AsyncIterator<Datagram> {
    while (true) {
      const next = this.#queue.shift();
      if (next) {
        yield next;
        continue;
      }
      if (this.#closed) return;
      await new Promise<void>((resolve) => this.#wake = resolve);
      this.#wake = undefined;
    }
  }

  send(data: Uint8Array, to: PeerAddress): Promise<void> {
    if (this.#closed) {
      return Promise.reject(new Deno.errors.BadResource("Transport closed"));
    }
    this.#network.deliver(data, this.localAddress, to);
    return Promise.resolve();
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#network.unbind(this);
    this.#wake?.();
  }
}
