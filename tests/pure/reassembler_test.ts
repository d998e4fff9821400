import assert from "node:assert/strict";
import { MalformedDatagramError } from "../../lib/errors.ts";
import {
  decodeFragment,
  encodeFragment,
  type Fragment,
  fragmentStream,
} from "../../lib/protocol/fragment.ts";
import {
  DEFAULT_REASSEMBLER_LIMITS,
  Reassembler,
  type ReassemblerCounters,
  type ReassemblerLimits,
} from "../../lib/protocol/reassembler.ts";
import {
  decodeRecords,
  encodeRecords,
  RecordType,
} from "../../lib/protocol/tlv.ts";

function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

/** mulberry32: a tiny seeded PRNG, so every shuffle here is reproducible. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function shuffle<T>(items: readonly T[], seed: number): T[] {
  const random = rng(seed);
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j], out[i]];
  }
  return out;
}

function permutations<T>(items: readonly T[]): T[][] {
  if (items.length <= 1) return [[...items]];
  return items.flatMap((item, i) =>
    permutations([...items.slice(0, i), ...items.slice(i + 1)]).map((
      rest,
    ) => [item, ...rest])
  );
}

function pattern(length: number, salt = 0): Uint8Array {
  return Uint8Array.from({ length }, (_, i) => (i * 7 + salt) % 256);
}

/** The fragments a sender would emit for `stream`, decoded as a receiver sees them. */
function fragmentsOf(
  stream: Uint8Array,
  mtu: number,
  msgId: number,
): Fragment[] {
  return fragmentStream(stream, mtu, msgId).map((d) =>
    decodeFragment(decodeRecords(d)[0].value)
  );
}

/** A fragment with `size` bytes of chunk. */
function frag(
  msgId: number,
  index: number,
  count: number,
  size = 10,
): Fragment {
  return { msgId, index, count, chunk: new Uint8Array(size).fill(index + 1) };
}

const ZERO: ReassemblerCounters = {
  completed: 0,
  duplicate: 0,
  countMismatch: 0,
  countTooLarge: 0,
  timedOut: 0,
  tooManyPartials: 0,
  sourceBytesExceeded: 0,
  totalBytesExceeded: 0,
};

function counters(changes: Partial<ReassemblerCounters>): ReassemblerCounters {
  return { ...ZERO, ...changes };
}

class FakeClock {
  t = 1_000_000;
  readonly now = () => this.t;
}

function make(
  limits: Partial<ReassemblerLimits> = {},
): [Reassembler, FakeClock] {
  const clock = new FakeClock();
  return [new Reassembler(limits, clock.now), clock];
}

const A = "10.0.0.1:5007";
const B = "[2001:db8::1]:5007";

test("Reassembler defaults to the bounds of protocol.md section 3 (and 4096 partial buffers in all)", () => {
  const r = new Reassembler();
  assert.deepEqual(r.limits, {
    timeoutMs: 10_000,
    maxPartialsPerSource: 64,
    maxPartialsTotal: 4096,
    maxBytesPerSource: 1024 * 1024,
    maxBytesTotal: 64 * 1024 * 1024,
    maxCount: 1024,
  });
  assert.deepEqual(r.limits, DEFAULT_REASSEMBLER_LIMITS);
  assert.deepEqual(r.counters, ZERO);
  assert.equal(r.bufferedBytes, 0);
  assert.equal(r.partialCount, 0);
});

test("Reassembler takes partial limits and ignores undefined ones", () => {
  const r = new Reassembler({ maxCount: 5, timeoutMs: undefined });
  assert.equal(r.limits.maxCount, 5);
  assert.equal(r.limits.timeoutMs, 10_000);
});

test("Reassembler rejects limits that are not positive", () => {
  for (
    const limits of [
      { timeoutMs: 0 },
      { timeoutMs: NaN },
      { maxPartialsPerSource: 0 },
      { maxBytesPerSource: -1 },
      { maxBytesTotal: 1.5 },
      { maxCount: Infinity },
    ]
  ) {
    assert.throws(
      () => new Reassembler(limits),
      RangeError,
      JSON.stringify(limits),
    );
  }
});

