/**
 * A relay client's outgoing messages: the bounded {@linkcode Outbox} that
 * holds messages while the client cannot send and sends them in order once
 * it can (with the waits of `send(message, { signal, timeoutMs })`), and the
 * {@linkcode SentLedger} of messages sent since the server last answered a
 * keep-alive, with the FIFO of keep-alives whose answers are awaited.
 *
 * @module
 */
import {
  ClientClosedError,
  SendCancelledError,
  type SendCancelReason,
  UndeliveredError,
  type UndeliveredReason,
} from "../../errors.ts";
import type { ClientConfig, Session } from "./session.ts";
import type { ClientEvent } from "./types.ts";

/** A keep-alive unanswered for this long was lost, or its answer was. */
const KEEPALIVE_ANSWER_WINDOW_MS = 10_000;
/** Keep-alives remembered while their answers are awaited. */
const MAX_KEEPALIVES_OUT = 64;

const decoder = new TextDecoder();

/** Bounds of the outbox and of the ledger. */
interface OutboxLimits {
  readonly maxMessages: number;
  readonly maxBytes: number;
}

/** The bounds a client's options set. */
function outboxLimits(config: ClientConfig): OutboxLimits {
  return {
    maxMessages: config.maxOutboxMessages,
    maxBytes: config.maxOutboxBytes,
  };
}

/** A message waiting in the outbox, and the send() that waits for it, if one does. */
interface Outgoing {
  readonly data: Uint8Array;
  readonly waiter:
    | {
      readonly resolve: () => void;
      readonly reject: (error: Error) => void;
    }
    | undefined;
}

/** The error of a send that gave up on its message. */
export function sendCancelled(
  reason: SendCancelReason,
  timeoutMs?: number,
): SendCancelledError {
  return new SendCancelledError(
    reason,
    reason === "aborted"
      ? "The send was aborted before the message went out: the client was not registered with the server, and the message was dropped from its outbox"
      : `The message was not sent within ${timeoutMs} ms: the client was not registered with the server, and the message was dropped from its outbox; send it again once the client is registered (the "ready" event)`,
  );
}

/** The error of a send on a closed client; `why`: what ended it, if something did. */
export function clientClosed(why: string | undefined): ClientClosedError {
  return new ClientClosedError(
    why === undefined ? "The client is closed" : `The client is closed: ${why}`,
  );
}

/** What an {@linkcode Outbox} needs from its client. */
export interface OutboxHooks {
  /** Whether messages go out now. */
  readonly canSend: () => boolean;
  /** Whether a message sent now is kept until a later keep-alive is answered. */
  readonly remember: () => boolean;
  /** Emits an `undelivered` event. */
  readonly emit: (event: ClientEvent) => void;
}

/** Messages sent while the client cannot send, oldest first; see the module comment. */
export class Outbox {
  readonly #session: Session;
  readonly #ledger: SentLedger;
  readonly #limits: OutboxLimits;
  readonly #hooks: OutboxHooks;
  readonly #queue: Outgoing[] = [];
  #bytes = 0;
  /** Sending the outbox, one message after the other. */
  #flushing: Promise<void> | undefined;

  /**
   * @param session the client's shared state
   * @param ledger where sent messages are recorded
   * @param hooks what the outbox needs from its client
   */
  constructor(session: Session, ledger: SentLedger, hooks: OutboxHooks) {
    this.#session = session;
    this.#ledger = ledger;
    this.#limits = outboxLimits(session.config);
    this.#hooks = hooks;
  }

  /** Seals a message under the current key (or RSA-encrypts it) and sends it to the server. */
  async transmit(data: Uint8Array): Promise<void> {
    const session = this.#session;
    const stream = await session.messageStream(data);
    session.counters.messagesSent++;
    this.#ledger.messageSent(data, this.#hooks.remember());
    await session.sendStream(stream);
  }

