/**
 * The drain per wake-up: a UdpTransport hands every datagram its socket
 * already holds to one batch (loopback only).
 */
import assert from "node:assert/strict";
import { UdpTransport } from "../../lib/runtime/udp.ts";
import type { Datagram } from "../../lib/runtime/transport.ts";
import { LOOPBACK } from "./_harness.ts";

Deno.test("UdpTransport.receiveBatches: ten datagrams already queued on the socket come as one batch, in order", async () => {
  const receiver = await UdpTransport.bind({ hostname: LOOPBACK, port: 0 });
  const sender = await UdpTransport.bind({ hostname: LOOPBACK, port: 0 });
  const batches = receiver.receiveBatches();
  try {
    // Loopback delivery happens inside the send call: all ten are queued
    // on the receiver's socket before it reads anything.
    for (let i = 0; i < 10; i++) {
      await sender.send(new Uint8Array([i]), receiver.localAddress);
    }
    const first = await batches.next();
    assert.equal(first.done, false);
    const batch = first.value as readonly Datagram[];
    assert.deepEqual(batch.map((d) => d.data[0]), [
      0,
      1,
      2,
      3,
      4,
      5,
      6,
      7,
      8,
      9,
    ]);
    for (const datagram of batch) {
      assert.equal(datagram.from.port, sender.localAddress.port);
    }
  } finally {
    receiver.close();
    sender.close();
    await batches.return?.(undefined);
  }
});
