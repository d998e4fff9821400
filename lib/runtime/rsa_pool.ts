/**
 * RSA-OAEP decryption off the event loop, on every core, at low priority.
 *
 * WebCrypto already decrypts on Deno's crypto threads, but those run at the
 * event loop's priority: a flood of key exchanges on a 2-core machine then
 * competes with the relay for CPU and delays every message (measured in
 * PERFORMANCE.md). The pool runs one worker thread per core instead, each
 * lowered to niceness 19, so RSA work takes only the CPU the relay leaves
 * idle. Lowering a thread's priority needs `--allow-sys=setPriority`; without
 * it the pool keeps one core free (cores - 1 threads at normal priority).
 * Niceness still lets a thread that got a core finish its time slice; on
 * request (`schedIdle`, Linux, `--allow-ffi`) the threads also take
 * SCHED_IDLE, under which a waking relay thread preempts them at once.
 *
 * Workers start on the first decryption, so a process that never decrypts
 * spawns no thread. This is the only module that starts threads.
 *
 * @module
 */
import { RsaDecryptError, type RsaPrivateKey } from "../crypto/rsa.ts";
import { schedIdleUnavailable } from "./sched_idle.ts";
import type { LogSink } from "../log.ts";
import type {
  RsaWorkerInit,
  RsaWorkerJob,
  RsaWorkerReady,
  RsaWorkerResult,
} from "./rsa_worker.ts";

/** Niceness of the pool's threads when the process may lower it. */
export const RSA_WORKER_NICENESS = 19;

/** Options of {@linkcode RsaDecryptPool}. */
export interface RsaDecryptPoolOptions {
  /**
   * Worker threads. Default: every core when their priority can be lowered
   * (niceness, or SCHED_IDLE when asked for and allowed), else the cores
   * less one (at least 1). 0 decrypts with WebCrypto in this thread's
   * runtime, one block at a time.
   */
  readonly threads?: number;
  /** Lower the threads' priority (niceness 19) when the process is allowed to (`--allow-sys=setPriority`). Default true. */
  readonly lowPriority?: boolean;
  /**
   * Also run the threads under Linux's SCHED_IDLE, so that a waking relay
   * thread preempts them at once (niceness alone lets them finish a time
   * slice). Needs `--allow-ffi` (see lib/runtime/sched_idle.ts). Default false.
   */
  readonly schedIdle?: boolean;
}

interface PendingJob {
  readonly block: Uint8Array;
  resolve(plaintext: Uint8Array): void;
  reject(error: Error): void;
}

/** What {@linkcode RsaDecryptPool.start} found. */
export interface RsaPoolStatus {
  /** Worker threads running (0: decrypting with WebCrypto in this runtime). */
  readonly threads: number;
  /** Whether they run at lowered priority. */
  readonly niced: boolean;
  /** Whether they run under SCHED_IDLE. */
  readonly idle: boolean;
  /** Why SCHED_IDLE was asked for and is not in force. */
  readonly idleReason?: string;
  /** Why the threads could not start, when they could not. */
  readonly fallbackReason?: string;
}

/** The status of a pool that runs no thread. */
const NO_THREADS: RsaPoolStatus = { threads: 0, niced: false, idle: false };

/** One worker and the jobs it has not answered yet. */
class RsaThread {
  readonly #worker: Worker;
  readonly #pending = new Map<number, PendingJob>();
  /** Jobs held until the key has been posted (the worker must get it first). */
  #backlog: [number, PendingJob][] | undefined = [];
  /** Resolves with how the thread runs once it holds the key; rejects if it cannot start. */
  readonly ready: Promise<RsaWorkerReady>;
  #failReady: (error: Error) => void = () => {};
  /** Set when the worker died; it gets no more jobs. */
  dead = false;

