/**
 * Synchronous HMAC-SHA-256 and constant-time comparison, used for cookies and
 * IV marks on the hot path. Pure functions of their inputs.
 *
 * @module
 */

/** HMAC-SHA-256 of `data` under `key` (32 bytes out). */
export function hmacSha256(key: Uint8Array, ...data: Uint8Array[]): Uint8Array {
  throw new Error("not implemented" + key + data);
}

/** Compares two byte arrays in time independent of where they differ. Different lengths compare unequal. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  throw new Error("not implemented" + a + b);
}
