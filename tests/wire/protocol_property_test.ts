import assert from "node:assert/strict";
import fc from "fast-check";
import { MalformedDatagramError } from "../../lib/errors.ts";
import {
  decodeAddress,
  encodeAddress,
  formatAddress,
  isIPv6,
  parseAddress,
} from "../../lib/wire/address.ts";
import {
  decodeFragment,
  encodeFragment,
  type Fragment,
  fragmentChunkSize,
  fragmentStream,
} from "../../lib/wire/fragment.ts";
import {
  Reassembler,
  type ReassemblerCounters,
  type ReassemblerLimits,
} from "../../lib/core/reassembler.ts";
import {
  decodeRecords,
  encodeRecords,
  RecordType,
  type TlvRecord,
} from "../../lib/wire/tlv.ts";
import { mulberry32, shuffleInPlace } from "../_support/prng.ts";

const RUNS = 300;
/** Bounded runs; a property that somehow runs away fails instead of hanging CI. */
const OPTIONS = {
  numRuns: RUNS,
  interruptAfterTimeLimit: 20_000,
  markInterruptAsFailure: true,
};

function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

/** Runs `fn`; passes when it returns or throws MalformedDatagramError, fails on any other throw. */
function onlyMalformed<T>(fn: () => T): T | MalformedDatagramError {
  try {
    return fn();
  } catch (e) {
    if (e instanceof MalformedDatagramError) return e;
    throw e;
  }
}

const anyBytes = fc.uint8Array({ maxLength: 300, size: "medium" });

const record: fc.Arbitrary<TlvRecord> = fc.record({
  type: fc.oneof(
    fc.constantFrom(...Object.values(RecordType)),
    fc.integer({ min: 0, max: 0xffff }),
  ),
  value: fc.uint8Array({ maxLength: 200 }),
});

// ---------------------------------------------------------------- TLV

test("decodeRecords() of arbitrary bytes returns records or throws MalformedDatagramError", () => {
  fc.assert(
    fc.property(anyBytes, (bytes) => {
      const result = onlyMalformed(() => decodeRecords(bytes));
      if (result instanceof MalformedDatagramError) return;
      // Whatever decodes re-encodes to exactly the same bytes.
      assert.deepEqual(encodeRecords(result), bytes);
    }),
    OPTIONS,
  );
});

test("decodeRecords() of a valid datagram cut short throws MalformedDatagramError", () => {
  fc.assert(
    fc.property(
      fc.array(record, { minLength: 1, maxLength: 5 }),
      fc.nat(),
      (records, cutSeed) => {
        const bytes = encodeRecords(records);
        const cut = cutSeed % bytes.length;
        const boundaries = new Set<number>();
        let at = 0;
        for (const r of records) boundaries.add(at += 4 + r.value.length);
        boundaries.add(0);
        const result = onlyMalformed(() =>
          decodeRecords(bytes.subarray(0, cut))
        );
        assert.equal(
          result instanceof MalformedDatagramError,
          !boundaries.has(cut),
        );
      },
    ),
    OPTIONS,
  );
});

test("decodeRecords() inverts encodeRecords() for arbitrary records", () => {
  fc.assert(
    fc.property(fc.array(record, { maxLength: 8 }), (records) => {
      const bytes = encodeRecords(records);
      assert.equal(
        bytes.length,
        records.reduce((n, r) => n + 4 + r.value.length, 0),
      );
      const decoded = decodeRecords(bytes).map((r) => ({
        type: r.type,
        value: r.value.slice(),
      }));
      assert.deepEqual(
        decoded,
        records.map(({ type, value }) => ({ type, value })),
      );
    }),
    OPTIONS,
  );
});

// ---------------------------------------------------------------- addresses