  constructor(
    pkcs8: Promise<Uint8Array>,
    nice: number | undefined,
    idle: boolean,
  ) {
    this.#worker = new Worker(WORKER_MODULE, { type: "module" });
    this.ready = new Promise<RsaWorkerReady>((resolve, reject) => {
      this.#failReady = reject;
      this.#worker.onmessage = (
        event: MessageEvent<RsaWorkerReady | RsaWorkerResult>,
      ) => {
        const message = event.data;
        if (message.type === "ready") {
          if (message.error) {
            reject(new Error(`cannot use the key: ${message.error}`));
          } else resolve(message);
          return;
        }
        const job = this.#pending.get(message.id);
        if (!job) return;
        this.#pending.delete(message.id);
        if (message.plaintext) job.resolve(message.plaintext);
        else job.reject(decryptError());
      };
      this.#worker.onerror = (event: ErrorEvent) => {
        event.preventDefault();
        reject(new Error(event.message));
        // A thread that dies after starting fails what it held; the pool
        // sends it nothing more.
        this.dead = true;
        const error = new RsaDecryptError(
          `RSA worker failed: ${event.message}`,
        );
        for (const job of this.stop()) job.reject(error);
      };
      pkcs8.then((key) => {
        const init: RsaWorkerInit = { type: "init", pkcs8: key, nice, idle };
        this.#worker.postMessage(init);
        const backlog = this.#backlog ?? [];
        this.#backlog = undefined;
        for (const [id, job] of backlog) this.#post(id, job);
      }, reject);
    });
  }

  /** Jobs sent and not answered. */
  get load(): number {
    return this.#pending.size + (this.#backlog?.length ?? 0);
  }

  /** Queues one job on this thread. */
  submit(id: number, job: PendingJob): void {
    if (this.#backlog) this.#backlog.push([id, job]);
    else this.#post(id, job);
  }

  #post(id: number, job: PendingJob): void {
    this.#pending.set(id, job);
    const copy = job.block.slice();
    const message: RsaWorkerJob = { type: "job", id, block: copy };
    this.#worker.postMessage(message, [copy.buffer]);
  }

  /** Stops the thread and hands back the jobs it had not answered. */
  stop(): PendingJob[] {
    this.#worker.terminate();
    this.#failReady(new Error("the pool was closed"));
    const left = [
      ...(this.#backlog ?? []).map(([, job]) => job),
      ...this.#pending.values(),
    ];
    this.#backlog = undefined;
    this.#pending.clear();
    return left;
  }
}

function decryptError(): RsaDecryptError {
  return new RsaDecryptError(
    "Cannot RSA-OAEP decrypt the block: wrong key or corrupted ciphertext",
  );
}

const WORKER_MODULE = new URL("./rsa_worker.ts", import.meta.url);

/** Why the worker module cannot be loaded, if a missing read permission says so in advance. */
function workerModuleUnreadable(): string | undefined {
  if (WORKER_MODULE.protocol !== "file:") return undefined;
  const path = decodeURIComponent(WORKER_MODULE.pathname);
  const { state } = Deno.permissions.querySync({ name: "read", path });
  return state === "granted"
    ? undefined
    : `the worker module ${path} needs --allow-read`;
}

/** Whether this process may lower a thread's priority. */
function maySetPriority(): boolean {
  try {
    return Deno.permissions.querySync({ name: "sys", kind: "setPriority" })
      .state === "granted";
  } catch {
    return false;
  }
}

/**
 * Decrypts RSA-OAEP blocks of one private key on low-priority worker
 * threads. If the threads cannot start (no read permission for the worker
 * module, a binary compiled without it), it falls back to WebCrypto in this
 * runtime, one block at a time, and says why in {@linkcode start}'s status.
 */
export class RsaDecryptPool {
  readonly #privateKey: RsaPrivateKey;
  readonly #threads: number;
  readonly #lowPriority: boolean;
  /** Whether the threads are to take SCHED_IDLE: asked for, and available. */
  readonly #idle: boolean;
  /** Why SCHED_IDLE, asked for, cannot be had (decided once, at construction). */
  readonly #idleUnavailable: string | undefined;
  #workers: RsaThread[] | undefined;
  #status: Promise<RsaPoolStatus> | undefined;
  #pkcs8: Promise<unknown> = Promise.resolve();
  #nextId = 0;
  #decryptions = 0;
  #closed = false;
  /** The tail of in-runtime decryptions, run one at a time. */
  #inline: Promise<unknown> = Promise.resolve();

  /**
   * Creates a pool; its threads start on {@linkcode start} or the first {@linkcode decrypt}.
   * @param privateKey the key to decrypt with
   * @throws {RangeError} when `threads` is not a whole number of at least 0
   */
  constructor(privateKey: RsaPrivateKey, options: RsaDecryptPoolOptions = {}) {
    this.#privateKey = privateKey;
    this.#lowPriority = (options.lowPriority ?? true) && maySetPriority();
    const schedIdle = options.schedIdle ?? false;
    this.#idleUnavailable = schedIdle ? schedIdleUnavailable() : undefined;
    this.#idle = schedIdle && this.#idleUnavailable === undefined;
    // Threads that yield to the relay may have every core; others leave one.
    const yielding = this.#lowPriority || this.#idle;
    const cores = navigator.hardwareConcurrency ?? 2;
    const threads = options.threads ??
      (yielding ? cores : Math.max(1, cores - 1));
    if (!Number.isInteger(threads) || threads < 0) {
      throw new RangeError(
        `RSA threads must be a whole number of at least 0, not ${threads}`,
      );
    }
    this.#threads = threads;
  }

  /** Whether {@linkcode close} was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Blocks handed to {@linkcode decrypt} so far (RSA work asked for). */
  get decryptions(): number {
    return this.#decryptions;
  }

  /** Starts the threads (once) and tells how they run. */
  start(): Promise<RsaPoolStatus> {
    this.#status ??= this.#startThreads();
    return this.#status;
  }

