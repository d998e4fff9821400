/**
 * Server events for embedders ({@linkcode RelayServer.status}): members
 * joining, rekeying and leaving, as an async iterable per listener, each
 * with a bounded buffer so that a listener that stops reading costs a fixed
 * amount of memory.
 *
 * @module
 */
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

/** One listener: its buffer and the read waiting for the next event. */
class StatusListener implements AsyncIterableIterator<ServerStatus> {
  readonly #buffer: ServerStatus[] = [];
  readonly #unsubscribe: (listener: StatusListener) => void;
  #wake: ((result: IteratorResult<ServerStatus>) => void) | undefined;
  #ended = false;

  constructor(unsubscribe: (listener: StatusListener) => void) {
    this.#unsubscribe = unsubscribe;
  }

  push(event: ServerStatus): void {
    if (this.#wake) {
      const wake = this.#wake;
      this.#wake = undefined;
      wake({ value: event, done: false });
      return;
    }
    if (this.#buffer.length >= STATUS_BUFFER) this.#buffer.shift();
    this.#buffer.push(event);
  }

  end(): void {
    this.#ended = true;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<ServerStatus>> {
    const event = this.#buffer.shift();
    if (event) return Promise.resolve({ value: event, done: false });
    if (this.#ended) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve) => this.#wake = resolve);
  }

  return(): Promise<IteratorResult<ServerStatus>> {
    this.#unsubscribe(this);
    this.#buffer.length = 0;
    this.end();
    return Promise.resolve({ value: undefined, done: true });
  }

  [Symbol.asyncIterator](): AsyncIterableIterator<ServerStatus> {
    return this;
  }
}

/** Hands each event to every listener; ends them all when the server stops. */
export class StatusChannel {
  readonly #listeners = new Set<StatusListener>();
  #ended = false;

  /** A new listener: it gets every event from now on, and ends when the server stops. */
  listen(): AsyncIterableIterator<ServerStatus> {
    const listener = new StatusListener((l) => this.#listeners.delete(l));
    if (this.#ended) listener.end();
    else this.#listeners.add(listener);
    return listener;
  }

  /** Hands `event` to every listener (nothing to do when there is none). */
  emit(event: ServerStatus): void {
    for (const listener of this.#listeners) listener.push(event);
  }

  /** Whether anyone listens (events need not be made otherwise). */
  get listening(): boolean {
    return this.#listeners.size > 0;
  }

  /** Ends every listener (after the events they still have). */
  end(): void {
    this.#ended = true;
    for (const listener of this.#listeners) listener.end();
    this.#listeners.clear();
  }
}
