/**
 * Presence: NOTIFY_CONNECT to existing members and of present members to a
 * newcomer, NOTIFY_DISCONNECT on an authenticated DISCONNECT, on timeout and
 * on kick; a forged DISCONNECT is ignored.
 */
import assert from "node:assert/strict";
import { FernetKey } from "../../lib/crypto/fernet.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { MemoryNetwork } from "../../lib/runtime/memory.ts";
import { decodeAddress, formatAddress } from "../../lib/wire/address.ts";
import { encodeRecords, RecordType } from "../../lib/wire/tlv.ts";
import { type ClientHandle, Harness, recordsOf } from "./_harness.ts";

const serverKey = await RsaPrivateKey.generate(2048);
const encoder = new TextEncoder();

function memberAddresses(server: { members(): { address: string }[] }) {
  return server.members().map((m) => m.address).sort();
}

function leaves(c: ClientHandle): string[] {
  return c.events.items.flatMap((e) => e.type === "leave" ? [e.address] : []);
}

Deno.test("join: existing members are told of a newcomer, the newcomer of every present member", async () => {
  await using h = new Harness(serverKey);
  const { server } = await h.startServer();
  const a = await h.connect("a");
  const b = await h.connect("b");
  await a.waitPresence("join", b.address);
  await b.waitPresence("join", a.address);
  const c = await h.connect("c");
  await a.waitPresence("join", c.address);
  await b.waitPresence("join", c.address);
  await c.waitPresence("join", a.address);
  await c.waitPresence("join", b.address);

  // The newcomer learns of present members in NOTIFY_CONNECT records.
  const notified = c.tap.received.items.flatMap((d) =>
    recordsOf(d.data).filter((r) => r.type === RecordType.NOTIFY_CONNECT)
      .map((r) => formatAddress(decodeAddress(r.value)))
  );
  assert.deepEqual(notified.sort(), [a.address, b.address].sort());

  // Exactly one join per other member; nobody is told of itself.
  for (const x of [a, b, c]) {
    const joins = x.events.items.flatMap((e) =>
      e.type === "join" ? [e.address] : []
    );
    assert.deepEqual(
      joins.sort(),
      [a, b, c].filter((y) => y !== x).map((y) => y.address).sort(),
    );
    assert.deepEqual(x.client.members().sort(), joins.sort());
  }
  assert.deepEqual(
    memberAddresses(server),
    [a.address, b.address, c.address].sort(),
  );
  assert.equal(server.stats().registrations, 3);
});

Deno.test("leave on close(): an authenticated DISCONNECT removes the member and the others are told", async () => {
  await using h = new Harness(serverKey);
  const { server, log } = await h.startServer();
  const a = await h.connect("a");
  const b = await h.connect("b");
  const c = await h.connect("c");
  await a.waitPresence("join", c.address);
  await b.waitPresence("join", c.address);

  await b.client.close();
  await a.waitPresence("leave", b.address);
  await c.waitPresence("leave", b.address);

  // On the wire: one DISCONNECT record carrying a Fernet token (not plain text).
  const disconnects = b.tap.sent.items.flatMap((d) =>
    recordsOf(d.data).filter((r) => r.type === RecordType.DISCONNECT)
  );
  assert.equal(disconnects.length, 1);
  const token = new TextDecoder().decode(disconnects[0]!.value);
  assert.match(token, /^gAAAAA[A-Za-z0-9_-]+=*$/);

  assert.deepEqual(memberAddresses(server), [a.address, c.address].sort());
  assert.ok(
    log.items.some((r) =>
      r.event === "leave" && r.client === b.address &&
      r.reason === "disconnect"
    ),
  );
  assert.deepEqual(a.client.members(), [c.address]);
  assert.deepEqual(leaves(a), [b.address]);
  assert.deepEqual(leaves(c), [b.address]);
});

Deno.test("leave on timeout: a member silent past clientTimeoutMs is removed and the others are told", async () => {
  await using h = new Harness(serverKey);
  const { server, log } = await h.startServer({ clientTimeoutMs: 500 });
  // a and b keep alive well within the timeout; c would only in a minute.
  const a = await h.connect("a", { keepaliveMs: 100 });
  const b = await h.connect("b", { keepaliveMs: 100 });
  const c = await h.connect("c", { keepaliveMs: 60_000 });
  await a.waitPresence("join", c.address);
  await b.waitPresence("join", c.address);

  await a.waitPresence("leave", c.address);
  await b.waitPresence("leave", c.address);
  assert.ok(!memberAddresses(server).includes(c.address));
  assert.ok(
    log.items.some((r) =>
      r.event === "leave" && r.client === c.address && r.reason === "timeout"
    ),
  );
  assert.deepEqual(leaves(a), [c.address]);
  // Keep-alives went out as KEEPALIVE records carrying a Fernet token.
  const keepalive =
    a.tap.sent.items.flatMap((d) =>
      recordsOf(d.data).filter((r) => r.type === RecordType.KEEPALIVE)
    )[0];
  assert.ok(keepalive, "a sent no KEEPALIVE");
  assert.match(new TextDecoder().decode(keepalive.value), /^gAAAAA/);
});

