/**
 * IV marks against reflection (protocol.md section 6): each side makes its
 * Fernet IVs as `r ‖ first 8 bytes of HMAC-SHA-256(mark secret, r)`, r 8 random
 * bytes, and drops any received token whose IV carries its own mark. Pure.
 *
 * @module
 */
import { constantTimeEqual } from "./hmac.ts";
import { HmacSha256 } from "./sha256.ts";

/** Size of a Fernet IV. */
const IV_SIZE = 16;
/** Size of r, the random half of a marked IV. */
export const IV_MARK_RANDOM_SIZE = 8;
/** Shortest mark secret accepted. */
export const IV_MARK_MIN_SECRET_SIZE = 16;

/** Makes and recognises this side's marked IVs. */
export class IvMarker {
  readonly #mac: HmacSha256;
  readonly #digest = new Uint8Array(32);
  /** Random bytes drawn in batches; r is taken from here. */
  readonly #pool = new Uint8Array(4096);
  #poolNext = 4096;

  /**
   * Creates a marker.
   * @param secret this side's local mark secret (at least 16 bytes, copied); random when omitted
   * @throws {RangeError} when the secret is shorter than 16 bytes
   */
  constructor(secret?: Uint8Array) {
    if (secret !== undefined && secret.length < IV_MARK_MIN_SECRET_SIZE) {
      throw new RangeError(
        `IvMarker secret is ${secret.length} bytes; it needs at least ${IV_MARK_MIN_SECRET_SIZE}`,
      );
    }
    this.#mac = new HmacSha256(
      secret ?? crypto.getRandomValues(new Uint8Array(32)),
    );
  }

  /** A fresh marked 16-byte IV. @param random the 8 random bytes r (injectable for tests) */
  create(random?: Uint8Array): Uint8Array {
    const iv = new Uint8Array(IV_SIZE);
    if (random === undefined) {
      this.createInto(iv, 0);
      return iv;
    }
    if (random.length !== IV_MARK_RANDOM_SIZE) {
      throw new RangeError(
        `IvMarker.create needs ${IV_MARK_RANDOM_SIZE} random bytes, got ${random.length}`,
      );
    }
    iv.set(random);
    this.#markInto(iv, 0);
    return iv;
  }

  /**
   * Writes a fresh marked IV at `out[offset]` (16 bytes), as Fernet's `IvSource`.
   * @throws {RangeError} when the 16 bytes do not fit at `offset`
   */
  createInto(out: Uint8Array, offset: number): void {
    if (
      !Number.isInteger(offset) || offset < 0 || offset + IV_SIZE > out.length
    ) {
      throw new RangeError(
        `IvMarker.createInto: 16 bytes do not fit at offset ${offset} of a ${out.length}-byte array`,
      );
    }
    if (this.#poolNext + IV_MARK_RANDOM_SIZE > this.#pool.length) {
      crypto.getRandomValues(this.#pool);
      this.#poolNext = 0;
    }
    const start = this.#poolNext;
    this.#poolNext += IV_MARK_RANDOM_SIZE;
    for (let i = 0; i < IV_MARK_RANDOM_SIZE; i++) {
      out[offset + i] = this.#pool[start + i];
    }
    this.#markInto(out, offset);
  }

  /** Writes the mark of the r at `iv[offset..offset+8]` right after it. */
  #markInto(iv: Uint8Array, offset: number): void {
    this.#mac.macInto(
      [iv.subarray(offset, offset + IV_MARK_RANDOM_SIZE)],
      this.#digest,
      0,
    );
    for (let i = 0; i < IV_SIZE - IV_MARK_RANDOM_SIZE; i++) {
      iv[offset + IV_MARK_RANDOM_SIZE + i] = this.#digest[i];
    }
  }

  /** Whether `iv` (16 bytes) carries this side's mark. */
  isOwn(iv: Uint8Array): boolean {
    if (iv.length !== IV_SIZE) return false;
    this.#mac.macInto([iv.subarray(0, IV_MARK_RANDOM_SIZE)], this.#digest, 0);
    return constantTimeEqual(
      this.#digest.subarray(0, IV_SIZE - IV_MARK_RANDOM_SIZE),
      iv.subarray(IV_MARK_RANDOM_SIZE),
    );
  }
}
