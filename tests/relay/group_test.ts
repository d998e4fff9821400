/**
 * Group fan-out (protocol.md section 9) over the in-memory network, whose
 * group endpoints stand in for sockets joined to the downstream multicast
 * address: mixed groups, rekeys on join and leave, replayed and reflected
 * group datagrams, and a member that misses a GROUP_KEY.
 */
import assert from "node:assert/strict";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { MemoryNetwork } from "../../lib/runtime/memory.ts";
import type {
  Datagram,
  DatagramTransport,
} from "../../lib/runtime/transport.ts";
import type { PeerAddress } from "../../lib/wire/address.ts";
import { decodeGroupMessageValue } from "../../lib/wire/group.ts";
import { NoticeCode } from "../../lib/wire/notice.ts";
import { RecordType } from "../../lib/wire/tlv.ts";
import {
  type ClientHandle,
  Harness,
  hasRecord,
  Recorder,
  recordValue,
  type ServerHandle,
  sizedText,
  TapTransport,
} from "./_harness.ts";

const serverKey = await RsaPrivateKey.generate(2048);
const rsaMemberKey = await RsaPrivateKey.generate(2048);
const SERVER: PeerAddress = { hostname: "127.0.0.1", port: 5007 };
const DOWNSTREAM: PeerAddress = { hostname: "224.1.1.1", port: 5008 };

/** A network, a group-mode server on it, and group-capable clients. */
class GroupRig {
  readonly network = new MemoryNetwork();
  /** Each client's downstream socket, tapped. */
  readonly downstream = new Map<string, TapTransport>();
  readonly #joined = new Map<string, (tap: TapTransport) => void>();
  server!: ServerHandle;

  constructor(readonly h: Harness) {}

  /** `newcomerMs`: 0 where a test counts datagrams exactly (in-memory groups are joined at once). */
  async start(multicast: boolean, newcomerMs?: number): Promise<ServerHandle> {
    this.server = await this.h.startServer({
      transport: this.network.bind(SERVER.hostname, SERVER.port),
      fanout: "group",
      downstream: multicast ? DOWNSTREAM : undefined,
      groupNewcomerMs: newcomerMs,
    });
    return this.server;
  }

  /** Connects a member; `group: false` or `profile: "rsa"` for the others. */
  connect(
    name: string,
    options: {
      group?: boolean;
      rsa?: boolean;
      transport?: DatagramTransport;
    } = {},
  ): Promise<ClientHandle> {
    return this.h.connect(name, {
      transport: options.transport ?? this.network.bind(),
      group: options.group,
      ...(options.rsa ? { profile: "rsa", rsaKey: rsaMemberKey } : {}),
      bindDownstream: (group) => {
        const tap = new TapTransport(this.network.joinGroup(group), name);
        this.downstream.set(name, tap);
        this.#joined.get(name)?.(tap);
        return Promise.resolve(tap);
      },
    });
  }

