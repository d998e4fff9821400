import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import {
  base64UrlEncodedLength,
  decodeBase64,
  decodeBase64Url,
  decodeBase64UrlInto,
  encodeBase64,
  encodeBase64Url,
  encodeBase64UrlToAscii,
  encodeBase64UrlToAsciiInto,
} from "../../lib/crypto/base64.ts";

const ascii = (s: string) => new TextEncoder().encode(s);

// RFC 4648 section 10.
const RFC4648: [string, string][] = [
  ["", ""],
  ["f", "Zg=="],
  ["fo", "Zm8="],
  ["foo", "Zm9v"],
  ["foob", "Zm9vYg=="],
  ["fooba", "Zm9vYmE="],
  ["foobar", "Zm9vYmFy"],
];

Deno.test({
  name: "encodeBase64() and encodeBase64Url() match the RFC 4648 vectors",
  permissions: "none",
  fn() {
    for (const [plain, encoded] of RFC4648) {
      assert.equal(encodeBase64(ascii(plain)), encoded);
      assert.equal(encodeBase64Url(ascii(plain)), encoded);
      assert.equal(
        encodeBase64(ascii(plain), false),
        encoded.replace(/=/g, ""),
      );
      assert.deepEqual(encodeBase64UrlToAscii(ascii(plain)), ascii(encoded));
    }
  },
});

Deno.test({
  name: "decodeBase64() and decodeBase64Url() invert the RFC 4648 vectors",
  permissions: "none",
  fn() {
    for (const [plain, encoded] of RFC4648) {
      assert.deepEqual(decodeBase64Url(encoded), ascii(plain));
      assert.deepEqual(decodeBase64Url(ascii(encoded)), ascii(plain));
      assert.deepEqual(decodeBase64(encoded), ascii(plain));
      assert.deepEqual(decodeBase64(encoded.replace(/=/g, "")), ascii(plain));
    }
  },
});

Deno.test({
  name: "the two alphabets differ only in - _ versus + /",
  permissions: "none",
  fn() {
    const bytes = new Uint8Array([0xfb, 0xff, 0xbf]);
    assert.equal(encodeBase64Url(bytes), "-_-_");
    assert.equal(encodeBase64(bytes), "+/+/");
    assert.deepEqual(decodeBase64Url("-_-_"), bytes);
    assert.deepEqual(decodeBase64("+/+/"), bytes);
    assert.throws(() => decodeBase64Url("+/+/"), TypeError);
    assert.throws(() => decodeBase64("-_-_"), TypeError);
  },
});

