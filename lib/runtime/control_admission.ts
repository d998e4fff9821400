/**
 * Who gets a control connection, who makes room for it, and how often an IP
 * may guess the token: the control port's admission rules, pure (no sockets,
 * no timers; the caller passes the time), so that a flood of connections
 * cannot keep the operator out.
 *
 * - **Ready** connections (authenticated, or on a port without a token) have
 *   a pool of their own (`maxConnections`); connections still waiting to
 *   authenticate never take from it. When a connection becomes ready and the
 *   pool is full, the ready connection that has been silent longest (no line
 *   sent since it opened or since its last line) is closed to make room.
 *   Silence alone closes nothing: a connection that only watches the live log
 *   sends nothing, and that is its job.
 * - **Pending** connections (waiting to authenticate) are capped in all
 *   (`maxPending`) and per non-loopback IP (`maxPendingPerIp`). A new one is
 *   never refused: past the per-IP cap its IP's oldest pending connection is
 *   closed; past the total cap, the oldest pending connection of the
 *   non-loopback IP holding the most, and a loopback one only when no other
 *   is left, among those that have had `pendingGraceMs` to authenticate.
 *   While every pending connection is younger, the port takes no new
 *   connection ({@linkcode ControlAdmission.acceptDelayMs}): they wait in
 *   the kernel's queue, in order. So whoever holds the pending slots closes
 *   its own connections first, and every connection taken in has at least
 *   `pendingGraceMs` to send `auth TOKEN`, however fast others reconnect.
 * - **Wrong tokens** are counted per IP in a token bucket
 *   (`authFailuresPerSecond`, `authFailureBurst`), in a table of at most
 *   `maxAuthSources` IPs. While an IP's bucket is empty its attempts are
 *   refused before any comparison; right tokens cost nothing.
 *
 * @module
 */
import { constantTimeEqual } from "../crypto/hmac.ts";
import { sha256 } from "../crypto/sha256.ts";
import { isLoopbackAddress } from "../wire/address.ts";
import { BoundedMap, TokenBucket } from "../core/limits.ts";

/** Limits of a {@linkcode ControlAdmission}; every one has a default. */
export interface ControlAdmissionOptions {
  /**
   * Ready connections (authenticated, or no token needed) open at once at
   * most; past it the one silent longest is closed. Default 64.
   */
  readonly maxConnections?: number;
  /**
   * Connections waiting to authenticate, in all, at most; past it the oldest
   * of the non-loopback IP holding the most is closed. Default 32.
   */
  readonly maxPending?: number;
  /**
   * Connections waiting to authenticate from one non-loopback IP at most;
   * past it that IP's oldest is closed. Default 8.
   */
  readonly maxPendingPerIp?: number;
  /**
   * Time a pending connection has to authenticate before it may be closed to
   * make room (past the total cap). Default 1000 ms.
   */
  readonly pendingGraceMs?: number;
  /** Wrong tokens per second one IP may try (sustained). Default 1. */
  readonly authFailuresPerSecond?: number;
  /** Wrong tokens one IP may try at once. Default 5. */
  readonly authFailureBurst?: number;
  /** IPs whose wrong tokens are remembered (least recently seen forgotten). Default 4096. */
  readonly maxAuthSources?: number;
}

interface Entry {
  readonly ip: string;
  readonly loopback: boolean;
  ready: boolean;
  /** When it opened, or last sent a line. */
  lastLineMs: number;
  readonly openedMs: number;
}

/** Checks that `value` is an integer of at least `min`. */
function atLeast(name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(
      `Control port option ${name} is ${value}: give an integer of at least ${min}`,
    );
  }
  return value;
}

/**
 * The control port's admission rules over connections of type `C` (any
 * object or value that identifies one connection). Pure: every method takes
 * the time in milliseconds.
 *
 * @example
 * ```ts
 * import { ControlAdmission } from "./control_admission.ts";
 * const admission = new ControlAdmission<string>({ maxConnections: 1 });
 * admission.admit("a", "127.0.0.1", true, 0);
 * // A second ready connection closes the one silent longest.
 * if (admission.admit("b", "127.0.0.1", true, 10) !== "a") throw new Error();
 * ```
 */
export class ControlAdmission<C> {
  /** Ready connections at most. */
  readonly maxConnections: number;
  /** Pending connections at most. */
  readonly maxPending: number;
  /** Pending connections per non-loopback IP at most. */
  readonly maxPendingPerIp: number;
  /** Time a pending connection has to authenticate before it may make room past the total cap. */
  readonly pendingGraceMs: number;
  /** Wrong tokens per second per IP. */
  readonly authFailuresPerSecond: number;
  readonly #authFailureBurst: number;
  readonly #entries = new Map<C, Entry>();
  readonly #pendingPerIp = new Map<string, number>();
  readonly #failures: BoundedMap<TokenBucket>;
  #ready = 0;

