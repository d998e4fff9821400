/**
 * The federation envelope, byte for byte, and ClusterView's decisions with
 * an injected clock: joins announced once however many relays hold a
 * member, leaves when the last one lets go, replays and gaps, bounds.
 */
import assert from "node:assert/strict";
import { MalformedDatagramError } from "../../lib/errors.ts";
import {
  decodeEnvelope,
  encodeEnvelope,
  type Envelope,
  EnvelopeKind,
  MAX_HEARTBEAT_ADDRESSES,
} from "../../lib/wire/federation.ts";
import { encodeAddress, parseAddress } from "../../lib/wire/address.ts";
import { encodeBase64Url } from "../../lib/crypto/base64.ts";
import {
  type ClusterEvent,
  ClusterView,
} from "../../lib/relay/server/cluster_view.ts";

const relayA = new Uint8Array(16).fill(0xa1);
const relayB = new Uint8Array(16).fill(0xb2);
const member1 = encodeAddress(parseAddress("127.0.0.1:5001"));
const member2 = encodeAddress(parseAddress("[::1]:5002"));

/** A test of pure code: it runs with no permissions. */
function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

function hex(bytes: Uint8Array): string {
  return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
}

test("envelope: a MESSAGE is version, kind, relay id, seq, alen, sender, message", () => {
  const bytes = encodeEnvelope({
    kind: EnvelopeKind.MESSAGE,
    relayId: relayA,
    seq: 0x01020304,
    sender: member1,
    message: new TextEncoder().encode("hi"),
  });
  assert.equal(
    hex(bytes),
    "0101" + "a1".repeat(16) + "01020304" + "06" + "7f0000011389" + "6869",
  );
  assert.deepEqual(decodeEnvelope(bytes), {
    kind: EnvelopeKind.MESSAGE,
    relayId: relayA,
    seq: 0x01020304,
    sender: member1,
    message: new TextEncoder().encode("hi"),
  });
});

test("envelope: JOIN, LEAVE and HEARTBEAT round-trip; a heartbeat's count is u16", () => {
  const join: Envelope = {
    kind: EnvelopeKind.JOIN,
    relayId: relayB,
    seq: 7,
    address: member2,
  };
  assert.deepEqual(decodeEnvelope(encodeEnvelope(join)), join);
  const leave: Envelope = { ...join, kind: EnvelopeKind.LEAVE };
  assert.deepEqual(decodeEnvelope(encodeEnvelope(leave)), leave);
  const heartbeat: Envelope = {
    kind: EnvelopeKind.HEARTBEAT,
    relayId: relayB,
    seq: 0xffffffff,
    members: [member1, member2],
  };
  const bytes = encodeEnvelope(heartbeat);
  assert.equal(
    hex(bytes.subarray(22, 25)),
    "000206",
    "count 2, then the first alen",
  );
  assert.equal(bytes.length, 22 + 2 + 7 + 19);
  assert.deepEqual(decodeEnvelope(bytes), heartbeat);
});

test("envelope: malformed bytes are refused with MalformedDatagramError", () => {
  const good = encodeEnvelope({
    kind: EnvelopeKind.JOIN,
    relayId: relayA,
    seq: 1,
    address: member1,
  });
  const cases: [string, Uint8Array][] = [
    ["short header", good.subarray(0, 21)],
    ["version 2", Uint8Array.of(2, ...good.subarray(1))],
    ["kind 9", Uint8Array.of(1, 9, ...good.subarray(2))],
    ["truncated address", good.subarray(0, good.length - 1)],
    ["trailing byte", Uint8Array.of(...good, 0)],
    [
      "address length 5",
      Uint8Array.of(...good.subarray(0, 22), 5, 1, 2, 3, 4, 5),
    ],
    [
      "heartbeat count over the bound",
      Uint8Array.of(1, 4, ...relayA, 0, 0, 0, 1, 0xff, 0xff),
    ],
  ];
  for (const [what, bytes] of cases) {
    assert.throws(() => decodeEnvelope(bytes), MalformedDatagramError, what);
  }
  assert.throws(
    () =>
      encodeEnvelope({
        kind: EnvelopeKind.HEARTBEAT,
        relayId: relayA,
        seq: 1,
        members: Array(MAX_HEARTBEAT_ADDRESSES + 1).fill(member1),
      }),
    RangeError,
  );
});

function types(events: ClusterEvent[]): string[] {
  return events.map((e) =>
    "key" in e ? `${e.type} ${e.key}` : "reason" in e ? e.reason : e.type
  );
}

