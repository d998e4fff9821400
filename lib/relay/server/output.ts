/**
 * What the server sends and how: packing records into datagrams of at most
 * the MTU, fragmenting a longer stream, the once-a-second NOTICE gate, the
 * send counters, and the hand-off of relay streams to the
 * {@linkcode SendCoalescer} (one datagram per recipient per turn).
 *
 * @module
 */
import { SendCoalescer } from "../../core/coalescer.ts";
import type { DropCounter } from "../../core/drops.ts";
import { OncePerInterval } from "../../core/limits.ts";
import { randomMsgId } from "../../crypto/msg_id.ts";
import { formatAddress, type PeerAddress } from "../../wire/address.ts";
import { fragmentStream } from "../../wire/fragment.ts";
import { noticeRecord } from "../../wire/notice.ts";
import { encodedSize, encodeRecords, type TlvRecord } from "../../wire/tlv.ts";
import type { DatagramTransport } from "../../runtime/transport.ts";

/** What {@linkcode Output} needs. */
export interface OutputContext {
  /** Where datagrams go. */
  readonly transport: Pick<DatagramTransport, "send">;
  /** Largest datagram sent. */
  readonly mtu: number;
  /** Join one turn's relay streams per recipient. */
  readonly coalesceSends: boolean;
  /** Counts failed sends (`send_failed`). */
  readonly drops: DropCounter;
  /** The clock (ms). */
  readonly now: () => number;
}

/** The server's sending side: every datagram it sends goes through here. */
export class Output {
  /** Datagrams sent. */
  datagramsOut = 0;
  /** Bytes sent. */
  bytesOut = 0;
  /** Datagrams that carried relay streams (per-recipient fan-out). */
  relayDatagrams = 0;
  /** Joins one turn's relay streams per recipient (undefined: coalescing off). */
  readonly coalescer: SendCoalescer | undefined;
  readonly #context: OutputContext;
  readonly #noticeGate = new OncePerInterval(1000);
  #sendsInFlight = 0;
  #sendsDrained: (() => void) | undefined;

  /** @param context what it sends with */
  constructor(context: OutputContext) {
    this.#context = context;
    this.coalescer = context.coalesceSends
      ? new SendCoalescer(context.mtu, (datagram, to) => {
        this.relayDatagrams++;
        this.#sendNow(datagram, to);
      })
      : undefined;
  }

  /** A relay datagram for one recipient: held for coalescing in a batch turn, else sent. */
  sendRelay(datagram: Uint8Array, to: PeerAddress): void {
    const coalescer = this.coalescer;
    if (coalescer?.holding) coalescer.add(to, datagram);
    else {
      this.relayDatagrams++;
      this.send(datagram, to);
    }
  }

  /** Sends a relay stream (fragmented past the MTU), counted as relay datagrams. */
  sendRelayStream(stream: Uint8Array, to: PeerAddress): void {
    this.relayDatagrams += this.sendStream(stream, to);
  }

  /** Sends a NOTICE no larger than the datagram that caused it, at most once a second per source. */
  sendNotice(to: PeerAddress, code: number, maxSize: number): void {
    const record = noticeRecord(code, Math.min(maxSize, this.#context.mtu));
    if (!record) return;
    if (!this.#noticeGate.allow(formatAddress(to), this.#context.now())) return;
    this.send(encodeRecords([record]), to);
  }

  /** Packs records into as few datagrams of at most the MTU as their order allows, and sends them. */
  sendPacked(records: readonly TlvRecord[], to: PeerAddress): void {
    for (const stream of this.pack(records)) this.sendStream(stream, to);
  }

  /** Records in order, cut into streams of at most the MTU (a record larger than the MTU alone in its stream, to be fragmented). */
  pack(records: readonly TlvRecord[]): Uint8Array[] {
    const mtu = this.#context.mtu;
    const streams: Uint8Array[] = [];
    let batch: TlvRecord[] = [];
    let size = 0;
    for (const record of records) {
      const recordSize = encodedSize([record]);
      if (batch.length > 0 && size + recordSize > mtu) {
        streams.push(encodeRecords(batch));
        batch = [];
        size = 0;
      }
      batch.push(record);
      size += recordSize;
    }
    if (batch.length > 0) streams.push(encodeRecords(batch));
    return streams;
  }

  /** Sends a stream, fragmented past the MTU; returns the datagrams it took. */
  sendStream(stream: Uint8Array, to: PeerAddress): number {
    const mtu = this.#context.mtu;
    if (stream.length <= mtu) {
      this.send(stream, to);
      return 1;
    }
    const datagrams = fragmentStream(stream, mtu, randomMsgId());
    for (const datagram of datagrams) this.send(datagram, to);
    return datagrams.length;
  }

  /** Sends a datagram after any relay streams still pending for `to`, so it cannot overtake them. */
  send(datagram: Uint8Array, to: PeerAddress): void {
    this.coalescer?.flushTo(to);
    this.#sendNow(datagram, to);
  }

  /** Sends every relay stream still held. */
  flush(): void {
    this.coalescer?.flush();
  }

  /** Resolves when every send started so far has ended. */
  drained(): Promise<void> {
    if (this.#sendsInFlight === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.#sendsDrained = resolve);
  }

  #sendNow(datagram: Uint8Array, to: PeerAddress): void {
    this.datagramsOut++;
    this.bytesOut += datagram.length;
    this.#sendsInFlight++;
    this.#context.transport.send(datagram, to).then(this.#sendDone, (error) => {
      this.#context.drops.drop("send_failed", formatAddress(to), {
        error: String(error),
      });
      this.#sendDone();
    });
  }

  /** Counts a finished send; wakes a shutdown waiting for the last one. */
  readonly #sendDone = (): void => {
    if (--this.#sendsInFlight === 0) this.#sendsDrained?.();
  };
}