test("add() returns the stream when its last chunk arrives, in order", () => {
  const [r] = make();
  const stream = pattern(3000);
  const fragments = fragmentsOf(stream, 1200, 42);
  assert.equal(fragments.length, 3);
  assert.equal(r.add(A, fragments[0]), undefined);
  assert.equal(r.bufferedBytes, 1188);
  assert.equal(r.partialCount, 1);
  assert.equal(r.add(A, fragments[1]), undefined);
  assert.equal(r.bufferedBytes, 2376);
  assert.deepEqual(r.add(A, fragments[2]), stream);
  assert.equal(r.bufferedBytes, 0);
  assert.equal(r.partialCount, 0);
  assert.deepEqual(r.counters, counters({ completed: 1 }));
});

test("add() reassembles chunks fed in every order", () => {
  const stream = pattern(40);
  const fragments = fragmentsOf(stream, 22, 9); // chunks of 10: 4 fragments
  assert.equal(fragments.length, 4);
  const orders = permutations(fragments);
  assert.equal(orders.length, 24);
  for (const order of orders) {
    const [r] = make();
    const results = order.map((f) => r.add(A, f));
    assert.deepEqual(results.slice(0, 3), [undefined, undefined, undefined]);
    assert.deepEqual(results[3], stream);
    assert.equal(r.bufferedBytes, 0);
  }
});

test("add() reassembles interleaved streams of several sources in shuffled order", () => {
  for (let seed = 1; seed <= 50; seed++) {
    const [r] = make();
    const streams = new Map<string, Uint8Array>();
    const feed: [string, Fragment][] = [];
    for (const source of [A, B]) {
      for (const msgId of [1, 2, 0xffffffff]) {
        const stream = pattern(500 + msgId % 300 + seed, seed + msgId);
        streams.set(`${source}/${msgId}`, stream);
        for (const f of fragmentsOf(stream, 100, msgId)) feed.push([source, f]);
      }
    }
    const done = new Map<string, Uint8Array>();
    for (const [source, f] of shuffle(feed, seed)) {
      const out = r.add(source, f);
      if (out !== undefined) {
        const key = `${source}/${f.msgId}`;
        assert.ok(!done.has(key), `seed ${seed}: ${key} completed twice`);
        done.set(key, out);
      }
    }
    assert.deepEqual(done, streams, `seed ${seed}`);
    assert.equal(r.bufferedBytes, 0);
    assert.equal(r.partialCount, 0);
    assert.deepEqual(r.counters, counters({ completed: 6 }));
  }
});

test("add() keeps the same msg_id of two sources apart", () => {
  const [r] = make();
  assert.equal(
    r.add(A, { msgId: 5, index: 0, count: 2, chunk: Uint8Array.of(1) }),
    undefined,
  );
  assert.equal(
    r.add(B, { msgId: 5, index: 1, count: 2, chunk: Uint8Array.of(9) }),
    undefined,
  );
  assert.equal(r.partialCount, 2);
  assert.deepEqual(
    r.add(A, { msgId: 5, index: 1, count: 2, chunk: Uint8Array.of(2) }),
    Uint8Array.of(1, 2),
  );
  assert.deepEqual(
    r.add(B, { msgId: 5, index: 0, count: 2, chunk: Uint8Array.of(8) }),
    Uint8Array.of(8, 9),
  );
});

test("add() completes a count=1 fragment at once without buffering", () => {
  const [r] = make();
  const chunk = Uint8Array.of(1, 2, 3);
  const out = r.add(A, { msgId: 1, index: 0, count: 1, chunk });
  assert.deepEqual(out, chunk);
  assert.notEqual(out, chunk);
  assert.equal(r.partialCount, 0);
  assert.equal(r.bufferedBytes, 0);
  assert.deepEqual(r.counters, counters({ completed: 1 }));
});

test("add() ignores and counts duplicate chunks, the first copy wins", () => {
  const [r] = make();
  r.add(A, { msgId: 1, index: 0, count: 3, chunk: Uint8Array.of(1, 1) });
  r.add(A, { msgId: 1, index: 0, count: 3, chunk: Uint8Array.of(1, 1) });
  r.add(A, { msgId: 1, index: 0, count: 3, chunk: Uint8Array.of(7, 7, 7) });
  assert.equal(r.bufferedBytes, 2);
  r.add(A, { msgId: 1, index: 2, count: 3, chunk: Uint8Array.of(3) });
  r.add(A, { msgId: 1, index: 2, count: 3, chunk: Uint8Array.of(3) });
  const out = r.add(A, {
    msgId: 1,
    index: 1,
    count: 3,
    chunk: Uint8Array.of(2),
  });
  assert.deepEqual(out, Uint8Array.of(1, 1, 2, 3));
  assert.deepEqual(r.counters, counters({ completed: 1, duplicate: 3 }));
  assert.equal(r.bufferedBytes, 0);
});

