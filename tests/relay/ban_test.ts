/**
 * Kicks and bans (issue 16 item 1; PROTOCOL.md section 7, NOTICE 6 KICKED
 * and 7 BANNED): a kicked member is told why, under its own key, and
 * registers again at once; a banned member is told, removed, and its client
 * closes for good; a banned source gets no key answer and costs no RSA work
 * until the ban expires or is lifted; a forged or relabelled removal notice
 * is ignored and counted.
 *
 * In-memory network: spoofed sources are just a `deliver` with another
 * `from`, and members can have IPs of their own.
 */
import assert from "node:assert/strict";
import { ClientClosedError, HandshakeError } from "../../lib/errors.ts";
import { FernetKey } from "../../lib/crypto/fernet.ts";
import { IvMarker } from "../../lib/crypto/iv_mark.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import {
  MemoryNetwork,
  type MemoryTransport,
} from "../../lib/runtime/memory.ts";
import type { Datagram } from "../../lib/runtime/transport.ts";
import {
  encodeRemoval,
  NoticeCode,
  noticeRecord,
} from "../../lib/wire/notice.ts";
import { encodeRecords, RecordType } from "../../lib/wire/tlv.ts";
import { TokenGuard } from "../../lib/crypto/token_guard.ts";
import {
  type ClientHandle,
  fetchCookie,
  Harness,
  hasRecord,
  keyRequest,
  recordsOf,
  recordValue,
} from "./_harness.ts";

const serverKey = await RsaPrivateKey.generate(2048);
const decoder = new TextDecoder();
const encoder = new TextEncoder();

/** A server and two members; no keep-alive within a test, so only the notices act. */
async function setup(
  network = new MemoryNetwork(),
  serverOptions: Parameters<Harness["startServer"]>[0] = {},
) {
  const h = new Harness(serverKey);
  const server = await h.startServer({
    transport: network.bind(),
    ...serverOptions,
  });
  const connect = (name: string, transport: MemoryTransport) =>
    h.connect(name, { transport, keepaliveMs: 60_000, retryInitialMs: 300 });
  const a = await connect("a", network.bind("10.0.0.1"));
  const b = await connect("b", network.bind("10.0.0.2"));
  await a.waitPresence("join", b.address);
  return { h, network, server, a, b, connect };
}

/**
 * A member's transport on 10.0.0.1 whose first inbound datagram that `hold`
 * picks is held back (in `held`), as an on-path attacker would: the client
 * gets it only if the test delivers it.
 */
function holdingFirst(
  network: MemoryNetwork,
  hold: (datagram: Datagram) => boolean,
): { transport: MemoryTransport; held: Datagram[] } {
  const transport = network.bind("10.0.0.1");
  const held: Datagram[] = [];
  const enqueue = transport.enqueue.bind(transport);
  transport.enqueue = (datagram: Datagram) => {
    if (held.length === 0 && hold(datagram)) held.push(datagram);
    else enqueue(datagram);
  };
  return { transport, held };
}

/** The NOTICE records `c` received with `code`. */
function notices(c: ClientHandle, code: number): Uint8Array[] {
  return c.tap.received.items.flatMap((d) =>
    recordsOf(d.data).filter((r) =>
      r.type === RecordType.NOTICE && r.value[1] === code
    ).map((r) => r.value)
  );
}

