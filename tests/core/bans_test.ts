/**
 * The ban list and the removal notice body (NOTICE 6 KICKED, 7 BANNED;
 * PROTOCOL.md section 7), byte for byte and bound by bound. Pure.
 */
import assert from "node:assert/strict";
import { MalformedDatagramError } from "../../lib/errors.ts";
import {
  BanList,
  MAX_BAN_SECONDS,
  parseBanTarget,
} from "../../lib/core/bans.ts";
import {
  decodeRemoval,
  encodeRemoval,
  formatRemovalText,
  MAX_REMOVAL_REASON_BYTES,
  parseRemovalText,
} from "../../lib/wire/notice.ts";

const test = (name: string, fn: () => void | Promise<void>) =>
  Deno.test({ name, permissions: "none", fn });

const at = (hostname: string, port: number) => ({ hostname, port });

test("parseBanTarget() takes an IP or IP:PORT in canonical form and refuses anything else", () => {
  assert.equal(parseBanTarget("10.0.0.1"), "10.0.0.1");
  assert.equal(parseBanTarget("10.0.0.1:5000"), "10.0.0.1:5000");
  assert.equal(parseBanTarget("2001:DB8:0::1"), "2001:db8::1");
  assert.equal(parseBanTarget("[2001:db8::1]:80"), "[2001:db8::1]:80");
  // Bare, an IPv6 address is the IP (every port), never IP:PORT.
  assert.equal(parseBanTarget("::1:80"), "::1:80");
  for (const bad of ["", "host", "10.0.0", "10.0.0.1:99999", "1.2.3.4.5"]) {
    assert.throws(() => parseBanTarget(bad), /is not a ban target/, bad);
  }
});

test("BanList: an IP ban covers every port, an IP:PORT ban only that address", () => {
  const bans = new BanList();
  bans.add("10.0.0.1", 0);
  bans.add("10.0.0.2:7", 0, undefined, "spam");
  assert.equal(bans.match(at("10.0.0.1", 1), 0)?.target, "10.0.0.1");
  assert.equal(bans.match(at("10.0.0.1", 65535), 0)?.target, "10.0.0.1");
  assert.deepEqual(bans.match(at("10.0.0.2", 7), 0), {
    target: "10.0.0.2:7",
    secondsLeft: undefined,
    reason: "spam",
  });
  assert.equal(bans.match(at("10.0.0.2", 8), 0), undefined);
  assert.equal(bans.match(at("10.0.0.3", 7), 0), undefined);
  assert.ok(BanList.covers("10.0.0.1", at("10.0.0.1", 9)));
  assert.ok(!BanList.covers("10.0.0.2:7", at("10.0.0.2", 8)));
  const v6 = new BanList();
  v6.add("[::1]:9", 0);
  assert.ok(v6.match(at("0:0::1", 9), 0));
});

test("BanList: a ban lasts its seconds, to the millisecond; without seconds until removed", () => {
  const bans = new BanList();
  bans.add("10.0.0.1", 1000, 30);
  bans.add("10.0.0.2", 1000);
  assert.deepEqual(bans.list(1000).map((b) => b.secondsLeft), [30, undefined]);
  assert.deepEqual(bans.list(1001).map((b) => b.secondsLeft), [30, undefined]);
  assert.deepEqual(bans.list(2000).map((b) => b.secondsLeft), [29, undefined]);
  assert.ok(bans.match(at("10.0.0.1", 1), 30_999));
  assert.equal(bans.match(at("10.0.0.1", 1), 31_000), undefined);
  assert.equal(bans.size, 1, "an expired ban is forgotten");
  assert.ok(bans.match(at("10.0.0.2", 1), 1e12));
  assert.equal(bans.remove("10.0.0.2"), true);
  assert.equal(bans.remove("10.0.0.2"), false);
  assert.equal(bans.match(at("10.0.0.2", 1), 0), undefined);
});

test("BanList: bounded; a full list refuses a new ban but replaces an old one, and expired bans make room", () => {
  const bans = new BanList(2);
  bans.add("10.0.0.1", 0, 10);
  bans.add("10.0.0.2", 0);
  bans.add("10.0.0.2", 0, 5);
  assert.throws(
    () => bans.add("10.0.0.3", 0),
    (e) => e instanceof RangeError && /full \(2 bans\)/.test(e.message),
  );
  assert.equal(bans.add("10.0.0.3", 10_000), "10.0.0.3");
  assert.deepEqual(bans.list(10_000).map((b) => b.target), [
    "10.0.0.3",
  ]);
});

test("BanList: seconds must be whole, from 1 to a year", () => {
  const bans = new BanList();
  for (const seconds of [0, -1, 1.5, MAX_BAN_SECONDS + 1, NaN]) {
    assert.throws(() => bans.add("10.0.0.1", 0, seconds), RangeError);
  }
  bans.add("10.0.0.1", 0, MAX_BAN_SECONDS);
  assert.equal(bans.size, 1);
});

test("encodeRemoval() writes code u16 | seconds u32 | UTF-8 reason, and decodeRemoval() reads it back", () => {
  const body = encodeRemoval({ code: 7, seconds: 0x01020304, reason: "né" });
  assert.deepEqual([...body], [0, 7, 1, 2, 3, 4, 0x6e, 0xc3, 0xa9]);
  assert.deepEqual(decodeRemoval(body), {
    code: 7,
    seconds: 0x01020304,
    reason: "né",
  });
  assert.deepEqual(
    decodeRemoval(encodeRemoval({ code: 6, seconds: 0, reason: "" })),
    {
      code: 6,
      seconds: 0,
      reason: "",
    },
  );
});

test("decodeRemoval() refuses short, long, other codes and bad UTF-8", () => {
  for (
    const bad of [
      new Uint8Array([0, 7, 0, 0, 0]),
      new Uint8Array([0, 5, 0, 0, 0, 0]),
      new Uint8Array([0, 7, 0, 0, 0, 0, 0xff]),
      new Uint8Array(7 + MAX_REMOVAL_REASON_BYTES).fill(0x61, 6).fill(7, 1, 2),
    ]
  ) {
    assert.throws(() => decodeRemoval(bad), MalformedDatagramError);
  }
});

test("encodeRemoval() refuses other codes, bad seconds and reasons over 200 bytes", () => {
  assert.throws(
    () => encodeRemoval({ code: 1, seconds: 0, reason: "" }),
    /6 or 7/,
  );
  assert.throws(
    () => encodeRemoval({ code: 6, seconds: -1, reason: "" }),
    RangeError,
  );
  assert.throws(
    () => encodeRemoval({ code: 6, seconds: 0, reason: "é".repeat(101) }),
    /202 bytes is too long: at most 200/,
  );
  assert.equal(
    encodeRemoval({ code: 6, seconds: 0, reason: "a".repeat(200) }).length,
    206,
  );
});

test("the RSA profile's removal text is 'SECONDS reason'", () => {
  assert.equal(
    formatRemovalText({ code: 7, seconds: 60, reason: "a b" }),
    "60 a b",
  );
  assert.deepEqual(parseRemovalText(7, "60 a b"), {
    code: 7,
    seconds: 60,
    reason: "a b",
  });
  assert.deepEqual(parseRemovalText(6, "0 "), {
    code: 6,
    seconds: 0,
    reason: "",
  });
  for (const bad of ["", "60", "x 60", "99999999999 a", "-1 a"]) {
    assert.throws(() => parseRemovalText(7, bad), MalformedDatagramError, bad);
  }
  assert.throws(() => parseRemovalText(5, "0 a"), MalformedDatagramError);
});
