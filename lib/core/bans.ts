/**
 * The server's ban list: sources (an IP, or one IP:PORT) whose datagrams are
 * dropped before any work, until the ban expires or is lifted. Bounded, and
 * pure: the caller passes the time in milliseconds.
 *
 * @module
 */
import {
  canonicalHost,
  formatAddress,
  parseAddress,
  type PeerAddress,
} from "../wire/address.ts";

/** Bans kept at most by default. */
export const DEFAULT_MAX_BANS = 4096;

/** The longest ban with a duration: a year. Longer: ban until unbanned. */
export const MAX_BAN_SECONDS = 365 * 24 * 3600;

/** One ban as listed. */
export interface BanEntry {
  /** What is banned: `IP` (every port) or `IP:PORT` (`[IPv6]:PORT`). */
  readonly target: string;
  /** Whole seconds until it expires (rounded up), or undefined: until unbanned. */
  readonly secondsLeft: number | undefined;
  /** Why, as told to the members it removed. */
  readonly reason: string;
}

interface Ban {
  readonly target: string;
  readonly expiresAt: number | undefined;
  readonly reason: string;
}

/**
 * The canonical form of a ban target: `IP` (IPv6 bare, RFC 5952) or
 * `IP:PORT` (`[IPv6]:PORT`).
 *
 * @example
 * ```ts
 * import { parseBanTarget } from "./bans.ts";
 * if (parseBanTarget("0:0::1") !== "::1") throw new Error();
 * if (parseBanTarget("[::1]:5000") !== "[::1]:5000") throw new Error();
 * ```
 * @throws {TypeError} when `text` is neither an IP address nor an address with a port
 */
export function parseBanTarget(text: string): string {
  const ip = canonicalHost(text);
  if (ip !== undefined) return ip;
  try {
    return formatAddress(parseAddress(text));
  } catch {
    throw new TypeError(
      `${
        JSON.stringify(text)
      } is not a ban target: give an IP address (every port) or IP:PORT ([IPv6]:PORT for IPv6)`,
    );
  }
}

/**
 * Banned sources, each until it expires or is removed; at most `capacity`.
 * A lookup by source address matches a ban of its IP:PORT or of its IP.
 */
export class BanList {
  readonly #bans = new Map<string, Ban>();

  /** @param capacity most bans kept; adding past it is refused */
  constructor(readonly capacity: number = DEFAULT_MAX_BANS) {}

  /** Bans in force or not yet found expired. */
  get size(): number {
    return this.#bans.size;
  }

  /**
   * Bans `target` (replacing an earlier ban of it) for `seconds`, or until
   * removed when `seconds` is undefined.
   * @returns the canonical target
   * @throws {TypeError} when `target` is not an IP or IP:PORT
   * @throws {RangeError} when `seconds` is not a whole number from 1 to a year, or the list is full
   */
  add(
    target: string,
    nowMs: number,
    seconds?: number,
    reason = "",
  ): string {
    const key = parseBanTarget(target);
    if (
      seconds !== undefined &&
      (!Number.isInteger(seconds) || seconds < 1 || seconds > MAX_BAN_SECONDS)
    ) {
      throw new RangeError(
        `Cannot ban for ${seconds} s: give whole seconds from 1 to ${MAX_BAN_SECONDS} (a year), or none to ban until unbanned`,
      );
    }
    this.#prune(nowMs);
    if (!this.#bans.has(key) && this.#bans.size >= this.capacity) {
      throw new RangeError(
        `Cannot ban ${key}: the ban list is full (${this.capacity} bans); unban some first, or ban a whole IP instead of its ports`,
      );
    }
    this.#bans.set(key, {
      target: key,
      expiresAt: seconds === undefined ? undefined : nowMs + seconds * 1000,
      reason,
    });
    return key;
  }

  /**
   * Lifts the ban of exactly `target`.
   * @returns whether there was one
   * @throws {TypeError} when `target` is not an IP or IP:PORT
   */
  remove(target: string): boolean {
    return this.#bans.delete(parseBanTarget(target));
  }

  /**
   * The ban in force for a datagram's source: of its IP:PORT, else of its IP.
   * @param source `formatAddress(address)`, when the caller has it already
   */
  match(
    address: PeerAddress,
    nowMs: number,
    source: string = formatAddress(address),
  ): BanEntry | undefined {
    if (this.#bans.size === 0) return undefined;
    const ban = this.#live(source, nowMs) ??
      this.#live(canonicalHost(address.hostname) ?? "", nowMs);
    return ban && entry(ban, nowMs);
  }

  /** Whether a source address or IP falls under the ban of `target` (a canonical target). */
  static covers(target: string, address: PeerAddress): boolean {
    return target === formatAddress(address) ||
      target === canonicalHost(address.hostname);
  }

  /** The bans in force, in the order they were made. */
  list(nowMs: number): BanEntry[] {
    this.#prune(nowMs);
    return [...this.#bans.values()].map((ban) => entry(ban, nowMs));
  }

  #live(key: string, nowMs: number): Ban | undefined {
    const ban = this.#bans.get(key);
    if (ban?.expiresAt !== undefined && ban.expiresAt <= nowMs) {
      this.#bans.delete(key);
      return undefined;
    }
    return ban;
  }

  #prune(nowMs: number): void {
    for (const [key, ban] of this.#bans) {
      if (ban.expiresAt !== undefined && ban.expiresAt <= nowMs) {
        this.#bans.delete(key);
      }
    }
  }
}

function entry(ban: Ban, nowMs: number): BanEntry {
  return {
    target: ban.target,
    secondsLeft: ban.expiresAt === undefined
      ? undefined
      : Math.ceil((ban.expiresAt - nowMs) / 1000),
    reason: ban.reason,
  };
}
