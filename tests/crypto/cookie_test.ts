import assert from "node:assert/strict";
import {
  computeCookie,
  COOKIE_SIZE,
  CookieAuthority,
  type CookieAuthorityOptions,
} from "../../lib/crypto/cookie.ts";

const ADDRESS = new Uint8Array([127, 0, 0, 1, 0x13, 0x8f]); // 127.0.0.1:5007
const OTHER = new Uint8Array([127, 0, 0, 1, 0x13, 0x90]); // 127.0.0.1:5008
const T0 = 1_700_000_000_000; // ms, a whole second

/** A fake clock and an authority on it. */
function setup(options: Partial<CookieAuthorityOptions> = {}) {
  const clock = { ms: T0 };
  const authority = new CookieAuthority({ now: () => clock.ms, ...options });
  return { clock, authority };
}

Deno.test({
  name:
    "computeCookie() is issued u32, nonce u32, then the first 12 bytes of HMAC(secret, address ‖ issued ‖ nonce)",
  permissions: "none",
  async fn() {
    const secret = new Uint8Array(32).fill(1);
    const cookie = computeCookie(secret, ADDRESS, 0x12345678, 0x9abcdef0);
    assert.equal(cookie.length, COOKIE_SIZE);
    // Pinned: computed with Python's hmac module.
    assert.equal(
      Array.from(cookie, (b) => b.toString(16).padStart(2, "0")).join(""),
      "12345678" + "9abcdef0" + "5f81ce785b9c54fa6d8ef29f",
    );
    // Independently with WebCrypto.
    const key = await crypto.subtle.importKey(
      "raw",
      secret,
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign"],
    );
    const header = [0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0];
    const mac = new Uint8Array(
      await crypto.subtle.sign(
        "HMAC",
        key,
        new Uint8Array([...ADDRESS, ...header]),
      ),
    );
    assert.deepEqual(cookie.subarray(0, 8), new Uint8Array(header));
    assert.deepEqual(cookie.subarray(8), mac.subarray(0, 12));
  },
});

Deno.test({
  name:
    "issue() makes a different cookie for every request of one address in one second",
  permissions: "none",
  fn() {
    const { authority } = setup();
    const seen = new Set<string>();
    for (let i = 0; i < 100; i++) {
      const cookie = authority.issue(ADDRESS);
      assert.equal(authority.verify(cookie, ADDRESS), "valid");
      seen.add(cookie.join(","));
    }
    assert.equal(seen.size, 100);
  },
});

Deno.test({
  name: "computeCookie() rejects an issue time that is not a u32",
  permissions: "none",
  fn() {
    const secret = new Uint8Array(32);
    for (const t of [-1, 2 ** 32, 1.5, NaN]) {
      assert.throws(
        () => computeCookie(secret, ADDRESS, t, 0),
        RangeError,
        `${t}`,
      );
    }
    assert.equal(computeCookie(secret, ADDRESS, 2 ** 32 - 1, 0).length, 20);
    assert.throws(() => computeCookie(secret, ADDRESS, 0, 2 ** 32), RangeError);
  },
});

Deno.test({
  name: "issue() stamps the current whole second; verify() accepts it",
  permissions: "none",
  fn() {
    const { clock, authority } = setup();
    clock.ms = T0 + 999;
    const cookie = authority.issue(ADDRESS);
    assert.equal(new DataView(cookie.buffer).getUint32(0), T0 / 1000);
    assert.equal(authority.verify(cookie, ADDRESS), "valid");
  },
});

Deno.test({
  name: "verify() accepts ages from -5 to 60 s and rejects -6 and 61",
  permissions: "none",
  fn() {
    const { clock, authority } = setup({
      rotateMinMs: 300_000,
      rotateMaxMs: 300_000,
    });
    clock.ms = T0 + 10_000;
    const cookie = authority.issue(ADDRESS);
    for (
      const [offset, verdict] of [[-6, "future"], [-5, "valid"], [0, "valid"], [
        60,
        "valid",
      ], [61, "expired"]] as const
    ) {
      clock.ms = T0 + 10_000 + offset * 1000;
      assert.equal(authority.verify(cookie, ADDRESS), verdict, `age ${offset}`);
    }
    // Within the second of 60 s it is still 60 whole seconds.
    clock.ms = T0 + 10_000 + 60_999;
    assert.equal(authority.verify(cookie, ADDRESS), "valid");
  },
});