  /** Resolves with `name`'s downstream socket once it has one (its first GROUP_KEY). */
  joined(name: string): Promise<TapTransport> {
    const tap = this.downstream.get(name);
    if (tap) return Promise.resolve(tap);
    return new Promise((resolve) => this.#joined.set(name, resolve));
  }

  /** Waits until the server logs an epoch with `holders` holders (from log index `from`). */
  epoch(holders: number, from = 0): Promise<number> {
    return this.server.log.waitFor(
      (r) => r.event === "group_epoch" && r.holders === holders,
      `an epoch with ${holders} holders`,
      { from },
    ).then((r) => r.epoch as number);
  }
}

/**
 * Passes every datagram through except those `drop` picks (a lossy link),
 * which it records in `lost`; `onSend` sees each datagram the owner sends
 * before it leaves.
 */
class LossyTransport implements DatagramTransport {
  drop: ((datagram: Datagram) => boolean) | undefined;
  onSend: ((data: Uint8Array) => void) | undefined;
  readonly lost = new Recorder<Datagram>("lost datagrams");
  constructor(readonly inner: DatagramTransport) {}
  get localAddress(): PeerAddress {
    return this.inner.localAddress;
  }
  async *[Symbol.asyncIterator](): AsyncIterator<Datagram> {
    for await (const datagram of this.inner) {
      if (this.drop?.(datagram)) {
        this.lost.push(datagram);
        continue;
      }
      yield datagram;
    }
  }
  send(data: Uint8Array, to: PeerAddress): Promise<void> {
    this.onSend?.(data);
    return this.inner.send(data, to);
  }
  close(): void {
    this.inner.close();
  }
}

/**
 * A member's link that loses the server's kick notice (NOTICE 6): the server
 * removes it while its client, unaware, keeps its key and group socket.
 */
function unawareOfKick(network: MemoryNetwork): LossyTransport {
  const link = new LossyTransport(network.bind());
  link.drop = (d) =>
    recordValue(d.data, RecordType.NOTICE)?.[1] === NoticeCode.KICKED;
  return link;
}

for (const multicast of [true, false]) {
  const mode = multicast ? "multicast downstream" : "unicast only";
  Deno.test(`group (${mode}): group-capable, plain hybrid and RSA members each receive every message once, with the right sender`, async () => {
    await using h = new Harness(serverKey);
    const rig = new GroupRig(h);
    const server = await rig.start(multicast, 0);
    const g1 = await rig.connect("g1");
    const g2 = await rig.connect("g2");
    const g3 = await rig.connect("g3");
    const plain = await rig.connect("plain", { group: false });
    const rsa = await rig.connect("rsa", { rsa: true });
    const members = [g1, g2, g3, plain, rsa];
    await rig.epoch(3);

    for (const sender of members) {
      await sender.client.send(`hello from ${sender.name}`);
    }
    for (const receiver of members) {
      for (const sender of members) {
        if (sender === receiver) continue;
        await receiver.waitMessage(`hello from ${sender.name}`, {
          sender: sender.address,
        });
      }
    }
    // A second round, then the first round's messages must still be single.
    for (const sender of members) {
      await sender.client.send(`end ${sender.name}`);
    }
    for (const receiver of members) {
      for (const sender of members) {
        if (sender !== receiver) {
          await receiver.waitMessage(`end ${sender.name}`);
        }
      }
    }
    for (const receiver of members) {
      const texts = receiver.messages().map((m) => m.text).sort();
      const expected = members.filter((m) => m !== receiver).flatMap((m) => [
        `end ${m.name}`,
        `hello from ${m.name}`,
      ]).sort();
      assert.deepEqual(texts, expected, receiver.name);
      assert.ok(
        receiver.messages().every((m) =>
          m.text.endsWith(members.find((s) => s.address === m.from)!.name)
        ),
        `${receiver.name}: a sender is wrong`,
      );
    }
    // Group members got every message as a group token, whoever sent it.
    for (const g of [g1, g2, g3]) {
      assert.equal(g.client.stats().group?.messages, 8, g.name);
      assert.equal(
        g.tap.received.count((d) =>
          hasRecord(d.data, RecordType.FERNET_MESSAGE)
        ),
        0,
        g.name,
      );
    }
    const stats = server.server.stats();
    assert.equal(stats.group?.capable, 3);
    assert.equal(stats.group?.holders, 3);
    assert.equal(stats.group?.messages, 10);
    assert.equal(stats.messagesRelayed, 10);
    assert.equal(stats.deliveries, 40);
    // Per message: the group datagram (one multicast, or one per holder
    // other than the sender), then plain and rsa per recipient; relay
    // streams that shared a datagram (coalesced) count as the datagram they
    // would have taken alone.
    const fromGroupMember = (multicast ? 1 : 2) + 2;
    const fromOther = (multicast ? 1 : 3) + 1;
    assert.equal(
      stats.datagramsPerMessage + stats.coalesced / 10,
      (6 * fromGroupMember + 4 * fromOther) / 10,
    );
    assert.equal(stats.dropped.group_capable_unauthenticated, undefined);
    // A message past the MTU: one group stream in fragments (30 KB: 36 of them).
    const big = sizedText("big", 30_000);
    await g1.client.send(big);
    for (const receiver of [g2, g3, plain, rsa]) {
      await receiver.waitMessage(big, { sender: g1.address });
    }
    const fragments = server.server.stats().group!.datagrams -
      stats.group!.datagrams;
    assert.ok(fragments >= (multicast ? 30 : 60), `${fragments} datagrams`);
  });
}

Deno.test("group: a departed member cannot open the next epoch's messages; a member that joined cannot open an epoch before it joined", async () => {
  await using h = new Harness(serverKey);
  const rig = new GroupRig(h);
  const server = await rig.start(true);
  const a = await rig.connect("a");
  const b = await rig.connect("b");
  const c = await rig.connect("c", { transport: unawareOfKick(rig.network) });
  const first = await rig.epoch(3);
  const observer = await h.socket(
    "observer",
    rig.network.joinGroup(DOWNSTREAM),
  );

  await a.client.send("before the leave");
  await c.waitMessage("before the leave", { sender: a.address });
  const oldDatagram = await observer.received.waitFor(
    (d) => hasRecord(d.data, RecordType.GROUP_MESSAGE),
    "a group datagram of the first epoch",
  );

  // c is removed by the server; its client keeps its key and its group socket.
  const logMark = server.log.mark();
  const cMark = c.events.mark();
  const cDownMark = (await rig.joined("c")).received.mark();
  assert.ok(server.server.kick(c.address));
  const second = await rig.epoch(2, logMark);
  assert.ok(second > first);
  await a.client.send("after the leave");
  await b.waitMessage("after the leave", { sender: a.address });
  const afterLeave = await (await rig.joined("c")).received.waitFor(
    (d) => hasRecord(d.data, RecordType.GROUP_MESSAGE),
    "the group datagram of the second epoch at c",
    { from: cDownMark },
  );
  assert.equal(
    decodeGroupMessageValue(
      recordValue(afterLeave.data, RecordType.GROUP_MESSAGE)!,
    )
      .epoch,
    second,
  );
  // c cannot open it: it keeps it and asks again, which the server refuses
  // (c is not a member any more).
  await server.waitDrop("unknown_source", logMark);
  assert.ok((c.client.stats().dropped.group_waiting_for_key ?? 0) >= 1);
  // The NOTICE 1 that answered makes c register again: a new epoch.
  await c.waitEvent("ready", cMark);
  await rig.epoch(3, logMark);

  // d joins: a new epoch. The first epoch's datagram, replayed to the group
  // from the server's address, is stale for d and a replay for a and b.
  const joinMark = server.log.mark();
  const d = await rig.connect("d");
  await rig.epoch(4, joinMark);
  const dMark = d.events.mark();
  await b.client.send("after the join");
  await d.waitMessage("after the join", { sender: b.address });
  // d holds its first key now; the datagram is read before the next message.
  rig.network.deliver(oldDatagram.data, SERVER, DOWNSTREAM);
  await b.client.send("sentinel");
  await d.waitMessage("sentinel", { sender: b.address });
  await a.waitMessage("sentinel", { sender: b.address });
  assert.deepEqual(d.messages(dMark).map((m) => m.text), [
    "after the join",
    "sentinel",
  ]);
  assert.equal(d.client.stats().dropped.group_epoch_stale, 1);
  // a and b hold the first epoch's key no longer than 10 s: a replay either
  // way, never delivered twice.
  for (const member of [a, b, c]) {
    assert.equal(
      member.messages().filter((m) => m.text === "before the leave").length,
      member === a ? 0 : 1,
    );
  }
  assert.equal(
    c.messages().filter((m) => m.text === "after the leave").length,
    0,
  );
});

Deno.test("group: replayed, reflected and spoofed group datagrams are dropped", async () => {
  await using h = new Harness(serverKey);
  const rig = new GroupRig(h);
  const server = await rig.start(true, 0);
  const a = await rig.connect("a");
  const b = await rig.connect("b");
  await rig.epoch(2);
  await a.client.send("once");
  await b.waitMessage("once", { sender: a.address });
  const group = await (await rig.joined("b")).received.waitFor(
    (d) => hasRecord(d.data, RecordType.GROUP_MESSAGE),
    "the group datagram at b",
  );
  // Its own echo came back to a and was dropped.
  await (await rig.joined("a")).received.waitFor(
    (d) => hasRecord(d.data, RecordType.GROUP_MESSAGE),
    "the echo at a",
  );

  // Replayed from the server's address to the group, and by unicast to b.
  rig.network.deliver(group.data, SERVER, DOWNSTREAM);
  rig.network.deliver(group.data, SERVER, b.tap.localAddress);
  // Spoofed from elsewhere to the group and to b.
  const stranger = { hostname: "127.0.0.1", port: 9 };
  rig.network.deliver(group.data, stranger, DOWNSTREAM);
  rig.network.deliver(group.data, stranger, b.tap.localAddress);
  // Reflected to the server's port from a member's address.
  const mark = server.log.mark();
  rig.network.deliver(group.data, a.tap.localAddress, SERVER);
  await server.waitDrop("unexpected_type", mark);

  await a.client.send("twice");
  await b.waitMessage("twice", { sender: a.address });
  assert.deepEqual(b.messages().map((m) => m.text), ["once", "twice"]);
  const bDrops = b.client.stats().dropped;
  assert.equal(bDrops.group_token_replayed, 2);
  assert.equal(bDrops.group_not_from_server, 1);
  assert.equal(bDrops.not_from_server, 1);
  // a: its own echoes (once, twice) and the replay of the first.
  assert.equal(a.client.stats().dropped.group_own_echo, 2);
  assert.equal(a.client.stats().dropped.group_token_replayed, 1);
  assert.equal(a.messages().length, 0);
});

Deno.test("group: a member that misses a GROUP_KEY asks again and gets every message once", async () => {
  await using h = new Harness(serverKey);
  const rig = new GroupRig(h);
  const server = await rig.start(true);
  const a = await rig.connect("a");
  const lossy = new LossyTransport(rig.network.bind());
  const b = await rig.connect("b", { transport: lossy });
  await rig.epoch(2);
  // The server logs the epoch once it has sent the keys: wait until b has
  // read its key of epoch 2, so that only later keys can be lost.
  await b.tap.received.waitFor(
    (d) => hasRecord(d.data, RecordType.GROUP_KEY),
    "b's key of epoch 2",
  );
  // b loses every GROUP_KEY until it asks again: the rekey when c joins, and
  // any repeat of its key of epoch 2 (on a busy machine a client sends its
  // registration again before the WELCOME comes, and the server answers a
  // holder's repeated registration with the current key again).
  lossy.drop = (d) => hasRecord(d.data, RecordType.GROUP_KEY);
  let askedAt: { sent: number; keysSent: number } | undefined;
  lossy.onSend = (data) => {
    if (
      !hasRecord(data, RecordType.KEEPALIVE) ||
      !hasRecord(data, RecordType.GROUP_CAPABLE)
    ) return;
    // b asks again: from here on its link loses nothing.
    lossy.drop = undefined;
    lossy.onSend = undefined;
    askedAt = {
      sent: server.tap.sent.mark(),
      keysSent: server.server.stats().group?.keysSent ?? 0,
    };
  };
  const mark = server.log.mark();
  const c = await rig.connect("c");
  await rig.epoch(3, mark);
  await lossy.lost.waitFor(
    (d) => hasRecord(d.data, RecordType.GROUP_KEY),
    "b's lost key of epoch 3",
  );
  await a.client.send("after the lost key");
  await b.waitMessage("after the lost key", { sender: a.address });
  await c.waitMessage("after the lost key", { sender: a.address });
  await a.client.send("and the next");
  await b.waitMessage("and the next", { sender: a.address });
  assert.deepEqual(b.messages().map((m) => m.text), [
    "after the lost key",
    "and the next",
  ]);
  assert.equal(b.client.stats().group?.asks, 1);
  assert.equal(
    b.client.stats().group?.epoch,
    server.server.stats().group?.epoch,
  );
  // The server answered the ask with one GROUP_KEY, to b, and counted it.
  assert.ok(askedAt, "b asked again");
  const answers = server.tap.sent.filter(
    (d) => hasRecord(d.data, RecordType.GROUP_KEY),
    askedAt.sent,
  );
  assert.deepEqual(answers.map((d) => d.to), [lossy.localAddress]);
  assert.equal(server.server.stats().group?.keysSent, askedAt.keysSent + 1);
});

Deno.test("group: a client of a server with fan-out off never gets a GROUP_KEY and is served per recipient", async () => {
  await using h = new Harness(serverKey);
  const network = new MemoryNetwork();
  const handle = await h.startServer({
    transport: network.bind(SERVER.hostname, SERVER.port),
  });
  const { server } = handle;
  const a = await h.connect("a", { transport: network.bind() });
  const b = await h.connect("b", { transport: network.bind() });
  await a.client.send("plain");
  await b.waitMessage("plain", { sender: a.address });
  assert.equal(
    b.tap.received.count((d) => hasRecord(d.data, RecordType.GROUP_KEY)),
    0,
  );
  assert.equal(server.stats().group, undefined);
  // GROUP_CAPABLE is ignored without a count. On a busy machine a client
  // sends its registration again before the WELCOME comes: once the server
  // has answered every registration sent, the repeats are all it counted.
  const registrations = a.tap.sent.count(isRegistration) +
    b.tap.sent.count(isRegistration);
  await handle.tap.sent.waitForCount(
    (d) => hasRecord(d.data, RecordType.WELCOME),
    registrations,
    "a WELCOME for every registration",
  );
  assert.deepEqual(
    server.stats().dropped,
    registrations > 2 ? { registration_repeated: registrations - 2 } : {},
  );
});

/** A client's registration stream (its key record). */
function isRegistration(d: { data: Uint8Array }): boolean {
  return hasRecord(d.data, RecordType.SYMMETRIC_KEY);
}

Deno.test("group: a new holder also gets group datagrams by unicast for a while, once each", async () => {
  await using h = new Harness(serverKey);
  const rig = new GroupRig(h);
  const server = await rig.start(true, 60_000);
  const a = await rig.connect("a");
  const b = await rig.connect("b");
  await rig.epoch(2);
  await a.client.send("while b joins");
  await b.waitMessage("while b joins", { sender: a.address });
  // b got the group datagram twice (group and unicast), delivered it once.
  const copy = await b.tap.received.waitFor(
    (d) => hasRecord(d.data, RecordType.GROUP_MESSAGE),
    "the unicast copy",
  );
  await (await rig.joined("b")).received.waitFor(
    (d) => hasRecord(d.data, RecordType.GROUP_MESSAGE),
    "the group copy",
  );
  assert.equal(copy.from.port, SERVER.port);
  await a.client.send("sentinel");
  await b.waitMessage("sentinel", { sender: a.address });
  assert.deepEqual(b.messages().map((m) => m.text), [
    "while b joins",
    "sentinel",
  ]);
  assert.equal(b.client.stats().dropped.group_token_replayed, 2);
  assert.equal(server.server.stats().group?.datagrams, 4);
});

Deno.test("group: between a holder's leave and the next epoch nothing goes out under the old key", async () => {
  await using h = new Harness(serverKey);
  const rig = new GroupRig(h);
  const server = await rig.start(true, 0);
  const a = await rig.connect("a");
  const b = await rig.connect("b");
  const c = await rig.connect("c", { transport: unawareOfKick(rig.network) });
  await rig.epoch(3);
  const cDownstream = await rig.joined("c");
  // The last epoch just began: the leave's epoch is batched (up to 1 s).
  const logMark = server.log.mark();
  const cMark = c.events.mark();
  const bTap = b.tap.received.mark();
  const cDown = cDownstream.received.mark();
  assert.ok(server.server.kick(c.address));
  await a.client.send("in the batch window");
  await b.waitMessage("in the batch window", { sender: a.address });
  // b got it in a per-recipient stream.
  assert.equal(
    b.tap.received.count(
      (d) => hasRecord(d.data, RecordType.FERNET_MESSAGE),
      bTap,
    ),
    1,
  );
  await rig.epoch(2, logMark);
  await a.client.send("next epoch");
  await b.waitMessage("next epoch", { sender: a.address });
  // c's group socket saw only the next epoch's datagram, which it cannot open.
  await cDownstream.received.waitFor(
    (d) => hasRecord(d.data, RecordType.GROUP_MESSAGE),
    "the next epoch's datagram at c",
    { from: cDown },
  );
  await server.waitDrop("unknown_source", logMark);
  assert.equal(
    cDownstream.received.count(
      (d) => hasRecord(d.data, RecordType.GROUP_MESSAGE),
      cDown,
    ),
    1,
  );
  assert.deepEqual(
    c.messages(cMark).filter((m) => m.text !== "next epoch"),
    [],
  );
  assert.equal(
    c.messages(cMark).filter((m) => m.text === "next epoch").length,
    0,
  );
});
