import assert from "node:assert/strict";
import { RsaDecryptError, RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { RsaDecryptPool } from "../../lib/runtime/rsa_pool.ts";
import { schedIdleUnavailable } from "../../lib/runtime/sched_idle.ts";

const encoder = new TextEncoder();

// Generated once for the whole file (generation is slow).
const key = await RsaPrivateKey.generate(2048);
const otherKey = await RsaPrivateKey.generate(2048);
const k = key.publicKey.blockSize;

/** Whether the process may lower a thread's priority (--allow-sys). */
const maySetPriority = Deno.permissions.querySync({
  name: "sys",
  kind: "setPriority",
}).state === "granted";

/** A distinct plaintext per index, of varying lengths (0 to maxChunkSize). */
function plaintextFor(i: number): Uint8Array {
  const text = encoder.encode(`plaintext #${i} `.repeat(i + 1));
  return text.subarray(0, Math.min(text.length, key.publicKey.maxChunkSize));
}

/** `promise`, or a rejection if it has not settled within `ms` (a lost job would hang the test). */
async function within<T>(promise: Promise<T>, ms = 30_000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`no answer within ${ms} ms`)),
      ms,
    );
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

/** Settles `promise` to its value or its error, never rejecting. */
function settle<T>(
  promise: Promise<T>,
): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  return promise.then(
    (value) => ({ ok: true as const, value }),
    (error) => ({ ok: false as const, error }),
  );
}

