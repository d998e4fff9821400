/**
 * IV marks against reflection (protocol.md section 6): each side makes its
 * Fernet IVs as `r ‖ first 8 bytes of HMAC-SHA-256(mark secret, r)`, r 8 random
 * bytes, and drops any received token whose IV carries its own mark. Pure.
 *
 * @module
 */

/** Makes and recognises this side's marked IVs. */
export class IvMarker {
  /** @param secret this side's local mark secret (at least 16 bytes); random when omitted */
  constructor(secret?: Uint8Array) {
    throw new Error("not implemented" + secret);
  }

  /** A fresh marked 16-byte IV. @param random the 8 random bytes r (injectable for tests) */
  create(random?: Uint8Array): Uint8Array {
    throw new Error("not implemented" + random);
  }

  /** Whether `iv` (16 bytes) carries this side's mark. */
  isOwn(iv: Uint8Array): boolean {
    throw new Error("not implemented" + iv);
  }
}
