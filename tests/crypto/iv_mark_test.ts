import assert from "node:assert/strict";
import { decodeBase64Url } from "../../lib/crypto/base64.ts";
import { FernetKey } from "../../lib/crypto/fernet.ts";
import { IvMarker } from "../../lib/crypto/iv_mark.ts";
import { TokenGuard } from "../../lib/crypto/token_guard.ts";

Deno.test({
  name: "create() is r ‖ first 8 bytes of HMAC-SHA-256(secret, r)",
  permissions: "none",
  async fn() {
    const secret = crypto.getRandomValues(new Uint8Array(32));
    const r = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]);
    const iv = new IvMarker(secret).create(r);
    const key = await crypto.subtle.importKey(
      "raw",
      secret,
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, r));
    assert.equal(iv.length, 16);
    assert.deepEqual(iv.subarray(0, 8), r);
    assert.deepEqual(iv.subarray(8), mac.subarray(0, 8));
  },
});

Deno.test({
  name: "isOwn() recognises this side's IVs and no others",
  permissions: "none",
  fn() {
    const mine = new IvMarker();
    const theirs = new IvMarker();
    for (let i = 0; i < 200; i++) {
      const iv = mine.create();
      assert.equal(mine.isOwn(iv), true);
      assert.equal(theirs.isOwn(iv), false);
      assert.equal(
        mine.isOwn(crypto.getRandomValues(new Uint8Array(16))),
        false,
      );
    }
  },
});

Deno.test({
  name: "isOwn() fails after any flipped bit and for a wrong length",
  permissions: "none",
  fn() {
    const marker = new IvMarker();
    const iv = marker.create();
    for (let i = 0; i < 16; i++) {
      const copy = iv.slice();
      copy[i] ^= 0x10;
      assert.equal(marker.isOwn(copy), false, `byte ${i}`);
    }
    assert.equal(marker.isOwn(iv.subarray(0, 15)), false);
    assert.equal(marker.isOwn(new Uint8Array(0)), false);
  },
});

Deno.test({
  name: "markers with the same secret agree; the secret is copied",
  permissions: "none",
  fn() {
    const secret = new Uint8Array(16).fill(9);
    const a = new IvMarker(secret);
    const b = new IvMarker(secret);
    const iv = a.create();
    assert.equal(b.isOwn(iv), true);
    secret.fill(0);
    assert.equal(a.isOwn(iv), true);
  },
});

Deno.test({
  name: "create() makes fresh IVs and rejects an r that is not 8 bytes",
  permissions: "none",
  fn() {
    const marker = new IvMarker();
    assert.notDeepEqual(marker.create(), marker.create());
    assert.throws(() => marker.create(new Uint8Array(7)), RangeError);
    assert.throws(() => marker.create(new Uint8Array(9)), RangeError);
    assert.throws(() => new IvMarker(new Uint8Array(15)), RangeError);
  },
});

Deno.test({
  name:
    "createInto() writes a marked IV in place and touches no other byte; create(r) agrees with it",
  permissions: "none",
  fn() {
    const secret = crypto.getRandomValues(new Uint8Array(32));
    const marker = new IvMarker(secret);
    const out = new Uint8Array(40).fill(0xaa);
    marker.createInto(out, 7);
    const iv = out.slice(7, 23);
    assert.equal(marker.isOwn(iv), true);
    assert.deepEqual(new IvMarker(secret).create(iv.subarray(0, 8)), iv);
    assert.ok(out.subarray(0, 7).every((b) => b === 0xaa));
    assert.ok(out.subarray(23).every((b) => b === 0xaa));
    // Fresh r each time, across a refill of the random pool (512 IVs per 4 KiB).
    const seen = new Set<string>();
    for (let i = 0; i < 1100; i++) {
      marker.createInto(out, 0);
      assert.equal(marker.isOwn(out.subarray(0, 16)), true);
      seen.add(out.subarray(0, 8).join(","));
    }
    assert.equal(seen.size, 1100);
  },
});

Deno.test({
  name:
    "createInto() refuses an offset where 16 bytes do not fit, writing nothing",
  permissions: "none",
  fn() {
    const marker = new IvMarker();
    const out = new Uint8Array(20);
    for (const offset of [5, 20, -1, 1.5, NaN]) {
      assert.throws(() => marker.createInto(out, offset), RangeError);
    }
    assert.ok(out.every((b) => b === 0));
    marker.createInto(out, 4);
    assert.equal(marker.isOwn(out.subarray(4)), true);
  },
});

Deno.test({
  name:
    "TokenGuard.sealInto: a shared marked IV is the token's IV under each key; each peer opens its own, the sealer's side refuses any as reflected",
  permissions: "none",
  async fn() {
    const serverMarker = new IvMarker();
    const keys = await Promise.all(
      [0, 1].map(() => FernetKey.generate("node")),
    );
    const server = keys.map((key) => new TokenGuard(key, serverMarker));
    const peers = keys.map((key) =>
      new TokenGuard(FernetKey.fromTextSync(key.text), new IvMarker())
    );
    const iv = serverMarker.create();
    const plaintext = new TextEncoder().encode("one message, two keys");
    const now = Date.now();
    const tokens = server.map((guard) => {
      const out = new Uint8Array(FernetKey.tokenLength(plaintext.length));
      assert.equal(guard.sealInto(plaintext, now, out, 0, iv), out.length);
      return out;
    });
    for (const [i, token] of tokens.entries()) {
      assert.deepEqual(decodeBase64Url(token).subarray(9, 25), iv);
      const opened = peers[i].openSync(token, now);
      assert.ok(opened.ok);
      assert.deepEqual(opened.plaintext, plaintext);
      assert.deepEqual(server[i].openSync(token, now), {
        ok: false,
        reason: "token_reflected",
      });
    }
    assert.throws(
      () =>
        server[0].sealInto(
          plaintext,
          now,
          new Uint8Array(200),
          0,
          iv.subarray(0, 8),
        ),
      /RangeError: .*IV is 8 bytes/,
    );
  },
});