for (const threads of [2, 0]) {
  Deno.test(`threads: ${threads}: start() reports ${threads} threads and no fallback`, async () => {
    await using pool = new RsaDecryptPool(key, { threads });
    const status = await pool.start();
    assert.equal(status.threads, threads);
    assert.equal(status.fallbackReason, undefined);
    // start() is idempotent: the same status, no second set of threads.
    assert.equal(await pool.start(), status);
  });

  Deno.test(`threads: ${threads}: decrypt() returns the exact plaintext`, async () => {
    await using pool = new RsaDecryptPool(key, { threads });
    for (
      const plaintext of [
        encoder.encode("hello, pool"),
        new Uint8Array(0),
        crypto.getRandomValues(new Uint8Array(key.publicKey.maxChunkSize)),
      ]
    ) {
      const block = await key.publicKey.encrypt(plaintext);
      assert.deepEqual(await pool.decrypt(block), plaintext);
      // The caller's block is left intact (the pool sends a copy).
      assert.equal(block.length, k);
      assert.deepEqual(await key.decrypt(block), plaintext);
    }
  });

  Deno.test(`threads: ${threads}: 20 concurrent decryptions each return their own plaintext`, async () => {
    await using pool = new RsaDecryptPool(key, { threads });
    const plaintexts = Array.from({ length: 20 }, (_, i) => plaintextFor(i));
    assert.equal(
      new Set(plaintexts.map((p) => p.join())).size,
      plaintexts.length,
    );
    const blocks = await Promise.all(
      plaintexts.map((p) => key.publicKey.encrypt(p)),
    );
    // Submitted before the threads are up (first call starts them).
    const results = await within(
      Promise.all(blocks.map((b) => pool.decrypt(b))),
    );
    assert.equal(results.length, plaintexts.length);
    results.forEach((result, i) => assert.deepEqual(result, plaintexts[i]));
    // And once more with the threads running.
    const again = await within(
      Promise.all([...blocks].reverse().map((b) => pool.decrypt(b))),
    );
    again.reverse().forEach((result, i) =>
      assert.deepEqual(result, plaintexts[i])
    );
    assert.equal(pool.decryptions, 40);
    assert.equal((await pool.start()).threads, threads);
  });

  Deno.test(`threads: ${threads}: decrypt() reads a block that is a view into a larger buffer`, async () => {
    await using pool = new RsaDecryptPool(key, { threads });
    const plaintext = encoder.encode("in the middle of a buffer");
    const block = await key.publicKey.encrypt(plaintext);
    const buffer = new Uint8Array(k + 20).fill(0xaa);
    buffer.set(block, 7);
    const view = buffer.subarray(7, 7 + k);
    assert.deepEqual(await pool.decrypt(view), plaintext);
    assert.deepEqual(buffer.subarray(7, 7 + k), block);
    assert.equal(buffer[6], 0xaa);
    assert.equal(buffer[7 + k], 0xaa);
  });

  Deno.test(`threads: ${threads}: a bad block of the right length rejects with RsaDecryptError, and the pool goes on`, async () => {
    await using pool = new RsaDecryptPool(key, { threads });
    const good = encoder.encode("good block");
    const goodBlock = await key.publicKey.encrypt(good);
    const tampered = goodBlock.slice();
    tampered[k - 1] ^= 0x01;
    const bad = [
      await otherKey.publicKey.encrypt(good), // another key
      tampered, // one bit flipped
      new Uint8Array(k), // all zeros
      new Uint8Array(k).fill(0xff), // larger than the modulus
      crypto.getRandomValues(new Uint8Array(k)), // garbage
    ];
    for (const block of bad) {
      await assert.rejects(pool.decrypt(block), RsaDecryptError);
      assert.deepEqual(await pool.decrypt(goodBlock), good);
    }
    // Bad and good blocks mixed concurrently: each gets its own answer.
    const mixed = await within(
      Promise.all(
        [...bad, goodBlock, ...bad, goodBlock].map((b) =>
          settle(pool.decrypt(b))
        ),
      ),
    );
    mixed.forEach((outcome, i) => {
      if (i % (bad.length + 1) === bad.length) {
        assert.ok(outcome.ok, `block ${i} should decrypt`);
        assert.deepEqual(outcome.value, good);
      } else {
        assert.ok(!outcome.ok, `block ${i} should not decrypt`);
        assert.ok(outcome.error instanceof RsaDecryptError);
      }
    });
    assert.equal(pool.decryptions, bad.length * 2 + mixed.length);
  });

  Deno.test(`threads: ${threads}: a block of the wrong length rejects with RangeError`, async () => {
    await using pool = new RsaDecryptPool(key, { threads });
    for (const length of [0, 1, k - 1, k + 1, 2 * k]) {
      await assert.rejects(
        pool.decrypt(new Uint8Array(length)),
        (error: unknown) => {
          assert.ok(error instanceof RangeError);
          assert.ok(!(error instanceof RsaDecryptError));
          assert.match(error.message, new RegExp(`${length}-byte block`));
          assert.match(error.message, new RegExp(`exactly ${k} bytes`));
          return true;
        },
      );
    }
    const plaintext = encoder.encode("still fine");
    assert.deepEqual(
      await pool.decrypt(await key.publicKey.encrypt(plaintext)),
      plaintext,
    );
  });

  Deno.test(`threads: ${threads}: decryptions counts every call (good, bad, wrong length, after close)`, async () => {
    const pool = new RsaDecryptPool(key, { threads });
    try {
      assert.equal(pool.decryptions, 0);
      await pool.start();
      assert.equal(pool.decryptions, 0, "start() is not a decryption");
      const good = await key.publicKey.encrypt(encoder.encode("count me"));
      await pool.decrypt(good);
      assert.equal(pool.decryptions, 1);
      await assert.rejects(pool.decrypt(new Uint8Array(k)), RsaDecryptError);
      assert.equal(pool.decryptions, 2);
      await assert.rejects(pool.decrypt(new Uint8Array(3)), RangeError);
      assert.equal(pool.decryptions, 3);
      // Counted when asked for, before it settles.
      const pending = [pool.decrypt(good), pool.decrypt(good)];
      assert.equal(pool.decryptions, 5);
      await Promise.all(pending);
      assert.equal(pool.decryptions, 5);
      await pool.close();
      await assert.rejects(pool.decrypt(good), RsaDecryptError);
      await assert.rejects(pool.decrypt(new Uint8Array(3)), RangeError);
      assert.equal(pool.decryptions, 7);
    } finally {
      await pool.close();
    }
  });

  Deno.test(`threads: ${threads}: after close() decrypt rejects with RsaDecryptError and close() again is fine`, async () => {
    const pool = new RsaDecryptPool(key, { threads });
    const plaintext = encoder.encode("before close");
    const block = await key.publicKey.encrypt(plaintext);
    assert.equal(pool.closed, false);
    assert.deepEqual(await pool.decrypt(block), plaintext);
    await pool.close();
    assert.equal(pool.closed, true);
    await assert.rejects(pool.decrypt(block), RsaDecryptError);
    await pool.close();
    assert.equal(pool.closed, true);
    await assert.rejects(pool.decrypt(block), RsaDecryptError);
  });

  Deno.test(`threads: ${threads}: decryptions pending at close() reject with RsaDecryptError`, async () => {
    for (const warm of [false, true]) {
      const pool = new RsaDecryptPool(key, { threads });
      const plaintexts = Array.from({ length: 8 }, (_, i) => plaintextFor(i));
      const blocks = await Promise.all(
        plaintexts.map((p) => key.publicKey.encrypt(p)),
      );
      // warm: the threads hold the key; cold: the first decrypt starts them.
      if (warm) await pool.start();
      const outcomes = blocks.map((b) => settle(pool.decrypt(b)));
      // Closed in the same turn: no answer can have arrived yet.
      const closing = pool.close();
      assert.equal(pool.closed, true);
      await closing;
      const settled = await within(Promise.all(outcomes));
      let rejected = 0;
      settled.forEach((outcome, i) => {
        if (outcome.ok) {
          assert.deepEqual(outcome.value, plaintexts[i]);
        } else {
          assert.ok(
            outcome.error instanceof RsaDecryptError,
            `block ${i} (warm: ${warm}): ${outcome.error}`,
          );
          rejected++;
        }
      });
      assert.equal(rejected, blocks.length, `warm: ${warm}`);
      await pool.close();
    }
  });
}

