/**
 * Load shedding: while the server's load probe says the event loop is
 * overloaded, key requests and registrations are dropped (`handshake_shed`,
 * no RSA work, no answer) and registered members keep relaying; when it
 * clears, clients register again. The probe is a stub the test flips, so
 * nothing here depends on how busy the machine is. Also the queue limits
 * (`backlog`, `overload`), which leave nothing behind for shutdown.
 *
 * Traffic goes to 127.0.0.1 only.
 */
import assert from "node:assert/strict";
import { FernetKey } from "../../lib/crypto/fernet.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { encodeRecords, RecordType } from "../../lib/wire/tlv.ts";
import { LoadMeter } from "../../lib/core/load.ts";
import { MemoryNetwork } from "../../lib/runtime/memory.ts";
import {
  fetchCookie,
  Harness,
  keyRequest,
  recordValue,
  type TapTransport,
} from "./_harness.ts";
import { StubLoad } from "../_support/stubs.ts";

const serverKey = await RsaPrivateKey.generate(2048);
const encoder = new TextEncoder();

Deno.test("while overloaded, key requests and registrations are shed (no answer, no RSA) and members keep relaying; afterwards clients register", async () => {
  const load = new StubLoad();
  await using h = new Harness(serverKey);
  const { server, address } = await h.startServer({ load });
  const a = await h.connect("a");
  const b = await h.connect("b");
  assert.ok(load.waits > 0, "the receive loop reports its waits");

  // A cookie obtained before the overload, for a registration during it.
  const peer = await h.socket("peer");
  await peer.sendRaw(keyRequest(1200), address);
  const answer = await peer.received.waitFor(
    (d) => recordValue(d.data, RecordType.COOKIE) !== undefined,
    "the key answer before the overload",
  );
  const cookie = recordValue(answer.data, RecordType.COOKIE)!.slice();
  const key = await FernetKey.generate();
  const block = await serverKey.publicKey.encrypt(encoder.encode(key.text));
  const rsaBefore = server.stats().rsaDecryptions;

  load.overloaded = true;
  const mark = peer.received.mark();
  await peer.sendRaw(keyRequest(1200), address);
  await peer.sendRaw(
    encodeRecords([
      { type: RecordType.COOKIE, value: cookie },
      { type: RecordType.SYMMETRIC_KEY, value: block },
    ]),
    address,
  );
  // The server handles one source's datagrams in order: the NOTICE to this
  // unregistered source's message proves both were handled before it.
  await peer.sendRaw(
    encodeRecords([{
      type: RecordType.FERNET_MESSAGE,
      value: await key.encrypt(encoder.encode("hello?")),
    }]),
    address,
  );
  await peer.received.waitFor(
    (d) => recordValue(d.data, RecordType.NOTICE) !== undefined,
    "the NOTICE after the shed datagrams",
    { from: mark },
  );
  const during = peer.received.items.slice(mark);
  assert.equal(during.length, 1, "only the NOTICE: no key answer, no WELCOME");
  assert.equal(server.stats().dropped.handshake_shed, 2);
  assert.equal(server.stats().rsaDecryptions, rsaBefore, "no RSA work");
  assert.equal(server.stats().members, 2);

  // Members relay as before.
  const from = b.events.mark();
  await a.client.send("still relaying");
  await b.waitMessage("still relaying", { from, sender: a.address });

  load.overloaded = false;
  const c = await h.connect("c");
  await a.waitPresence("join", c.address);
  assert.equal(server.stats().members, 3);
  assert.equal(server.stats().dropped.handshake_shed, 2);
});

Deno.test("the server logs that it is shedding, with the loop's utilization, at most once per 10 s", async () => {
  const load = new StubLoad();
  await using h = new Harness(serverKey);
  const { address, log } = await h.startServer({ load });
  const peer = await h.socket("peer");
  load.overloaded = true;
  load.utilization = 0.97;
  await peer.sendRaw(keyRequest(1200), address);
  const record = await log.waitFor(
    (r) => r.event === "overloaded",
    "the overloaded record",
  );
  assert.equal(record.level, "warn");
  assert.equal(record.utilization, 0.97);

  // Back to normal (the key request is answered), then overloaded again.
  load.overloaded = false;
  let mark = peer.received.mark();
  await peer.sendRaw(keyRequest(1200), address);
  await peer.received.waitFor(
    (d) => recordValue(d.data, RecordType.COOKIE) !== undefined,
    "the key answer once the load is normal",
    { from: mark },
  );
  load.overloaded = true;
  mark = peer.received.mark();
  await peer.sendRaw(keyRequest(1200), address);
  await peer.sendRaw(
    // A message from a source the server does not know gets NOTICE 1.
    encodeRecords([{
      type: RecordType.FERNET_MESSAGE,
      value: new Uint8Array(100),
    }]),
    address,
  );
  await peer.received.waitFor(
    (d) => recordValue(d.data, RecordType.NOTICE) !== undefined,
    "the NOTICE proving the shed request was handled",
    { from: mark },
  );
  assert.equal(
    log.items.filter((r) => r.event === "overloaded").length,
    1,
    "the second overload within 10 s is not logged again",
  );
});