  /** Reports a message that will not be sent: an `undelivered` event, a log record and a count. */
  report(data: Uint8Array, reason: UndeliveredReason): void {
    this.#session.counters.undelivered++;
    this.#session.log({
      level: "warn",
      event: "undelivered",
      reason,
      bytes: data.length,
    });
    this.#hooks.emit({
      type: "undelivered",
      reason,
      text: decoder.decode(data),
      data,
    });
  }

  /** Messages waiting now. */
  get size(): number {
    return this.#queue.length;
  }

  /** Whether a message must wait: the client cannot send, or others wait before it. */
  get mustQueue(): boolean {
    return !this.#hooks.canSend() || this.#queue.length > 0 ||
      this.#flushing !== undefined;
  }

  /** Resolves when the flush under way (if any) has ended. */
  settled(): Promise<void> | undefined {
    return this.#flushing;
  }

  /**
   * Puts a message in the outbox, or reports it undelivered when the outbox
   * is full (the newest message is refused: those already queued keep their
   * order).
   * @throws {UndeliveredError} when the outbox is full
   */
  enqueue(data: Uint8Array): void {
    this.#push(data, undefined);
  }

  /**
   * Puts a message in the outbox as {@linkcode enqueue} does, and resolves
   * when it went out. While it still waits, `signal` or `timeoutMs` take it
   * back: it rejects then with a {@linkcode SendCancelledError}.
   * @throws {UndeliveredError} when the outbox is full, or (`closed`) when the client closed before the message went out
   * @throws {SendCancelledError} when `signal` aborted or `timeoutMs` passed first
   */
  async enqueueAndWait(
    data: Uint8Array,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
  ): Promise<void> {
    const sent = Promise.withResolvers<void>();
    const entry = this.#push(data, sent);
    const cancel = (error: SendCancelledError) => {
      const at = this.#queue.indexOf(entry);
      // The first message may be on its way already while a flush runs.
      if (at < 0 || (at === 0 && this.#flushing)) return;
      this.#queue.splice(at, 1);
      this.#bytes -= entry.data.length;
      sent.reject(error);
    };
    const onAbort = () => cancel(sendCancelled("aborted"));
    const timer = timeoutMs === undefined ? undefined : setTimeout(
      () => cancel(sendCancelled("timeout", timeoutMs)),
      timeoutMs,
    );
    signal?.addEventListener("abort", onAbort, { once: true });
    try {
      await sent.promise;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  #push(
    data: Uint8Array,
    waiter: Outgoing["waiter"],
  ): Outgoing {
    if (
      this.#queue.length >= this.#limits.maxMessages ||
      this.#bytes + data.length > this.#limits.maxBytes
    ) {
      this.report(data, "outbox_full");
      throw new UndeliveredError(
        "outbox_full",
        `Cannot send the message: the client is not registered with the server and its outbox already holds ${this.#queue.length} messages (${this.#bytes} bytes; the limits are ${this.#limits.maxMessages} messages and ${this.#limits.maxBytes} bytes): send it again once the client is registered (the "ready" event), or raise maxOutboxMessages/maxOutboxBytes`,
      );
    }
    // A copy: the caller may reuse its buffer before the message goes out.
    const entry: Outgoing = { data: data.slice(), waiter };
    this.#queue.push(entry);
    this.#bytes += data.length;
    return entry;
  }

  /** Sends the outbox in order while the client can send; a message goes out only after those before it. */
  flush(): void {
    if (
      this.#flushing || this.#queue.length === 0 || !this.#hooks.canSend()
    ) return;
    this.#flushing = (async () => {
      while (
        this.#queue.length > 0 && this.#hooks.canSend() &&
        !this.#session.closed
      ) {
        const next = this.#queue[0];
        await this.transmit(next.data);
        this.#queue.shift();
        this.#bytes -= next.data.length;
        next.waiter?.resolve();
      }
    })().then(() => {
      this.#flushing = undefined;
      this.flush(); // what was queued during the last send
    }, (error) => {
      // The message stays first in the outbox: tried again at the next
      // registration or keep-alive answer, or reported at close.
      this.#flushing = undefined;
      this.#session.log({
        level: "error",
        event: "internal_error",
        error: String((error as Error)?.stack ?? error),
      });
    });
  }

  /** Reports every waiting message undelivered (`closed`) and empties the outbox. */
  drain(): void {
    for (const { data, waiter } of this.#queue.splice(0)) {
      this.report(data, "closed");
      waiter?.reject(
        new UndeliveredError(
          "closed",
          "The client closed before it could send the message",
        ),
      );
    }
    this.#bytes = 0;
  }
}