test("decodeAddress() of arbitrary bytes returns an address or throws MalformedDatagramError", () => {
  const sized = fc.oneof(
    anyBytes,
    fc.uint8Array({ minLength: 6, maxLength: 6 }),
    fc.uint8Array({ minLength: 18, maxLength: 18 }),
  );
  fc.assert(
    fc.property(sized, (bytes) => {
      const result = onlyMalformed(() => decodeAddress(bytes));
      assert.equal(
        result instanceof MalformedDatagramError,
        bytes.length !== 6 && bytes.length !== 18,
      );
      if (result instanceof MalformedDatagramError) return;
      assert.deepEqual(encodeAddress(result), bytes);
      assert.deepEqual(parseAddress(formatAddress(result)), result);
    }),
    OPTIONS,
  );
});

/** The WHATWG URL parser as an independent IPv6 oracle: it serialises like RFC 5952, but never in mixed notation. */
function urlIPv6(text: string): string | undefined {
  if (/[^0-9a-fA-F:.]/.test(text)) return undefined;
  try {
    return new URL(`http://[${text}]/`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
}

const ipv6ish = fc.array(
  fc.oneof(
    fc.integer({ min: 0, max: 0xffff }).map((n) => n.toString(16)),
    fc.integer({ min: 0, max: 0xffff }).map((n) =>
      n.toString(16).toUpperCase().padStart(4, "0")
    ),
    fc.constantFrom(
      "0",
      "",
      "12345",
      "g",
      "1.2.3.4",
      "255.0.0.01",
      "256.1.1.1",
      "1.2.3",
    ),
  ),
  { maxLength: 10 },
).chain((pieces) =>
  fc.array(fc.constantFrom(":", ":", ":", "::"), {
    minLength: pieces.length,
    maxLength: pieces.length,
  }).map((seps) =>
    pieces.map((p, i) => (i === 0 ? p : seps[i] + p)).join("") +
    (seps[0] === "::" ? "::" : "")
  )
);

test("isIPv6() and RFC 5952 formatting agree with the WHATWG URL parser", () => {
  fc.assert(
    fc.property(ipv6ish, (text) => {
      const oracle = urlIPv6(text);
      assert.equal(isIPv6(text), oracle !== undefined, text);
      if (oracle === undefined) return;
      const formatted = formatAddress({ hostname: text, port: 1 }).slice(1, -3);
      if (formatted.startsWith("::ffff:") && formatted.includes(".")) {
        // IPv4-mapped: compare the bytes instead.
        assert.deepEqual(
          encodeAddress({ hostname: formatted, port: 1 }),
          encodeAddress({ hostname: oracle, port: 1 }),
        );
      } else {
        assert.equal(formatted, oracle, text);
      }
    }),
    { ...OPTIONS, numRuns: 2000 },
  );
});

test("every text form of an IPv6 address encodes to its bytes and formats the same way", () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 0xffff })), {
        minLength: 8,
        maxLength: 8,
      }),
      fc.integer({ min: 0, max: 0xffff }),
      fc.boolean(),
      fc.nat(7),
      fc.nat(8),
      (words, port, upper, start, length) => {
        // Write the words padded, optionally uppercase, and squeeze a run of zeros with "::".
        const pieces = words.map((w) => {
          const hex = w.toString(16).padStart(4, "0");
          return upper ? hex.toUpperCase() : hex;
        });
        let text = pieces.join(":");
        const end = Math.min(8, start + length);
        if (end - start >= 1 && words.slice(start, end).every((w) => w === 0)) {
          text = `${pieces.slice(0, start).join(":")}::${
            pieces.slice(end).join(":")
          }`;
        }
        const bytes = new Uint8Array(18);
        words.forEach((w, i) => {
          bytes[2 * i] = w >> 8;
          bytes[2 * i + 1] = w & 0xff;
        });
        bytes[16] = port >> 8;
        bytes[17] = port & 0xff;
        assert.deepEqual(encodeAddress({ hostname: text, port }), bytes, text);
        const canonical = decodeAddress(bytes);
        assert.equal(
          formatAddress({ hostname: text, port }),
          formatAddress(canonical),
        );
        assert.deepEqual(parseAddress(formatAddress(canonical)), canonical);
      },
    ),
    OPTIONS,
  );
});