Deno.test("kick: the member is told why under its own key, says so, and registers again at once", async () => {
  const { h, server, a, b } = await setup();
  await using _ = h;
  const since = a.events.mark();
  const bSince = b.events.mark();
  assert.ok(server.server.kick(a.address, "being rude"));
  const kicked = await a.waitEvent("kicked", since);
  assert.deepEqual(kicked, { type: "kicked", reason: "being rude" });
  // On the wire: NOTICE code 6, then a Fernet token (the reason is not in
  // the clear: only the member's key opens it).
  const [value] = notices(a, NoticeCode.KICKED);
  assert.ok(value, "no NOTICE 6 reached the member");
  assert.deepEqual([...value.subarray(0, 2)], [0, 6]);
  assert.match(decoder.decode(value.subarray(2)), /^gAAAAA[A-Za-z0-9_=-]+$/);
  assert.ok(!decoder.decode(value).includes("being rude"));
  // Back at once (keep-alives are a minute apart: the notice did it).
  const reconnecting = await a.waitEvent("reconnecting", since);
  assert.equal(
    reconnecting.type === "reconnecting" && reconnecting.reason,
    "kicked by the server: being rude",
  );
  await a.waitEvent("ready", since);
  await b.waitPresence("leave", a.address, bSince);
  await b.waitPresence("join", a.address, bSince);
  assert.equal(a.client.stats().registrations, 2);
  await a.client.send("back");
  await b.waitMessage("back", { sender: a.address });
  // Without a reason the operator's default is told.
  const again = a.events.mark();
  assert.ok(server.server.kick(a.address));
  const plain = await a.waitEvent("kicked", again);
  assert.equal(
    plain.type === "kicked" && plain.reason,
    "removed by the server operator",
  );
});

Deno.test("kick with member keys of the webcrypto backend (sealed asynchronously): the member is told all the same", async () => {
  const { h, server, a } = await setup(new MemoryNetwork(), {
    fernetBackend: "webcrypto",
  });
  await using _ = h;
  const since = a.events.mark();
  assert.ok(server.server.kick(a.address, "async"));
  assert.deepEqual(await a.waitEvent("kicked", since), {
    type: "kicked",
    reason: "async",
  });
  await a.waitEvent("ready", since);
});

Deno.test("ban of a member's address: it is removed and told, its client closes; nothing from it is answered or decrypted; unban lets it back", async () => {
  const network = new MemoryNetwork();
  const { h, server, a, b, connect } = await setup(network);
  await using _ = h;
  const bSince = b.events.mark();
  const result = server.server.ban(a.address, {
    seconds: 600,
    reason: "spamming",
  });
  assert.deepEqual(result, {
    target: a.address,
    seconds: 600,
    removed: [a.address],
  });
  const banned = await a.waitEvent("banned");
  assert.deepEqual(banned, {
    type: "banned",
    seconds: 600,
    reason: "spamming",
  });
  const [value] = notices(a, NoticeCode.BANNED);
  assert.match(decoder.decode(value.subarray(2)), /^gAAAAA/);
  await b.waitPresence("leave", a.address, bSince);
  assert.deepEqual(server.server.members().map((m) => m.address), [
    b.address,
  ]);
  // The client closed itself: no rejoin, and sending says why.
  await assert.rejects(
    () => a.client.send("still here?"),
    /closed: banned by the server for 600 s: spamming/,
  );
  assert.equal(a.client.ready, false);
  // It stopped because of the ban: closed() says so (and its socket is shut).
  const stoppedWith = await a.client.closed();
  assert.ok(stoppedWith instanceof ClientClosedError);
  assert.match(stoppedWith.message, /banned by the server for 600 s/);
  assert.equal(
    a.tap.sent.count((d) => hasRecord(d.data, RecordType.DISCONNECT)),
    0,
    "a banned client sends no DISCONNECT",
  );
  const [ban] = server.server.bans();
  assert.equal(ban.target, a.address);
  assert.ok(ban.secondsLeft! > 590 && ban.secondsLeft! <= 600);

  // A new client on the banned address: no key answer, no RSA work.
  const rsaBefore = server.server.stats().rsaDecryptions;
  const droppedBefore = server.server.stats().dropped.banned ?? 0;
  const [ip, port] = [a.tap.localAddress.hostname, a.tap.localAddress.port];
  const retry = network.bind(ip, port);
  await assert.rejects(
    () =>
      h.connect("a again", {
        transport: retry,
        retryAttempts: 3,
        retryInitialMs: 50,
      }),
    HandshakeError,
  );
  const stats = server.server.stats();
  assert.equal(stats.rsaDecryptions, rsaBefore);
  assert.ok((stats.dropped.banned ?? 0) >= droppedBefore + 3);

  // Unban: the same address gets in.
  assert.equal(server.server.unban(a.address), true);
  assert.equal(server.server.unban(a.address), false, "unbanned twice");
  assert.deepEqual(server.server.bans(), []);
  const back = await connect("a back", network.bind(ip, port));
  assert.equal(back.address, a.address);
  await b.waitPresence("join", a.address, bSince);
});

