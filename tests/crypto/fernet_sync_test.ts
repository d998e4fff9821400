/**
 * The node backend's synchronous paths (encryptSync, encryptInto,
 * decryptSync, tokenLength), with and without persistent ciphers, checked
 * byte for byte against the webcrypto backend. Many tokens on ONE key prove
 * the chain-state trick: a long-lived cipher must still give standard CBC
 * under each token's own IV.
 */
import assert from "node:assert/strict";
import { forge } from "./_forge_token.ts";
import { InvalidTokenError } from "../../lib/errors.ts";
import { FernetKey, parseToken } from "../../lib/crypto/fernet.ts";
import { decodeBase64Url, encodeBase64Url } from "../../lib/crypto/base64.ts";
import generate from "../vectors/fernet/generate.json" with { type: "json" };
import verify from "../vectors/fernet/verify.json" with { type: "json" };

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const seconds = (iso: string) => Date.parse(iso) / 1000;
const NOW = 1_700_000_000;
const LENGTHS = [...Array(101).keys(), 1000, 32 * 1024];
const MODES = [
  { label: "fresh ciphers", persistentCiphers: false },
  { label: "persistent ciphers", persistentCiphers: true },
];

const randomIv = () => crypto.getRandomValues(new Uint8Array(16));

/** A node key and a webcrypto key with the same secret. */
async function pair(
  persistentCiphers: boolean,
  text?: string,
): Promise<{ node: FernetKey; web: FernetKey }> {
  const secret = text ?? (await FernetKey.generate("webcrypto")).text;
  return {
    node: await FernetKey.fromText(secret, "node", { persistentCiphers }),
    web: await FernetKey.fromText(secret, "webcrypto"),
  };
}

function throwsReason(fn: () => unknown, reason: string): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof InvalidTokenError, String(e));
    assert.equal(e.reason, reason, e.message);
    return true;
  });
}

Deno.test({
  name: "tokenLength() is the length of every token, and refuses non-counts",
  permissions: "none",
  async fn() {
    using key = await FernetKey.generate("node");
    for (const n of LENGTHS) {
      const token = key.encryptSync(new Uint8Array(n));
      assert.equal(FernetKey.tokenLength(n), token.length, `length ${n}`);
      const rawLength = 57 + (Math.floor(n / 16) + 1) * 16;
      assert.equal(token.length, Math.ceil(rawLength / 3) * 4);
    }
    for (const bad of [-1, 1.5, NaN, Infinity]) {
      assert.throws(() => FernetKey.tokenLength(bad), RangeError);
    }
  },
});

Deno.test({
  name: "encryptSync() and encryptInto() need a key of the node backend",
  permissions: "none",
  async fn() {
    const web = await FernetKey.generate("webcrypto");
    const out = new Uint8Array(1000);
    assert.throws(() => web.encryptSync(new Uint8Array(1)), TypeError);
    assert.throws(() => web.encryptInto(new Uint8Array(1), out, 0), TypeError);
    assert.throws(() => web.decryptSync("gAAAAA"), TypeError);
    web[Symbol.dispose](); // a no-op for webcrypto keys
  },
});

