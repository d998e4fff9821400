/**
 * Random msg_ids for fragmented streams (protocol.md section 3), drawn from
 * the CSPRNG in batches.
 *
 * @module
 */

const pool = new Uint32Array(256);
let next = pool.length;

/** A random u32 for a fragmented stream's msg_id. */
export function randomMsgId(): number {
  if (next >= pool.length) {
    crypto.getRandomValues(pool);
    next = 0;
  }
  return pool[next++]!;
}
