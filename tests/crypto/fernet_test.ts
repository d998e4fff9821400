import assert from "node:assert/strict";
import { forge } from "./_forge_token.ts";
import { InvalidKeyError, InvalidTokenError } from "../../lib/errors.ts";
import {
  DEFAULT_FERNET_BACKEND,
  type FernetBackend,
  FernetKey,
  parseToken,
} from "../../lib/crypto/fernet.ts";
import { decodeBase64Url, encodeBase64Url } from "../../lib/crypto/base64.ts";
import generate from "../vectors/fernet/generate.json" with { type: "json" };
import verify from "../vectors/fernet/verify.json" with { type: "json" };
import invalid from "../vectors/fernet/invalid.json" with { type: "json" };
import pyca from "../fixtures/fernet_pyca.json" with { type: "json" };

const BACKENDS: FernetBackend[] = ["node", "webcrypto"];
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const seconds = (iso: string) => Date.parse(iso) / 1000;
const fromHex = (hex: string) =>
  Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));

/** The reason each official invalid vector must fail with. */
const INVALID_REASONS: Record<string, string> = {
  "incorrect mac": "signature",
  "too short": "format",
  "invalid base64": "format",
  "payload size not multiple of block size": "format",
  "payload padding error": "padding",
  "far-future TS (unacceptable clock skew)": "future",
  "expired TTL": "expired",
  "incorrect IV (causes padding error)": "padding",
};

async function rejects(
  promise: Promise<unknown>,
  reason: string,
  label = "",
): Promise<void> {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof InvalidTokenError, `${label}: ${e}`);
    assert.equal(e.reason, reason, `${label}: ${e.message}`);
    return true;
  });
}

Deno.test({
  name:
    "a key made without naming a backend uses the node backend (synchronous encryption available)",
  permissions: "none",
  async fn() {
    for (
      const key of [
        await FernetKey.generate(),
        await FernetKey.fromText(generate[0].secret),
      ]
    ) {
      assert.equal(key.backend, DEFAULT_FERNET_BACKEND);
      assert.equal(key.backend, "node");
      assert.equal(key.canRunSync, true);
      const token = key.encryptSync(encoder.encode("x"));
      assert.equal(decoder.decode(key.decryptSync(token).plaintext), "x");
    }
  },
});

