/**
 * MemberTable's key index: a hybrid member's key is found by its key id
 * while it holds it, and freed when it rekeys or leaves; RSA members are not
 * indexed (their profile has no replay window to protect).
 */
import assert from "node:assert/strict";
import { FernetKey } from "../../../lib/crypto/fernet.ts";
import { IvMarker } from "../../../lib/crypto/iv_mark.ts";
import { TokenGuard } from "../../../lib/crypto/token_guard.ts";
import {
  createMember,
  type Member,
  type MemberKey,
  MemberTable,
  replaceKey,
} from "../../../lib/relay/server/member.ts";
import { encodeAddress, formatAddress } from "../../../lib/wire/address.ts";
import { fakeContext, memberKey } from "./_fake.ts";

const { config } = fakeContext();

function member(port: number, keyId: string, key: MemberKey): Member {
  const address = { hostname: "127.0.0.1", port };
  return createMember(
    {
      address,
      key: formatAddress(address),
      addressValue: encodeAddress(address),
      keyId,
      registrationHash: new Uint8Array(32),
    },
    key,
    config.limits,
    0,
  );
}

Deno.test({
  name:
    "MemberTable: a hybrid member's key id finds it until it rekeys or leaves; RSA members are not indexed",
  async fn() {
    using guard = new TokenGuard(await FernetKey.generate(), new IvMarker());
    const members = new MemberTable();
    const a = member(5001, "k1", { profile: "hybrid", guard });
    const r = member(5002, "r1", {
      profile: "rsa",
      rsaKey: memberKey.publicKey,
    });
    members.add(a);
    members.add(r);
    assert.equal(members.keyTaken("k1", a), false, "a's own key");
    assert.equal(members.keyTaken("k1", undefined), true, "held by a");
    assert.equal(members.keyTaken("r1", undefined), false);

    members.setKeyId(a, "k2");
    assert.equal(a.keyId, "k2");
    assert.equal(
      members.keyTaken("k1", undefined),
      false,
      "the old key is free",
    );
    assert.equal(members.keyTaken("k2", a), false);
    assert.equal(members.keyTaken("k2", undefined), true);

    // Leaving frees the key; other members stay indexed.
    const b = member(5003, "k3", { profile: "hybrid", guard });
    members.add(b);
    assert.ok(members.delete(a));
    assert.equal(members.keyTaken("k2", undefined), false);
    assert.equal(members.keyTaken("k3", b), false);
    assert.equal(members.keyTaken("k3", undefined), true);
    members.clear();
    assert.equal(members.keyTaken("k3", undefined), false);
  },
});

Deno.test({
  name:
    "MemberTable: a released key (its member left or rekeyed) stays retired for retireKeysMs, an RSA member's not at all, and at most maxRetiredKeys are remembered",
  async fn() {
    using guard = new TokenGuard(await FernetKey.generate(), new IvMarker());
    let clock = 0;
    const members = new MemberTable({
      now: () => clock,
      retireKeysMs: 121_000,
      maxRetiredKeys: 2,
    });
    const a = member(5001, "k1", { profile: "hybrid", guard });
    const r = member(5002, "r1", {
      profile: "rsa",
      rsaKey: memberKey.publicKey,
    });
    members.add(a);
    members.add(r);
    assert.equal(members.keyTaken("k1", a), false, "held by a, not retired");

    members.setKeyId(a, "k2");
    assert.equal(members.keyTaken("k1", undefined), true);
    assert.equal(members.keyTaken("k2", a), false);
    clock = 120_999;
    assert.equal(members.keyTaken("k1", undefined), true);
    clock = 121_000;
    assert.equal(members.keyTaken("k1", undefined), false, "free again");

    members.delete(r);
    assert.equal(
      members.keyTaken("r1", undefined),
      false,
      "RSA keys are not retired",
    );
    members.delete(a);
    assert.equal(members.keyTaken("k2", undefined), true);

    // A member not in the table changes nothing.
    members.setKeyId(a, "k9");
    assert.equal(members.keyTaken("k9", undefined), false);

    // RSA to hybrid (replaceKey first, then setKeyId): the new key is held.
    const b = member(5003, "r2", {
      profile: "rsa",
      rsaKey: memberKey.publicKey,
    });
    members.add(b);
    replaceKey(b, { profile: "hybrid", guard });
    members.setKeyId(b, "k3");
    assert.equal(members.keyTaken("k3", b), false);
    assert.equal(members.keyTaken("k3", undefined), true);

    // The cap: the oldest retired key is forgotten first.
    const c = member(5004, "k4", { profile: "hybrid", guard });
    const d = member(5005, "k5", { profile: "hybrid", guard });
    members.add(c);
    members.add(d);
    members.delete(b);
    members.delete(c);
    members.delete(d);
    assert.deepEqual(
      ["k2", "k3", "k4", "k5"].map((id) => members.keyTaken(id, undefined)),
      [false, false, true, true],
    );
  },
});
