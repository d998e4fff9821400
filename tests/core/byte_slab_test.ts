/**
 * ByteSlab: views carved from shared chunks never overlap, start zeroed,
 * roll over to a fresh chunk when one is full, and large requests get their
 * own array.
 */
import assert from "node:assert/strict";
import { ByteSlab } from "../../lib/core/byte_slab.ts";

Deno.test({
  name: "ByteSlab: views share a chunk without overlapping, and start zeroed",
  permissions: "none",
  fn() {
    const slab = new ByteSlab(1024);
    const a = slab.take(100);
    const b = slab.take(28);
    assert.deepEqual([a.length, b.length], [100, 28]);
    assert(a.buffer === b.buffer, "both views come from one chunk");
    assert.deepEqual(b.byteOffset, a.byteOffset + a.length);
    assert(a.every((byte) => byte === 0) && b.every((byte) => byte === 0));
    a.fill(0xff);
    assert(
      b.every((byte) => byte === 0),
      "writing one view leaves the next untouched",
    );
  },
});

Deno.test({
  name:
    "ByteSlab: a full chunk is never reused; the next view starts a new one",
  permissions: "none",
  fn() {
    const slab = new ByteSlab(256);
    const views = Array.from({ length: 8 }, () => slab.take(32));
    for (const view of views) view.fill(0xaa);
    const next = slab.take(32);
    assert.notStrictEqual(next.buffer, views[0].buffer);
    assert.deepEqual(next.byteOffset, 0);
    assert(
      next.every((byte) => byte === 0),
      "a fresh chunk, not an old one refilled",
    );
    assert(views.every((view) => view.every((byte) => byte === 0xaa)));
  },
});

Deno.test({
  name: "ByteSlab: a request over an eighth of a chunk gets its own array",
  permissions: "none",
  fn() {
    const slab = new ByteSlab(1024);
    const small = slab.take(128);
    const large = slab.take(129);
    assert.deepEqual(large.byteLength, large.buffer.byteLength);
    assert(large.buffer !== small.buffer);
    // The chunk was not consumed by the large request.
    assert.deepEqual(slab.take(16).byteOffset, small.byteOffset + 128);
    assert.deepEqual(slab.take(0).length, 0);
  },
});

Deno.test({
  name: "ByteSlab: bad sizes are refused with the value named",
  permissions: "none",
  fn() {
    assert.throws(
      () => new ByteSlab(0),
      /RangeError: .*positive integer of bytes, got 0/,
    );
    const slab = new ByteSlab();
    assert.throws(() => slab.take(-1), /RangeError: .*byte count, got -1/);
    assert.throws(() => slab.take(1.5), /RangeError: .*byte count, got 1\.5/);
  },
});
