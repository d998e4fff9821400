/**
 * An in-memory datagram network for fast protocol tests: transports bound on
 * a {@linkcode MemoryNetwork} deliver to each other without sockets, and a
 * test can inject datagrams with any source address (spoofing). Group
 * members ({@linkcode MemoryNetwork.joinGroup}) stand in for sockets joined
 * to a multicast address: a datagram sent there reaches each of them.
 *
 * @module
 */
import { formatAddress, type PeerAddress } from "../wire/address.ts";
import type { Datagram, DatagramTransport } from "./transport.ts";

/** A set of in-memory endpoints that can reach each other. */
export class MemoryNetwork {
  readonly #endpoints = new Map<string, MemoryTransport>();
  readonly #groups = new Map<string, Set<MemoryTransport>>();
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

  /**
   * An endpoint that receives a copy of every datagram sent to `group` (any
   * number may join one address), as a socket bound to the group's port
   * with address reuse and joined to it would. Its own sends come from the
   * group address.
   */
  joinGroup(group: PeerAddress): MemoryTransport {
    const key = formatAddress(group);
    const transport = new MemoryTransport(this, { ...group });
    let members = this.#groups.get(key);
    if (!members) this.#groups.set(key, members = new Set());
    members.add(transport);
    return transport;
  }

  /** Delivers `data` to whatever is bound at `to`, as if sent from `from`. Returns whether anyone was there. */
  deliver(data: Uint8Array, from: PeerAddress, to: PeerAddress): boolean {
    const key = formatAddress(to);
    const members = this.#groups.get(key);
    if (members) {
      for (const member of members) {
        member.enqueue({ data: data.slice(), from });
      }
      return members.size > 0;
    }
    const target = this.#endpoints.get(key);
    if (!target) return false;
    target.enqueue({ data: data.slice(), from });
    return true;
  }

  /** @internal */
  unbind(transport: MemoryTransport): void {
    const key = formatAddress(transport.localAddress);
    const members = this.#groups.get(key);
    if (members?.delete(transport)) {
      if (members.size === 0) this.#groups.delete(key);
      return;
    }
    this.#endpoints.delete(key);
  }
}

/** One endpoint of a {@linkcode MemoryNetwork}. */
export class MemoryTransport implements DatagramTransport, Disposable {
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

  /** Closes the transport (`using transport = ...`). */
  [Symbol.dispose](): void {
    this.close();
  }
}
