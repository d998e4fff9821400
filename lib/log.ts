/**
 * Structured log records emitted by the relay server and client. The CLI
 * formats them as text or JSON lines; embedders receive them as objects.
 *
 * @module
 */

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