Deno.test("ban of an IP covers every port of it and lasts its seconds (the server's clock)", async () => {
  const network = new MemoryNetwork();
  let offset = 0;
  const { h, server, a, b, connect } = await setup(network, {
    now: () => Date.now() + offset,
  });
  await using _ = h;
  // A second member on a's IP, another port.
  const a2 = await connect("a2", network.bind("10.0.0.1"));
  const result = server.server.ban("10.0.0.1", { seconds: 30 });
  assert.equal(result.target, "10.0.0.1");
  assert.deepEqual(new Set(result.removed), new Set([a.address, a2.address]));
  for (const c of [a, a2]) {
    const banned = await c.waitEvent("banned");
    assert.deepEqual(banned, {
      type: "banned",
      seconds: 30,
      reason: "banned by the server operator",
    });
  }
  assert.deepEqual(server.server.members().map((m) => m.address), [
    b.address,
  ]);
  assert.deepEqual(server.server.bans(), [{
    target: "10.0.0.1",
    secondsLeft: 30,
    reason: "banned by the server operator",
  }]);
  // 31 s later (the server's clock) the ban is over.
  offset = 31_000;
  assert.deepEqual(server.server.bans(), []);
  const back = await connect("a3", network.bind("10.0.0.1"));
  assert.ok(server.server.members().some((m) => m.address === back.address));
});

Deno.test("a forged removal notice (plain text, not a token, a token under another key) is ignored and counted; the member stays", async () => {
  const network = new MemoryNetwork();
  const { h, server, a, b } = await setup(network);
  await using _ = h;
  const to = a.tap.localAddress;
  const deliver = (code: number, text: string) =>
    network.deliver(
      encodeRecords([noticeRecord(code, 1200, text)!]),
      server.address,
      to,
    );
  // Plain text (what an RSA member gets) is no proof for a hybrid member.
  deliver(NoticeCode.BANNED, "0 you are banned");
  deliver(NoticeCode.KICKED, "gAAAAAnot-a-token");
  // A well-formed token under another key, last: the client reads in order.
  const stranger = new TokenGuard(await FernetKey.generate(), new IvMarker());
  const body = encodeRemoval({ code: 7, seconds: 0, reason: "forged" });
  deliver(
    NoticeCode.BANNED,
    decoder.decode(await stranger.seal(body, Date.now())),
  );
  await a.log.waitFor(
    (r) => r.event === "drop" && r.reason === "removal_notice_token_signature",
    "the notice under another key refused",
  );
  await a.client.send("still in");
  await b.waitMessage("still in", { sender: a.address });
  const dropped = a.client.stats().dropped;
  assert.equal(dropped.removal_notice_token_format, 2, JSON.stringify(dropped));
  assert.equal(dropped.removal_notice_token_signature, 1);
  assert.equal(a.events.count((e) => e.type === "banned"), 0);
  assert.equal(a.events.count((e) => e.type === "kicked"), 0);
  assert.ok(a.client.ready);
  assert.deepEqual(server.server.members().length, 2);
});