Deno.test("past maxQueuedPerSource a datagram is dropped (backlog), past maxQueuedTotal too (overload), and close() still completes", async () => {
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  const { server, address, waitDrop } = await h.startServer({
    transport: network.bind(),
    maxQueuedPerSource: 1,
    maxQueuedTotal: 2,
  });
  const a = await h.socket("a", network.bind());
  const b = await h.socket("b", network.bind());
  const registration = async (cookie: Uint8Array) => {
    const key = await FernetKey.generate();
    return encodeRecords([
      { type: RecordType.COOKIE, value: cookie },
      {
        type: RecordType.SYMMETRIC_KEY,
        value: await serverKey.publicKey.encrypt(encoder.encode(key.text)),
      },
    ]);
  };
  const forA = await registration(await fetchCookie(a, address));
  const forB = await registration(await fetchCookie(b, address));
  const stranger = { hostname: "127.0.0.1", port: 9 };

  // Delivered in one go: the server takes them in order before either RSA
  // decryption can answer (the RSA threads answer by message, a later turn).
  network.deliver(forA, a.localAddress, address); // A: 1 in work, total 1
  network.deliver(keyRequest(1200), a.localAddress, address); // A full: backlog
  network.deliver(forB, b.localAddress, address); // total 2
  network.deliver(keyRequest(1200), stranger, address); // total full: overload
  await waitDrop("backlog");
  await waitDrop("overload");
  for (const peer of [a, b]) {
    await peer.received.waitFor(
      (d) => recordValue(d.data, RecordType.WELCOME) !== undefined,
      "the WELCOME of a registration that was in work",
    );
  }
  assert.deepEqual(
    [server.stats().dropped.backlog, server.stats().dropped.overload],
    [1, 1],
  );
  // Nothing is left queued, not even an empty queue for the stranger (one
  // per dropped source would grow without bound, and keep close() waiting).
  const peer = await h.socket("barrier", network.bind());
  await fetchCookie(peer, address);
  // The barrier's own task settles in microtasks: one macrotask turn later
  // they have all run (an ordering guarantee, not a wait for time).
  await new Promise((resolve) => setTimeout(resolve, 0));
  assert.deepEqual(server.stats().queued, { datagrams: 0, sources: 0 });
  let timer: ReturnType<typeof setTimeout> | undefined;
  const stuck = new Promise<"stuck">((resolve) => {
    timer = setTimeout(() => resolve("stuck"), 5_000);
  });
  try {
    assert.equal(
      await Promise.race([server.close().then(() => "closed"), stuck]),
      "closed",
    );
  } finally {
    clearTimeout(timer);
  }
});

Deno.test("with the real LoadMeter, a backlog of relaying reads as busy and a key request queued behind it is shed", async () => {
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  // Short windows, and a threshold well below what a backlog reads (about
  // 0.97 here), so that the test does not depend on the machine's speed.
  const load = new LoadMeter({ windowMs: 2, overloadedAt: 0.5 });
  const { server, address } = await h.startServer({
    transport: network.bind(),
    load,
    messagesPerSecond: 1e6,
    messageBurst: 1e6,
  });
  const members: { peer: TapTransport; key: FernetKey }[] = [];
  for (let i = 0; i < 6; i++) {
    const peer = await h.socket(`member ${i}`, network.bind());
    const key = await FernetKey.generate("node");
    // The meter's 2 ms windows can read a busy machine's pause as load and
    // shed a key request of this set-up: ask again, as a client would.
    let cookie: Uint8Array | undefined;
    for (let attempt = 1; cookie === undefined; attempt++) {
      cookie = await fetchCookie(peer, address, undefined, 1000).catch(
        (error) => {
          if (attempt >= 10) throw error;
          return undefined;
        },
      );
    }
    const from = peer.received.mark();
    await peer.sendRaw(
      encodeRecords([
        { type: RecordType.COOKIE, value: cookie },
        {
          type: RecordType.SYMMETRIC_KEY,
          value: await serverKey.publicKey.encrypt(encoder.encode(key.text)),
        },
      ]),
      address,
    );
    await peer.received.waitFor(
      (d) => recordValue(d.data, RecordType.WELCOME) !== undefined,
      `member ${i}'s WELCOME`,
      { from },
    );
    members.push({ peer, key });
  }
  // 300 messages from one member (5 recipients each), all queued at once,
  // then a stranger's key request and a message that gets it NOTICE 1.
  const sender = members[0];
  const shedInSetUp = server.stats().dropped.handshake_shed ?? 0;
  const text = new Uint8Array(800);
  for (let i = 0; i < 300; i++) {
    network.deliver(
      encodeRecords([{
        type: RecordType.FERNET_MESSAGE,
        value: sender.key.encryptSync(text),
      }]),
      sender.peer.localAddress,
      address,
    );
  }
  const stranger = await h.socket("stranger", network.bind());
  network.deliver(keyRequest(1200), stranger.localAddress, address);
  network.deliver(
    encodeRecords([{
      type: RecordType.FERNET_MESSAGE,
      value: new Uint8Array(100),
    }]),
    stranger.localAddress,
    address,
  );
  await stranger.received.waitFor(
    (d) => recordValue(d.data, RecordType.NOTICE) !== undefined,
    "the NOTICE after the key request",
  );
  assert.equal(stranger.received.items.length, 1, "no key answer");
  assert.equal(server.stats().dropped.handshake_shed, shedInSetUp + 1);
  assert.ok(
    server.stats().loopUtilization > 0.5,
    `utilization ${server.stats().loopUtilization}`,
  );
  for (const { key } of members) key[Symbol.dispose]();
});