  async #startThreads(): Promise<RsaPoolStatus> {
    if (this.#threads === 0 || this.#closed) return NO_THREADS;
    const unreadable = workerModuleUnreadable();
    if (unreadable) return { ...NO_THREADS, fallbackReason: unreadable };
    const pkcs8 = crypto.subtle.exportKey("pkcs8", this.#privateKey.key).then(
      (der) => new Uint8Array(der),
    );
    this.#pkcs8 = pkcs8.catch(() => {});
    const nice = this.#lowPriority ? RSA_WORKER_NICENESS : undefined;
    // Ask the threads for SCHED_IDLE only where they can get it; else say why.
    const idle = this.#idle;
    let idleReason = this.#idleUnavailable;
    const workers: RsaThread[] = [];
    for (let i = 0; i < this.#threads; i++) {
      workers.push(new RsaThread(pkcs8, nice, idle));
    }
    this.#workers = workers;
    try {
      const ready = await Promise.all(workers.map((w) => w.ready));
      idleReason ??= ready.find((r) => r.idleError)?.idleError;
      return {
        threads: workers.length,
        niced: ready.every((r) => r.niced),
        idle: idle && ready.every((r) => r.idle),
        ...(idleReason === undefined ? {} : { idleReason }),
      };
    } catch (error) {
      if (this.#closed) return NO_THREADS;
      // Fall back: every job the threads held is decrypted here instead.
      this.#workers = undefined;
      for (const worker of workers) {
        for (const job of worker.stop()) this.#runInline(job);
      }
      return {
        ...NO_THREADS,
        fallbackReason: (error as Error).message,
      };
    }
  }

  /**
   * Decrypts one k-byte OAEP block.
   * @throws {RangeError} when the block is not k bytes
   * @throws {RsaDecryptError} when it does not decrypt, or the pool is closed
   */
  decrypt(block: Uint8Array): Promise<Uint8Array> {
    this.#decryptions++;
    try {
      this.#privateKey.publicKey.checkBlock(block);
    } catch (error) {
      return Promise.reject(error);
    }
    if (this.#closed) return Promise.reject(closedError());
    return new Promise((resolve, reject) => {
      const job: PendingJob = { block, resolve, reject };
      void this.start();
      let least: RsaThread | undefined;
      // No threads (none asked for, or they could not start): in-runtime.
      for (const worker of this.#workers ?? []) {
        if (!worker.dead && (!least || worker.load < least.load)) {
          least = worker;
        }
      }
      if (least) least.submit(this.#nextId++, job);
      else this.#runInline(job);
    });
  }

  #runInline(job: PendingJob): void {
    const result = this.#inline.then(() =>
      this.#closed
        ? Promise.reject(closedError())
        : this.#privateKey.decrypt(job.block)
    );
    result.then(job.resolve, job.reject);
    this.#inline = result.catch(() => {});
  }

  /**
   * Stops the threads; decryptions still pending fail with
   * {@linkcode RsaDecryptError}. Resolves when nothing of the pool is left
   * running. Safe to call twice.
   */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      const error = closedError();
      for (const worker of this.#workers ?? []) {
        for (const job of worker.stop()) job.reject(error);
      }
      this.#workers = undefined;
    }
    await Promise.all([this.#status, this.#pkcs8, this.#inline]);
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function closedError(): RsaDecryptError {
  return new RsaDecryptError("Cannot RSA-OAEP decrypt: the RSA pool is closed");
}

/**
 * Starts `pool`'s threads and logs how they run: `rsa_threads` (info), or a
 * warning when they could not start, or SCHED_IDLE was asked for and could
 * not be had. Resolves once that is logged (or the pool was closed first).
 */
export function startRsaPool(
  pool: RsaDecryptPool,
  log: LogSink,
): Promise<void> {
  return pool.start().then((status) => {
    if (pool.closed) return; // stopped before the threads answered
    const { threads, niced, idle, idleReason, fallbackReason } = status;
    if (fallbackReason) {
      log({
        level: "warn",
        event: "rsa_threads",
        threads,
        message:
          `RSA decryption runs without worker threads (${fallbackReason}); key exchanges then share the event loop's CPU`,
      });
    } else if (idleReason) {
      log({
        level: "warn",
        event: "rsa_threads",
        threads,
        niced,
        idle,
        message:
          `RSA threads are not under SCHED_IDLE (${idleReason}); they run ${
            niced
              ? "at niceness 19"
              : "at normal priority, one per core: allow --allow-sys=setPriority, or leave SCHED_IDLE off to keep a core free"
          }`,
      });
    } else if (threads > 0 && !niced && !idle) {
      log({
        level: "info",
        event: "rsa_threads",
        threads,
        niced,
        idle,
        message:
          "RSA threads run at normal priority, one core kept free; allow --allow-sys=setPriority to use every core at low priority",
      });
    } else {
      log({ level: "info", event: "rsa_threads", threads, niced, idle });
    }
  });
}
