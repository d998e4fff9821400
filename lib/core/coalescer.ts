/**
 * Coalesced relay sends: the relay streams (`SENDER`, message) bound for one
 * recipient within one turn of the receive loop leave as one datagram of
 * several records, up to the MTU, instead of one datagram each (PROTOCOL.md
 * 5.1). Nothing is held back waiting for company: the streams of a drained
 * batch go out when the batch's work is done (the release
 * {@linkcode SendCoalescer.hold} returns), and a stream added outside a
 * batch goes out in a microtask, before the event loop waits again.
 *
 * Pure logic: the send and the microtask scheduler are injected.
 *
 * @module
 */
import type { PeerAddress } from "../wire/address.ts";
import { ByteSlab } from "./byte_slab.ts";

/** Sends one datagram; `streams` is how many relay streams it carries. */
export type CoalescedSend = (
  datagram: Uint8Array,
  to: PeerAddress,
  streams: number,
) => void;

/**
 * Collects relay streams per recipient and sends each recipient's as few
 * datagrams (of at most the MTU) as their order allows.
 *
 * @example
 * ```ts
 * import { SendCoalescer } from "./coalescer.ts";
 * const sent: number[] = [];
 * const to = { hostname: "127.0.0.1", port: 5000 };
 * const coalescer = new SendCoalescer(1200, (d) => sent.push(d.length));
 * const release = coalescer.hold();
 * coalescer.add(to, new Uint8Array(100));
 * coalescer.add(to, new Uint8Array(100));
 * release();
 * if (sent.length !== 1 || sent[0] !== 200) throw new Error("not coalesced");
 * ```
 */
export class SendCoalescer {
  readonly #mtu: number;
  readonly #send: CoalescedSend;
  readonly #schedule: (flush: () => void) => void;
  /** Streams per recipient, in the order they were added (keyed by the member's address object). */
  readonly #pending = new Map<PeerAddress, Uint8Array[]>();
  /** The joined datagrams: each is handed to the send and dropped. */
  readonly #slab = new ByteSlab();
  /** Batches held and not yet released. */
  #holds = 0;
  #scheduled = false;
  /** Relay streams that shared a datagram with an earlier one. */
  #joined = 0;

  /**
   * @param mtu largest datagram to build
   * @param send sends one datagram
   * @param schedule runs the flush of streams added outside a batch soon
   *   (default `queueMicrotask`: before the event loop waits again)
   */
  constructor(
    mtu: number,
    send: CoalescedSend,
    schedule: (flush: () => void) => void = queueMicrotask,
  ) {
    this.#mtu = mtu;
    this.#send = send;
    this.#schedule = schedule;
  }

  /** Relay streams sent in a datagram together with an earlier stream (datagrams saved). */
  get joined(): number {
    return this.#joined;
  }

  /** Whether a batch is held: only then can streams for one recipient meet. */
  get holding(): boolean {
    return this.#holds > 0;
  }

  /** Streams waiting to be sent. */
  get pending(): number {
    let count = 0;
    for (const streams of this.#pending.values()) count += streams.length;
    return count;
  }

  /**
   * Queues one relay stream (whole records, at most the MTU) for `to`. Sent
   * at the next release while a batch is held, else in a microtask.
   * @throws {RangeError} when the stream is larger than the MTU
   */
  add(to: PeerAddress, stream: Uint8Array): void {
    if (stream.length > this.#mtu) {
      throw new RangeError(
        `Cannot coalesce a ${stream.length}-byte stream: it is larger than the ${this.#mtu}-byte MTU (fragment it and send it directly)`,
      );
    }
    const streams = this.#pending.get(to);
    if (streams) streams.push(stream);
    else this.#pending.set(to, [stream]);
    if (this.#holds === 0 && !this.#scheduled) {
      this.#scheduled = true;
      this.#schedule(this.#scheduledFlush);
    }
  }

  /**
   * Starts a batch: streams added while it (or another batch) is held wait
   * for a release. Returns the batch's release, which sends everything
   * pending; calling it again does nothing. Batches may overlap: each
   * release sends what is pending then, so none waits for a later batch.
   */
  hold(): () => void {
    this.#holds++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#holds--;
      this.flush();
    };
  }

  /** Sends everything pending now. */
  flush(): void {
    if (this.#pending.size === 0) return;
    for (const [to, streams] of this.#pending) {
      this.#pending.delete(to);
      this.#sendAll(to, streams);
    }
  }

  /**
   * Sends what is pending for `to` now: call it before any other datagram
   * to `to`, so that datagram cannot overtake the relay streams before it.
   */
  flushTo(to: PeerAddress): void {
    if (this.#pending.size === 0) return;
    const streams = this.#pending.get(to);
    if (streams === undefined) return;
    this.#pending.delete(to);
    this.#sendAll(to, streams);
  }

  readonly #scheduledFlush = (): void => {
    this.#scheduled = false;
    if (this.#holds === 0) this.flush();
  };

  #sendAll(to: PeerAddress, streams: readonly Uint8Array[]): void {
    let first = 0;
    while (first < streams.length) {
      let size = streams[first].length;
      let end = first + 1;
      while (end < streams.length && size + streams[end].length <= this.#mtu) {
        size += streams[end].length;
        end++;
      }
      if (end - first === 1) {
        this.#send(streams[first], to, 1);
      } else {
        const datagram = this.#slab.take(size);
        let offset = 0;
        for (let i = first; i < end; i++) {
          datagram.set(streams[i], offset);
          offset += streams[i].length;
        }
        this.#joined += end - first - 1;
        this.#send(datagram, to, end - first);
      }
      first = end;
    }
  }
}
