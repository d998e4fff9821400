import assert from "node:assert/strict";
import { ReplayWindow } from "../../lib/crypto/replay.ts";

const iv = (n: number) => {
  const bytes = new Uint8Array(16);
  new DataView(bytes.buffer).setUint32(12, n);
  return bytes;
};
const NOW = 1_700_000_000;

Deno.test({
  name: "check() accepts a fresh IV once, then calls it replayed",
  permissions: "none",
  fn() {
    const w = new ReplayWindow();
    assert.equal(w.check(iv(1), NOW, NOW), "accepted");
    assert.equal(w.check(iv(1), NOW, NOW), "replayed");
    assert.equal(w.check(iv(1), NOW - 5, NOW + 3), "replayed");
    assert.equal(w.check(iv(2), NOW, NOW), "accepted");
    assert.equal(w.size, 2);
  },
});

Deno.test({
  name: "check() bounds are inclusive: 60 s old and 60 s ahead pass, 61 do not",
  permissions: "none",
  fn() {
    const w = new ReplayWindow();
    assert.equal(w.check(iv(1), NOW - 60, NOW), "accepted");
    assert.equal(w.check(iv(2), NOW - 61, NOW), "expired");
    assert.equal(w.check(iv(3), NOW + 60, NOW), "accepted");
    assert.equal(w.check(iv(4), NOW + 61, NOW), "future");
    const narrow = new ReplayWindow({ maxAgeSeconds: 10, maxFutureSeconds: 0 });
    assert.equal(narrow.check(iv(1), NOW - 11, NOW), "expired");
    assert.equal(narrow.check(iv(2), NOW + 1, NOW), "future");
    assert.equal(narrow.check(iv(3), NOW, NOW), "accepted");
  },
});

Deno.test({
  name: "check() a rejected token is not recorded",
  permissions: "none",
  fn() {
    const w = new ReplayWindow();
    assert.equal(w.check(iv(1), NOW + 61, NOW), "future");
    assert.equal(w.size, 0);
    assert.equal(w.check(iv(1), NOW + 61, NOW + 1), "accepted");
  },
});

Deno.test({
  name:
    "entries that age out are forgotten, and stay rejected even if the clock steps back",
  permissions: "none",
  fn() {
    const w = new ReplayWindow();
    for (let i = 0; i < 10; i++) {
      assert.equal(w.check(iv(i), NOW + i, NOW), "accepted");
    }
    assert.equal(w.size, 10);
    // At NOW + 65 the entries of NOW .. NOW + 4 are older than 60 s.
    assert.equal(w.check(iv(100), NOW + 65, NOW + 65), "accepted");
    assert.equal(w.size, 6);
    assert.equal(w.floor, NOW + 4);
    // The clock steps back: the forgotten IVs are still not accepted again.
    for (let i = 0; i < 5; i++) {
      assert.equal(w.check(iv(i), NOW + i, NOW), "expired");
    }
    for (let i = 5; i < 10; i++) {
      assert.equal(w.check(iv(i), NOW + i, NOW), "replayed");
    }
  },
});

Deno.test({
  name: "a full window forgets its oldest entry and raises the floor",
  permissions: "none",
  fn() {
    const w = new ReplayWindow({ maxEntries: 3 });
    assert.equal(w.check(iv(1), NOW + 2, NOW), "accepted");
    assert.equal(w.check(iv(2), NOW + 1, NOW), "accepted");
    assert.equal(w.check(iv(3), NOW + 3, NOW), "accepted");
    assert.equal(w.floor, -Infinity);
    assert.equal(w.check(iv(4), NOW + 4, NOW), "accepted");
    assert.equal(w.size, 3);
    assert.equal(w.floor, NOW + 1);
    // The forgotten IV is rejected, as is anything else at or below the floor.
    assert.equal(w.check(iv(2), NOW + 1, NOW), "expired");
    assert.equal(w.check(iv(9), NOW + 1, NOW), "expired");
    // The others are still remembered.
    assert.equal(w.check(iv(1), NOW + 2, NOW), "replayed");
    assert.equal(w.check(iv(3), NOW + 3, NOW), "replayed");
    assert.equal(w.check(iv(4), NOW + 4, NOW), "replayed");
  },
});

Deno.test({
  name:
    "a full window rejects a token no newer than its oldest entry without forgetting anything",
  permissions: "none",
  fn() {
    const w = new ReplayWindow({ maxEntries: 2 });
    assert.equal(w.check(iv(1), NOW + 5, NOW), "accepted");
    assert.equal(w.check(iv(2), NOW + 6, NOW), "accepted");
    assert.equal(w.check(iv(3), NOW + 5, NOW), "expired");
    assert.equal(w.check(iv(3), NOW, NOW), "expired");
    assert.equal(w.size, 2);
    assert.equal(w.floor, -Infinity);
    assert.equal(w.check(iv(1), NOW + 5, NOW), "replayed");
  },
});

Deno.test({
  name: "eviction always takes the oldest timestamp, in any insertion order",
  permissions: "none",
  fn() {
    const w = new ReplayWindow({
      maxEntries: 50,
      maxAgeSeconds: 10_000,
      maxFutureSeconds: 10_000,
    });
    const times: number[] = [];
    let seed = 12345;
    const next = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31);
    for (let i = 0; i < 2000; i++) {
      const t = NOW + (next() % 5000);
      const verdict = w.check(iv(i), t, NOW);
      const remembered = [...times].sort((a, b) => a - b);
      if (times.length === 50 && remembered[0] >= t) {
        assert.equal(verdict, "expired");
        continue;
      }
      if (t <= w.floor) continue;
      assert.equal(verdict, "accepted");
      if (times.length === 50) {
        times.splice(times.indexOf(remembered[0]), 1);
        assert.equal(w.floor, remembered[0]);
      }
      times.push(t);
      assert.equal(w.size, times.length);
    }
  },
});

Deno.test({
  name: "many checks stay fast (no scan per check)",
  permissions: "none",
  fn() {
    const w = new ReplayWindow({ maxEntries: 4096 });
    const bytes = new Uint8Array(16);
    for (let i = 0; i < 200_000; i++) {
      crypto.getRandomValues(bytes);
      const now = NOW + Math.floor(i / 1000);
      assert.equal(w.check(bytes, now, now), "accepted");
      assert.ok(w.size <= 4096);
    }
  },
});

Deno.test({
  name: "the constructor rejects impossible bounds",
  permissions: "none",
  fn() {
    assert.throws(() => new ReplayWindow({ maxEntries: 0 }), RangeError);
    assert.throws(() => new ReplayWindow({ maxEntries: 1.5 }), RangeError);
    assert.throws(() => new ReplayWindow({ maxAgeSeconds: -1 }), RangeError);
    assert.throws(
      () => new ReplayWindow({ maxFutureSeconds: NaN }),
      RangeError,
    );
    assert.deepEqual(new ReplayWindow().options, {
      maxAgeSeconds: 60,
      maxFutureSeconds: 60,
      maxEntries: 4096,
    });
  },
});

Deno.test({
  name: "a non-finite timestamp is expired",
  permissions: "none",
  fn() {
    const w = new ReplayWindow();
    assert.equal(w.check(iv(1), NaN, NOW), "expired");
    assert.equal(w.size, 0);
  },
});