for (const { label, persistentCiphers } of MODES) {
  Deno.test({
    name: `[${label}] the official vectors pass through the sync paths`,
    permissions: "none",
    async fn() {
      for (const v of generate) {
        using key = await FernetKey.fromText(v.secret, "node", {
          persistentCiphers,
        });
        const options = {
          nowSeconds: seconds(v.now),
          iv: new Uint8Array(v.iv),
        };
        const plaintext = encoder.encode(v.src);
        assert.equal(
          decoder.decode(key.encryptSync(plaintext, options)),
          v.token,
        );
        const out = new Uint8Array(FernetKey.tokenLength(plaintext.length) + 3);
        assert.equal(
          key.encryptInto(plaintext, out, 3, options),
          out.length - 3,
        );
        assert.equal(decoder.decode(out.subarray(3)), v.token);
      }
      for (const v of verify) {
        using key = await FernetKey.fromText(v.secret, "node", {
          persistentCiphers,
        });
        const out = key.decryptSync(v.token, {
          nowSeconds: seconds(v.now),
          ttlSeconds: v.ttl_sec,
        });
        assert.equal(decoder.decode(out.plaintext), v.src);
      }
    },
  });

  Deno.test({
    name:
      `[${label}] encryptSync() and encryptInto() equal webcrypto byte for byte: lengths 0..100, 1000, 32768, a new IV per token, one key`,
    permissions: "none",
    async fn() {
      const { node, web } = await pair(persistentCiphers);
      using _ = node;
      const out = new Uint8Array(FernetKey.tokenLength(32 * 1024));
      for (const n of LENGTHS) {
        const plaintext = crypto.getRandomValues(new Uint8Array(n));
        for (let round = 0; round < 2; round++) {
          const options = { nowSeconds: NOW + n, iv: randomIv() };
          const expected = await web.encrypt(plaintext, options);
          assert.deepEqual(node.encryptSync(plaintext, options), expected);
          const written = node.encryptInto(plaintext, out, 0, options);
          assert.equal(written, expected.length);
          assert.deepEqual(out.subarray(0, written), expected, `length ${n}`);
        }
      }
    },
  });

  Deno.test({
    name:
      `[${label}] 500 consecutive tokens on one key equal webcrypto and decrypt on another key of each backend`,
    permissions: "none",
    async fn() {
      const { node, web } = await pair(persistentCiphers);
      using _ = node;
      using reader = await FernetKey.fromText(node.text, "node", {
        persistentCiphers,
      });
      for (let i = 0; i < 500; i++) {
        const plaintext = crypto.getRandomValues(new Uint8Array(i % 70));
        const iv = randomIv();
        const token = node.encryptSync(plaintext, { nowSeconds: NOW, iv });
        assert.deepEqual(
          token,
          await web.encrypt(plaintext, { nowSeconds: NOW, iv }),
        );
        const opened = reader.decryptSync(token, { nowSeconds: NOW });
        assert.deepEqual(opened.plaintext, plaintext);
        assert.deepEqual(opened.iv, iv);
        assert.equal(opened.timestamp, NOW);
        assert.deepEqual(
          (await web.decrypt(token, { nowSeconds: NOW })).plaintext,
          plaintext,
        );
      }
    },
  });

  Deno.test({
    name:
      `[${label}] encrypt and decrypt interleaved on one key stay independent and standard`,
    permissions: "none",
    async fn() {
      const { node, web } = await pair(persistentCiphers);
      using _ = node;
      // A fixed pattern of runs: e e d e d d d e ... over many lengths.
      for (let i = 0; i < 300; i++) {
        const plaintext = crypto.getRandomValues(new Uint8Array((i * 7) % 90));
        const options = { nowSeconds: NOW, iv: randomIv() };
        if ((i * 2654435761) % 5 < 2) {
          const token = await web.encrypt(plaintext, options);
          const opened = node.decryptSync(token, { nowSeconds: NOW });
          assert.deepEqual(opened.plaintext, plaintext);
          assert.deepEqual(opened.iv, options.iv);
        } else {
          const token = node.encryptSync(plaintext, options);
          assert.deepEqual(token, await web.encrypt(plaintext, options));
          assert.deepEqual(
            node.decryptSync(token, { nowSeconds: NOW }).plaintext,
            plaintext,
          );
        }
      }
    },
  });

  Deno.test({
    name:
      `[${label}] a token failing padding, HMAC or format does not disturb the next good token`,
    permissions: "none",
    async fn() {
      const { node, web } = await pair(persistentCiphers);
      using _ = node;
      const good = async (n: number) => {
        const plaintext = crypto.getRandomValues(new Uint8Array(n));
        const options = { nowSeconds: NOW, iv: randomIv() };
        const token = await web.encrypt(plaintext, options);
        const opened = node.decryptSync(token, { nowSeconds: NOW });
        assert.deepEqual(opened.plaintext, plaintext);
        assert.deepEqual(node.encryptSync(plaintext, options), token);
        return token;
      };
      await good(20);
      // Signed junk of 1 and 3 blocks: decrypted, then refused for padding.
      for (const blocks of [1, 3]) {
        const junk = new Uint8Array(16 * blocks).fill(7);
        throwsReason(
          () =>
            node.decryptSync(forge(node.text, NOW, randomIv(), junk), {
              nowSeconds: NOW,
            }),
          "padding",
        );
        await good(33);
      }
      // Last byte 0 or 17 (out of range), or 2 after a 9 (pad bytes differ):
      // the one block of a 15-byte token decrypts to 15 bytes + 0x01, and
      // flipping the IV's last byte sets that byte to `last`.
      for (const last of [0, 17, 2]) {
        const plain = new Uint8Array(15);
        plain[14] = 9;
        const iv = randomIv();
        const raw = decodeBase64Url(
          await web.encrypt(plain, { nowSeconds: NOW, iv }),
        );
        const forgedIv = iv.slice();
        forgedIv[15] ^= 0x01 ^ last;
        const forged = forge(node.text, NOW, forgedIv, raw.subarray(25, 41));
        throwsReason(
          () => node.decryptSync(forged, { nowSeconds: NOW }),
          "padding",
        );
        await good(0);
      }
      // A bad HMAC and a bad format fail before any decryption.
      const tampered = decodeBase64Url(await good(50));
      tampered[40] ^= 1;
      throwsReason(
        () => node.decryptSync(encodeBase64Url(tampered), { nowSeconds: NOW }),
        "signature",
      );
      await good(16);
      throwsReason(
        () => node.decryptSync("gAAA!", { nowSeconds: NOW }),
        "format",
      );
      await good(100);
      // Expired: fails after the HMAC, before decryption.
      const old = await web.encrypt(new Uint8Array(5), {
        nowSeconds: NOW - 100,
      });
      throwsReason(
        () => node.decryptSync(old, { nowSeconds: NOW, ttlSeconds: 60 }),
        "expired",
      );
      await good(31);
    },
  });

  Deno.test({
    name:
      `[${label}] encryptInto() at an offset leaves the bytes around the token untouched; a short buffer is a RangeError that writes nothing`,
    permissions: "none",
    async fn() {
      const { node, web } = await pair(persistentCiphers);
      using _ = node;
      for (const n of [0, 15, 16, 100, 1000]) {
        const plaintext = crypto.getRandomValues(new Uint8Array(n));
        const length = FernetKey.tokenLength(n);
        const out = new Uint8Array(length + 20).fill(0xaa);
        const options = { nowSeconds: NOW, iv: randomIv() };
        assert.equal(node.encryptInto(plaintext, out, 7, options), length);
        assert.deepEqual(
          out.subarray(7, 7 + length),
          await web.encrypt(plaintext, options),
        );
        assert.ok(out.subarray(0, 7).every((b) => b === 0xaa));
        assert.ok(out.subarray(7 + length).every((b) => b === 0xaa));
        // One byte short, at an offset and at 0; a bad offset.
        for (
          const [size, offset] of [[length + 6, 7], [length - 1, 0], [
            length + 10,
            -1,
          ], [length + 10, 0.5]]
        ) {
          const short = new Uint8Array(size).fill(0xaa);
          assert.throws(
            () => node.encryptInto(plaintext, short, offset, options),
            RangeError,
          );
          assert.ok(short.every((b) => b === 0xaa));
        }
        // The failures did not advance the cipher: the next token is still standard.
        const next = { nowSeconds: NOW, iv: randomIv() };
        assert.deepEqual(
          node.encryptSync(plaintext, next),
          await web.encrypt(plaintext, next),
        );
      }
    },
  });

  Deno.test({
    name: `[${label}] decryptSync() returns a plaintext and IV the caller owns`,
    permissions: "none",
    async fn() {
      const { node } = await pair(persistentCiphers);
      using _ = node;
      const a = encoder.encode("first message, two blocks long..");
      const b = encoder.encode("second");
      const tokenA = node.encryptSync(a);
      const openedA = node.decryptSync(tokenA);
      const ivA = openedA.iv.slice();
      const openedB = node.decryptSync(node.encryptSync(b));
      node.encryptSync(new Uint8Array(5000));
      assert.deepEqual(openedA.plaintext, a);
      assert.deepEqual(openedA.iv, ivA);
      assert.deepEqual(openedA.iv, parseToken(tokenA).iv);
      assert.deepEqual(openedB.plaintext, b);
      assert.equal(
        Object.getPrototypeOf(openedA.plaintext),
        Uint8Array.prototype,
      );
      assert.notEqual(openedA.plaintext.buffer, openedB.plaintext.buffer);
      assert.notEqual(openedA.plaintext.buffer, openedA.iv.buffer);
      openedA.plaintext.fill(0);
      openedA.iv.fill(0);
      assert.deepEqual(node.decryptSync(tokenA).plaintext, a);
    },
  });
}

