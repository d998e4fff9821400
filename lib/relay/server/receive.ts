/**
 * The receive side of the server: the loop that reads the transport (in
 * drained batches when it offers them), measures the loop's load, counts
 * what comes in, drops banned and malformed datagrams before any work, and
 * queues the rest per source for the stream dispatch. A batch's relay
 * streams are coalesced per recipient.
 *
 * @module
 */
import type { DropCounter } from "../../core/drops.ts";
import { OncePerInterval } from "../../core/limits.ts";
import type { LoadProbe } from "../../core/load.ts";
import type { Datagram, DatagramTransport } from "../../runtime/transport.ts";
import { formatAddress, type PeerAddress } from "../../wire/address.ts";
import { decodeRecords } from "../../wire/tlv.ts";
import type { LogSink } from "../../log.ts";
import type { Dispatch } from "./dispatch.ts";
import type { Output } from "./output.ts";
import type { SourceQueues } from "./queue.ts";
import type { ServerCounters } from "./stats.ts";

/** What {@linkcode Receiver} needs. */
export interface ReceiveContext {
  /** Where datagrams come from. */
  readonly transport: DatagramTransport;
  /** Measures how busy the event loop is (fed with the loop's waits). */
  readonly load: LoadProbe;
  /** Holds a batch's relay streams (its coalescer). */
  readonly output: Pick<Output, "coalescer">;
  /** Per-source order and backlog. */
  readonly queues: Pick<SourceQueues, "enqueue">;
  /** Acts on a datagram's records. */
  readonly dispatch: Pick<Dispatch, "processStream">;
  /** Datagrams and bytes in. */
  readonly counters: ServerCounters;
  /** Counts drops. */
  readonly drops: DropCounter;
  /** Logs overload. */
  readonly log: LogSink;
  /** The clock (ms). */
  readonly now: () => number;
  /** Whether `from` is banned (and its datagram dropped). */
  readonly isBanned: (from: PeerAddress, source: string) => boolean;
  /** Whether the server is stopping (the loop then ends). */
  readonly closing: () => boolean;
}

/** Reads the transport and hands each datagram to its source's queue. */
export class Receiver {
  readonly #context: ReceiveContext;
  #overloaded = false;
  readonly #overloadLog = new OncePerInterval(10_000);

  /** @param context where datagrams come from and go */
  constructor(context: ReceiveContext) {
    this.#context = context;
  }

  /**
   * Reads until the transport ends or the server stops. Resolves with the
   * error when reading failed while the server was not stopping (never
   * rejects).
   */
  async run(): Promise<Error | undefined> {
    const { transport, load, closing } = this.#context;
    // A drain per wake-up when the transport offers batches: every datagram
    // already received is handled in one turn, and the relay streams that
    // turn makes for one member leave together at its end.
    const batches = transport.receiveBatches?.()[Symbol.asyncIterator]();
    const datagrams = batches ?? transport[Symbol.asyncIterator]();
    const coalescing = this.#context.output.coalescer !== undefined;
    try {
      while (true) {
        // The load meter needs the time spent waiting: a datagram's work
        // runs inside #onDatagram when its source has nothing queued and its
        // key opens synchronously (hybrid members: the relay's hot path).
        const waitStart = performance.now();
        const next = await datagrams.next();
        load.waited(waitStart, performance.now());
        if (next.done || closing()) break;
        if (load.overloaded !== this.#overloaded) this.#onLoadChange();
        if (!batches) this.#onDatagram(next.value as Datagram);
        else {
          const batch = next.value as readonly Datagram[];
          // A batch of one (a quiet socket) is handled without a hold, so
          // its streams are sent as they are made, as without coalescing.
          if (batch.length > 1 && coalescing) this.#onBatch(batch);
          else for (const datagram of batch) this.#onDatagram(datagram);
        }
      }
    } catch (error) {
      if (!closing()) {
        return error instanceof Error ? error : new Error(String(error));
      }
    } finally {
      void datagrams.return?.().catch(() => {});
    }
    return undefined;
  }

  /** Logs (at most every 10 s) that the loop became too busy for key exchanges. */
  #onLoadChange(): void {
    const { load, log, drops, now } = this.#context;
    this.#overloaded = load.overloaded;
    if (this.#overloaded && this.#overloadLog.allow("", now())) {
      log({
        level: "warn",
        event: "overloaded",
        utilization: Math.round(load.utilization * 100) / 100,
        shed: drops.snapshot().handshake_shed ?? 0,
        message:
          "relaying keeps the event loop busy: key requests and registrations are dropped until it keeps up (clients retry)",
      });
    }
  }

  /**
   * Handles a drained batch with coalesced sends. A member's later datagrams
   * wait in its queue for its earlier ones, which settle a few microtasks
   * after the loop: the batch is released when all its work has settled, or
   * at the next turn of the event loop when some of it waits longer (RSA
   * work, a WebCrypto seal), so nothing waits for slow work or for company.
   */
  #onBatch(batch: readonly Datagram[]): void {
    const release = this.#context.output.coalescer?.hold() ?? (() => {});
    const tasks: Promise<void>[] = [];
    try {
      for (const datagram of batch) {
        const task = this.#onDatagram(datagram);
        if (task) tasks.push(task);
      }
    } finally {
      if (tasks.length === 0) release();
      else {
        const timer = setTimeout(release, 0);
        Promise.all(tasks).then(() => {
          clearTimeout(timer);
          release();
        });
      }
    }
  }

  /** Handles one datagram; returns its task's end (never rejects) when it was queued. */
  #onDatagram(datagram: Datagram): Promise<void> | undefined {
    const { counters, drops, isBanned, queues, dispatch } = this.#context;
    counters.datagramsIn++;
    counters.bytesIn += datagram.data.length;
    const source = formatAddress(datagram.from);
    if (isBanned(datagram.from, source)) return undefined;
    let records;
    try {
      records = decodeRecords(datagram.data);
    } catch {
      drops.drop("malformed", source);
      return undefined;
    }
    // All key answers this datagram causes, in its own stream and in the
    // streams it completes by reassembly, together are no larger than it
    // (protocol.md section 10).
    const answerBudget = { bytes: datagram.data.length };
    return queues.enqueue(
      source,
      () =>
        dispatch.processStream(
          records,
          datagram.from,
          source,
          datagram.data.length,
          answerBudget,
        ),
    );
  }
}