Deno.test("a kick notice relabelled as a ban (the code outside the token) is refused, and so is its replay", async () => {
  const network = new MemoryNetwork();
  const h = new Harness(serverKey);
  await using _ = h;
  const server = await h.startServer({ transport: network.bind() });
  // a's inbound NOTICE 6 is held back, as an on-path attacker would.
  const { transport, held } = holdingFirst(
    network,
    (d) => recordValue(d.data, RecordType.NOTICE)?.[1] === NoticeCode.KICKED,
  );
  const a = await h.connect("a", { transport, keepaliveMs: 60_000 });
  server.server.kick(a.address, "cool down");
  assert.equal(held.length, 1);
  const value = recordValue(held[0].data, RecordType.NOTICE)!;
  const relabelled = value.slice();
  relabelled[1] = NoticeCode.BANNED;
  network.deliver(
    encodeRecords([{ type: RecordType.NOTICE, value: relabelled }]),
    server.address,
    transport.localAddress,
  );
  await a.log.waitFor(
    (r) => r.event === "drop" && r.reason === "removal_notice_code_mismatch",
    "the relabelled notice refused",
  );
  assert.equal(a.events.count((e) => e.type === "banned"), 0);
  // The same token again, with its own code: a replay, refused too.
  network.deliver(held[0].data, server.address, transport.localAddress);
  await a.log.waitFor(
    (r) => r.event === "drop" && r.reason === "removal_notice_token_replayed",
    "the replayed notice refused",
  );
  assert.equal(a.events.count((e) => e.type === "kicked"), 0);
});

Deno.test("a relayed message whose plaintext is a ban body, rewrapped as NOTICE 7, is refused and counted; the member stays", async () => {
  const network = new MemoryNetwork();
  const h = new Harness(serverKey);
  await using _ = h;
  const server = await h.startServer({ transport: network.bind() });
  // a's first relayed message is held back, as an on-path attacker would:
  // a token under a's key whose plaintext another member chose.
  const { transport, held } = holdingFirst(
    network,
    (d) => hasRecord(d.data, RecordType.FERNET_MESSAGE),
  );
  const connect = (name: string, transport: MemoryTransport) =>
    h.connect(name, { transport, keepaliveMs: 60_000 });
  const a = await connect("a", transport);
  const b = await connect("b", network.bind("10.0.0.2"));
  await a.waitPresence("join", b.address);
  // b sends, as a message, the bytes of a ban until unbanned.
  const body = encodeRemoval({
    code: NoticeCode.BANNED,
    seconds: 0,
    reason: "gotcha",
  });
  assert.deepEqual([...body.subarray(0, 6)], [0, 7, 0, 0, 0, 0]);
  await b.client.send(body);
  await server.tap.sent.waitFor(
    (d) =>
      d.to.hostname === "10.0.0.1" &&
      hasRecord(d.data, RecordType.FERNET_MESSAGE),
    "the message relayed to a",
  );
  assert.equal(held.length, 1);
  const token = recordValue(held[0].data, RecordType.FERNET_MESSAGE)!;
  network.deliver(
    encodeRecords([
      noticeRecord(NoticeCode.BANNED, 1200, decoder.decode(token))!,
    ]),
    server.address,
    transport.localAddress,
  );
  await a.log.waitFor(
    (r) => r.event === "drop" && r.reason === "removal_notice_token_signature",
    "the rewrapped message refused",
  );
  assert.equal(a.client.stats().dropped.removal_notice_token_signature, 1);
  assert.equal(a.events.count((e) => e.type === "banned"), 0);
  assert.ok(a.client.ready);
  await a.client.send("still in");
  await b.waitMessage("still in", { sender: a.address });
  assert.equal(server.server.members().length, 2);
});

Deno.test("an RSA-profile member is told in plain text (it has no key to check with) and closes when banned", async () => {
  const { h, network, server, b } = await setup();
  await using _ = h;
  const rsa = await h.connect("rsa", {
    transport: network.bind("10.0.0.3"),
    profile: "rsa",
    keepaliveMs: 60_000,
  });
  await b.waitPresence("join", rsa.address);
  server.server.ban(rsa.address, { reason: "go away" });
  const banned = await rsa.waitEvent("banned");
  assert.deepEqual(banned, {
    type: "banned",
    seconds: undefined,
    reason: "go away",
  });
  const [value] = notices(rsa, NoticeCode.BANNED);
  assert.equal(decoder.decode(value.subarray(2)), "0 go away");
  assert.deepEqual(server.server.bans(), [{
    target: rsa.address,
    secondsLeft: undefined,
    reason: "go away",
  }]);
});

