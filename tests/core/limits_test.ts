import assert from "node:assert/strict";
import {
  BoundedMap,
  ExpiringMap,
  OncePerInterval,
  SourceRateLimiter,
  TokenBucket,
} from "../../lib/core/limits.ts";
import { DropCounter, guardedSink } from "../../lib/core/drops.ts";
import type { LogRecord } from "../../lib/log.ts";

const test = (name: string, fn: () => void | Promise<void>) =>
  Deno.test({ name, permissions: "none", fn });

test("TokenBucket allows its burst at once, then refills at its rate", () => {
  const bucket = new TokenBucket(2, 3, 0);
  assert.deepEqual([0, 0, 0, 0].map(() => bucket.take(0)), [
    true,
    true,
    true,
    false,
  ]);
  assert.equal(bucket.take(499), false); // 0.998 tokens
  assert.equal(bucket.take(500), true); // 1 token after 0.5 s at 2/s
  assert.equal(bucket.take(500), false);
  assert.equal(bucket.take(100_000), true); // capped at the burst
  assert.equal(bucket.take(100_000), true);
  assert.equal(bucket.take(100_000), true);
  assert.equal(bucket.take(100_000), false);
});

test("TokenBucket does not mint tokens when the clock goes backwards", () => {
  const bucket = new TokenBucket(1, 1, 10_000);
  assert.equal(bucket.take(10_000), true);
  assert.equal(bucket.take(0), false);
  assert.equal(bucket.take(500), false);
});

test("BoundedMap forgets the least recently used key when full", () => {
  const map = new BoundedMap<number>(2);
  map.upsert("a", () => 1);
  map.upsert("b", () => 2);
  assert.equal(map.upsert("a", () => 99), 1); // a is now most recent
  map.upsert("c", () => 3); // evicts b
  assert.equal(map.size, 2);
  assert.equal(map.upsert("b", () => 4), 4); // b was forgotten: created anew
  assert.equal(map.upsert("c", () => 5), 3); // c stayed
});

test("SourceRateLimiter keeps one bucket per source, bounded in sources", () => {
  const limiter = new SourceRateLimiter(1, 1, 2);
  assert.equal(limiter.allow("a", 0), true);
  assert.equal(limiter.allow("a", 0), false);
  assert.equal(limiter.allow("b", 0), true);
  assert.equal(limiter.allow("c", 0), true); // evicts a (least recent)
  assert.equal(limiter.size, 2);
  assert.equal(limiter.allow("a", 0), true); // a fresh bucket
});

test("OncePerInterval lets a key through once per interval", () => {
  const gate = new OncePerInterval(1000, 10);
  assert.equal(gate.allow("x", 0), true);
  assert.equal(gate.allow("x", 999), false);
  assert.equal(gate.allow("y", 999), true);
  assert.equal(gate.allow("x", 1000), true);
});

test("ExpiringMap remembers values until they expire, and at most its capacity", () => {
  const map = new ExpiringMap<number>(3);
  map.set("a", 1, 100, 0);
  map.set("b", 2, 200, 0);
  assert.equal(map.get("a", 99), 1);
  assert.equal(map.get("a", 100), undefined);
  assert.equal(map.get("b", 150), 2);
  map.set("c", 3, 300, 150);
  map.set("d", 4, 400, 150);
  map.set("e", 5, 500, 150); // full (b, c, d): b is forgotten
  assert.equal(map.get("b", 150), undefined);
  assert.deepEqual(["c", "d", "e"].map((k) => map.get(k, 150)), [3, 4, 5]);
  assert.ok(map.size <= 3);
  assert.equal(map.get("e", 1000), undefined);
  assert.equal(map.size, 0); // pruned
});

test("DropCounter counts every drop and logs each (reason, source) once per interval", () => {
  const logged: LogRecord[] = [];
  let now = 0;
  const drops = new DropCounter((r) => logged.push(r), () => now, 1000);
  drops.drop("malformed", "1.2.3.4:5");
  drops.drop("malformed", "1.2.3.4:5");
  drops.drop("malformed", "5.6.7.8:9", { size: 3 });
  drops.count("unknown_type");
  now = 1000;
  drops.drop("malformed", "1.2.3.4:5");
  assert.deepEqual(drops.snapshot(), { malformed: 4, unknown_type: 1 });
  assert.deepEqual(logged, [
    {
      level: "warn",
      event: "drop",
      reason: "malformed",
      source: "1.2.3.4:5",
      count: 1,
    },
    {
      level: "warn",
      event: "drop",
      reason: "malformed",
      source: "5.6.7.8:9",
      count: 3,
      size: 3,
    },
    {
      level: "warn",
      event: "drop",
      reason: "malformed",
      source: "1.2.3.4:5",
      count: 4,
    },
  ]);
});

test("guardedSink() swallows a throwing sink, and passes every record on to it", () => {
  const seen: LogRecord[] = [];
  const sink = guardedSink((record) => {
    seen.push(record);
    throw new Error("disk full");
  });
  const records: LogRecord[] = [
    { level: "info", event: "x" },
    { level: "warn", event: "y" },
  ];
  for (const record of records) {
    assert.doesNotThrow(() => sink(record));
  }
  assert.deepEqual(seen, records);
});
