/**
 * Synchronous HMAC-SHA-256 and constant-time comparison, used for cookies and
 * IV marks on the hot path. Pure functions of their inputs.
 *
 * @module
 */
import { HmacSha256 } from "./sha256.ts";

/**
 * HMAC-SHA-256 of `data` under `key` (32 bytes out), for one-off keys. A key
 * used many times is cheaper as an {@linkcode HmacSha256} instance.
 */
export function hmacSha256(key: Uint8Array, ...data: Uint8Array[]): Uint8Array {
  return new HmacSha256(key).mac(...data);
}

/** Compares two byte arrays in time independent of where they differ. Different lengths compare unequal. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}