// ---------------------------------------------------------------- fragments

test("decodeFragment() of arbitrary bytes returns a fragment or throws MalformedDatagramError", () => {
  fc.assert(
    fc.property(
      fc.oneof(anyBytes, fc.uint8Array({ maxLength: 9 })),
      (bytes) => {
        const result = onlyMalformed(() => decodeFragment(bytes));
        if (result instanceof MalformedDatagramError) return;
        assert.ok(result.count >= 1 && result.index < result.count);
        assert.deepEqual(encodeFragment(result), bytes);
      },
    ),
    OPTIONS,
  );
});

test("decodeFragment() inverts encodeFragment()", () => {
  const fragment = fc.integer({ min: 1, max: 0xffff }).chain((count) =>
    fc.record({
      msgId: fc.integer({ min: 0, max: 0xffffffff }),
      index: fc.integer({ min: 0, max: count - 1 }),
      count: fc.constant(count),
      chunk: fc.uint8Array({ maxLength: 100 }),
    })
  );
  fc.assert(
    fc.property(fragment, (f) => {
      const decoded = decodeFragment(encodeFragment(f));
      assert.deepEqual({ ...decoded, chunk: decoded.chunk.slice() }, { ...f });
    }),
    OPTIONS,
  );
});

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

test("fragmentStream() output fits the MTU and decodes back to the stream", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 4000, size: "max" }),
      fc.integer({ min: 13, max: 1500 }),
      fc.integer({ min: 0, max: 0xffffffff }),
      (stream, mtu, msgId) => {
        const datagrams = fragmentStream(stream, mtu, msgId);
        if (stream.length <= mtu) {
          assert.deepEqual(datagrams, [stream]);
          return;
        }
        const size = fragmentChunkSize(mtu);
        assert.equal(datagrams.length, Math.ceil(stream.length / size));
        const fragments = datagrams.map((d) => {
          assert.ok(d.length <= mtu);
          const records = decodeRecords(d);
          assert.equal(records.length, 1);
          assert.equal(records[0].type, RecordType.FRAGMENT);
          return decodeFragment(records[0].value);
        });
        fragments.forEach((f, i) => {
          assert.equal(f.msgId, msgId);
          assert.equal(f.index, i);
          assert.equal(f.count, datagrams.length);
          if (i < fragments.length - 1) assert.equal(f.chunk.length, size);
        });
        assert.deepEqual(concat(fragments.map((f) => f.chunk)), stream);
      },
    ),
    OPTIONS,
  );
});

// ---------------------------------------------------------------- reassembler

type Op =
  | { kind: "add"; source: string; fragment: Fragment }
  | { kind: "tick"; ms: number }
  | { kind: "expire" }
  | { kind: "forget"; source: string };

const SOURCES = ["10.0.0.1:1", "10.0.0.2:1", "[::1]:1"];

const op: fc.Arbitrary<Op> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      source: fc.constantFrom(...SOURCES),
      msgId: fc.integer({ min: 0, max: 3 }),
      count: fc.integer({ min: 1, max: 7 }),
      indexSeed: fc.nat(),
      size: fc.integer({ min: 0, max: 60 }),
      fill: fc.integer({ min: 0, max: 255 }),
    }).map(({ source, msgId, count, indexSeed, size, fill }) => ({
      kind: "add" as const,
      source,
      fragment: {
        msgId,
        index: indexSeed % count,
        count,
        chunk: new Uint8Array(size).fill(fill),
      },
    })),
  },
  {
    weight: 2,
    arbitrary: fc.integer({ min: -500, max: 400 }).map((ms) => ({
      kind: "tick" as const,
      ms,
    })),
  },
  { weight: 1, arbitrary: fc.constant({ kind: "expire" as const }) },
  {
    weight: 1,
    arbitrary: fc.constantFrom(...SOURCES).map((source) => ({
      kind: "forget" as const,
      source,
    })),
  },
);