for (const backend of BACKENDS) {
  Deno.test({
    name:
      `[${backend}] encrypt() reproduces every generate vector byte for byte`,
    permissions: "none",
    async fn() {
      for (const v of generate) {
        const key = await FernetKey.fromText(v.secret, backend);
        const token = await key.encrypt(encoder.encode(v.src), {
          nowSeconds: seconds(v.now),
          iv: new Uint8Array(v.iv),
        });
        assert.ok(token instanceof Uint8Array);
        assert.equal(decoder.decode(token), v.token);
      }
    },
  });

  Deno.test({
    name: `[${backend}] decrypt() accepts every verify vector`,
    permissions: "none",
    async fn() {
      for (const v of verify) {
        const key = await FernetKey.fromText(v.secret, backend);
        for (const token of [v.token, encoder.encode(v.token)]) {
          const out = await key.decrypt(token, {
            nowSeconds: seconds(v.now),
            ttlSeconds: v.ttl_sec,
          });
          assert.equal(decoder.decode(out.plaintext), v.src);
          assert.equal(out.timestamp, parseToken(v.token).timestamp);
          assert.deepEqual(out.iv, parseToken(v.token).iv);
        }
      }
    },
  });

  Deno.test({
    name:
      `[${backend}] decrypt() rejects every invalid vector with the right reason`,
    permissions: "none",
    async fn() {
      for (const v of invalid) {
        const key = await FernetKey.fromText(v.secret, backend);
        const reason = INVALID_REASONS[v.desc];
        assert.ok(reason, `no expected reason for "${v.desc}"`);
        await rejects(
          key.decrypt(v.token, {
            nowSeconds: seconds(v.now),
            ttlSeconds: v.ttl_sec,
          }),
          reason,
          v.desc,
        );
      }
    },
  });

  Deno.test({
    name: `[${backend}] decrypt() reads tokens made by pyca/cryptography`,
    permissions: "none",
    async fn() {
      const key = await FernetKey.fromText(pyca.key, backend);
      for (const t of pyca.tokens) {
        const out = await key.decrypt(t.token, {
          nowSeconds: t.timestamp,
          ttlSeconds: 60,
        });
        assert.deepEqual(out.plaintext, fromHex(t.plaintext_hex));
        assert.equal(out.timestamp, t.timestamp);
      }
    },
  });

  Deno.test({
    name: `[${backend}] round trips plaintexts of many lengths`,
    permissions: "none",
    async fn() {
      const key = await FernetKey.generate(backend);
      assert.equal(key.backend, backend);
      assert.equal(key.text.length, 44);
      for (const n of [0, 1, 15, 16, 17, 31, 32, 100, 1000, 32 * 1024]) {
        const plaintext = crypto.getRandomValues(new Uint8Array(n));
        const before = Math.floor(Date.now() / 1000);
        const token = await key.encrypt(plaintext);
        // Ciphertext is the plaintext padded up to the next whole block.
        const rawLength = 57 + (Math.floor(n / 16) + 1) * 16;
        assert.equal(token.length, Math.ceil(rawLength / 3) * 4);
        const out = await key.decrypt(token, { ttlSeconds: 60 });
        assert.deepEqual(out.plaintext, plaintext);
        assert.ok(out.timestamp >= before && out.timestamp <= before + 1);
        assert.equal(out.iv.length, 16);
      }
    },
  });

  Deno.test({
    name: `[${backend}] encrypt() uses a fresh random IV each time`,
    permissions: "none",
    async fn() {
      const key = await FernetKey.generate(backend);
      const a = parseToken(await key.encrypt(new Uint8Array(4)));
      const b = parseToken(await key.encrypt(new Uint8Array(4)));
      assert.notDeepEqual(a.iv, b.iv);
    },
  });

  Deno.test({
    name:
      `[${backend}] any flipped bit fails the signature (the version byte fails the format)`,
    permissions: "none",
    async fn() {
      const key = await FernetKey.generate(backend);
      const now = 1_700_000_000;
      const token = await key.encrypt(
        encoder.encode("tamper with me: three blocks of AES-CBC"),
        {
          nowSeconds: now,
        },
      );
      const raw = decodeBase64Url(token);
      for (let i = 0; i < raw.length; i++) {
        for (const bit of [0x01, 0x80]) {
          const copy = raw.slice();
          copy[i] ^= bit;
          await rejects(
            key.decrypt(encodeBase64Url(copy), { nowSeconds: now }),
            i === 0 ? "format" : "signature",
            `byte ${i} bit ${bit}`,
          );
        }
      }
      // Truncated by one whole block: still well-formed, so the signature fails.
      await rejects(
        key.decrypt(encodeBase64Url(raw.subarray(0, raw.length - 16)), {
          nowSeconds: now,
        }),
        "signature",
      );
    },
  });

  Deno.test({
    name: `[${backend}] a token under another key fails the signature`,
    permissions: "none",
    async fn() {
      const a = await FernetKey.generate(backend);
      const b = await FernetKey.generate(backend);
      await rejects(
        b.decrypt(await a.encrypt(encoder.encode("x"))),
        "signature",
      );
    },
  });

  Deno.test({
    name: `[${backend}] the HMAC is checked before age, skew and padding`,
    permissions: "none",
    async fn() {
      const key = await FernetKey.fromText(generate[0].secret, backend);
      const now = 1_700_000_000;
      const raw = decodeBase64Url(
        await key.encrypt(encoder.encode("x"), { nowSeconds: now - 1000 }),
      );
      raw[raw.length - 1] ^= 1;
      await rejects(
        key.decrypt(encodeBase64Url(raw), { nowSeconds: now, ttlSeconds: 60 }),
        "signature",
      );
      const future = decodeBase64Url(
        await key.encrypt(encoder.encode("x"), { nowSeconds: now + 1000 }),
      );
      future[30] ^= 1;
      await rejects(
        key.decrypt(encodeBase64Url(future), { nowSeconds: now }),
        "signature",
      );
    },
  });

  Deno.test({
    name: `[${backend}] age and skew are checked before padding`,
    permissions: "none",
    async fn() {
      const secret = generate[0].secret;
      const key = await FernetKey.fromText(secret, backend);
      const now = 1_700_000_000;
      const iv = new Uint8Array(16);
      const junk = new Uint8Array(16).fill(7); // decrypts to garbage padding
      await rejects(
        key.decrypt(forge(secret, now, iv, junk), { nowSeconds: now }),
        "padding",
      );
      await rejects(
        key.decrypt(forge(secret, now - 61, iv, junk), {
          nowSeconds: now,
          ttlSeconds: 60,
        }),
        "expired",
      );
      await rejects(
        key.decrypt(forge(secret, now + 61, iv, junk), { nowSeconds: now }),
        "future",
      );
    },
  });

  Deno.test({
    name: `[${backend}] age and clock-skew bounds are inclusive`,
    permissions: "none",
    async fn() {
      const key = await FernetKey.generate(backend);
      const now = 1_700_000_000;
      const at = (t: number) =>
        key.encrypt(new Uint8Array(0), { nowSeconds: t });
      await key.decrypt(await at(now - 60), {
        nowSeconds: now,
        ttlSeconds: 60,
      });
      await rejects(
        key.decrypt(await at(now - 61), { nowSeconds: now, ttlSeconds: 60 }),
        "expired",
      );
      // No ttl (or an infinite one): no age limit at all.
      await key.decrypt(await at(0), { nowSeconds: now });
      await key.decrypt(await at(0), { nowSeconds: now, ttlSeconds: Infinity });
      await key.decrypt(await at(now + 60), { nowSeconds: now });
      await rejects(
        key.decrypt(await at(now + 61), { nowSeconds: now }),
        "future",
      );
      await key.decrypt(await at(now + 5), {
        nowSeconds: now,
        maxClockSkewSeconds: 5,
      });
      await rejects(
        key.decrypt(await at(now + 6), {
          nowSeconds: now,
          maxClockSkewSeconds: 5,
        }),
        "future",
      );
    },
  });

  Deno.test({
    name:
      `[${backend}] fromText() rejects keys that are not 32 bytes of padded base64url`,
    permissions: "none",
    async fn() {
      const good = generate[0].secret;
      for (
        const text of [
          "",
          good.slice(0, -1), // no padding
          good.slice(0, -4) + "AA==", // 31 bytes
          good + "AAAA", // 35 bytes
          good.replace("_", "/"), // standard alphabet
          " " + good,
          "not a key at all",
        ]
      ) {
        await assert.rejects(
          FernetKey.fromText(text, backend),
          InvalidKeyError,
          text,
        );
      }
      const fromBytes = await FernetKey.fromText(encoder.encode(good), backend);
      assert.equal(fromBytes.text, good);
    },
  });

  Deno.test({
    name: `[${backend}] encrypt() rejects a bad IV or timestamp`,
    permissions: "none",
    async fn() {
      const key = await FernetKey.generate(backend);
      await assert.rejects(
        key.encrypt(new Uint8Array(1), { iv: new Uint8Array(15) }),
        RangeError,
      );
      await assert.rejects(
        key.encrypt(new Uint8Array(1), { nowSeconds: -1 }),
        RangeError,
      );
      await assert.rejects(
        key.encrypt(new Uint8Array(1), { nowSeconds: 1.5 }),
        RangeError,
      );
    },
  });
}

