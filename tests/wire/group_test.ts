/**
 * Group fan-out values (protocol.md section 9) byte for byte, and the
 * server's epoch decisions with an injected clock.
 */
import assert from "node:assert/strict";
import { MalformedDatagramError } from "../../lib/errors.ts";
import {
  decodeGroupKeyPlaintext,
  decodeGroupMessageValue,
  decodeGroupPlaintext,
  encodeGroupKeyPlaintext,
  encodeGroupPlaintext,
  writeGroupMessageEpoch,
} from "../../lib/wire/group.ts";
import { GroupEpochs } from "../../lib/core/group_epochs.ts";

function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

const KEY = new TextEncoder().encode(
  "cw_0x689RpI-jtRR7oE8h_eQsKImvJapLeSbXpwF4e4=",
);
const DOWNSTREAM_V4 = new Uint8Array([224, 1, 1, 1, 0x13, 0x90]);

test("encodeGroupKeyPlaintext() writes epoch u32, the 44 key bytes, then the downstream address", () => {
  const bytes = encodeGroupKeyPlaintext(0x01020304, KEY, DOWNSTREAM_V4);
  assert.deepEqual([...bytes.subarray(0, 4)], [1, 2, 3, 4]);
  assert.deepEqual(bytes.subarray(4, 48), KEY);
  assert.deepEqual([...bytes.subarray(48)], [224, 1, 1, 1, 0x13, 0x90]);
  assert.equal(encodeGroupKeyPlaintext(0xffffffff, KEY).length, 48);
  const grant = decodeGroupKeyPlaintext(bytes);
  assert.equal(grant.epoch, 0x01020304);
  assert.deepEqual(grant.keyText, KEY);
  assert.deepEqual(grant.downstream, { hostname: "224.1.1.1", port: 5008 });
  assert.equal(
    decodeGroupKeyPlaintext(bytes.subarray(0, 48)).downstream,
    undefined,
  );
});

test("GROUP_KEY codecs refuse wrong sizes and epochs", () => {
  assert.throws(() => encodeGroupKeyPlaintext(1, KEY.subarray(1)), RangeError);
  assert.throws(() => encodeGroupKeyPlaintext(-1, KEY), RangeError);
  assert.throws(() => encodeGroupKeyPlaintext(2 ** 32, KEY), RangeError);
  assert.throws(
    () => encodeGroupKeyPlaintext(1, KEY, new Uint8Array(5)),
    RangeError,
  );
  for (const size of [0, 47, 49, 53, 55, 65, 67]) {
    assert.throws(
      () => decodeGroupKeyPlaintext(new Uint8Array(size)),
      MalformedDatagramError,
      `size ${size}`,
    );
  }
});

test("encodeGroupPlaintext() writes alen, the sender address value, then the message", () => {
  const sender = new Uint8Array([127, 0, 0, 1, 0x9c, 0x40]);
  const bytes = encodeGroupPlaintext(sender, new Uint8Array([0x68, 0x69]));
  assert.deepEqual([...bytes], [6, 127, 0, 0, 1, 0x9c, 0x40, 0x68, 0x69]);
  const decoded = decodeGroupPlaintext(bytes);
  assert.deepEqual(decoded.sender, { hostname: "127.0.0.1", port: 40000 });
  assert.deepEqual([...decoded.message], [0x68, 0x69]);
  const v6 = new Uint8Array(18);
  v6[15] = 1;
  v6[17] = 7;
  const six = encodeGroupPlaintext(v6, new Uint8Array(0));
  assert.equal(six[0], 18);
  assert.deepEqual(decodeGroupPlaintext(six).sender, {
    hostname: "::1",
    port: 7,
  });
  assert.equal(decodeGroupPlaintext(six).message.length, 0);
});

test("decodeGroupPlaintext() refuses an alen other than 6 or 18, or past the end", () => {
  for (
    const bad of [[], [5, 1, 2, 3, 4, 5], [6, 1, 2, 3, 4, 5], [18, 1, 2]]
  ) {
    assert.throws(
      () => decodeGroupPlaintext(new Uint8Array(bad)),
      MalformedDatagramError,
      JSON.stringify(bad),
    );
  }
  assert.throws(
    () => encodeGroupPlaintext(new Uint8Array(4), new Uint8Array(1)),
    RangeError,
  );
});