Deno.test("close() before any decryption spawns nothing and start() then reports 0 threads", async () => {
  const pool = new RsaDecryptPool(key, { threads: 2 });
  await pool.close();
  assert.equal(pool.closed, true);
  assert.deepEqual(await pool.start(), {
    threads: 0,
    niced: false,
    idle: false,
  });
  await assert.rejects(
    pool.decrypt(await key.publicKey.encrypt(new Uint8Array(1))),
    RsaDecryptError,
  );
});

Deno.test("close() while the threads are starting leaves nothing running", async () => {
  const pool = new RsaDecryptPool(key, { threads: 2 });
  const status = pool.start();
  await pool.close();
  const { threads, niced } = await status;
  assert.equal(threads, 0);
  assert.equal(niced, false);
});

Deno.test("await using closes the pool at the end of the block", async () => {
  let outer: RsaDecryptPool | undefined;
  {
    await using pool = new RsaDecryptPool(key, { threads: 1 });
    outer = pool;
    const plaintext = encoder.encode("disposable");
    assert.deepEqual(
      await pool.decrypt(await key.publicKey.encrypt(plaintext)),
      plaintext,
    );
    assert.equal(pool.closed, false);
  }
  assert.equal(outer.closed, true);
  await assert.rejects(
    outer.decrypt(await key.publicKey.encrypt(new Uint8Array(1))),
    RsaDecryptError,
  );
});

Deno.test("the constructor refuses a thread count that is not a whole number of at least 0", () => {
  for (const threads of [-1, 1.5, NaN, Infinity]) {
    assert.throws(() => new RsaDecryptPool(key, { threads }), RangeError);
  }
});

