/**
 * Stateless address-validation cookies (protocol.md section 4):
 * `issued u32 | first 16 bytes of HMAC-SHA-256(secret, address ‖ issued)`.
 * The secret rotates every 60-120 s, lazily, on the injected clock; the current
 * and previous secrets are accepted. Pure: no timers.
 *
 * @module
 */

/** Size of a cookie value. */
export const COOKIE_SIZE = 20;

/**
 * Computes the cookie for an encoded address value and issue time.
 * @param secret the server cookie secret
 * @param address the requester's address value (protocol.md 2.1)
 * @param issuedSeconds whole seconds since the epoch (u32)
 */
export function computeCookie(
  secret: Uint8Array,
  address: Uint8Array,
  issuedSeconds: number,
): Uint8Array {
  throw new Error("not implemented" + secret + address + issuedSeconds);
}

/** Outcome of {@linkcode CookieAuthority.verify}. */
export type CookieVerdict =
  | "valid"
  | "malformed"
  | "expired"
  | "future"
  | "bad_mac";

/** Options of a {@linkcode CookieAuthority}. */
export interface CookieAuthorityOptions {
  /** Clock in milliseconds. Default Date.now. */
  now: () => number;
  /** Source of random bytes for secrets. Default crypto.getRandomValues. */
  randomBytes: (length: number) => Uint8Array;
  /** Shortest secret lifetime. Default 60_000 ms. */
  rotateMinMs: number;
  /** Longest secret lifetime. Default 120_000 ms. */
  rotateMaxMs: number;
  /** Oldest acceptable cookie: now - issued <= this. Default 60 s. */
  maxAgeSeconds: number;
  /** How far a cookie may be in the future: now - issued >= -this. Default 5 s. */
  maxFutureSeconds: number;
}

/** Issues and verifies cookies, rotating its secret lazily on the clock. */
export class CookieAuthority {
  /** @param options clock, randomness and bounds (defaults of protocol.md) */
  constructor(options: Partial<CookieAuthorityOptions> = {}) {
    throw new Error("not implemented" + options);
  }

  /** Issues a cookie for an encoded address value at the current time. */
  issue(address: Uint8Array): Uint8Array {
    throw new Error("not implemented" + address);
  }

  /** Verifies a cookie against an encoded address value (current or previous secret, age bounds, constant-time compare). */
  verify(cookie: Uint8Array, address: Uint8Array): CookieVerdict {
    throw new Error("not implemented" + cookie + address);
  }
}
