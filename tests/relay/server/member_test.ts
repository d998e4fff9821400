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
    assert.equal(members.holderOfKey("k1"), a);
    assert.equal(members.holderOfKey("r1"), undefined);

    members.setKeyId(a, "k2");
    assert.equal(a.keyId, "k2");
    assert.equal(members.holderOfKey("k1"), undefined, "the old key is free");
    assert.equal(members.holderOfKey("k2"), a);

    // Leaving frees the key; other members stay indexed.
    const b = member(5003, "k3", { profile: "hybrid", guard });
    members.add(b);
    assert.ok(members.delete(a));
    assert.equal(members.holderOfKey("k2"), undefined);
    assert.equal(members.holderOfKey("k3"), b);
    members.clear();
    assert.equal(members.holderOfKey("k3"), undefined);
  },
});