Deno.test({
  name: "encoders agree with node:buffer on every length up to 300",
  permissions: "none",
  fn() {
    const bytes = crypto.getRandomValues(new Uint8Array(300));
    for (let n = 0; n <= 300; n++) {
      const part = bytes.subarray(0, n);
      const std = Buffer.from(part).toString("base64");
      assert.equal(encodeBase64(part), std);
      assert.equal(
        encodeBase64Url(part),
        std.replace(/\+/g, "-").replace(/\//g, "_"),
      );
      assert.deepEqual(decodeBase64Url(encodeBase64Url(part)), part);
      assert.deepEqual(decodeBase64(encodeBase64(part, false)), part);
    }
  },
});

Deno.test({
  name:
    "decodeBase64Url() rejects missing padding, bad characters and non-canonical text",
  permissions: "none",
  fn() {
    const bad = [
      "Zg", // padding required
      "Zm8",
      "Zg=", // length not a multiple of 4
      "Z===", // one data character cannot end an encoding
      "====",
      "Zg==Zg==", // padding in the middle
      "Zm9v Yg==", // whitespace
      "Zm9v\nYg==",
      "Zm+v", // standard alphabet
      "Zm/v",
      "Zh==", // non-zero unused bits
      "Zm9=",
      "Zm9v\u0141mFy", // U+0141: its low byte is "A"
      "Zm9v\u0000mFy",
      "%%%%",
    ];
    for (const text of bad) {
      assert.throws(
        () => decodeBase64Url(text),
        TypeError,
        JSON.stringify(text),
      );
      if ([...text].every((c) => c.charCodeAt(0) <= 0xff)) {
        const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
        assert.throws(
          () => decodeBase64Url(bytes),
          TypeError,
          JSON.stringify(text),
        );
      }
    }
    assert.throws(
      () => decodeBase64Url(new Uint8Array([0x5a, 0x6d, 0x39, 0xf6])),
      TypeError,
    );
  },
});

Deno.test({
  name: "decodeBase64Url() names the offending character and offset",
  permissions: "none",
  fn() {
    assert.throws(
      () => decodeBase64Url("Zm9v%mFy"),
      { name: "TypeError", message: /'%' at offset 4/ },
    );
    assert.throws(
      () => decodeBase64Url("Zg==Zg=="),
      { message: /padding before the end/ },
    );
    assert.throws(() => decodeBase64Url("Zg"), { message: /multiple of 4/ });
  },
});

Deno.test({
  name:
    "decodeBase64() accepts padding or none, and rejects what cannot be base64",
  permissions: "none",
  fn() {
    assert.deepEqual(decodeBase64("Zm8"), ascii("fo"));
    assert.deepEqual(decodeBase64("Zm8="), ascii("fo"));
    for (
      const text of [
        "Z",
        "Zm9vY",
        "Zm8==",
        "Zg=",
        "Zm-v",
        "Zm9v\r\n",
        "Zh",
        "Zm9v=",
      ]
    ) {
      assert.throws(() => decodeBase64(text), TypeError, JSON.stringify(text));
    }
  },
});

Deno.test({
  name: "decoders read a subarray of ASCII bytes in place",
  permissions: "none",
  fn() {
    const buffer = ascii("xxZm9vYmFyxx");
    assert.deepEqual(decodeBase64Url(buffer.subarray(2, 10)), ascii("foobar"));
  },
});

Deno.test({
  name:
    "the Into variants write at an offset, touch nothing else, and throw RangeError when short",
  permissions: "none",
  fn() {
    const bytes = crypto.getRandomValues(new Uint8Array(40));
    for (let n = 0; n <= 40; n++) {
      const part = bytes.subarray(0, n);
      const encoded = encodeBase64UrlToAscii(part);
      assert.equal(base64UrlEncodedLength(n), encoded.length);
      const out = new Uint8Array(encoded.length + 10).fill(0xaa);
      assert.equal(encodeBase64UrlToAsciiInto(part, out, 3), encoded.length);
      assert.deepEqual(out.subarray(3, 3 + encoded.length), encoded);
      assert.ok(out.subarray(0, 3).every((b) => b === 0xaa));
      assert.ok(out.subarray(3 + encoded.length).every((b) => b === 0xaa));
      const back = new Uint8Array(n + 10).fill(0xaa);
      assert.equal(decodeBase64UrlInto(encoded, back, 5), n);
      assert.deepEqual(back.subarray(5, 5 + n), part);
      assert.ok(back.subarray(0, 5).every((b) => b === 0xaa));
      assert.ok(back.subarray(5 + n).every((b) => b === 0xaa));
      if (n > 0) {
        const short = new Uint8Array(n + 4).fill(0xaa);
        assert.throws(() => decodeBase64UrlInto(encoded, short, 5), RangeError);
        assert.ok(short.every((b) => b === 0xaa));
      }
      const tight = new Uint8Array(encoded.length + 2).fill(0xaa);
      assert.throws(
        () => encodeBase64UrlToAsciiInto(part, tight, 3),
        RangeError,
      );
      assert.ok(tight.every((b) => b === 0xaa));
    }
    assert.throws(
      () => encodeBase64UrlToAsciiInto(bytes, new Uint8Array(100), -1),
      RangeError,
    );
    assert.throws(
      () => decodeBase64UrlInto("Zm9v", new Uint8Array(100), 0.5),
      RangeError,
    );
    assert.throws(
      () => decodeBase64UrlInto("Zm9", new Uint8Array(100), 0),
      TypeError,
    );
  },
});
