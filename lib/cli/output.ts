/**
 * Where the CLIs write: stdout/stderr lines, log level filtering, and the
 * log sink that also feeds the control port. Also the shared CLI runner that
 * turns a {@linkcode ConfigError} or a busy port into one line and an exit
 * status, never a stack trace.
 *
 * @module
 */
import { BindError, ConfigError, HandshakeError } from "../errors.ts";
import type { LogLevel, LogRecord, LogSink } from "../log.ts";
import { formatLogRecord, levelEnabled } from "./log_format.ts";

export { VERSION } from "../version.ts";

/** Exit status: a start-up failure, or a server that did not answer, refused or did not confirm. */
export const EXIT_FAILED = 1;
/** Exit status: a bad flag, config file or input file ({@linkcode ConfigError}). */
export const EXIT_BAD_CONFIG = 2;
/** Exit status: a client the server banned (it does not rejoin). */
export const BANNED_EXIT_STATUS = 3;
/** Exit status: interrupted by SIGINT (128 + 2, as shells report it). */
export const EXIT_INTERRUPTED = 130;

/** Writes one line to stdout (synchronously, so lines never interleave). */
export function printLine(line: string): void {
  console.log(line);
}

/** Writes one line to stderr. */
export function printError(line: string): void {
  console.error(line);
}

/** Whether stdout is a terminal that wants colour (honours NO_COLOR). */
export function useColor(): boolean {
  return Deno.stdout.isTerminal() && !Deno.noColor;
}

/** Options of {@linkcode createLogSink}. */
export interface LogSinkOptions {
  /** JSON lines instead of text. */
  readonly json: boolean;
  /** Records below this level are discarded. */
  readonly level: LogLevel;
  /** ANSI colours on the local output. */
  readonly color: boolean;
  /** Where formatted lines go locally (stdout or stderr). */
  readonly write: (line: string) => void;
  /** Also receives every formatted line (uncoloured), e.g. the control port broadcast. */
  readonly forward?: (line: string) => void;
}

/** A log sink that filters by level, formats, writes locally and forwards. */
export function createLogSink(options: LogSinkOptions): LogSink {
  return (record: LogRecord) => {
    if (!levelEnabled(record.level, options.level)) return;
    const now = Date.now();
    const plain = formatLogRecord(
      record,
      { json: options.json, color: false },
      now,
    );
    options.write(
      options.color && !options.json
        ? formatLogRecord(record, { json: false, color: true }, now)
        : plain,
    );
    options.forward?.(plain);
  };
}

/**
 * Describes an error at start-up as one line for the user, or undefined when
 * it is a bug (to be shown with its stack).
 */
export function describeStartupError(error: unknown): string | undefined {
  if (
    error instanceof ConfigError || error instanceof HandshakeError ||
    error instanceof BindError
  ) {
    return error.message;
  }
  if (error instanceof Deno.errors.AddrInUse) {
    return `${error.message}: another process holds that port; stop it or choose another port (0 picks a free one)`;
  }
  if (error instanceof Deno.errors.AddrNotAvailable) {
    return `${error.message}: that address is not on this machine; choose one of its addresses or 0.0.0.0`;
  }
  if (error instanceof Deno.errors.PermissionDenied) {
    return `${error.message}: run with the permissions the README gives (deno task server / deno task client)`;
  }
  return undefined;
}

/** Runs a CLI main, printing a start-up error as one line; returns the exit status. */
export async function runMain(main: () => Promise<number>): Promise<number> {
  try {
    return await main();
  } catch (error) {
    const line = describeStartupError(error);
    if (line === undefined) throw error;
    printError(`error: ${line}`);
    return error instanceof ConfigError ? EXIT_BAD_CONFIG : EXIT_FAILED;
  }
}

/**
 * Calls `handler` with the signal on every SIGINT or SIGTERM; the returned
 * function removes the handlers.
 */
export function onTerminationSignal(
  handler: (signal: Deno.Signal) => void,
): () => void {
  const signals: Deno.Signal[] = Deno.build.os === "windows"
    ? ["SIGINT"]
    : ["SIGINT", "SIGTERM"];
  const listeners = signals.map((signal) => ({
    signal,
    listener: () => handler(signal),
  }));
  for (const { signal, listener } of listeners) {
    Deno.addSignalListener(signal, listener);
  }
  return () => {
    for (const { signal, listener } of listeners) {
      Deno.removeSignalListener(signal, listener);
    }
  };
}