const limits: fc.Arbitrary<ReassemblerLimits> = fc.record({
  timeoutMs: fc.integer({ min: 1, max: 1000 }),
  maxPartialsPerSource: fc.integer({ min: 1, max: 4 }),
  maxPartialsTotal: fc.integer({ min: 1, max: 8 }),
  maxBytesPerSource: fc.integer({ min: 1, max: 150 }),
  maxBytesTotal: fc.integer({ min: 1, max: 300 }),
  maxCount: fc.integer({ min: 1, max: 7 }),
});

interface ModelBuffer {
  source: string;
  msgId: number;
  count: number;
  createdAt: number;
  chunks: Map<number, Uint8Array>;
}

/** A deliberately naive reference: scans everything, recomputes every total. */
class Model {
  readonly counters: ReassemblerCounters = {
    completed: 0,
    duplicate: 0,
    countMismatch: 0,
    countTooLarge: 0,
    timedOut: 0,
    tooManyPartials: 0,
    sourceBytesExceeded: 0,
    totalBytesExceeded: 0,
  };
  buffers: ModelBuffer[] = [];
  /** Like the Reassembler: time is the sum of the forward steps seen when the clock is read. */
  elapsed = 0;

  constructor(readonly limits: ReassemblerLimits, private lastClock: number) {}

  static bytesOf(b: ModelBuffer): number {
    let n = 0;
    for (const c of b.chunks.values()) n += c.length;
    return n;
  }
  bytes(source?: string): number {
    return this.buffers
      .filter((b) => source === undefined || b.source === source)
      .reduce((n, b) => n + Model.bytesOf(b), 0);
  }
  sample(clock: number): void {
    if (clock > this.lastClock) this.elapsed += clock - this.lastClock;
    this.lastClock = clock;
  }
  expire(clock: number): number {
    this.sample(clock);
    const before = this.buffers.length;
    this.buffers = this.buffers.filter((b) =>
      this.elapsed - b.createdAt < this.limits.timeoutMs
    );
    this.counters.timedOut += before - this.buffers.length;
    return before - this.buffers.length;
  }
  forget(source: string): void {
    this.buffers = this.buffers.filter((b) => b.source !== source);
  }
  remove(buffer: ModelBuffer): void {
    this.buffers = this.buffers.filter((b) => b !== buffer);
  }
  /** The source holding the most by `weight`; of equals, the one with the oldest buffer. */
  heaviest(weight: (source: string) => number): string {
    let best: string | undefined;
    for (const { source } of this.buffers) { // oldest first: ties keep the first
      if (best === undefined || weight(source) > weight(best)) best = source;
    }
    return best!;
  }
  add(source: string, f: Fragment, clock: number): Uint8Array | undefined {
    this.expire(clock);
    const found = this.buffers.find((b) =>
      b.source === source && b.msgId === f.msgId
    );
    if (found) {
      if (found.count !== f.count) {
        this.buffers = this.buffers.filter((b) => b !== found);
        this.counters.countMismatch++;
        return undefined;
      }
      if (found.chunks.has(f.index)) {
        this.counters.duplicate++;
        return undefined;
      }
    } else {
      if (f.count > this.limits.maxCount) {
        this.counters.countTooLarge++;
        return undefined;
      }
      if (f.count === 1) {
        this.counters.completed++;
        return f.chunk.slice();
      }
      if (f.chunk.length > this.limits.maxBytesPerSource) {
        this.counters.sourceBytesExceeded++;
        return undefined;
      }
      if (f.chunk.length > this.limits.maxBytesTotal) {
        this.counters.totalBytesExceeded++;
        return undefined;
      }
      if (
        this.buffers.filter((b) => b.source === source).length >=
          this.limits.maxPartialsPerSource
      ) {
        this.remove(this.buffers.find((b) => b.source === source)!);
        this.counters.tooManyPartials++;
      } else if (this.buffers.length >= this.limits.maxPartialsTotal) {
        const most = this.heaviest((s) =>
          this.buffers.filter((b) => b.source === s).length
        );
        this.remove(this.buffers.find((b) => b.source === most)!);
        this.counters.tooManyPartials++;
      }
    }
    const buffer = found ?? {
      source,
      msgId: f.msgId,
      count: f.count,
      createdAt: this.elapsed,
      chunks: new Map(),
    };
    if (!found) this.buffers.push(buffer);
    while (
      this.bytes(source) + f.chunk.length > this.limits.maxBytesPerSource
    ) {
      this.counters.sourceBytesExceeded++;
      const victim = this.buffers.find((b) =>
        b.source === source && b !== buffer
      );
      this.remove(victim ?? buffer);
      if (!victim) return undefined;
    }
    while (this.bytes() + f.chunk.length > this.limits.maxBytesTotal) {
      this.counters.totalBytesExceeded++;
      const most = this.heaviest((s) => this.bytes(s));
      const victim = this.buffers.find((b) =>
        b.source === most && b !== buffer
      );
      this.remove(victim ?? buffer);
      if (!victim) return undefined;
    }
    buffer.chunks.set(f.index, f.chunk.slice());
    if (buffer.chunks.size < buffer.count) return undefined;
    this.buffers = this.buffers.filter((b) => b !== buffer);
    this.counters.completed++;
    return concat(
      [...buffer.chunks.entries()].sort(([a], [b]) => a - b).map(([, c]) => c),
    );
  }
}

