/**
 * Server events for embedders ({@linkcode RelayServer.status}): members
 * joining, rekeying and leaving, as an async iterable per listener, each
 * with a bounded buffer so that a listener that stops reading costs a fixed
 * amount of memory.
 *
 * @module
 */
import { EventStream } from "../event_stream.ts";
import type { MemberProfile } from "../types.ts";

/** Why a member left. */
export type LeaveReason = "disconnect" | "timeout" | "kick" | "ban";

/** One server event. */
export type ServerStatus =
  | {
    /** A member registered. */
    readonly type: "join";
    /** Its address, `IP:PORT`. */
    readonly address: string;
    /** Its profile. */
    readonly profile: MemberProfile;
  }
  | {
    /** A member registered a new key (under proof of the old one). */
    readonly type: "rekey";
    /** Its address, `IP:PORT`. */
    readonly address: string;
    /** Its profile now. */
    readonly profile: MemberProfile;
  }
  | {
    /** A member was removed. */
    readonly type: "leave";
    /** Its address, `IP:PORT`. */
    readonly address: string;
    /** Its profile. */
    readonly profile: MemberProfile;
    /** Why. */
    readonly reason: LeaveReason;
  };

/** Events a listener that does not read may have waiting; older ones are dropped first. */
export const STATUS_BUFFER = 1024;

/**
 * Hands each event to every listener ({@linkcode EventStream}, one bounded
 * buffer per reader); ends them all when the server stops.
 */
export class StatusChannel {
  readonly #stopped = new AbortController();
  readonly #stream = new EventStream<ServerStatus>({
    bufferSize: STATUS_BUFFER,
    stopped: this.#stopped.signal,
  });

  /** A new listener: it gets every event from now on, and ends when the server stops. */
  listen(): AsyncIterableIterator<ServerStatus> {
    return this.#stream.events();
  }

  /** Hands `event` to every listener (nothing to do when there is none). */
  emit(event: ServerStatus): void {
    this.#stream.emit(event);
  }

  /** Whether anyone listens (events need not be made otherwise). */
  get listening(): boolean {
    return this.#stream.listening;
  }

  /** Ends every listener (after the events they still have). */
  end(): void {
    this.#stopped.abort();
  }
}