test("add() treats a chunk arriving after completion as the start of a new buffer", () => {
  const [r] = make();
  r.add(A, frag(1, 0, 2));
  assert.ok(r.add(A, frag(1, 1, 2)) !== undefined);
  assert.equal(r.add(A, frag(1, 1, 2)), undefined);
  assert.equal(r.partialCount, 1);
  assert.equal(r.bufferedBytes, 10);
  assert.deepEqual(r.counters, counters({ completed: 1 }));
});

test("add() discards the whole buffer on a count mismatch, that chunk included", () => {
  const [r] = make();
  r.add(A, frag(1, 0, 3));
  r.add(A, frag(1, 1, 3));
  r.add(A, frag(2, 0, 2)); // another stream of the same source, untouched
  assert.equal(r.bufferedBytes, 30);
  assert.equal(r.add(A, frag(1, 2, 4)), undefined);
  assert.deepEqual(r.counters, counters({ countMismatch: 1 }));
  assert.equal(r.bufferedBytes, 10);
  assert.equal(r.partialCount, 1);
  // The dropped chunk did not open a new buffer; the old chunks are gone.
  assert.equal(r.add(A, frag(1, 2, 3)), undefined);
  assert.equal(r.bufferedBytes, 20);
  assert.equal(r.partialCount, 2);
  // And stream 2 still completes.
  assert.ok(r.add(A, frag(2, 1, 2)) !== undefined);
});

test("add() discards on a count mismatch even when the odd chunk says count=1", () => {
  const [r] = make();
  r.add(A, frag(1, 0, 2));
  assert.equal(r.add(A, frag(1, 0, 1)), undefined);
  assert.deepEqual(r.counters, counters({ countMismatch: 1 }));
  assert.equal(r.bufferedBytes, 0);
  assert.equal(r.partialCount, 0);
});

test("add() drops a chunk whose count exceeds maxCount", () => {
  const [r] = make({ maxCount: 4 });
  assert.equal(r.add(A, frag(1, 0, 5)), undefined);
  assert.deepEqual(r.counters, counters({ countTooLarge: 1 }));
  assert.equal(r.partialCount, 0);
  assert.equal(r.bufferedBytes, 0);
  // count == maxCount is fine.
  for (let i = 0; i < 3; i++) assert.equal(r.add(A, frag(2, i, 4)), undefined);
  assert.ok(r.add(A, frag(2, 3, 4)) !== undefined);
  assert.deepEqual(r.counters, counters({ countTooLarge: 1, completed: 1 }));
});

test("add() drops a chunk past the default count bound of 1024", () => {
  const [r] = make();
  r.add(A, frag(1, 0, 1025));
  r.add(A, frag(2, 0, 1024));
  assert.deepEqual(r.counters, counters({ countTooLarge: 1 }));
  assert.equal(r.partialCount, 1);
});

test("add() discards a buffer not complete timeoutMs after its first chunk", () => {
  const [r, clock] = make({ timeoutMs: 1000 });
  r.add(A, frag(1, 0, 3));
  clock.t += 999;
  r.add(A, frag(1, 1, 3)); // later chunks do not extend the deadline
  assert.equal(r.bufferedBytes, 20);
  clock.t += 1;
  assert.equal(r.add(A, frag(1, 2, 3)), undefined);
  assert.deepEqual(r.counters, counters({ timedOut: 1 }));
  // The late chunk opened a fresh buffer with only itself in it.
  assert.equal(r.partialCount, 1);
  assert.equal(r.bufferedBytes, 10);
});

test("expire() discards only buffers past the timeout, oldest first", () => {
  const [r, clock] = make({ timeoutMs: 1000 });
  r.add(A, frag(1, 0, 2)); // t=0
  clock.t += 400;
  r.add(B, frag(2, 0, 2)); // t=400
  clock.t += 400;
  r.add(A, frag(3, 0, 2, 5)); // t=800
  assert.equal(r.expire(), 0);
  clock.t += 200; // t=1000
  assert.equal(r.expire(), 1);
  assert.equal(r.partialCount, 2);
  assert.equal(r.bufferedBytes, 15);
  clock.t += 399; // t=1399
  assert.equal(r.expire(), 0);
  clock.t += 10_000;
  assert.equal(r.expire(), 2);
  assert.deepEqual(r.counters, counters({ timedOut: 3 }));
  assert.equal(r.partialCount, 0);
  assert.equal(r.bufferedBytes, 0);
  assert.equal(r.expire(), 0);
});

