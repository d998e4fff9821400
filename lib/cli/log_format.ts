/**
 * Formats log records for people (one readable line, coloured on a terminal
 * unless NO_COLOR is set) or machines (one JSON object per line with `ts`,
 * `level`, `event`). Pure.
 *
 * @module
 */
import { LOG_LEVELS, type LogLevel, type LogRecord } from "../log.ts";

/** How records are written. */
export interface LogFormatOptions {
  /** One JSON object per line instead of readable text. */
  readonly json: boolean;
  /** ANSI colours in text mode. */
  readonly color: boolean;
}

const LEVEL_COLOR: Record<LogLevel, string> = {
  debug: "\x1b[90m",
  info: "\x1b[36m",
  warn: "\x1b[33m",
  error: "\x1b[31m",
};
const RESET = "\x1b[0m";

/** Whether a record of `level` passes a `--log-level` of `threshold`. */
export function levelEnabled(level: LogLevel, threshold: LogLevel): boolean {
  return LOG_LEVELS.indexOf(level) >= LOG_LEVELS.indexOf(threshold);
}

/** Renders a field value for the text form: bare when simple, JSON-quoted otherwise. */
function textValue(value: unknown): string {
  if (typeof value === "string") {
    return /^[\w.:\[\]\/@+=-]+$/.test(value) ? value : JSON.stringify(value);
  }
  if (typeof value === "object" && value !== null) return JSON.stringify(value);
  return String(value);
}

/**
 * Formats one record.
 * @param record the record
 * @param options JSON or text, colour
 * @param now time of the record (ms since the epoch)
 */
export function formatLogRecord(
  record: LogRecord,
  options: LogFormatOptions,
  now: number = Date.now(),
): string {
  const ts = new Date(now).toISOString();
  const { level, event, ...fields } = record;
  if (options.json) {
    return JSON.stringify({ ts, level, event, ...fields });
  }
  const parts = Object.entries(fields)
    .filter(([, value]) => value !== undefined)
    .map(([key, value]) => `${key}=${textValue(value)}`);
  const levelText = level.toUpperCase().padEnd(5);
  const head = options.color
    ? `\x1b[2m${ts}${RESET} ${
      LEVEL_COLOR[level]
    }${levelText}${RESET} \x1b[1m${event}${RESET}`
    : `${ts} ${levelText} ${event}`;
  return parts.length > 0 ? `${head} ${parts.join(" ")}` : head;
}

/**
 * Escapes control characters (C0 but tab, DEL, C1) as `\u00XX`, so text from
 * the network can neither start a new output line nor send terminal escape
 * sequences.
 */
export function escapeControl(text: string): string {
  return text.replace(
    // deno-lint-ignore no-control-regex
    /[\x00-\x08\x0a-\x1f\x7f-\x9f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/**
 * `value` with every number that is not whole rounded to 3 decimals, in
 * objects and arrays too, so counters read as `0.001`, not
 * `0.0007959618109113498`.
 */
export function roundNumbers<T>(value: T): T {
  if (typeof value === "number") {
    return (Number.isInteger(value) || !Number.isFinite(value)
      ? value
      : Math.round(value * 1000) / 1000) as T;
  }
  if (Array.isArray(value)) return value.map(roundNumbers) as T;
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, roundNumbers(v)]),
    ) as T;
  }
  return value;
}
