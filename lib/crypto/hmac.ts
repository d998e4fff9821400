/**
 * Synchronous HMAC-SHA-256 and constant-time comparison, used for cookies and
 * IV marks on the hot path. Pure functions of their inputs.
 *
 * @module
 */
import { createHmac } from "node:crypto";

/** HMAC-SHA-256 of `data` under `key` (32 bytes out). */
export function hmacSha256(key: Uint8Array, ...data: Uint8Array[]): Uint8Array {
  const h = createHmac("sha256", key);
  for (const part of data) h.update(part);
  // Copy out of the Buffer (which may sit in a shared pool) into an exact-size array.
  return new Uint8Array(h.digest());
}

/** Compares two byte arrays in time independent of where they differ. Different lengths compare unequal. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}