test("Reassembler matches a naive model and never exceeds its bounds, whatever it is fed", () => {
  const seen = new Map<string, number>();
  fc.assert(
    fc.property(
      limits,
      fc.array(op, { maxLength: 120, size: "max" }),
      (lim, ops) => {
        let clock = 5_000;
        const r = new Reassembler(lim, () => clock);
        const model = new Model(lim, clock);
        for (const o of ops) {
          switch (o.kind) {
            case "add":
              assert.deepEqual(
                r.add(o.source, o.fragment),
                model.add(o.source, o.fragment, clock),
              );
              break;
            case "tick":
              clock += o.ms;
              break;
            case "expire":
              assert.equal(r.expire(), model.expire(clock));
              break;
            case "forget":
              r.forgetSource(o.source);
              model.forget(o.source);
              break;
          }
          assert.ok(r.bufferedBytes <= lim.maxBytesTotal);
          for (const source of SOURCES) {
            assert.ok(model.bytes(source) <= lim.maxBytesPerSource);
          }
          assert.ok(
            r.partialCount <=
              Math.min(
                SOURCES.length * lim.maxPartialsPerSource,
                lim.maxPartialsTotal,
              ),
          );
          assert.equal(r.bufferedBytes, model.bytes());
          assert.equal(r.partialCount, model.buffers.length);
          assert.equal(
            r.sourceCount,
            new Set(model.buffers.map((b) => b.source)).size,
          );
          assert.deepEqual(r.counters, model.counters);
        }
        for (const [name, n] of Object.entries(r.counters)) {
          seen.set(name, (seen.get(name) ?? 0) + n);
        }
        r.expire();
        clock += lim.timeoutMs;
        r.expire();
        assert.equal(r.bufferedBytes, 0);
        assert.equal(r.partialCount, 0);
      },
    ),
    OPTIONS,
  );
  // The generator must reach every path, or this test proves little.
  for (const [name, n] of seen) assert.ok(n > 0, `no run exercised ${name}`);
});

/** Streams of 0..1500 bytes (not biased towards tiny ones, so most need fragmenting). */
const streamInputs = fc.array(
  fc.record({
    source: fc.constantFrom(...SOURCES),
    data: fc.uint8Array({ maxLength: 1500, size: "max" }),
  }),
  { minLength: 1, maxLength: 6 },
);