Deno.test("ban and kick refuse bad input before anything changes", async () => {
  const { h, server, a } = await setup();
  await using _ = h;
  assert.throws(() => server.server.ban("not-an-ip"), TypeError);
  assert.throws(() => server.server.ban(a.address, { seconds: 0 }), RangeError);
  assert.throws(
    () => server.server.ban(a.address, { reason: "x".repeat(201) }),
    /at most 200 bytes/,
  );
  assert.throws(
    () => server.server.kick(a.address, "x".repeat(201)),
    /at most 200 bytes/,
  );
  assert.throws(() => server.server.unban("nope"), TypeError);
  assert.deepEqual(server.server.bans(), []);
  assert.equal(server.server.members().length, 2);
  assert.ok(a.client.ready);
});

Deno.test("the ban list is bounded: past maxBans a ban is refused with what to do", async () => {
  const { h, server } = await setup(new MemoryNetwork(), { maxBans: 2 });
  await using _ = h;
  server.server.ban("192.0.2.1");
  server.server.ban("192.0.2.2", { seconds: 5 });
  server.server.ban("192.0.2.2", { seconds: 10 }); // replaces, no new entry
  assert.throws(
    () => server.server.ban("192.0.2.3"),
    /ban list is full \(2 bans\); unban some first/,
  );
  assert.equal(server.server.bans().length, 2);
});

Deno.test("a registration whose RSA work was under way when its address was banned is not let in", async () => {
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  // One RSA thread, with work queued ahead of the registration: its
  // decryption ends well after the ban.
  const server = await h.startServer({
    transport: network.bind(),
    rsaThreads: 1,
  });
  const blockers = await Promise.all(
    Array.from(
      { length: 8 },
      (_, i) => h.socket(`blocker ${i}`, network.bind(`10.0.1.${i + 1}`)),
    ),
  );
  const victim = await h.socket("victim", network.bind("10.0.0.9"));
  const cookies = await Promise.all(
    blockers.map((b) => fetchCookie(b, server.address)),
  );
  const cookie = await fetchCookie(victim, server.address);
  const key = await FernetKey.generate();
  const registration = encodeRecords([
    { type: RecordType.COOKIE, value: cookie },
    {
      type: RecordType.SYMMETRIC_KEY,
      value: await serverKey.publicKey.encrypt(encoder.encode(key.text)),
    },
  ]);
  const undecryptable = new Uint8Array(256).fill(1);
  const rsaBefore = server.server.stats().rsaDecryptions;
  blockers.forEach((b, i) =>
    network.deliver(
      encodeRecords([
        { type: RecordType.COOKIE, value: cookies[i] },
        { type: RecordType.SYMMETRIC_KEY, value: undecryptable },
      ]),
      b.localAddress,
      server.address,
    )
  );
  network.deliver(registration, victim.localAddress, server.address);
  await server.tap.received.waitFor(
    (d) =>
      d.from.hostname === "10.0.0.9" &&
      hasRecord(d.data, RecordType.SYMMETRIC_KEY),
    "the registration at the server",
  );
  // A sentinel from a fresh source, dispatched after the registration: once
  // its drop is logged, the registration's handling reached its RSA work.
  const sentinel = await h.socket("sentinel", network.bind("10.0.2.1"));
  await sentinel.sendRaw(keyRequest(10), server.address);
  await server.waitDrop("short_key_request");
  assert.equal(
    server.server.stats().rsaDecryptions,
    rsaBefore + 9,
    "its RSA work began before the ban",
  );
  server.server.ban(victim.address);
  await server.waitDrop("banned");
  assert.deepEqual(server.server.members(), []);
  assert.equal(
    server.log.count((r) => r.event === "join"),
    0,
    "nobody joined",
  );
  assert.equal(
    victim.received.count((d) => hasRecord(d.data, RecordType.WELCOME)),
    0,
  );
});