test("expire() uses the 10 s default timeout", () => {
  const [r, clock] = make();
  r.add(A, frag(1, 0, 2));
  clock.t += 9_999;
  assert.equal(r.expire(), 0);
  clock.t += 1;
  assert.equal(r.expire(), 1);
});

test("a clock that jumps back neither stalls nor reorders expiry", () => {
  const [r, clock] = make({ timeoutMs: 1000 });
  r.add(A, frag(1, 0, 2)); // internal t=0
  clock.t -= 3_600_000; // wall clock stepped back an hour
  r.add(A, frag(2, 0, 2)); // internal t=0
  clock.t += 1000; // internal t=1000
  assert.equal(r.expire(), 2);
  assert.equal(r.bufferedBytes, 0);
});

test("add() drops a chunk that opens a buffer past maxPartialsPerSource", () => {
  const [r] = make({ maxPartialsPerSource: 3 });
  for (let id = 0; id < 3; id++) r.add(A, frag(id, 0, 2));
  assert.equal(r.add(A, frag(3, 0, 2)), undefined);
  assert.deepEqual(r.counters, counters({ tooManyPartials: 1 }));
  assert.equal(r.partialCount, 3);
  assert.equal(r.bufferedBytes, 30);
  // Chunks for open buffers still go in, and another source has its own quota.
  assert.ok(r.add(A, frag(0, 1, 2)) !== undefined);
  assert.equal(r.add(B, frag(3, 0, 2)), undefined);
  assert.equal(r.partialCount, 3);
  // A completed buffer frees its slot.
  assert.equal(r.add(A, frag(3, 0, 2)), undefined);
  assert.equal(r.partialCount, 4);
  assert.deepEqual(r.counters, counters({ tooManyPartials: 1, completed: 1 }));
});

test("add() drops a chunk that opens a buffer past maxPartialsTotal, even for empty chunks from many sources", () => {
  const [r] = make({ maxPartialsTotal: 4 });
  const empty = (id: number): Fragment => ({
    msgId: id,
    index: 0,
    count: 2,
    chunk: new Uint8Array(0),
  });
  for (let s = 0; s < 10; s++) r.add(`10.0.0.${s}:1`, empty(s));
  assert.equal(r.partialCount, 4);
  assert.equal(r.bufferedBytes, 0);
  assert.deepEqual(r.counters, counters({ tooManyPartials: 6 }));
});

test("add() lets a count=1 fragment through even when the source is at maxPartialsPerSource", () => {
  const [r] = make({ maxPartialsPerSource: 1 });
  r.add(A, frag(1, 0, 2));
  assert.deepEqual(r.add(A, frag(2, 0, 1, 3)), Uint8Array.of(1, 1, 1));
});

test("add() drops a chunk that would push its source past maxBytesPerSource", () => {
  const [r] = make({ maxBytesPerSource: 25 });
  r.add(A, frag(1, 0, 3)); // 10
  r.add(A, frag(2, 0, 3)); // 20
  assert.equal(r.add(A, frag(1, 1, 3, 6)), undefined); // 26 > 25
  assert.deepEqual(r.counters, counters({ sourceBytesExceeded: 1 }));
  assert.equal(r.bufferedBytes, 20);
  // A new buffer is not opened by a dropped chunk.
  assert.equal(r.add(A, frag(3, 0, 3, 6)), undefined);
  assert.equal(r.partialCount, 2);
  assert.deepEqual(r.counters, counters({ sourceBytesExceeded: 2 }));
  // Exactly at the bound is fine; another source is not affected.
  r.add(A, frag(1, 1, 3, 5));
  assert.equal(r.bufferedBytes, 25);
  r.add(B, frag(1, 0, 3, 25));
  assert.equal(r.bufferedBytes, 50);
  assert.deepEqual(r.counters, counters({ sourceBytesExceeded: 2 }));
});