test("cluster view: a member held by two relays joins once and leaves when the last relay lets go", () => {
  const view = new ClusterView({ memberTimeoutMs: 1000 });
  const hb = (relayId: Uint8Array, seq: number, members: Uint8Array[]) => ({
    kind: EnvelopeKind.HEARTBEAT as const,
    relayId,
    seq,
    members,
  });
  assert.deepEqual(types(view.receive(hb(relayA, 0, [member1]), 0)), [
    "joined 127.0.0.1:5001",
  ]);
  assert.deepEqual(types(view.receive(hb(relayB, 0, [member1]), 10)), []);
  assert.equal(view.relays, 2);
  assert.deepEqual(
    types(view.receive({
      kind: EnvelopeKind.LEAVE,
      relayId: relayA,
      seq: 1,
      address: member1,
    }, 20)),
    [],
  );
  assert.ok(view.has("127.0.0.1:5001"));
  // Relay B falls silent: its member expires, and then the relay.
  assert.deepEqual(types(view.expire(1011)), ["left 127.0.0.1:5001"]);
  assert.equal(view.has("127.0.0.1:5001"), false);
  assert.equal(view.relays, 1, "A was heard at 20 ms");
  assert.deepEqual(view.expire(1021), []);
  assert.equal(view.relays, 0);
});

test("cluster view: a JOIN from another relay moves the member: it leaves the old relay, then joins", () => {
  const view = new ClusterView({ memberTimeoutMs: 1000 });
  const join = (relayId: Uint8Array, seq: number) => ({
    kind: EnvelopeKind.JOIN as const,
    relayId,
    seq,
    address: member1,
  });
  assert.deepEqual(types(view.receive(join(relayA, 0), 0)), [
    "joined 127.0.0.1:5001",
  ]);
  // Its relay died; it registered with relay B before A timed out.
  assert.deepEqual(types(view.receive(join(relayB, 0), 10)), [
    "left 127.0.0.1:5001",
    "joined 127.0.0.1:5001",
  ]);
  assert.deepEqual(
    view.members().map((m) => m.relay),
    [encodeBase64Url(relayB).slice(0, 8)],
  );
  // A JOIN again from the relay that holds it (a re-registration) is no move.
  assert.deepEqual(types(view.receive(join(relayB, 1), 20)), []);
  // A's silence no longer takes the member with it.
  assert.deepEqual(types(view.expire(1005)), []);
  assert.ok(view.has("127.0.0.1:5001"));
});

test("cluster view: replays and envelopes of a vanished relay are dropped; gaps counted", () => {
  const view = new ClusterView({
    memberTimeoutMs: 1000,
    rememberRelayMs: 60_000,
  });
  const message = (seq: number): Envelope => ({
    kind: EnvelopeKind.MESSAGE,
    relayId: relayA,
    seq,
    sender: member1,
    message: Uint8Array.of(1),
  });
  assert.deepEqual(types(view.receive(message(5), 0)), ["message"]);
  assert.deepEqual(types(view.receive(message(5), 1)), ["federation_replayed"]);
  assert.deepEqual(types(view.receive(message(4), 2)), ["federation_replayed"]);
  const gap = view.receive(message(9), 3);
  assert.deepEqual(types(gap), ["gap", "message"]);
  assert.equal((gap[0] as { lost: number }).lost, 3);
  // Gone (nothing heard for the timeout), yet remembered: a replay of its
  // last envelope is still refused; a later one counts the gap.
  view.expire(2000);
  assert.equal(view.relays, 0);
  assert.deepEqual(types(view.receive(message(9), 2001)), [
    "federation_replayed",
  ]);
  const back = view.receive(message(11), 2002);
  assert.deepEqual(types(back), ["gap", "message"]);
  assert.equal((back[0] as { lost: number }).lost, 1);
});

test("cluster view: relays and members beyond the bounds are dropped and said so", () => {
  const view = new ClusterView({ maxRelays: 1, maxMembers: 1 });
  assert.deepEqual(
    types(view.receive({
      kind: EnvelopeKind.HEARTBEAT,
      relayId: relayA,
      seq: 0,
      members: [member1, member2],
    }, 0)),
    ["joined 127.0.0.1:5001", "federation_members_full"],
  );
  assert.deepEqual(
    types(view.receive({
      kind: EnvelopeKind.JOIN,
      relayId: relayB,
      seq: 0,
      address: member2,
    }, 1)),
    ["federation_relays_full"],
  );
  assert.deepEqual(view.members().map((m) => m.address), ["127.0.0.1:5001"]);
});
