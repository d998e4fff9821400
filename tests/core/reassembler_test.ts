import assert from "node:assert/strict";
import { MalformedDatagramError } from "../../lib/errors.ts";
import {
  decodeFragment,
  encodeFragment,
  type Fragment,
  fragmentStream,
} from "../../lib/wire/fragment.ts";
import {
  DEFAULT_REASSEMBLER_LIMITS,
  Reassembler,
  type ReassemblerCounters,
  type ReassemblerLimits,
} from "../../lib/core/reassembler.ts";
import {
  decodeRecords,
  encodeRecords,
  RecordType,
} from "../../lib/wire/tlv.ts";
import { shuffled } from "../_support/prng.ts";

function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
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
    for (const [source, f] of shuffled(feed, seed)) {
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

test("add() evicts the source's oldest buffer to open one past maxPartialsPerSource", () => {
  const [r] = make({ maxPartialsPerSource: 3 });
  for (let id = 0; id < 3; id++) r.add(A, frag(id, 0, 2));
  assert.equal(r.add(A, frag(3, 0, 2)), undefined); // A/0 evicted
  assert.deepEqual(r.counters, counters({ tooManyPartials: 1 }));
  assert.equal(r.partialCount, 3);
  assert.equal(r.bufferedBytes, 30);
  // The newer buffers complete; A/0's second chunk opens a fresh buffer.
  assert.ok(r.add(A, frag(3, 1, 2)) !== undefined);
  assert.ok(r.add(A, frag(1, 1, 2)) !== undefined);
  assert.equal(r.add(A, frag(0, 1, 2)), undefined);
  assert.equal(r.partialCount, 2);
  // Another source has its own quota: it evicts nothing of A's.
  for (let id = 0; id < 3; id++) r.add(B, frag(id, 0, 2));
  assert.equal(r.partialCount, 5);
  assert.deepEqual(r.counters, counters({ tooManyPartials: 1, completed: 2 }));
});

test("a source flooding partial buffers cannot block its own or another source's later big message", () => {
  const [r] = make(); // the defaults: 64 buffers per source, 4096 in all
  // 1000 spoofed 13-byte FRAGMENT datagrams: one 1-byte chunk of 2 each.
  for (let id = 0; id < 1000; id++) r.add(A, frag(1000 + id, 0, 2, 1));
  assert.equal(r.partialCount, 64);
  const big = pattern(5000);
  const fragments = fragmentsOf(big, 1200, 7);
  assert.equal(fragments.length, 5);
  // A's own 5 KB message, with 10 more flood buffers between its chunks (50,
  // fewer than the 64 it would take to push it out).
  let fromA: Uint8Array | undefined;
  let id = 5000;
  for (const f of fragments) {
    fromA = r.add(A, f) ?? fromA;
    for (let i = 0; i < 10; i++) r.add(A, frag(id++, 0, 2, 1));
  }
  assert.deepEqual(fromA, big);
  // And another source's.
  let fromB: Uint8Array | undefined;
  for (const f of fragments) fromB = r.add(B, f) ?? fromB;
  assert.deepEqual(fromB, big);
  assert.deepEqual(
    r.counters,
    // 936 before; 1 for A's first chunk; 10 for each 10 flood buffers but
    // the first after A's message completed (a slot was free).
    counters({ completed: 2, tooManyPartials: 936 + 1 + 40 + 9 }),
  );
  assert.equal(r.partialCount, 64);
  assert.equal(r.bufferedBytes, 64);
});

test("64 sources holding 64 partial buffers each block no other source's message (maxPartialsTotal 4096)", () => {
  const [r] = make();
  const flooders = Array.from({ length: 64 }, (_, i) => `10.0.1.${i}:1`);
  let id = 0;
  for (let round = 0; round < 64; round++) {
    for (const source of flooders) r.add(source, frag(id++, 0, 2, 1));
  }
  assert.equal(r.partialCount, 4096);
  assert.deepEqual(r.counters, ZERO);
  const big = pattern(5000);
  let out: Uint8Array | undefined;
  for (const f of fragmentsOf(big, 1200, 1)) out = r.add(A, f) ?? out;
  assert.deepEqual(out, big);
  // Its first chunk evicted one buffer: of 64 sources holding as many, the
  // one whose oldest buffer is oldest (the very first, flooder 0's msg_id 0).
  assert.deepEqual(r.counters, counters({ completed: 1, tooManyPartials: 1 }));
  assert.equal(r.partialCount, 4095);
  assert.equal(r.add(flooders[0], frag(0, 1, 2, 1)), undefined);
  assert.deepEqual(r.add(flooders[1], frag(1, 1, 2, 1)), Uint8Array.of(1, 2));
});

test("past maxPartialsTotal the oldest buffer of the source holding the most is evicted; of equals, the older one", () => {
  const C = "10.0.0.3:1";
  const D = "10.0.0.4:1";
  const [r] = make({ maxPartialsTotal: 6 });
  for (
    const [source, msgId] of [[A, 1], [A, 2], [A, 3], [B, 1], [B, 2], [
      C,
      1,
    ]] as const
  ) {
    r.add(source, frag(msgId, 0, 2));
  }
  r.add(D, frag(1, 0, 2)); // A holds 3: A/1 goes
  r.add(B, frag(3, 0, 2)); // A and B hold 2: A's oldest (A/2) is older than B's
  r.add(C, frag(2, 0, 2)); // B holds 3: B/1 goes
  assert.deepEqual(r.counters, counters({ tooManyPartials: 3 }));
  assert.equal(r.partialCount, 6);
  const survived = ([source, msgId]: readonly [string, number]) =>
    r.add(source, frag(msgId, 1, 2)) !== undefined;
  assert.deepEqual(
    [[A, 3], [B, 2], [B, 3], [C, 1], [C, 2], [D, 1]].map((k) =>
      survived(k as [string, number])
    ),
    [true, true, true, true, true, true],
  );
  assert.equal(r.partialCount, 0);
  assert.deepEqual(
    [[A, 1], [A, 2], [B, 1]].map((k) => survived(k as [string, number])),
    [false, false, false],
  );
});

test("add() lets a count=1 fragment through even when the source is at maxPartialsPerSource", () => {
  const [r] = make({ maxPartialsPerSource: 1 });
  r.add(A, frag(1, 0, 2));
  assert.deepEqual(r.add(A, frag(2, 0, 1, 3)), Uint8Array.of(1, 1, 1));
  assert.equal(r.partialCount, 1);
});

test("add() evicts the source's oldest buffers to stay within maxBytesPerSource", () => {
  const [r] = make({ maxBytesPerSource: 25 });
  r.add(A, frag(1, 0, 3)); // 10
  r.add(A, frag(2, 0, 3)); // 20
  r.add(B, frag(1, 0, 3, 25)); // another source: its own 25
  assert.equal(r.add(A, frag(2, 1, 3, 6)), undefined); // 26 > 25: A/1 goes
  assert.deepEqual(r.counters, counters({ sourceBytesExceeded: 1 }));
  assert.equal(r.bufferedBytes, 16 + 25);
  assert.equal(r.partialCount, 2);
  // Exactly at the bound is fine.
  assert.equal(r.add(A, frag(2, 2, 3, 9))?.length, 25);
  assert.equal(r.add(B, frag(1, 1, 3, 0)), undefined);
  assert.deepEqual(
    r.counters,
    counters({ sourceBytesExceeded: 1, completed: 1 }),
  );
});

test("add() drops a chunk larger than maxBytesPerSource on its own, evicting nothing", () => {
  const [r] = make({ maxBytesPerSource: 100 });
  r.add(A, frag(1, 0, 2, 50));
  assert.equal(r.add(A, frag(2, 0, 2, 101)), undefined);
  assert.deepEqual(r.counters, counters({ sourceBytesExceeded: 1 }));
  assert.equal(r.partialCount, 1);
  assert.equal(r.bufferedBytes, 50);
});

test("add() drops a buffer that can no longer complete within maxBytesPerSource, with its chunk", () => {
  const [r] = make({ maxBytesPerSource: 15 });
  r.add(A, frag(1, 0, 2, 10));
  assert.equal(r.add(A, frag(1, 1, 2, 6)), undefined); // 16 > 15
  assert.deepEqual(r.counters, counters({ sourceBytesExceeded: 1 }));
  assert.equal(r.partialCount, 0);
  assert.equal(r.bufferedBytes, 0);
  // A stream that fits still completes.
  r.add(A, frag(1, 0, 2, 10));
  assert.equal(r.add(A, frag(1, 1, 2, 5))?.length, 15);
});

test("past maxBytesTotal the oldest buffers of the source holding the most bytes are evicted, its own included", () => {
  const C = "10.0.0.3:1";
  const [r] = make({ maxBytesTotal: 35, maxBytesPerSource: 20 });
  r.add(A, frag(1, 0, 3, 5));
  r.add(A, frag(2, 0, 3, 15)); // A holds 20
  r.add(B, frag(1, 0, 3, 10)); // B holds 10
  assert.equal(r.add(C, frag(1, 0, 3, 6)), undefined); // 36 > 35: A/1 goes
  assert.deepEqual(r.counters, counters({ totalBytesExceeded: 1 }));
  assert.equal(r.bufferedBytes, 31);
  assert.equal(r.partialCount, 3);
  // A still holds the most and has no other buffer than the one this chunk
  // is for: that one goes, with the chunk.
  assert.equal(r.add(A, frag(2, 1, 3, 5)), undefined);
  assert.deepEqual(r.counters, counters({ totalBytesExceeded: 2 }));
  assert.equal(r.bufferedBytes, 16);
  assert.equal(r.partialCount, 2);
  // Freed bytes make room again: B and C complete.
  assert.equal(r.add(B, frag(1, 1, 3, 5)), undefined);
  assert.equal(r.add(B, frag(1, 2, 3, 5))?.length, 20);
  assert.equal(r.add(C, frag(1, 1, 3, 20 - 6)), undefined);
  assert.equal(r.add(C, frag(1, 2, 3, 0))?.length, 20);
  assert.equal(r.bufferedBytes, 0);
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
  r.add(A, frag(3, 0, 2)); // tooManyPartials: A/1 evicted for A/3
  r.add(A, frag(2, 1, 3, 35)); // sourceBytesExceeded (10 + 10 + 35): A/3 evicted
  r.add(B, frag(1, 0, 9)); // countTooLarge
  r.add(B, frag(1, 0, 2, 30)); // open B/1: total 75
  r.add("10.0.0.3:1", frag(1, 0, 2, 11)); // totalBytesExceeded (86): A/2 evicted
  r.add(A, frag(4, 0, 2)); // open A/4
  r.add(A, frag(4, 1, 3)); // countMismatch: A/4 gone
  assert.ok(r.add(B, frag(1, 1, 2, 0)) !== undefined); // completed, frees 30
  assert.equal(r.bufferedBytes, 11);
  clock.t += 1000;
  assert.equal(r.expire(), 1); // 10.0.0.3:1/1 timedOut
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
