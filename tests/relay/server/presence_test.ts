/** Presence decisions (lib/relay/server/presence.ts) over a fake context: no socket, no server. */
import assert from "node:assert/strict";
import { RecordType } from "../../../lib/wire/tlv.ts";
import { encodeAddress } from "../../../lib/wire/address.ts";
import {
  Presence,
  PRESENCE_AT_ONCE,
} from "../../../lib/relay/server/presence.ts";
import type { ServerStatus } from "../../../lib/relay/server/status.ts";
import { fakeContext } from "./_fake.ts";

function presenceOf(context: ReturnType<typeof fakeContext>): Presence {
  return new Presence({
    ...context,
    mtu: context.config.mtu,
    presenceBatchMs: context.config.presenceBatchMs,
    compat: false,
    kernelDrops: undefined,
    memberReassembly: { forgetSource: () => {} },
  });
}

const outsider = (port: number) =>
  encodeAddress({ hostname: "10.0.0.1", port });

Deno.test("presence: the first changes of an interval go out at once, the rest together when it ends", () => {
  const context = fakeContext({ presenceBatchMs: 250 });
  const presence = presenceOf(context);
  try {
    const a = context.addMember();
    const b = context.addMember();
    for (let i = 0; i < PRESENCE_AT_ONCE + 5; i++) {
      presence.notify(RecordType.NOTIFY_CONNECT, outsider(1000 + i));
    }
    const to = (key: string) => context.sent.filter((s) => s.to === key);
    // One datagram per change sent at once, to each member.
    assert.equal(to(a.key).length, PRESENCE_AT_ONCE);
    assert.equal(to(b.key).length, PRESENCE_AT_ONCE);
    presence.flush(); // what the interval's end does
    // The other 5 share one datagram.
    assert.equal(to(a.key).length, PRESENCE_AT_ONCE + 1);
    assert.equal(to(a.key).at(-1)!.records.length, 5);
  } finally {
    presence.close();
  }
});

Deno.test("presence: a member is not told of its own join; the others are", () => {
  const context = fakeContext({ presenceBatchMs: 0 });
  const presence = presenceOf(context);
  const a = context.addMember();
  const b = context.addMember();
  presence.joined(b);
  assert.deepEqual(context.sent.map((s) => s.to), [a.key]);
  assert.deepEqual(context.sent[0]!.records, [
    { type: RecordType.NOTIFY_CONNECT, value: b.addressValue },
  ]);
  assert.deepEqual(
    presence.presentRecords(b).map((r) => r.value),
    [a.addressValue],
  );
});

Deno.test("presence: remove() takes the member out once, tells the others, and emits a leave event", async () => {
  const context = fakeContext({ presenceBatchMs: 0 });
  const presence = presenceOf(context);
  const a = context.addMember();
  const b = context.addMember();
  const events = context.status.listen();
  presence.remove(a, "timeout");
  presence.remove(a, "timeout"); // already gone: nothing more
  assert.equal(context.members.size, 1);
  assert.equal(context.members.countFromIp("127.0.0.1"), 1);
  assert.deepEqual(context.sent, [{
    to: b.key,
    records: [{ type: RecordType.NOTIFY_DISCONNECT, value: a.addressValue }],
  }]);
  const first = await events.next();
  assert.deepEqual(first.value as ServerStatus, {
    type: "leave",
    address: a.key,
    profile: "rsa",
    reason: "timeout",
  });
  context.status.end();
  assert.equal((await events.next()).done, true);
});

Deno.test("presence: an RSA member's empty DISCONNECT removes it; one with a value is forged", async () => {
  const context = fakeContext({ presenceBatchMs: 0 });
  const presence = presenceOf(context);
  const a = context.addMember();
  await presence.onDisconnect(a, new Uint8Array([1]));
  assert.equal(context.drops.snapshot().forged_disconnect, 1);
  assert.equal(context.members.size, 1);
  await presence.onDisconnect(a, new Uint8Array(0));
  assert.equal(context.members.size, 0);
});
