/**
 * Stateless address-validation cookies (protocol.md sections 4 and 10, the
 * 1.1 form): `issued u32 | nonce u32 | first 12 bytes of
 * HMAC-SHA-256(secret, address ‖ issued ‖ nonce)`. The random nonce makes
 * every cookie unique, so a server can accept each one for one key only.
 * The secret rotates every 60-120 s, lazily, on the injected clock; the current
 * and previous secrets are accepted. Pure: no timers.
 *
 * @module
 */
import { constantTimeEqual, hmacSha256 } from "./hmac.ts";

/** Size of a cookie value. */
export const COOKIE_SIZE = 20;
/** Size of a cookie secret. */
export const COOKIE_SECRET_SIZE = 32;
const MAC_SIZE = 12;
/** Bytes before the MAC: issued u32 and nonce u32. */
const HEADER_SIZE = 8;

/**
 * Computes the cookie for an encoded address value, issue time and nonce.
 * @param secret the server cookie secret
 * @param address the requester's address value (protocol.md 2.1)
 * @param issuedSeconds whole seconds since the epoch (u32)
 * @param nonce a random u32 that makes the cookie unique
 */
export function computeCookie(
  secret: Uint8Array,
  address: Uint8Array,
  issuedSeconds: number,
  nonce: number,
): Uint8Array {
  if (
    !Number.isInteger(issuedSeconds) || issuedSeconds < 0 ||
    issuedSeconds > 0xffff_ffff
  ) {
    throw new RangeError(
      `Cannot compute cookie: issue time ${issuedSeconds} is not a u32 number of seconds`,
    );
  }
  if (!Number.isInteger(nonce) || nonce < 0 || nonce > 0xffff_ffff) {
    throw new RangeError(
      `Cannot compute cookie: nonce ${nonce} is not a u32 number`,
    );
  }
  const cookie = new Uint8Array(COOKIE_SIZE);
  const view = new DataView(cookie.buffer);
  view.setUint32(0, issuedSeconds);
  view.setUint32(4, nonce);
  const mac = hmacSha256(secret, address, cookie.subarray(0, HEADER_SIZE));
  cookie.set(mac.subarray(0, MAC_SIZE), HEADER_SIZE);
  return cookie;
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

function defaultRandomBytes(length: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(length));
}

/** Issues and verifies cookies, rotating its secret lazily on the clock. */
export class CookieAuthority {
  #options: CookieAuthorityOptions;
  #current: Uint8Array;
  /** The secret before #current, or null before the first rotation. */
  #previous: Uint8Array | null = null;
  /** Clock time (ms) at which #current is retired. */
  #deadline: number;

  /**
   * Creates an authority with a fresh secret.
   * @param options clock, randomness and bounds (defaults of protocol.md)
   * @throws {RangeError} for impossible rotation or age bounds
   */
  constructor(options: Partial<CookieAuthorityOptions> = {}) {
    const o: CookieAuthorityOptions = {
      now: Date.now,
      randomBytes: defaultRandomBytes,
      rotateMinMs: 60_000,
      rotateMaxMs: 120_000,
      maxAgeSeconds: 60,
      maxFutureSeconds: 5,
      ...options,
    };
    if (!(o.rotateMinMs > 0) || !(o.rotateMaxMs >= o.rotateMinMs)) {
      throw new RangeError(
        `CookieAuthority needs 0 < rotateMinMs <= rotateMaxMs, got ${o.rotateMinMs} and ${o.rotateMaxMs}`,
      );
    }
    if (!(o.maxAgeSeconds >= 0) || !(o.maxFutureSeconds >= 0)) {
      throw new RangeError(
        `CookieAuthority bounds must be non-negative: maxAgeSeconds ${o.maxAgeSeconds}, maxFutureSeconds ${o.maxFutureSeconds}`,
      );
    }
    this.#options = o;
    this.#current = this.#newSecret();
    this.#deadline = o.now() + this.#lifetime();
  }

  /** Issues a cookie for an encoded address value at the current time. */
  issue(address: Uint8Array): Uint8Array {
    const nowMs = this.#options.now();
    this.#rotate(nowMs);
    const nonce = this.#randomU32();
    return computeCookie(
      this.#current,
      address,
      Math.floor(nowMs / 1000),
      nonce,
    );
  }

  /** Verifies a cookie against an encoded address value (current or previous secret, age bounds, constant-time compare). */
  verify(cookie: Uint8Array, address: Uint8Array): CookieVerdict {
    if (cookie.length !== COOKIE_SIZE) return "malformed";
    const nowMs = this.#options.now();
    this.#rotate(nowMs);
    const view = new DataView(cookie.buffer, cookie.byteOffset, HEADER_SIZE);
    const issued = view.getUint32(0);
    const nonce = view.getUint32(4);
    const age = Math.floor(nowMs / 1000) - issued;
    if (age < -this.#options.maxFutureSeconds) return "future";
    if (age > this.#options.maxAgeSeconds) return "expired";
    const mac = cookie.subarray(HEADER_SIZE);
    // Compute both so the time taken does not tell which secret matched.
    const withCurrent = constantTimeEqual(
      computeCookie(this.#current, address, issued, nonce).subarray(
        HEADER_SIZE,
      ),
      mac,
    );
    const withPrevious = this.#previous !== null &&
      constantTimeEqual(
        computeCookie(this.#previous, address, issued, nonce).subarray(
          HEADER_SIZE,
        ),
        mac,
      );
    return withCurrent || withPrevious ? "valid" : "bad_mac";
  }

  /** Retires the current secret if its deadline passed (lazily, on the injected clock). */
  #rotate(nowMs: number): void {
    if (nowMs < this.#deadline) return;
    this.#previous = this.#current;
    this.#current = this.#newSecret();
    this.#deadline += this.#lifetime();
    if (nowMs >= this.#deadline) {
      // More than one lifetime passed: the secret that would have preceded the
      // current one never issued a cookie, so a fresh pair stands for it.
      this.#previous = this.#newSecret();
      this.#current = this.#newSecret();
      this.#deadline = nowMs + this.#lifetime();
    }
  }

  #newSecret(): Uint8Array {
    const secret = this.#options.randomBytes(COOKIE_SECRET_SIZE);
    if (secret.length !== COOKIE_SECRET_SIZE) {
      throw new RangeError(
        `CookieAuthority randomBytes returned ${secret.length} bytes, not ${COOKIE_SECRET_SIZE}`,
      );
    }
    return secret.slice();
  }

  /** A lifetime drawn uniformly from [rotateMinMs, rotateMaxMs]. */
  #lifetime(): number {
    const { rotateMinMs, rotateMaxMs } = this.#options;
    const u = this.#randomU32();
    return rotateMinMs + (u / 0xffff_ffff) * (rotateMaxMs - rotateMinMs);
  }

  /** A random u32 from the injected source of random bytes. */
  #randomU32(): number {
    const r = this.#options.randomBytes(4);
    return ((r[0] << 24) | (r[1] << 16) | (r[2] << 8) | r[3]) >>> 0;
  }
}