test("GROUP_MESSAGE values are epoch u32 then the token", () => {
  const value = new Uint8Array(7);
  writeGroupMessageEpoch(value, 0, 0xa0b0c0d0);
  value.set([0x67, 0x41, 0x41], 4);
  assert.deepEqual([...value], [0xa0, 0xb0, 0xc0, 0xd0, 0x67, 0x41, 0x41]);
  const { epoch, token } = decodeGroupMessageValue(value);
  assert.equal(epoch, 0xa0b0c0d0);
  assert.deepEqual([...token], [0x67, 0x41, 0x41]);
  assert.throws(
    () => decodeGroupMessageValue(new Uint8Array(4)),
    MalformedDatagramError,
  );
  assert.throws(() => writeGroupMessageEpoch(value, 0, 1.5), RangeError);
});

test("GroupEpochs: the first join rekeys at once, joins within 1 s share the next epoch", () => {
  const epochs = new GroupEpochs<string>();
  assert.equal(epochs.join("a", 10_000), 10_000);
  assert.equal(epochs.canFanOut(10_000), false);
  const first = epochs.plan(10_000)!;
  assert.equal(first.epoch, 1);
  assert.deepEqual([...first.holders], ["a"]);
  assert.equal(epochs.commit(first, 10_001), undefined);
  assert.equal(epochs.canFanOut(10_001), true);
  // b and c join within the second: one epoch at 11_000.
  assert.equal(epochs.join("b", 10_200), 11_000);
  assert.equal(epochs.join("c", 10_900), 11_000);
  assert.equal(epochs.join("c", 10_950), undefined); // capable already
  assert.equal(epochs.plan(10_999), undefined);
  // a keeps the group path until the rekey is due; b and c are not holders.
  assert.equal(epochs.canFanOut(10_999), true);
  assert.equal(epochs.holds("b"), false);
  assert.equal(epochs.canFanOut(11_000), false);
  const second = epochs.plan(11_000)!;
  assert.equal(second.epoch, 2);
  assert.deepEqual([...second.holders].sort(), ["a", "b", "c"]);
  epochs.commit(second, 11_000);
  assert.equal(epochs.holds("c"), true);
  assert.equal(epochs.dueAt, undefined);
});

test("GroupEpochs: a holder's leave stops the group path until the next epoch", () => {
  const epochs = new GroupEpochs<string>();
  epochs.join("a", 0);
  epochs.join("b", 0);
  epochs.commit(epochs.plan(0)!, 0);
  assert.equal(epochs.canFanOut(500), true);
  assert.equal(epochs.leave("b", 500), 1000);
  assert.equal(epochs.canFanOut(500), false); // b holds the current key
  assert.equal(epochs.leave("z", 600), undefined); // never capable
  const next = epochs.plan(1000)!;
  assert.deepEqual([...next.holders], ["a"]);
  epochs.commit(next, 1000);
  assert.equal(epochs.canFanOut(1000), true);
  // A leave long after the last rekey rekeys at once.
  epochs.join("c", 5000);
  assert.equal(epochs.plan(5000)?.epoch, 3);
});

test("GroupEpochs: a planned holder that leaves before the commit taints the new epoch", () => {
  const epochs = new GroupEpochs<string>();
  epochs.join("a", 0);
  epochs.join("b", 0);
  const planned = epochs.plan(0)!;
  epochs.leave("b", 10); // it was sent the new key
  assert.equal(epochs.plan(10), undefined); // one rekey at a time
  assert.equal(epochs.commit(planned, 20), 1000);
  assert.deepEqual([...epochs.holders], ["a"]);
  assert.equal(epochs.canFanOut(20), false);
  assert.throws(() => epochs.commit(planned, 30), RangeError);
  const again = epochs.plan(1000)!;
  assert.equal(again.epoch, 2);
  epochs.commit(again, 1000);
  assert.equal(epochs.canFanOut(1000), true);
});

test("GroupEpochs: epochs wrap from 4294967295 to 1", () => {
  const epochs = new GroupEpochs<string>(1000, 0xffffffff - 1);
  epochs.join("a", 0);
  epochs.commit(epochs.plan(0)!, 0);
  assert.equal(epochs.epoch, 0xffffffff);
  epochs.join("b", 1);
  assert.equal(epochs.plan(1000)?.epoch, 1);
});