/**
 * Messages sent after the last keep-alive the server answered (hybrid, a
 * server that answers keep-alives), reported if it stops answering before a
 * keep-alive sent after them is answered (at most the outbox's bounds); and
 * the hybrid keep-alives not answered yet, oldest first: when each went out
 * and how many messages had been sent by then. The server answers in the
 * order they arrive, so an answer belongs to the oldest one here (or to a
 * later one, when an earlier answer was lost: never to an earlier one).
 */
export class SentLedger {
  readonly #limits: OutboxLimits;
  readonly #now: () => number;
  readonly #unanswered: { readonly seq: number; readonly data: Uint8Array }[] =
    [];
  #unansweredBytes = 0;
  /** Messages sent so far, numbered. */
  #sentSeq = 0;
  readonly #keepalivesOut: { readonly at: number; readonly seq: number }[] = [];
  /** Authenticated keep-alive answers so far. */
  #answersSeen = 0;

  /**
   * @param config the client's options (the outbox's bounds apply)
   * @param now clock in milliseconds
   */
  constructor(config: ClientConfig, now: () => number) {
    this.#limits = outboxLimits(config);
    this.#now = now;
  }

  /** Authenticated keep-alive answers so far. */
  get answersSeen(): number {
    return this.#answersSeen;
  }

  /** A message went out; `remember`: kept until a later keep-alive is answered. */
  messageSent(data: Uint8Array, remember: boolean): void {
    this.#sentSeq++;
    if (!remember) return;
    this.#unanswered.push({ seq: this.#sentSeq, data: data.slice() });
    this.#unansweredBytes += data.length;
    while (
      this.#unanswered.length > this.#limits.maxMessages ||
      this.#unansweredBytes > this.#limits.maxBytes
    ) {
      this.#unansweredBytes -= this.#unanswered.shift()!.data.length;
    }
  }

  /** A hybrid keep-alive goes out now. */
  keepaliveSent(): void {
    this.forgetLostKeepalives();
    this.#keepalivesOut.push({ at: this.#now(), seq: this.#sentSeq });
  }

  /**
   * A keep-alive answer: it answers the oldest keep-alive still out (or a
   * later one), so the messages sent before that one reached a server that
   * was there.
   */
  answered(): void {
    this.#answersSeen++;
    this.forgetLostKeepalives();
    const answered = this.#keepalivesOut.shift();
    if (answered === undefined) return;
    while (
      this.#unanswered.length > 0 &&
      this.#unanswered[0].seq <= answered.seq
    ) {
      this.#unansweredBytes -= this.#unanswered.shift()!.data.length;
    }
  }

  /**
   * The answer count that proves a keep-alive sent now was answered:
   * answers to the keep-alives already out may come first, so one more
   * than those can only answer this keep-alive or a later one.
   */
  answerTargetForNext(): number {
    this.forgetLostKeepalives();
    return this.#answersSeen + this.#keepalivesOut.length + 1;
  }

  /** Keep-alives out for longer than the answer window were lost, or their answers were: no answer counts for them. */
  forgetLostKeepalives(): void {
    const oldest = this.#now() - KEEPALIVE_ANSWER_WINDOW_MS;
    while (
      this.#keepalivesOut.length > 0 &&
      (this.#keepalivesOut[0].at < oldest ||
        this.#keepalivesOut.length > MAX_KEEPALIVES_OUT)
    ) {
      this.#keepalivesOut.shift();
    }
  }

  /** The messages sent since the server last answered (they may not have arrived), forgotten here. */
  takeUnanswered(): Uint8Array[] {
    this.#unansweredBytes = 0;
    return this.#unanswered.splice(0).map(({ data }) => data);
  }
}
