import assert from "node:assert/strict";
import { constantTimeEqual, hmacSha256 } from "../../lib/crypto/hmac.ts";

const hex = (bytes: Uint8Array) =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const ascii = (s: string) => new TextEncoder().encode(s);

Deno.test({
  name: "hmacSha256() matches RFC 4231 test cases 1 and 2",
  permissions: "none",
  fn() {
    assert.equal(
      hex(hmacSha256(new Uint8Array(20).fill(0x0b), ascii("Hi There"))),
      "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    );
    assert.equal(
      hex(hmacSha256(ascii("Jefe"), ascii("what do ya want for nothing?"))),
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    );
  },
});

Deno.test({
  name: "hmacSha256() over several parts equals it over their concatenation",
  permissions: "none",
  fn() {
    const key = ascii("Jefe");
    const whole = hmacSha256(key, ascii("what do ya want for nothing?"));
    assert.deepEqual(
      hmacSha256(
        key,
        ascii("what do "),
        ascii(""),
        ascii("ya want for nothing?"),
      ),
      whole,
    );
    assert.equal(whole.length, 32);
    assert.equal(whole.byteLength, whole.buffer.byteLength);
  },
});

Deno.test({
  name: "hmacSha256() agrees with crypto.subtle.sign",
  permissions: "none",
  async fn() {
    const key = crypto.getRandomValues(new Uint8Array(32));
    const data = crypto.getRandomValues(new Uint8Array(100));
    const subtleKey = await crypto.subtle.importKey(
      "raw",
      key,
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    const expected = new Uint8Array(
      await crypto.subtle.sign("HMAC", subtleKey, data),
    );
    assert.deepEqual(hmacSha256(key, data), expected);
  },
});

Deno.test({
  name: "constantTimeEqual() compares contents and length",
  permissions: "none",
  fn() {
    const a = new Uint8Array([1, 2, 3, 4]);
    assert.equal(constantTimeEqual(a, new Uint8Array([1, 2, 3, 4])), true);
    assert.equal(constantTimeEqual(a, new Uint8Array([0, 2, 3, 4])), false);
    assert.equal(constantTimeEqual(a, new Uint8Array([1, 2, 3, 5])), false);
    assert.equal(constantTimeEqual(a, new Uint8Array([1, 2, 3])), false);
    assert.equal(constantTimeEqual(a, new Uint8Array([1, 2, 3, 4, 0])), false);
    assert.equal(constantTimeEqual(new Uint8Array(0), new Uint8Array(0)), true);
  },
});