  /**
   * Rules with the given limits and no connections yet.
   * @param options the limits (defaults in {@linkcode ControlAdmissionOptions})
   * @throws {RangeError} when a limit is not a positive integer (rates: a positive number)
   */
  constructor(options: ControlAdmissionOptions = {}) {
    this.maxConnections = atLeast(
      "maxConnections",
      options.maxConnections ?? 64,
      1,
    );
    this.maxPending = atLeast("maxPending", options.maxPending ?? 32, 1);
    this.maxPendingPerIp = atLeast(
      "maxPendingPerIp",
      options.maxPendingPerIp ?? 8,
      1,
    );
    this.pendingGraceMs = atLeast(
      "pendingGraceMs",
      options.pendingGraceMs ?? 1000,
      0,
    );
    this.#authFailureBurst = atLeast(
      "authFailureBurst",
      options.authFailureBurst ?? 5,
      1,
    );
    const rate = options.authFailuresPerSecond ?? 1;
    if (!(rate > 0 && Number.isFinite(rate))) {
      throw new RangeError(
        `Control port option authFailuresPerSecond is ${rate}: give a positive number`,
      );
    }
    this.authFailuresPerSecond = rate;
    this.#failures = new BoundedMap(
      atLeast("maxAuthSources", options.maxAuthSources ?? 4096, 1),
    );
  }

  /** Ready connections now. */
  get readyCount(): number {
    return this.#ready;
  }

  /** Connections waiting to authenticate now. */
  get pendingCount(): number {
    return this.#entries.size - this.#ready;
  }

  /**
   * Takes in a new connection from `ip`, ready at once (no token needed) or
   * pending (it must authenticate).
   * @returns the connection to close to make room for it, if any (never `connection` itself)
   */
  admit(
    connection: C,
    ip: string,
    ready: boolean,
    nowMs: number,
  ): C | undefined {
    const entry: Entry = {
      ip,
      loopback: isLoopbackAddress(ip),
      ready,
      lastLineMs: nowMs,
      openedMs: nowMs,
    };
    this.#entries.set(connection, entry);
    if (ready) {
      this.#ready++;
      return this.#makeReadyRoom(connection);
    }
    const fromIp = (this.#pendingPerIp.get(ip) ?? 0) + 1;
    this.#pendingPerIp.set(ip, fromIp);
    let victim: C | undefined;
    if (!entry.loopback && fromIp > this.maxPendingPerIp) {
      victim = this.#oldestPending(connection, (e) => e.ip === ip);
    } else if (this.pendingCount > this.maxPending) {
      victim = this.#crowdedPending(connection, nowMs);
    }
    if (victim !== undefined) this.release(victim);
    return victim;
  }

  /**
   * How long to wait before taking in a new pending connection: 0 when there
   * is room, or a pending connection that has had its grace; else the time
   * until the first one has had it.
   */
  acceptDelayMs(nowMs: number): number {
    if (this.pendingCount < this.maxPending) return 0;
    let oldest = Infinity;
    for (const entry of this.#entries.values()) {
      if (!entry.ready) oldest = Math.min(oldest, entry.openedMs);
    }
    return Math.max(0, oldest + this.pendingGraceMs - nowMs);
  }

  /**
   * Marks a pending connection authenticated.
   * @returns the ready connection to close to make room for it, if any
   */
  authenticated(connection: C, nowMs: number): C | undefined {
    const entry = this.#entries.get(connection);
    if (entry === undefined || entry.ready) return undefined;
    this.#forgetPending(entry.ip);
    entry.ready = true;
    entry.lastLineMs = nowMs;
    this.#ready++;
    return this.#makeReadyRoom(connection);
  }

  /** Records a line sent by `connection` (it is not silent now). */
  lineFrom(connection: C, nowMs: number): void {
    const entry = this.#entries.get(connection);
    if (entry !== undefined) entry.lastLineMs = nowMs;
  }

  /** Forgets a connection (closed, or chosen to make room). Safe to call twice. */
  release(connection: C): void {
    const entry = this.#entries.get(connection);
    if (entry === undefined) return;
    this.#entries.delete(connection);
    if (entry.ready) this.#ready--;
    else this.#forgetPending(entry.ip);
  }

  /**
   * Whether a token sent from `ip` may be compared now: false while the IP
   * has used up its wrong tokens (then it must be refused unread). Takes
   * nothing; {@linkcode authFailed} does.
   */
  mayTryToken(ip: string, nowMs: number): boolean {
    return this.#bucket(ip, nowMs).take(nowMs, 0, 1);
  }

  /** Counts a wrong token (or another first line than `auth TOKEN`) from `ip`. */
  authFailed(ip: string, nowMs: number): void {
    this.#bucket(ip, nowMs).take(nowMs);
  }

  #bucket(ip: string, nowMs: number): TokenBucket {
    return this.#failures.upsert(
      ip,
      () =>
        new TokenBucket(
          this.authFailuresPerSecond,
          this.#authFailureBurst,
          nowMs,
        ),
    );
  }

  #forgetPending(ip: string): void {
    const left = (this.#pendingPerIp.get(ip) ?? 1) - 1;
    if (left > 0) this.#pendingPerIp.set(ip, left);
    else this.#pendingPerIp.delete(ip);
  }

  /** Past the ready cap: releases and returns the ready connection silent longest, other than `newcomer`. */
  #makeReadyRoom(newcomer: C): C | undefined {
    if (this.#ready <= this.maxConnections) return undefined;
    let victim: C | undefined;
    let silentSince = Infinity;
    for (const [connection, entry] of this.#entries) {
      if (!entry.ready || connection === newcomer) continue;
      if (entry.lastLineMs < silentSince) {
        victim = connection;
        silentSince = entry.lastLineMs;
      }
    }
    if (victim !== undefined) this.release(victim);
    return victim;
  }

  /** The oldest pending connection other than `newcomer` that `filter` accepts. */
  #oldestPending(
    newcomer: C,
    filter: (entry: Entry) => boolean,
  ): C | undefined {
    let victim: C | undefined;
    let openedMs = Infinity;
    for (const [connection, entry] of this.#entries) {
      if (entry.ready || connection === newcomer || !filter(entry)) continue;
      if (entry.openedMs < openedMs) {
        victim = connection;
        openedMs = entry.openedMs;
      }
    }
    return victim;
  }

  /**
   * The pending connection to close when all pending slots are taken: among
   * those that have had their grace (all, if none has: the caller did not
   * wait), the oldest of the non-loopback IP holding the most (the newcomer
   * aside); the oldest loopback one only when no other is left.
   */
  #crowdedPending(newcomer: C, nowMs: number): C | undefined {
    const graced = (e: Entry) => nowMs - e.openedMs >= this.pendingGraceMs;
    const anyGraced = this.#oldestPending(newcomer, graced) !== undefined;
    const candidate = (e: Entry) => !anyGraced || graced(e);
    let crowded: string | undefined;
    let most = 0;
    for (const [connection, entry] of this.#entries) {
      if (
        entry.ready || entry.loopback || connection === newcomer ||
        !candidate(entry)
      ) continue;
      const count = this.#pendingPerIp.get(entry.ip)!;
      if (count > most) {
        crowded = entry.ip;
        most = count;
      }
    }
    return crowded === undefined
      ? this.#oldestPending(newcomer, candidate)
      : this.#oldestPending(newcomer, (e) => e.ip === crowded && candidate(e));
  }
}

/**
 * A control-port token, kept as its SHA-256 digest. An attempt is hashed too
 * and the two 32-byte digests are compared in constant time, so neither the
 * attempt's length nor how much of it is right shows in the time taken.
 *
 * @example
 * ```ts
 * import { ControlToken } from "./control_admission.ts";
 * const token = new ControlToken("s3cret");
 * if (!token.matches("s3cret") || token.matches("s3cre")) throw new Error();
 * ```
 */
export class ControlToken {
  readonly #digest: Uint8Array;
  readonly #compare: (a: Uint8Array, b: Uint8Array) => boolean;

  /**
   * Keeps the digest of `token`.
   * @param token the token
   * @param compare the comparison of the two digests: constant-time by default (another one only for tests)
   */
  constructor(
    token: string,
    compare: (a: Uint8Array, b: Uint8Array) => boolean = constantTimeEqual,
  ) {
    this.#digest = sha256(new TextEncoder().encode(token));
    this.#compare = compare;
  }

  /** Whether `attempt` is the token (their SHA-256 digests compared in constant time). */
  matches(attempt: string): boolean {
    return this.#compare(
      sha256(new TextEncoder().encode(attempt)),
      this.#digest,
    );
  }
}
