/**
 * The batch-syscall transport (lib/runtime/udp_mmsg.ts) on 127.0.0.1: round
 * trips with source addresses, a drain per wake-up, one sendmmsg per turn,
 * close() ending a pending receive, bind errors, and a relay on it serving
 * two clients on the default transport. Loopback only.
 */
import assert from "node:assert/strict";
import { UdpMmsgError, UdpMmsgTransport } from "../../lib/runtime/udp_mmsg.ts";
import { UdpTransport } from "../../lib/runtime/udp.ts";
import { KernelDropMeter } from "../../lib/runtime/kernel_drops.ts";
import type { Datagram } from "../../lib/runtime/transport.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { Harness, LOOPBACK } from "../relay/_harness.ts";

const bind = () => UdpMmsgTransport.bind({ hostname: LOOPBACK, port: 0 });

Deno.test("UdpMmsgTransport: datagrams round-trip both ways with the right source addresses", async () => {
  const mmsg = await bind();
  const peer = await UdpTransport.bind({ hostname: LOOPBACK, port: 0 });
  const fromMmsg = peer[Symbol.asyncIterator]();
  const toMmsg = mmsg[Symbol.asyncIterator]();
  try {
    assert.equal(mmsg.localAddress.hostname, LOOPBACK);
    assert.ok(mmsg.localAddress.port > 0);
    await peer.send(new Uint8Array([1, 2, 3]), mmsg.localAddress);
    const received = (await toMmsg.next()).value as Datagram;
    assert.deepEqual([...received.data], [1, 2, 3]);
    assert.deepEqual(received.from, peer.localAddress);
    await mmsg.send(new Uint8Array([4, 5]), received.from);
    const answer = (await fromMmsg.next()).value as Datagram;
    assert.deepEqual([...answer.data], [4, 5]);
    assert.deepEqual(answer.from, mmsg.localAddress);
  } finally {
    mmsg.close();
    peer.close();
    await toMmsg.return?.();
    await fromMmsg.return?.();
  }
});

Deno.test("UdpMmsgTransport.receiveBatches: datagrams queued before the reader wakes come in one recvmmsg, in order", async () => {
  const mmsg = await bind();
  const sender = await UdpTransport.bind({ hostname: LOOPBACK, port: 0 });
  const batches = mmsg.receiveBatches();
  try {
    // Loopback delivery happens inside the send call: all are queued first.
    for (let i = 0; i < 20; i++) {
      await sender.send(new Uint8Array([i]), mmsg.localAddress);
    }
    const before = mmsg.stats().recvmmsgCalls;
    const batch = (await batches.next()).value as readonly Datagram[];
    assert.deepEqual(
      batch.map((d) => d.data[0]),
      Array.from({ length: 20 }, (_, i) => i),
    );
    assert.equal(mmsg.stats().recvmmsgCalls - before, 1);
    assert.equal(mmsg.stats().blockingReceives, 0);
    for (const datagram of batch) {
      assert.deepEqual(datagram.from, sender.localAddress);
    }
  } finally {
    mmsg.close();
    sender.close();
    await batches.return?.(undefined);
  }
});

Deno.test("UdpMmsgTransport.send: the sends of one turn leave in one sendmmsg, all arrive, in order", async () => {
  const mmsg = await bind();
  const receiver = await UdpMmsgTransport.bind({
    hostname: LOOPBACK,
    port: 0,
    batchSize: 64,
  });
  const batches = receiver.receiveBatches();
  try {
    const sent = Array.from(
      { length: 50 },
      (_, i) => mmsg.send(new Uint8Array([i, 0xaa]), receiver.localAddress),
    );
    await Promise.all(sent);
    assert.equal(mmsg.stats().sendmmsgCalls, 1);
    assert.equal(mmsg.stats().datagramsSent, 50);
    const got: number[] = [];
    while (got.length < 50) {
      const batch = (await batches.next()).value as readonly Datagram[];
      for (const d of batch) {
        assert.equal(d.data[1], 0xaa);
        assert.deepEqual(d.from, mmsg.localAddress);
        got.push(d.data[0]);
      }
    }
    assert.deepEqual(got, Array.from({ length: 50 }, (_, i) => i));
  } finally {
    mmsg.close();
    receiver.close();
    await batches.return?.(undefined);
  }
});

