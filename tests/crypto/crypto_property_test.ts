import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import fc from "fast-check";
import { InvalidTokenError } from "../../lib/errors.ts";
import {
  decodeBase64,
  decodeBase64Url,
  encodeBase64,
  encodeBase64Url,
} from "../../lib/crypto/base64.ts";
import {
  type FernetBackend,
  FernetKey,
  parseToken,
} from "../../lib/crypto/fernet.ts";
import { ReplayWindow } from "../../lib/crypto/replay.ts";

const RUNS = { numRuns: 200 };
const URL_CHARS =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".split("");

/** Strings close to base64url: mostly alphabet, some padding and some intruders. */
const nearBase64Url = fc
  .array(
    fc.oneof(
      { weight: 20, arbitrary: fc.constantFrom(...URL_CHARS) },
      { weight: 2, arbitrary: fc.constant("=") },
      {
        weight: 1,
        arbitrary: fc.constantFrom(
          "+",
          "/",
          " ",
          "\n",
          "\u0141",
          "\u00ff",
          "\u0000",
          "%",
        ),
      },
    ),
    { maxLength: 200 },
  )
  .map((chars) => chars.join(""));

/** Token-shaped inputs: random text, random bytes, and base64url of random raw tokens starting 0x80. */
const tokenish = fc.oneof(
  fc.string({ unit: "binary", maxLength: 200 }),
  nearBase64Url,
  fc.uint8Array({ maxLength: 200 }),
  fc.uint8Array({ minLength: 0, maxLength: 160 }).map((raw) => {
    if (raw.length > 0) raw[0] = 0x80;
    return encodeBase64Url(raw);
  }),
);

function onlyInvalidToken(e: unknown): void {
  assert.ok(e instanceof InvalidTokenError, `unexpected ${e}`);
}

Deno.test({
  name: "parseToken() throws nothing but InvalidTokenError(format)",
  permissions: "none",
  fn() {
    fc.assert(
      fc.property(tokenish, (token) => {
        try {
          const fields = parseToken(token);
          assert.equal(fields.version, 0x80);
          assert.ok(
            fields.ciphertext.length > 0 && fields.ciphertext.length % 16 === 0,
          );
        } catch (e) {
          onlyInvalidToken(e);
          assert.equal((e as InvalidTokenError).reason, "format");
        }
      }),
      RUNS,
    );
  },
});

for (const backend of ["node", "webcrypto"] as FernetBackend[]) {
  Deno.test({
    name:
      `[${backend}] FernetKey.decrypt() rejects arbitrary input with InvalidTokenError only`,
    permissions: "none",
    async fn() {
      const key = await FernetKey.generate(backend);
      await fc.assert(
        fc.asyncProperty(tokenish, async (token) => {
          try {
            await key.decrypt(token);
            assert.fail("a random token decrypted");
          } catch (e) {
            onlyInvalidToken(e);
          }
        }),
        RUNS,
      );
    },
  });

  Deno.test({
    name: `[${backend}] FernetKey encrypt/decrypt round trips any plaintext`,
    permissions: "none",
    async fn() {
      const key = await FernetKey.generate(backend);
      await fc.assert(
        fc.asyncProperty(
          fc.uint8Array({ maxLength: 300 }),
          fc.integer({ min: 0, max: 2 ** 40 }),
          async (plaintext, now) => {
            const token = await key.encrypt(plaintext, { nowSeconds: now });
            const out = await key.decrypt(token, {
              nowSeconds: now,
              ttlSeconds: 60,
            });
            assert.deepEqual(out.plaintext, plaintext);
            assert.equal(out.timestamp, now);
          },
        ),
        RUNS,
      );
    },
  });
}

Deno.test({
  name: "decodeBase64Url() and decodeBase64() throw nothing but TypeError",
  permissions: "none",
  fn() {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string({ unit: "binary", maxLength: 100 }),
          nearBase64Url,
          fc.uint8Array({ maxLength: 100 }),
        ),
        (input) => {
          for (const decode of [decodeBase64Url, decodeBase64]) {
            try {
              const out = decode(input as string);
              // Whatever decodes re-encodes to the same text (modulo padding and alphabet).
              const text = typeof input === "string"
                ? input
                : new TextDecoder().decode(input);
              if (decode === decodeBase64Url) {
                assert.equal(encodeBase64Url(out), text);
              } else {assert.equal(
                  encodeBase64(
                    out,
                    text.endsWith("=") || text.length % 4 === 0,
                  ),
                  text,
                );}
            } catch (e) {
              assert.ok(e instanceof TypeError, `unexpected ${e}`);
            }
          }
        },
      ),
      RUNS,
    );
  },
});

Deno.test({
  name: "base64 and base64url round trip any bytes and agree with node:buffer",
  permissions: "none",
  fn() {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 500 }), (bytes) => {
        const std = Buffer.from(bytes).toString("base64");
        assert.equal(encodeBase64(bytes), std);
        assert.equal(
          encodeBase64Url(bytes),
          std.replace(/\+/g, "-").replace(/\//g, "_"),
        );
        assert.deepEqual(decodeBase64Url(encodeBase64Url(bytes)), bytes);
        assert.deepEqual(decodeBase64(encodeBase64(bytes)), bytes);
        assert.deepEqual(decodeBase64(encodeBase64(bytes, false)), bytes);
        assert.deepEqual(
          decodeBase64Url(new TextEncoder().encode(encodeBase64Url(bytes))),
          bytes,
        );
      }),
      RUNS,
    );
  },
});

Deno.test({
  name:
    "ReplayWindow stays within maxEntries and never accepts the same token twice",
  permissions: "none",
  fn() {
    const step = fc.record({
      iv: fc.integer({ min: 0, max: 15 }),
      age: fc.integer({ min: -70, max: 70 }),
      tick: fc.integer({ min: -3, max: 20 }),
    });
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 8 }),
        fc.array(step, { maxLength: 200 }),
        (maxEntries, steps) => {
          const w = new ReplayWindow({ maxEntries });
          const accepted = new Map<number, number[]>(); // iv -> accepted timestamps
          let now = 1_000_000;
          for (const { iv, age, tick } of steps) {
            now += tick; // the clock may step back a little
            const timestamp = now - age;
            const ivBytes = new Uint8Array(16).fill(iv);
            const verdict = w.check(ivBytes, timestamp, now);
            assert.ok(w.size <= maxEntries);
            const before = accepted.get(iv) ?? [];
            if (verdict === "accepted") {
              // Same token (same IV and timestamp) never twice.
              assert.ok(
                !before.includes(timestamp),
                `iv ${iv} at ${timestamp} accepted twice`,
              );
              // Same IV again only once every earlier use was forgotten (at or below the floor).
              for (const t of before) {
                assert.ok(t <= w.floor, `iv ${iv} accepted while remembered`);
              }
              accepted.set(iv, [...before, timestamp]);
              assert.ok(timestamp >= now - 60 && timestamp <= now + 60);
            } else if (verdict === "replayed") {
              assert.ok(before.length > 0);
            }
          }
        },
      ),
      RUNS,
    );
  },
});