Deno.test("kick: the member is removed, the others are told, members() no longer lists it", async () => {
  await using h = new Harness(serverKey);
  const { server, log } = await h.startServer();
  const a = await h.connect("a");
  const b = await h.connect("b");
  const c = await h.connect("c");
  await a.waitPresence("join", c.address);
  await b.waitPresence("join", c.address);

  assert.equal(server.kick(c.address), true);
  assert.deepEqual(memberAddresses(server), [a.address, b.address].sort());
  await a.waitPresence("leave", c.address);
  await b.waitPresence("leave", c.address);
  assert.ok(
    log.items.some((r) =>
      r.event === "leave" && r.client === c.address && r.reason === "kick"
    ),
  );
  assert.equal(server.kick(c.address), false, "kicked twice");
  assert.throws(() => server.kick("not an address"), TypeError);
  assert.equal(server.stats().members, 2);
});

Deno.test("forged DISCONNECT from a member's address (garbage token, token under another key, plain text) is ignored", async () => {
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  const { server, address: serverAddress, waitDrop } = await h.startServer({
    transport: network.bind(),
  });
  const a = await h.connect("a", { transport: network.bind() });
  const b = await h.connect("b", { transport: network.bind() });
  const c = await h.connect("c", { transport: network.bind() });
  await a.waitPresence("join", c.address);
  await b.waitPresence("join", c.address);
  await c.waitPresence("join", b.address);
  const victim = a.tap.localAddress;

  const strangerKey = await FernetKey.generate();
  const forgeries = [
    // Garbage where a token belongs.
    encoder.encode("gAAAAAgarbage-token-that-does-not-parse=="),
    // A well-formed token of the right plaintext under a different key.
    await strangerKey.encrypt(encoder.encode("DISCONNECT")),
    // The seed's unauthenticated form.
    encoder.encode("DISCONNECT"),
    // The RSA profile's empty form, against a hybrid member.
    new Uint8Array(0),
  ];
  for (const value of forgeries) {
    assert.ok(network.deliver(
      encodeRecords([{ type: RecordType.DISCONNECT, value }]),
      victim,
      serverAddress,
    ));
  }
  await waitDrop("forged_disconnect");
  // Barrier: a's next message is processed after the forgeries (one ordered
  // queue per source), so once b and c have it, all forgeries were handled.
  await a.client.send("still here");
  await b.waitMessage("still here", { sender: a.address });
  await c.waitMessage("still here", { sender: a.address });

  assert.deepEqual(
    memberAddresses(server),
    [a.address, b.address, c.address].sort(),
  );
  const dropped = server.stats().dropped;
  assert.equal(dropped.forged_disconnect, 1, JSON.stringify(dropped));
  assert.equal(dropped.token_format, 3, JSON.stringify(dropped));
  assert.deepEqual(leaves(b), []);
  assert.deepEqual(leaves(c), []);
  assert.equal(server.stats().messagesRelayed, 1);
});

Deno.test("a burst of joins: the first 8 changes of the interval at once, the rest packed in one datagram, before the newcomers' messages", async () => {
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  // A long interval: its joins past the 8th go out when a message is relayed.
  await h.startServer({ transport: network.bind(), presenceBatchMs: 60_000 });
  const all: ClientHandle[] = [];
  for (const name of "abcdefghijk") {
    all.push(await h.connect(name, { transport: network.bind() }));
  }
  // a's own join was the first change (told to nobody); b to h: 7 more.
  const [a, b, , , , , , , i, j, k] = all;
  const batched = [i, j, k].map((x) => x.address);
  await a.waitPresence("join", all[7].address);
  assert.equal(a.events.count((ev) => ev.type === "join"), 7, "not batched");
  await j.client.send("from j");
  for (const x of all) if (x !== j) await x.waitMessage("from j");

  /** NOTIFY_CONNECT addresses of each datagram `x` received. */
  const notifies = (x: ClientHandle) =>
    x.tap.received.items.map((dg) =>
      recordsOf(dg.data).filter((r) => r.type === RecordType.NOTIFY_CONNECT)
        .map((r) => formatAddress(decodeAddress(r.value)))
    ).filter((list) => list.length > 0);
  assert.deepEqual(notifies(a), [
    ...all.slice(1, 8).map((x) => [x.address]),
    batched,
  ]);
  assert.deepEqual(notifies(b).at(-1), batched);
  // A newcomer is not told of itself (it learnt of the others at its WELCOME).
  assert.deepEqual(notifies(j).at(-1), [i.address, k.address]);
  for (const x of all) {
    // Every member sees every other join once...
    const joins = x.events.filter((ev) => ev.type === "join").map((ev) =>
      ev.type === "join" ? ev.address : ""
    );
    const others = all.filter((y) => y !== x).map((y) => y.address);
    assert.deepEqual(joins.sort(), others.sort(), x.name);
    if (x === j) continue;
    // ...before j's message.
    const messageAt = x.events.items.findIndex((ev) => ev.type === "message");
    const lastJoin = x.events.items.findLastIndex((ev) => ev.type === "join");
    assert.ok(lastJoin < messageAt, `${x.name} heard of a join after it`);
  }
});
