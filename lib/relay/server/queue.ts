/**
 * Per-source work queues: one source's datagrams are handled in order, each
 * after the one before it (at once when none is pending), and the backlog
 * of one source and of all together is bounded (`backlog`, `overload`
 * drops, which are the server's own loss).
 *
 * @module
 */
import type { LogSink } from "../../log.ts";

/** What {@linkcode SourceQueues} needs. */
export interface QueueContext {
  /** Datagrams of one source queued or in work at most. */
  readonly maxQueuedPerSource: number;
  /** Datagrams of all sources queued or in work at most. */
  readonly maxQueuedTotal: number;
  /** A datagram dropped for want of capacity (`backlog` or `overload`). */
  readonly selfDrop: (reason: "backlog" | "overload", source: string) => void;
  /** Where a task's unexpected failure is logged (`internal_error`). */
  readonly log: LogSink;
}

interface SourceQueue {
  tail: Promise<void>;
  pending: number;
}

/** The queues of the sources with work pending. */
export class SourceQueues {
  readonly #context: QueueContext;
  readonly #queues = new Map<string, SourceQueue>();
  #pendingTotal = 0;

  /** @param context the bounds, and where drops and failures go */
  constructor(context: QueueContext) {
    this.#context = context;
  }

  /** Datagrams queued or in work. */
  get pending(): number {
    return this.#pendingTotal;
  }

  /** Sources with datagrams queued or in work. */
  get sources(): number {
    return this.#queues.size;
  }

  /**
   * Runs `task` after every earlier task of `source`, so one source's
   * datagrams keep their order: at once when it has none pending. Returns
   * when the task has ended (never rejects), or undefined when it was dropped.
   */
  enqueue(
    source: string,
    task: () => Promise<void>,
  ): Promise<void> | undefined {
    const context = this.#context;
    // Limits first: a queue is only made for a task that will run (an empty
    // queue left in the map would keep shutdown waiting).
    if (this.#pendingTotal >= context.maxQueuedTotal) {
      context.selfDrop("overload", source);
      return;
    }
    let queue = this.#queues.get(source);
    if (queue && queue.pending >= context.maxQueuedPerSource) {
      context.selfDrop("backlog", source);
      return;
    }
    if (!queue) {
      queue = { tail: Promise.resolve(), pending: 0 };
      this.#queues.set(source, queue);
    }
    const first = queue.pending === 0;
    queue.pending++;
    this.#pendingTotal++;
    let started: Promise<void>;
    if (first) {
      try {
        started = task();
      } catch (error) {
        started = Promise.reject(error);
      }
    } else started = queue.tail.then(task);
    const q = queue;
    q.tail = started.catch((error) => {
      context.log({
        level: "error",
        event: "internal_error",
        source,
        error: String(error?.stack ?? error),
      });
    }).finally(() => {
      q.pending--;
      this.#pendingTotal--;
      if (q.pending === 0 && this.#queues.get(source) === q) {
        this.#queues.delete(source);
      }
    });
    return q.tail;
  }

  /** Resolves when no work is pending (tasks may queue more meanwhile: waited for too). */
  async drain(): Promise<void> {
    const busy = () => [...this.#queues.values()].filter((q) => q.pending > 0);
    for (let queues = busy(); queues.length > 0; queues = busy()) {
      await Promise.all(queues.map((q) => q.tail));
    }
  }
}
