/**
 * The datagram transport the relay logic depends on: an async iterable of
 * incoming datagrams, `send`, `close`. {@linkcode UdpTransport} is the Deno
 * implementation; {@linkcode MemoryNetwork} an in-memory one for tests.
 *
 * @module
 */
import type { PeerAddress } from "../wire/address.ts";

/** One received datagram. */
export interface Datagram {
  /** The datagram's bytes (owned by the receiver; not reused). */
  readonly data: Uint8Array;
  /** Source address as the socket saw it. */
  readonly from: PeerAddress;
}

/** A bound datagram endpoint. */
export interface DatagramTransport extends AsyncIterable<Datagram> {
  /** The address this transport is bound to (port resolved when 0 was asked). */
  readonly localAddress: PeerAddress;
  /**
   * Optional: the same datagrams in batches, each batch every datagram the
   * transport had received when the reader woke up (a drain per wake-up).
   * A reader uses either this or the iterator, not both.
   */
  receiveBatches?(): AsyncIterable<readonly Datagram[]>;
  /** Sends one datagram. Rejects when the transport is closed or the OS refuses. */
  send(data: Uint8Array, to: PeerAddress): Promise<void>;
  /** Closes the transport; ends iteration. Safe to call twice. */
  close(): void;
}