Deno.test("UdpMmsgTransport: the kernel drop meter finds its socket; 3000 sends of one turn go out in a few sendmmsg calls and overflow an unread socket", async () => {
  const mmsg = await bind();
  const target = await UdpMmsgTransport.bind({ hostname: LOOPBACK, port: 0 });
  try {
    const meter = new KernelDropMeter(target.localAddress.port);
    assert.equal(meter.read(), 0);
    const datagram = new Uint8Array(1200);
    // Far more than a default receive buffer holds; nothing reads it.
    await Promise.all(
      Array.from(
        { length: 3000 },
        () => mmsg.send(datagram, target.localAddress),
      ),
    );
    // A call takes what fits the 1 MiB send arena: 873 of 1,200 bytes.
    const calls = mmsg.stats().sendmmsgCalls;
    assert.ok(calls >= 4 && calls <= 8, JSON.stringify(mmsg.stats()));
    assert.equal(mmsg.stats().datagramsSent, 3000);
    const dropped = meter.read();
    assert.ok(dropped !== undefined && dropped > 0, `dropped: ${dropped}`);
  } finally {
    mmsg.close();
    target.close();
  }
});

Deno.test("UdpMmsgTransport: a datagram larger than receiveBufferSize is truncated to it, and the next one is whole", async () => {
  const mmsg = await UdpMmsgTransport.bind({
    hostname: LOOPBACK,
    port: 0,
    receiveBufferSize: 8,
  });
  const sender = await UdpTransport.bind({ hostname: LOOPBACK, port: 0 });
  const datagrams = mmsg[Symbol.asyncIterator]();
  try {
    await sender.send(new Uint8Array(20).fill(7), mmsg.localAddress);
    await sender.send(new Uint8Array([1, 2]), mmsg.localAddress);
    const first = (await datagrams.next()).value as Datagram;
    assert.deepEqual([...first.data], new Array(8).fill(7));
    const second = (await datagrams.next()).value as Datagram;
    assert.deepEqual([...second.data], [1, 2]);
  } finally {
    mmsg.close();
    sender.close();
    await datagrams.return?.();
  }
});

Deno.test("UdpMmsgTransport.close: ends a receive blocked on its thread, and later sends reject", async () => {
  const mmsg = await bind();
  const batches = mmsg.receiveBatches();
  const pending = batches.next();
  // The first next() runs to the blocking recvmmsg (the socket is empty).
  assert.equal(mmsg.stats().blockingReceives, 1);
  mmsg.close();
  mmsg.close();
  assert.equal((await pending).done, true);
  await assert.rejects(
    mmsg.send(new Uint8Array(1), { hostname: LOOPBACK, port: 9 }),
    Deno.errors.BadResource,
  );
});

Deno.test("UdpMmsgTransport: a bad destination rejects its send only; a taken port and a non-IPv4 address are refused", async () => {
  const mmsg = await bind();
  try {
    await assert.rejects(
      mmsg.send(new Uint8Array(1), { hostname: "::1", port: 5 }),
      UdpMmsgError,
    );
    await assert.rejects(
      UdpMmsgTransport.bind({
        hostname: LOOPBACK,
        port: mmsg.localAddress.port,
      }),
      Deno.errors.AddrInUse,
    );
    await assert.rejects(
      UdpMmsgTransport.bind({ hostname: "::1", port: 0 }),
      /IPv4 literals only/,
    );
    await assert.rejects(
      UdpMmsgTransport.bind({ hostname: "127.0.0.1", port: 0 })
        .then((t) =>
          t.send(new Uint8Array(1), { hostname: "127.0.0.1", port: 0 }).finally(
            () => t.close(),
          )
        ),
      UdpMmsgError,
    );
  } finally {
    mmsg.close();
  }
});

Deno.test("UdpMmsgTransport: a relay on it delivers a message from one client on UdpTransport to another, once", async () => {
  const privateKey = await RsaPrivateKey.generate(2048);
  await using harness = new Harness(privateKey);
  const transport = await bind();
  await harness.startServer({ transport });
  const alice = await harness.connect("alice");
  const bob = await harness.connect("bob");
  await alice.waitPresence("join", bob.address);
  await alice.client.send("hello over recvmmsg");
  const message = await bob.waitMessage("hello over recvmmsg");
  assert.equal(message.type === "message" && message.from, alice.address);
  await bob.client.send("and back");
  await alice.waitMessage("and back");
  assert.equal(
    bob.messages().filter((m) => m.text === "hello over recvmmsg").length,
    1,
  );
  assert.ok(transport.stats().sendmmsgCalls > 0);
  assert.ok(transport.stats().recvmmsgCalls > 0);
});
