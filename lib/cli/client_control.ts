/**
 * The client's control port: each line received is sent to the group (what
 * comes of it is written back), `exit` stops the client; the client's
 * events are broadcast to every connection by client_main.ts.
 *
 * @module
 */
import type { ControlServer } from "../runtime/control.ts";
import { listenControl } from "./flags.ts";
import type { SendMessage } from "./client_connect.ts";

/** What {@linkcode listenClientControl} needs. */
export interface ClientControlOptions {
  /** The address to listen on. */
  readonly hostname: string;
  /** The port to listen on (0 picks a free one). */
  readonly port: number;
  /** The token `auth` must give, if any. */
  readonly token: string | undefined;
  /** JSON replies instead of text. */
  readonly json: boolean;
  /** How to send now: undefined until the client has joined. */
  readonly sender: () => SendMessage | undefined;
  /** Shows a line to the local user too (an ACK, "queued"). */
  readonly show: (line: string) => void;
  /** Stops the client with exit status 0 (`exit`). */
  readonly stop: () => void;
}

/**
 * Listens on the client's control port.
 * @throws {BindError} naming the address and `--tcp-port`/`--tcp-host` when it cannot be bound
 */
export function listenClientControl(
  options: ClientControlOptions,
): ControlServer {
  const { json } = options;
  return listenControl({
    hostname: options.hostname,
    port: options.port,
    token: options.token,
    onLine: (connection, line) => {
      if (line === "exit") {
        connection.write(
          json ? JSON.stringify({ event: "stopping" }) : "ok: stopping",
        );
        options.stop();
        return;
      }
      if (line.length === 0) return;
      const send = options.sender();
      if (!send) {
        connection.write("error: not connected yet");
        return;
      }
      send(line).then((shown) => {
        if (shown === undefined) return;
        connection.write(shown);
        options.show(shown);
      }).catch((error) => {
        connection.write(
          json
            ? JSON.stringify({
              event: "error",
              error: (error as Error).message,
            })
            : `error: ${(error as Error).message}`,
        );
      });
    },
  });
}
