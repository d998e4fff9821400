import assert from "node:assert/strict";
import { createHash, createHmac } from "node:crypto";
import fc from "fast-check";
import { HmacSha256, sha256 } from "../../lib/crypto/sha256.ts";

const hex = (bytes: Uint8Array) =>
  [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
const fromHex = (text: string) =>
  Uint8Array.from(text.match(/../g)!.map((h) => parseInt(h, 16)));
const test = (name: string, fn: () => void) =>
  Deno.test({ name, permissions: "none", fn });

test("sha256() matches FIPS 180-2 for '', 'abc' and the two-block message", () => {
  const ascii = (s: string) => new TextEncoder().encode(s);
  assert.equal(
    hex(sha256(new Uint8Array(0))),
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
  );
  assert.equal(
    hex(sha256(ascii("abc"))),
    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
  );
  assert.equal(
    hex(
      sha256(ascii("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
    ),
    "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
  );
});

test("HmacSha256 matches RFC 4231 test cases 1, 2 and 6 (key longer than a block)", () => {
  const ascii = (s: string) => new TextEncoder().encode(s);
  assert.equal(
    hex(new HmacSha256(new Uint8Array(20).fill(0x0b)).mac(ascii("Hi There"))),
    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
  );
  assert.equal(
    hex(
      new HmacSha256(ascii("Jefe")).mac(ascii("what do ya want for nothing?")),
    ),
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  );
  assert.equal(
    hex(
      new HmacSha256(new Uint8Array(131).fill(0xaa)).mac(
        ascii("Test Using Larger Than Block-Size Key - Hash Key First"),
      ),
    ),
    "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
  );
  assert.deepEqual(fromHex("0a0b"), Uint8Array.of(10, 11));
});

test("sha256() and HmacSha256 agree with node:crypto for arbitrary keys, splits and lengths", () => {
  fc.assert(
    fc.property(
      fc.uint8Array({ maxLength: 200 }),
      fc.array(fc.uint8Array({ maxLength: 150 }), { maxLength: 5 }),
      (key, parts) => {
        const joined = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
        let at = 0;
        for (const p of parts) {
          joined.set(p, at);
          at += p.length;
        }
        assert.equal(
          hex(sha256(...parts)),
          createHash("sha256").update(joined).digest("hex"),
        );
        const mac = new HmacSha256(key);
        const expected = createHmac("sha256", key).update(joined).digest("hex");
        assert.equal(hex(mac.mac(...parts)), expected);
        // A key is reusable: the second MAC is the same.
        const out = new Uint8Array(40);
        mac.macInto(parts, out, 8);
        assert.equal(hex(out.subarray(8)), expected);
      },
    ),
    { numRuns: 300 },
  );
});