test("add() drops a chunk larger than maxBytesPerSource on its own", () => {
  const [r] = make({ maxBytesPerSource: 100 });
  assert.equal(r.add(A, frag(1, 0, 2, 101)), undefined);
  assert.deepEqual(r.counters, counters({ sourceBytesExceeded: 1 }));
  assert.equal(r.partialCount, 0);
});

test("add() counts the completing chunk against the byte bounds too", () => {
  const [r] = make({ maxBytesPerSource: 15 });
  r.add(A, frag(1, 0, 2, 10));
  assert.equal(r.add(A, frag(1, 1, 2, 6)), undefined);
  assert.deepEqual(r.add(A, frag(1, 1, 2, 5))?.length, 15);
  assert.deepEqual(
    r.counters,
    counters({ sourceBytesExceeded: 1, completed: 1 }),
  );
});

test("add() drops a chunk that would push all sources past maxBytesTotal", () => {
  const [r] = make({ maxBytesTotal: 35, maxBytesPerSource: 20 });
  r.add(A, frag(1, 0, 3, 20));
  r.add(B, frag(1, 0, 3, 10));
  assert.equal(r.add("10.0.0.3:1", frag(1, 0, 3, 6)), undefined);
  assert.deepEqual(r.counters, counters({ totalBytesExceeded: 1 }));
  assert.equal(r.bufferedBytes, 30);
  assert.equal(r.partialCount, 2);
  r.add("10.0.0.3:1", frag(1, 0, 3, 5));
  assert.equal(r.bufferedBytes, 35);
  assert.equal(r.add(B, frag(1, 1, 3, 1)), undefined);
  assert.deepEqual(r.counters, counters({ totalBytesExceeded: 2 }));
  // Freeing bytes makes room again.
  r.forgetSource(A);
  assert.equal(r.add(B, frag(1, 1, 3, 1)), undefined);
  assert.equal(r.bufferedBytes, 16);
});

test("forgetSource() frees every buffer of a source without counting a drop", () => {
  const [r] = make();
  r.add(A, frag(1, 0, 2));
  r.add(A, frag(2, 0, 3, 7));
  r.add(B, frag(1, 0, 2, 4));
  r.forgetSource(A);
  assert.equal(r.partialCount, 1);
  assert.equal(r.bufferedBytes, 4);
  assert.deepEqual(r.counters, ZERO);
  r.forgetSource(A);
  r.forgetSource("unknown");
  assert.equal(r.bufferedBytes, 4);
  // Its msg_ids start afresh.
  assert.equal(r.add(A, frag(1, 1, 2)), undefined);
  assert.equal(r.partialCount, 2);
  // And the other source still completes.
  assert.deepEqual(r.add(B, frag(1, 1, 2, 1)), Uint8Array.of(1, 1, 1, 1, 2));
});

test("forgotten buffers are not expired or counted later", () => {
  const [r, clock] = make({ timeoutMs: 100 });
  r.add(A, frag(1, 0, 2));
  r.forgetSource(A);
  clock.t += 1000;
  assert.equal(r.expire(), 0);
  assert.deepEqual(r.counters, ZERO);
});

test("add() copies chunks, so callers may reuse their receive buffer", () => {
  const [r] = make();
  const receive = new Uint8Array(4);
  receive.set([1, 2, 3, 4]);
  r.add(A, { msgId: 1, index: 0, count: 2, chunk: receive.subarray(0, 2) });
  receive.fill(0xee);
  const out = r.add(A, {
    msgId: 1,
    index: 1,
    count: 2,
    chunk: Uint8Array.of(5),
  });
  assert.deepEqual(out, Uint8Array.of(1, 2, 5));
});

test("add() takes empty chunks and still completes", () => {
  const [r] = make();
  r.add(A, frag(1, 1, 3, 0));
  r.add(A, frag(1, 0, 3, 2));
  assert.deepEqual(r.add(A, frag(1, 2, 3, 0)), Uint8Array.of(1, 1));
});

test("add() throws MalformedDatagramError on a fragment header decodeFragment() would reject", () => {
  const [r] = make();
  const chunk = Uint8Array.of(1);
  for (
    const f of [
      { msgId: 1, index: 2, count: 2, chunk },
      { msgId: 1, index: 0, count: 0, chunk },
      { msgId: -1, index: 0, count: 2, chunk },
      { msgId: 1, index: 0.5, count: 2, chunk },
    ]
  ) {
    assert.throws(() => r.add(A, f), MalformedDatagramError, JSON.stringify(f));
  }
  assert.deepEqual(r.counters, ZERO);
});