test("Reassembler returns exactly the original streams of fragmentStream(), in any order, with duplicates", () => {
  let fragmented = 0;
  fc.assert(
    fc.property(
      streamInputs,
      fc.integer({ min: 20, max: 300 }), // at most 188 chunks: under maxCount
      fc.integer({ min: 0, max: 0xffffffff }),
      fc.integer({ min: 0, max: 30 }),
      (inputs, mtu, seed, duplicates) => {
        const random = mulberry32(seed);
        const r = new Reassembler({}, () => 0);
        const originals = new Map<string, Uint8Array>();
        const feed: [string, Fragment][] = [];
        inputs.forEach(({ source, data }, msgId) => {
          const datagrams = fragmentStream(data, mtu, msgId);
          if (datagrams[0] === data) return; // fits one datagram: nothing to reassemble
          originals.set(`${source}/${msgId}`, data);
          for (const d of datagrams) {
            feed.push([source, decodeFragment(decodeRecords(d)[0].value)]);
          }
        });
        fragmented += originals.size;
        for (let i = 0; i < duplicates && feed.length > 0; i++) {
          feed.push(feed[Math.floor(random() * feed.length)]);
        }
        shuffleInPlace(feed, random);
        const completed = new Map<string, number>();
        for (const [source, f] of feed) {
          const out = r.add(source, f);
          if (out === undefined) continue;
          const key = `${source}/${f.msgId}`;
          assert.deepEqual(out, originals.get(key));
          completed.set(key, (completed.get(key) ?? 0) + 1);
        }
        // With room to spare every stream completes at least once.
        for (const key of originals.keys()) {
          assert.ok((completed.get(key) ?? 0) >= 1, key);
        }
      },
    ),
    OPTIONS,
  );
  assert.ok(
    fragmented > RUNS,
    `only ${fragmented} fragmented streams generated`,
  );
});

/** Bounds that some fragmentStream() streams fit and some do not. */
const streamLimits: fc.Arbitrary<ReassemblerLimits> = fc.record({
  timeoutMs: fc.integer({ min: 1, max: 1000 }),
  maxPartialsPerSource: fc.integer({ min: 1, max: 4 }),
  maxPartialsTotal: fc.integer({ min: 1, max: 8 }),
  maxBytesPerSource: fc.integer({ min: 1, max: 3000 }),
  maxBytesTotal: fc.integer({ min: 1, max: 6000 }),
  maxCount: fc.integer({ min: 1, max: 12 }),
});

test("Reassembler under tight bounds and a moving clock only ever returns original streams", () => {
  let completions = 0;
  fc.assert(
    fc.property(
      streamLimits,
      streamInputs,
      fc.integer({ min: 100, max: 600 }),
      fc.array(
        fc.record({
          pick: fc.nat(),
          advance: fc.integer({ min: -50, max: 200 }),
        }),
        { maxLength: 200, size: "max" },
      ),
      (lim, inputs, mtu, steps) => {
        let clock = 0;
        const r = new Reassembler(lim, () => clock);
        const feed: [string, Fragment, Uint8Array][] = [];
        inputs.forEach(({ source, data }, msgId) => {
          const datagrams = fragmentStream(data, mtu, msgId);
          if (datagrams[0] === data) return;
          for (const d of datagrams) {
            feed.push([
              source,
              decodeFragment(decodeRecords(d)[0].value),
              data,
            ]);
          }
        });
        for (const { pick, advance } of steps) {
          if (feed.length === 0) break;
          clock += advance;
          const [source, f, original] = feed[pick % feed.length];
          const out = r.add(source, f);
          if (out !== undefined) {
            completions++;
            assert.deepEqual(out, original);
          }
          assert.ok(r.bufferedBytes <= lim.maxBytesTotal);
          assert.ok(
            r.partialCount <=
              Math.min(
                SOURCES.length * lim.maxPartialsPerSource,
                lim.maxPartialsTotal,
              ),
          );
        }
      },
    ),
    OPTIONS,
  );
  assert.ok(
    completions > 0,
    "no stream ever completed: the generator is too harsh",
  );
});
