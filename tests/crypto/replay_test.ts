import assert from "node:assert/strict";
import {
  DEFAULT_REPLAY_ENTRIES,
  ReplayWindow,
  replayWindowEntries,
} from "../../lib/crypto/replay.ts";

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
    // The forgotten IV is rejected, as is anything else at or below the floor:
    // within the age, so as "window_full", not "expired".
    assert.equal(w.check(iv(2), NOW + 1, NOW), "window_full");
    assert.equal(w.check(iv(9), NOW + 1, NOW), "window_full");
    // The others are still remembered.
    assert.equal(w.check(iv(1), NOW + 2, NOW), "replayed");
    assert.equal(w.check(iv(3), NOW + 3, NOW), "replayed");
    assert.equal(w.check(iv(4), NOW + 4, NOW), "replayed");
  },
});

Deno.test({
  name:
    "an IV still remembered at the floor is replayed; a forgotten one of the same second is window_full",
  permissions: "none",
  fn() {
    const w = new ReplayWindow({ maxEntries: 3 });
    for (let i = 1; i <= 3; i++) {
      assert.equal(w.check(iv(i), NOW, NOW), "accepted");
    }
    assert.equal(w.check(iv(4), NOW + 1, NOW + 1), "accepted"); // iv(1) goes
    assert.equal(w.floor, NOW);
    assert.equal(w.check(iv(1), NOW, NOW + 1), "window_full");
    assert.equal(w.check(iv(2), NOW, NOW + 1), "replayed");
    assert.equal(w.check(iv(3), NOW, NOW + 1), "replayed");
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
    assert.equal(w.check(iv(3), NOW + 5, NOW), "window_full");
    assert.equal(w.check(iv(3), NOW, NOW), "window_full");
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
        assert.equal(verdict, "window_full");
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
      maxEntries: 65_536,
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

Deno.test({
  name:
    "more than 4,096 tokens of one second are all accepted once, and replays of every one are refused",
  permissions: "none",
  fn() {
    const w = new ReplayWindow();
    for (let i = 0; i < 10_000; i++) {
      assert.equal(w.check(iv(i), NOW, NOW), "accepted", `token ${i}`);
    }
    for (let i = 0; i < 10_000; i++) {
      assert.equal(w.check(iv(i), NOW, NOW), "replayed", `replay ${i}`);
    }
    assert.equal(w.size, 10_000);
    assert.equal(w.floor, -Infinity);
  },
});

Deno.test({
  name:
    "a token's whole life at 1,000 tokens per second is remembered: all accepted once, every replay refused, memory within the bound",
  permissions: "none",
  fn() {
    const w = new ReplayWindow();
    let n = 0;
    for (let second = 0; second < 60; second++) {
      for (let i = 0; i < 1000; i++) {
        assert.equal(w.check(iv(n++), NOW + second, NOW + second), "accepted");
      }
    }
    assert.equal(w.size, 60_000);
    assert.ok(w.size <= DEFAULT_REPLAY_ENTRIES);
    // Every one of them replayed in the last second of the first token's life.
    for (let i = 0; i < n; i++) {
      const verdict = w.check(iv(i), NOW + Math.floor(i / 1000), NOW + 60);
      assert.equal(verdict, "replayed", `replay ${i}`);
    }
    // A second later the first second's tokens are past their life.
    assert.equal(w.check(iv(0), NOW, NOW + 61), "expired");
    assert.equal(w.size, 59_000);
  },
});

Deno.test({
  name:
    "above its size the window keeps its bound: the excess is window_full (not expired), forgotten IVs are never accepted again",
  permissions: "none",
  fn() {
    const w = new ReplayWindow({ maxEntries: 1000 });
    const verdicts = new Map<string, number>();
    let n = 0;
    for (let second = 0; second < 5; second++) {
      for (let i = 0; i < 1500; i++) {
        const verdict = w.check(iv(n++), NOW + second, NOW + second);
        verdicts.set(verdict, (verdicts.get(verdict) ?? 0) + 1);
        assert.ok(w.size <= 1000);
      }
    }
    // Each second: the first 1000 accepted (pushing the older second out),
    // the other 500 refused for room.
    assert.deepEqual(
      Object.fromEntries(verdicts),
      { accepted: 5000, window_full: 2500 },
    );
    assert.equal(w.floor, NOW + 3);
    // Nothing accepted before is accepted again; nothing refused gets in
    // below the floor.
    for (let i = 0; i < n; i++) {
      const second = Math.floor(i / 1500);
      const verdict = w.check(iv(i), NOW + second, NOW + 4);
      assert.notEqual(verdict, "accepted", `token ${i}`);
      if (second < 4) assert.equal(verdict, "window_full", `token ${i}`);
    }
    assert.ok(w.size <= 1000);
  },
});

Deno.test({
  name: "replayWindowEntries() sizes a window by rate, time and burst",
  permissions: "none",
  fn() {
    // A member's budgets on the server: 200 messages and 10 keep-alives a
    // second (bursts 400 and 20) for a token's life: 60 s and its own second.
    assert.equal(replayWindowEntries(210, 61, 420), 13_230);
    assert.equal(replayWindowEntries(16_384, 4), 65_536);
    assert.equal(DEFAULT_REPLAY_ENTRIES, 65_536);
    assert.equal(replayWindowEntries(0.5, 3), 2);
    assert.equal(replayWindowEntries(0, 0), 1);
    for (
      const args of [[-1, 60], [10, NaN], [Infinity, 60], [10, 60, -1]]
    ) {
      assert.throws(
        () => replayWindowEntries(...(args as [number, number, number?])),
        RangeError,
      );
    }
  },
});