test("every bound together: counters exact and bufferedBytes back to 0", () => {
  const [r, clock] = make({
    timeoutMs: 1000,
    maxPartialsPerSource: 2,
    maxBytesPerSource: 50,
    maxBytesTotal: 80,
    maxCount: 8,
  });
  r.add(A, frag(1, 0, 2)); // open A/1
  r.add(A, frag(1, 0, 2)); // duplicate
  r.add(A, frag(2, 0, 3)); // open A/2
  r.add(A, frag(3, 0, 2)); // tooManyPartials
  r.add(A, frag(2, 1, 3, 35)); // sourceBytesExceeded (10 + 10 + 35)
  r.add(B, frag(1, 0, 9)); // countTooLarge
  r.add(B, frag(1, 0, 2, 50)); // open B/1: total 70
  r.add("10.0.0.3:1", frag(1, 0, 2, 11)); // totalBytesExceeded (81)
  r.add(A, frag(1, 1, 3)); // countMismatch: A/1 gone
  assert.ok(r.add(B, frag(1, 1, 2, 0)) !== undefined); // completed, frees 50
  assert.equal(r.bufferedBytes, 10);
  clock.t += 1000;
  assert.equal(r.expire(), 1); // A/2 timedOut
  assert.deepEqual(r.counters, {
    completed: 1,
    duplicate: 1,
    countMismatch: 1,
    countTooLarge: 1,
    timedOut: 1,
    tooManyPartials: 1,
    sourceBytesExceeded: 1,
    totalBytesExceeded: 1,
  });
  assert.equal(r.bufferedBytes, 0);
  assert.equal(r.partialCount, 0);
  assert.equal(r.sourceCount, 0);
});

test("sourceCount follows sources with open buffers and drops each with its last buffer", () => {
  const [r, clock] = make({ timeoutMs: 100 });
  r.add(A, frag(1, 0, 2));
  r.add(B, frag(1, 0, 2));
  r.add("10.0.0.3:1", frag(1, 0, 2));
  r.add("10.0.0.4:1", frag(1, 0, 2));
  assert.equal(r.sourceCount, 4);
  r.add(A, frag(1, 1, 2)); // completed
  r.add(B, frag(1, 0, 3)); // count mismatch
  r.forgetSource("10.0.0.3:1");
  assert.equal(r.sourceCount, 1);
  clock.t += 100;
  r.expire(); // timed out
  assert.equal(r.sourceCount, 0);
  r.add(A, frag(2, 0, 1)); // count=1 never opens a buffer
  assert.equal(r.sourceCount, 0);
});

test("addRecord() decodes a FRAGMENT value, reassembles, and hands back the stream's records", () => {
  const [r] = make();
  const value = Uint8Array.from({ length: 20 }, (_, i) => i);
  const stream = encodeRecords([{ type: RecordType.KEEPALIVE, value }]);
  const values = fragmentStream(stream, 13, 7).map((d) =>
    decodeRecords(d)[0]!.value
  );
  assert.ok(values.length > 1);
  for (const value of values.slice(0, -1)) {
    assert.deepEqual(r.addRecord(A, value), { kind: "pending" });
  }
  assert.deepEqual(r.addRecord(A, values.at(-1)!), {
    kind: "stream",
    records: [{ type: RecordType.KEEPALIVE, value }],
  });
});

test("addRecord() drops a bad header, a stream that is not TLV, and a stream holding a FRAGMENT", () => {
  const [r] = make();
  assert.deepEqual(r.addRecord(A, Uint8Array.of(0, 0, 0, 1, 0, 2, 0, 2)), {
    kind: "dropped",
    reason: "malformed_fragment", // index 2 >= count 2
  });
  const one = (chunk: Uint8Array) =>
    encodeFragment({ msgId: 9, index: 0, count: 1, chunk });
  assert.deepEqual(r.addRecord(A, one(Uint8Array.of(0, 9, 0, 5, 1))), {
    kind: "dropped",
    reason: "malformed", // length 5 runs past the end
  });
  const nested = encodeRecords([{
    type: RecordType.FRAGMENT,
    value: one(Uint8Array.of(1)),
  }]);
  assert.deepEqual(r.addRecord(A, one(nested)), {
    kind: "dropped",
    reason: "nested_fragment",
  });
});