Deno.test({
  name:
    "[persistent ciphers] [Symbol.dispose]() releases the ciphers and the key stays usable",
  permissions: "none",
  async fn() {
    // The resource sanitizer fails this test if dispose left a cipher open.
    const { node, web } = await pair(true);
    for (let round = 0; round < 3; round++) {
      for (let i = 0; i < 5; i++) {
        const plaintext = crypto.getRandomValues(new Uint8Array(i * 9));
        const options = { nowSeconds: NOW, iv: randomIv() };
        const token = node.encryptSync(plaintext, options);
        assert.deepEqual(token, await web.encrypt(plaintext, options));
        assert.deepEqual(
          node.decryptSync(token, { nowSeconds: NOW }).plaintext,
          plaintext,
        );
      }
      node[Symbol.dispose]();
      node[Symbol.dispose]();
    }
  },
});

Deno.test({
  name:
    "ivSource writes the IV of every encrypt path (sync, in place, async, webcrypto); an explicit iv wins",
  permissions: "none",
  async fn() {
    const { node, web } = await pair(true);
    using _node = node;
    const ivs: Uint8Array[] = [];
    const ivSource = {
      createInto(out: Uint8Array, offset: number) {
        const iv = randomIv();
        ivs.push(iv);
        out.set(iv, offset);
      },
    };
    const plaintext = encoder.encode("marked");
    const options = { nowSeconds: NOW, ivSource };
    const out = new Uint8Array(FernetKey.tokenLength(plaintext.length) + 3);
    const tokens = [
      node.encryptSync(plaintext, options),
      out.subarray(3, 3 + node.encryptInto(plaintext, out, 3, options)),
      await node.encrypt(plaintext, options),
      await web.encrypt(plaintext, options),
    ];
    assert.equal(ivs.length, 4);
    tokens.forEach((token, i) => {
      assert.deepEqual(parseToken(token).iv, ivs[i], `token ${i}`);
      assert.deepEqual(
        node.decryptSync(token, { nowSeconds: NOW }).plaintext,
        plaintext,
      );
    });
    const iv = randomIv();
    const explicit = node.encryptSync(plaintext, { ...options, iv });
    assert.deepEqual(parseToken(explicit).iv, iv);
    assert.equal(ivs.length, 4);
  },
});
