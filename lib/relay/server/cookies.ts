/**
 * The registration cookies of protocol.md sections 4 and 10: stateless
 * cookies bound to the client's address, and the memory of accepted ones
 * that makes one cookie good for one key record only.
 *
 * @module
 */
import { encodeBase64 } from "../../crypto/base64.ts";
import { CookieAuthority } from "../../crypto/cookie.ts";
import { constantTimeEqual } from "../../crypto/hmac.ts";
import type { DropCounter } from "../../core/drops.ts";
import { ExpiringMap } from "../../core/limits.ts";

/**
 * How long an accepted cookie is remembered with the key record it covered
 * (protocol.md section 10, one cookie one key): as long as the cookie could
 * still be valid (60 s + 5 s of skew), so any other key under it is refused.
 */
const COOKIE_MEMORY_MS = 66_000;
/**
 * Accepted cookies remembered at most. Bounded by the handshake rate: the
 * global budget's default (500/s) over the memory's 66 s is 33,000.
 */
const MAX_REMEMBERED_COOKIES = 65_536;

/** How a valid cookie was used before: not yet, for this same key record, or for another (refused). */
export type CookieUse = "fresh" | "same_key" | "refused";

/** Issues, checks and remembers registration cookies. */
export class CookieGate {
  readonly #authority: CookieAuthority;
  readonly #drops: DropCounter;
  readonly #now: () => number;
  /** Accepted cookie (base64) → SHA-256 of the key record it covered. */
  readonly #accepted = new ExpiringMap<Uint8Array>(MAX_REMEMBERED_COOKIES);

  /**
   * @param drops counts refused cookies
   * @param now the clock (ms)
   */
  constructor(drops: DropCounter, now: () => number) {
    this.#authority = new CookieAuthority({ now });
    this.#drops = drops;
    this.#now = now;
  }

  /** A cookie for the client at `addressValue` (wire-encoded address). */
  issue(addressValue: Uint8Array): Uint8Array {
    return this.#authority.issue(addressValue);
  }

  /**
   * Checks a cookie against the address it came from: its id (the key of
   * the accepted-cookie memory) when valid, else undefined (dropped and
   * counted, `cookie_<verdict>`).
   */
  verify(
    cookie: Uint8Array,
    addressValue: Uint8Array,
    source: string,
  ): string | undefined {
    const verdict = this.#authority.verify(cookie, addressValue);
    if (verdict === "valid") return encodeBase64(cookie);
    this.#drops.drop(`cookie_${verdict}`, source);
    return undefined;
  }

  /**
   * One cookie, one key (protocol.md section 10): whether a cookie is
   * unused, was accepted for this same key record, or was accepted for
   * another one (then refused and counted, `cookie_reused`).
   */
  use(cookieId: string, recordHash: Uint8Array, source: string): CookieUse {
    const covered = this.#accepted.get(cookieId, this.#now());
    if (covered === undefined) return "fresh";
    if (constantTimeEqual(covered, recordHash)) return "same_key";
    this.#drops.drop("cookie_reused", source);
    return "refused";
  }

  /** Remembers that the cookie was accepted for the key record of `recordHash`. */
  remember(cookieId: string, recordHash: Uint8Array): void {
    const at = this.#now();
    this.#accepted.set(cookieId, recordHash, at + COOKIE_MEMORY_MS, at);
  }
}
