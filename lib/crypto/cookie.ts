/**
 * Stateless address-validation cookies (protocol.md section 4):
 * `issued u32 | first 16 bytes of HMAC-SHA-256(secret, address ‖ issued)`.
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
const MAC_SIZE = 16;

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
  if (
    !Number.isInteger(issuedSeconds) || issuedSeconds < 0 ||
    issuedSeconds > 0xffff_ffff
  ) {
    throw new RangeError(
      `Cannot compute cookie: issue time ${issuedSeconds} is not a u32 number of seconds`,
    );
  }
  const cookie = new Uint8Array(COOKIE_SIZE);
  new DataView(cookie.buffer).setUint32(0, issuedSeconds);
  const mac = hmacSha256(secret, address, cookie.subarray(0, 4));
  cookie.set(mac.subarray(0, MAC_SIZE), 4);
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
    return computeCookie(this.#current, address, Math.floor(nowMs / 1000));
  }

  /** Verifies a cookie against an encoded address value (current or previous secret, age bounds, constant-time compare). */
  verify(cookie: Uint8Array, address: Uint8Array): CookieVerdict {
    if (cookie.length !== COOKIE_SIZE) return "malformed";
    const nowMs = this.#options.now();
    this.#rotate(nowMs);
    const issued = new DataView(cookie.buffer, cookie.byteOffset, 4)
      .getUint32(0);
    const age = Math.floor(nowMs / 1000) - issued;
    if (age < -this.#options.maxFutureSeconds) return "future";
    if (age > this.#options.maxAgeSeconds) return "expired";
    const mac = cookie.subarray(4);
    // Compute both so the time taken does not tell which secret matched.
    const withCurrent = constantTimeEqual(
      computeCookie(this.#current, address, issued).subarray(4),
      mac,
    );
    const withPrevious = this.#previous !== null &&
      constantTimeEqual(
        computeCookie(this.#previous, address, issued).subarray(4),
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
    const r = this.#options.randomBytes(4);
    const u = ((r[0] << 24) | (r[1] << 16) | (r[2] << 8) | r[3]) >>> 0;
    return rotateMinMs + (u / 0xffff_ffff) * (rotateMaxMs - rotateMinMs);
  }
}