Deno.test(
  `lowPriority: true gives niced: ${maySetPriority} (sys setPriority ${
    maySetPriority ? "granted" : "not granted"
  })`,
  async () => {
    await using pool = new RsaDecryptPool(key, {
      threads: 1,
      lowPriority: true,
    });
    const status = await pool.start();
    assert.equal(status.threads, 1);
    assert.equal(status.niced, maySetPriority);
    assert.equal(status.fallbackReason, undefined);
    const plaintext = encoder.encode("low priority");
    assert.deepEqual(
      await pool.decrypt(await key.publicKey.encrypt(plaintext)),
      plaintext,
    );
  },
);

Deno.test("lowPriority: true without the permission keeps a core free (cores - 1 threads), as the default does", async () => {
  const cores = navigator.hardwareConcurrency;
  await using pool = new RsaDecryptPool(key, { lowPriority: true });
  const status = await pool.start();
  assert.equal(status.threads, maySetPriority ? cores : Math.max(1, cores - 1));
  assert.equal(status.niced, maySetPriority);
});

Deno.test("lowPriority: false gives niced: false", async () => {
  await using pool = new RsaDecryptPool(key, {
    threads: 1,
    lowPriority: false,
  });
  const status = await pool.start();
  assert.equal(status.threads, 1);
  assert.equal(status.niced, false);
});

Deno.test("the default pool runs cores - 1 threads (at least 1) unless it may lower their priority", async () => {
  const cores = navigator.hardwareConcurrency;
  assert.ok(Number.isInteger(cores) && cores >= 1);
  await using pool = new RsaDecryptPool(key);
  const status = await pool.start();
  assert.equal(status.fallbackReason, undefined);
  assert.equal(status.threads, maySetPriority ? cores : Math.max(1, cores - 1));
  assert.equal(status.niced, maySetPriority);
  const plaintext = encoder.encode("default pool");
  assert.deepEqual(
    await pool.decrypt(await key.publicKey.encrypt(plaintext)),
    plaintext,
  );
});

Deno.test({
  name:
    "without read permission for the worker module the pool falls back to WebCrypto and says why",
  permissions: "none",
  async fn() {
    await using pool = new RsaDecryptPool(key, { threads: 2 });
    const status = await pool.start();
    assert.equal(status.threads, 0);
    assert.equal(status.niced, false);
    assert.match(status.fallbackReason ?? "", /rsa_worker\.ts.*--allow-read/);
    const plaintext = encoder.encode("fallback");
    assert.deepEqual(
      await pool.decrypt(await key.publicKey.encrypt(plaintext)),
      plaintext,
    );
    await assert.rejects(pool.decrypt(new Uint8Array(k)), RsaDecryptError);
  },
});

Deno.test("a 4096-bit key decrypts on threads and in the runtime", async () => {
  const big = await RsaPrivateKey.generate(4096);
  assert.equal(big.publicKey.blockSize, 512);
  const plaintexts = Array.from(
    { length: 6 },
    (_, i) =>
      crypto.getRandomValues(
        new Uint8Array(i === 0 ? big.publicKey.maxChunkSize : 10 * i),
      ),
  );
  const blocks = await Promise.all(
    plaintexts.map((p) => big.publicKey.encrypt(p)),
  );
  for (const threads of [2, 0]) {
    await using pool = new RsaDecryptPool(big, { threads });
    assert.equal((await pool.start()).threads, threads);
    const results = await within(
      Promise.all(blocks.map((b) => pool.decrypt(b))),
    );
    results.forEach((result, i) => assert.deepEqual(result, plaintexts[i]));
    // A 2048-bit block is the wrong length for this key.
    await assert.rejects(
      pool.decrypt(await key.publicKey.encrypt(plaintexts[1])),
      RangeError,
    );
    await assert.rejects(pool.decrypt(new Uint8Array(512)), RsaDecryptError);
  }
});

/** Whether this test process may take SCHED_IDLE (Linux; the test task grants --allow-ffi). */
const mayUseFfi = schedIdleUnavailable() === undefined;

