/**
 * Structured log records emitted by the relay server and client. The CLI
 * formats them as text or JSON lines; embedders receive them as objects.
 *
 * @module
 */
import type { RsaDecryptPool } from "../runtime/rsa_pool.ts";

/** Severity of a log record, lowest first. */
export type LogLevel = "debug" | "info" | "warn" | "error";

/** Severity order, for filtering by `--log-level`. */
export const LOG_LEVELS: readonly LogLevel[] = [
  "debug",
  "info",
  "warn",
  "error",
];

/** One log record: a level, an event name and its fields. */
export interface LogRecord {
  /** Severity. */
  readonly level: LogLevel;
  /** Event name, e.g. "listening", "join", "drop". */
  readonly event: string;
  /** Further fields (JSON-serialisable). */
  readonly [field: string]: unknown;
}

/** Receives log records. Must not throw and must not block. */
export type LogSink = (record: LogRecord) => void;

/** A sink that discards everything. */
export const silentLog: LogSink = () => {};

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
