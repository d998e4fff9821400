/**
 * The client's one-shot modes: stdin from a pipe or a file (each line sent),
 * or `--file` (one message), then waiting for the server to confirm what
 * was sent and choosing the exit status. `--count` ends a run in
 * client_main.ts.
 *
 * @module
 */
import { fstatSync } from "node:fs";
import { ConfigError } from "../errors.ts";
import { RelayClient } from "../relay/client/client.ts";
import type { BasicClient } from "../relay/basic/client.ts";
import { LineSplitter } from "../runtime/lines.ts";
import { EXIT_FAILED, printError } from "./output.ts";

/** Whether stdin is a pipe, a file or a socket: input to send, then exit. */
export function stdinIsInput(): boolean {
  try {
    const stat = fstatSync(0);
    return stat.isFIFO() || stat.isFile() || stat.isSocket();
  } catch {
    return false;
  }
}

/** The largest message a client sends (the server's default --max-message). */
const MAX_FILE_BYTES = 32 * 1024;

/**
 * Reads `--file`.
 * @throws {ConfigError} when it cannot be read or is larger than a message
 */
export async function readMessageFile(path: string): Promise<Uint8Array> {
  let data: Uint8Array;
  try {
    data = await Deno.readFile(path);
  } catch (error) {
    throw new ConfigError(
      `--file ${JSON.stringify(path)} cannot be read (${
        (error as Error).message
      }): give a readable file`,
    );
  }
  if (data.length > MAX_FILE_BYTES) {
    throw new ConfigError(
      `--file ${
        JSON.stringify(path)
      } is ${data.length} bytes: one message holds at most ${MAX_FILE_BYTES} bytes; split it`,
    );
  }
  return data;
}

/** Stdin's lines (an unterminated last line included), empty lines skipped. */
export async function* stdinLines(): AsyncGenerator<string> {
  const splitter = new LineSplitter();
  const buffer = new Uint8Array(64 * 1024);
  while (true) {
    const n = await Deno.stdin.read(buffer);
    if (n === null) break;
    for (const line of splitter.push(buffer.subarray(0, n))) {
      if (line !== "") yield line;
    }
  }
  for (const line of splitter.end()) if (line !== "") yield line;
}

/** What {@linkcode sendAndConfirm} works with. */
export interface SendContext {
  /** The client, joined. */
  readonly client: RelayClient | BasicClient;
  /** The server's address, for messages. */
  readonly server: string;
  /** Sends one message; resolves with a line to show, if any. */
  readonly send: (message: string | Uint8Array) => Promise<string | undefined>;
  /** Shows a line to the user (stdout). */
  readonly show: (line: string) => void;
  /** Whether the client is stopping (nothing more to report then). */
  readonly stopping: () => boolean;
  /** NOTICEs 2 and 3 received so far: the server refused a message. */
  readonly refusedByServer: () => number;
}

/**
 * Sends each message in turn; then the server must confirm them.
 * @returns the exit status: 0 all sent and confirmed (or stopping), 1 otherwise
 */
export async function sendAndConfirm(
  messages: AsyncIterable<string | Uint8Array>,
  context: SendContext,
): Promise<number> {
  const { client, server, send, show, stopping } = context;
  let sent = 0;
  let failed = 0;
  // A registration since the first message (a restart, a kick) may have
  // taken messages with it; an outbox refusal is not a message sent.
  const before = client instanceof RelayClient ? client.stats() : undefined;
  for await (const message of messages) {
    if (stopping()) return 0;
    try {
      const shown = await send(message);
      if (shown !== undefined) show(shown);
      sent++;
    } catch (error) {
      if (stopping()) return 0;
      failed++;
      printError(`error: not sent: ${(error as Error).message}`);
    }
  }
  if (!(client instanceof RelayClient) || client.profile !== "hybrid") {
    // The basic profile's sends waited for each ACK; the rsa profile's
    // server never answers keep-alives: nothing more to wait for.
    return failed > 0 ? EXIT_FAILED : 0;
  }
  if (!await client.confirm()) {
    if (stopping()) return 0;
    printError(
      `error: ${server} did not confirm the ${sent} messages sent (no answer to the keep-alives after them): they may be lost; check that the server runs`,
    );
    return EXIT_FAILED;
  }
  const after = client.stats();
  if (after.registrations !== before!.registrations) {
    printError(
      `error: the client registered again while sending (${
        after.registrations - before!.registrations
      } time(s): a server restart, a kick or a failover): messages sent before that may be lost; send them again`,
    );
    return EXIT_FAILED;
  }
  if (after.undelivered !== before!.undelivered) {
    // Each was reported by an "undelivered" line.
    return EXIT_FAILED;
  }
  const refusedByServer = context.refusedByServer();
  if (refusedByServer > 0) {
    // The server rate-limits its NOTICEs too: how many messages it
    // refused is not known here, only that it refused some.
    printError(
      `error: the server refused some of the ${sent} messages sent (${refusedByServer} NOTICE 2: too large, or 3: rate limited, came back; the server sends few of them, so more may be lost): send fewer (by default at most 200 a second) or smaller ones`,
    );
    return EXIT_FAILED;
  }
  return failed > 0 ? EXIT_FAILED : 0;
}