Deno.test({
  name: "verify() rejects another address, a changed byte and a wrong length",
  permissions: "none",
  fn() {
    const { authority } = setup();
    const cookie = authority.issue(ADDRESS);
    assert.equal(authority.verify(cookie, OTHER), "bad_mac");
    // issued = 0x6553f100: clearing a bit of bytes 0-2 moves it back by 256 s
    // or more (expired); setting the low bit of byte 3 moves it 1 s ahead,
    // inside the bounds, so the MAC must catch it.
    for (let i = 0; i < 3; i++) {
      const copy = cookie.slice();
      copy[i] ^= 0x01;
      assert.equal(authority.verify(copy, ADDRESS), "expired", `byte ${i}`);
    }
    for (let i = 3; i < COOKIE_SIZE; i++) {
      const copy = cookie.slice();
      copy[i] ^= 0x01;
      assert.equal(authority.verify(copy, ADDRESS), "bad_mac", `byte ${i}`);
    }
    for (const n of [0, 4, 19, 21, 40]) {
      assert.equal(authority.verify(new Uint8Array(n), ADDRESS), "malformed");
    }
  },
});

Deno.test({
  name:
    "the previous secret is accepted after one rotation and refused after two",
  permissions: "none",
  fn() {
    const { clock, authority } = setup({
      rotateMinMs: 10_000,
      rotateMaxMs: 10_000,
    });
    const cookie = authority.issue(ADDRESS);
    clock.ms = T0 + 15_000; // one rotation (at T0 + 10 s)
    assert.equal(authority.verify(cookie, ADDRESS), "valid");
    const fresh = authority.issue(ADDRESS);
    clock.ms = T0 + 25_000; // second rotation (at T0 + 20 s)
    assert.equal(authority.verify(cookie, ADDRESS), "bad_mac");
    assert.equal(authority.verify(fresh, ADDRESS), "valid");
    clock.ms = T0 + 35_000;
    assert.equal(authority.verify(fresh, ADDRESS), "bad_mac");
  },
});

Deno.test({
  name: "after a long pause both old secrets are gone and new cookies work",
  permissions: "none",
  fn() {
    const { clock, authority } = setup({ maxAgeSeconds: 10 ** 9 });
    const cookie = authority.issue(ADDRESS);
    clock.ms = T0 + 3_600_000;
    assert.equal(authority.verify(cookie, ADDRESS), "bad_mac");
    const fresh = authority.issue(ADDRESS);
    assert.equal(authority.verify(fresh, ADDRESS), "valid");
    clock.ms += 59_999; // before the next rotation can possibly be due
    assert.equal(authority.verify(fresh, ADDRESS), "valid");
  },
});

Deno.test({
  name: "the secret lifetime is drawn from [rotateMinMs, rotateMaxMs]",
  permissions: "none",
  fn() {
    for (const [fill, lifetime] of [[0x00, 60_000], [0xff, 120_000]]) {
      let counter = 0;
      // Secrets differ (a counter), lifetimes come from `fill`.
      const randomBytes = (n: number) =>
        n === 4
          ? new Uint8Array(4).fill(fill)
          : new Uint8Array(n).fill(++counter);
      const { clock, authority } = setup({
        randomBytes,
        maxAgeSeconds: 10 ** 9,
      });
      const cookie = authority.issue(ADDRESS);
      clock.ms = T0 + 2 * lifetime - 1; // one rotation so far
      assert.equal(
        authority.verify(cookie, ADDRESS),
        "valid",
        `lifetime ${lifetime}`,
      );
      clock.ms = T0 + 2 * lifetime; // the second is due
      assert.equal(
        authority.verify(cookie, ADDRESS),
        "bad_mac",
        `lifetime ${lifetime}`,
      );
    }
  },
});

Deno.test({
  name: "two authorities do not accept each other's cookies",
  permissions: "none",
  fn() {
    const a = setup().authority;
    const b = setup().authority;
    assert.equal(b.verify(a.issue(ADDRESS), ADDRESS), "bad_mac");
  },
});

Deno.test({
  name: "the constructor rejects impossible rotation bounds",
  permissions: "none",
  fn() {
    assert.throws(() => new CookieAuthority({ rotateMinMs: 0 }), RangeError);
    assert.throws(
      () => new CookieAuthority({ rotateMinMs: 10, rotateMaxMs: 5 }),
      RangeError,
    );
    assert.throws(() => new CookieAuthority({ maxAgeSeconds: -1 }), RangeError);
  },
});