Deno.test({
  name: "tokens cross between the node and webcrypto backends",
  permissions: "none",
  async fn() {
    const text = (await FernetKey.generate("node")).text;
    const node = await FernetKey.fromText(text, "node");
    const web = await FernetKey.fromText(text, "webcrypto");
    const plaintext = crypto.getRandomValues(new Uint8Array(333));
    const options = {
      nowSeconds: 1_700_000_000,
      iv: crypto.getRandomValues(new Uint8Array(16)),
    };
    const fromNode = await node.encrypt(plaintext, options);
    const fromWeb = await web.encrypt(plaintext, options);
    assert.deepEqual(fromNode, fromWeb);
    assert.deepEqual(
      (await web.decrypt(await node.encrypt(plaintext))).plaintext,
      plaintext,
    );
    assert.deepEqual(
      (await node.decrypt(await web.encrypt(plaintext))).plaintext,
      plaintext,
    );
  },
});

Deno.test({
  name: "parseToken() splits a token into its fields",
  permissions: "none",
  fn() {
    const v = generate[0];
    const fields = parseToken(v.token);
    assert.equal(fields.version, 0x80);
    assert.equal(fields.timestamp, seconds(v.now));
    assert.deepEqual(fields.iv, new Uint8Array(v.iv));
    assert.equal(fields.ciphertext.length, 16);
    assert.equal(fields.hmac.length, 32);
    assert.deepEqual(parseToken(encoder.encode(v.token)), fields);
  },
});

Deno.test({
  name: "parseToken() reads a timestamp that uses all 64 bits' high word",
  permissions: "none",
  fn() {
    const raw = new Uint8Array(25 + 16 + 32);
    raw[0] = 0x80;
    new DataView(raw.buffer).setBigUint64(1, 0x0000_0001_0000_0002n);
    assert.equal(parseToken(encodeBase64Url(raw)).timestamp, 2 ** 32 + 2);
  },
});

Deno.test({
  name:
    "parseToken() rejects a wrong version, a short token and a bad ciphertext length",
  permissions: "none",
  fn() {
    const make = (length: number, version = 0x80) => {
      const raw = new Uint8Array(length);
      raw[0] = version;
      return encodeBase64Url(raw);
    };
    const format = (token: string, message: RegExp) =>
      assert.throws(() => parseToken(token), (e: unknown) => {
        assert.ok(e instanceof InvalidTokenError);
        assert.equal(e.reason, "format");
        assert.match(e.message, message);
        return true;
      });
    format(make(73, 0x81), /version byte 0x81/);
    format(make(56), /shorter/);
    format(make(57), /ciphertext of 0 bytes/);
    format(make(57 + 15), /ciphertext of 15 bytes/);
    format(make(57 + 17), /ciphertext of 17 bytes/);
    format("gAAA", /shorter/);
    format("gAAAAAAdwJ6w", /shorter/);
    format("gAAAAAAdwJ6w!", /base64url/);
    format("", /shorter/);
    assert.equal(parseToken(make(57 + 32)).ciphertext.length, 32);
  },
});