/** Whether procps `ps` can show threads' scheduling classes here (needs --allow-run). */
async function psCanShowClasses(): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("ps", {
      args: ["-L", "-o", "cls=", "-p", String(Deno.pid)],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}
const psShowsClasses = mayUseFfi && await psCanShowClasses();
if (mayUseFfi && !psShowsClasses) {
  console.log(
    "rsa_pool_test.ts: the SCHED_IDLE check by ps is ignored: no procps ps here",
  );
}

/** Scheduling class of each thread of this process, by thread name, as `ps` shows it (IDL: SCHED_IDLE, TS: normal). */
async function schedulingClasses(): Promise<Map<string, string[]>> {
  const { stdout } = await new Deno.Command("ps", {
    args: ["-L", "-o", "cls=,comm=", "-p", String(Deno.pid)],
    stdout: "piped",
    stderr: "null",
  }).output();
  const classes = new Map<string, string[]>();
  for (const line of new TextDecoder().decode(stdout).split("\n")) {
    const [cls, name] = line.trim().split(/\s+/, 2);
    if (!cls || !name) continue;
    classes.set(name, [...classes.get(name) ?? [], cls]);
  }
  return classes;
}

Deno.test({
  name:
    "schedIdle: true puts exactly the pool's threads under SCHED_IDLE (ps shows IDL), and they decrypt",
  ignore: !mayUseFfi || !psShowsClasses,
  async fn() {
    const before = await schedulingClasses();
    await using pool = new RsaDecryptPool(key, { threads: 2, schedIdle: true });
    const status = await pool.start();
    assert.deepEqual(
      { threads: status.threads, idle: status.idle, why: status.idleReason },
      { threads: 2, idle: true, why: undefined },
    );
    const classes = await schedulingClasses();
    // Deno names each worker's thread after its id, which is never reused.
    const fresh = [...classes].filter(([name]) =>
      name.startsWith("worker-") && !before.has(name)
    );
    assert.equal(fresh.length, 2, [...classes].join(" "));
    for (const [name, cls] of fresh) assert.deepEqual(cls, ["IDL"], name);
    // This (the test's main) thread keeps the normal policy.
    assert.deepEqual(classes.get("deno"), before.get("deno"));
    assert.ok(classes.get("deno")?.every((c) => c === "TS"));
    const plaintext = encoder.encode("idle");
    assert.deepEqual(
      await pool.decrypt(await key.publicKey.encrypt(plaintext)),
      plaintext,
    );
  },
});

Deno.test({
  name:
    "schedIdle: true without --allow-ffi says why, and the threads still run and decrypt",
  permissions: { read: true },
  async fn() {
    await using pool = new RsaDecryptPool(key, { threads: 1, schedIdle: true });
    const status = await pool.start();
    assert.equal(status.threads, 1);
    assert.equal(status.idle, false);
    assert.match(status.idleReason ?? "", /--allow-ffi|Linux only/);
    assert.equal(status.fallbackReason, undefined);
    const plaintext = encoder.encode("not idle");
    assert.deepEqual(
      await pool.decrypt(await key.publicKey.encrypt(plaintext)),
      plaintext,
    );
  },
});

Deno.test("schedIdle is off by default: idle false and no reason", async () => {
  await using pool = new RsaDecryptPool(key, { threads: 1 });
  const status = await pool.start();
  assert.equal(status.idle, false);
  assert.equal(status.idleReason, undefined);
});

Deno.test({
  name:
    "schedIdle: true that can be had gives every core threads even without setPriority",
  ignore: !mayUseFfi,
  async fn() {
    await using pool = new RsaDecryptPool(key, {
      schedIdle: true,
      lowPriority: false,
    });
    const status = await pool.start();
    assert.equal(status.threads, navigator.hardwareConcurrency);
    assert.equal(status.idle, true);
    assert.equal(status.niced, false);
  },
});
