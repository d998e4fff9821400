/**
 * KernelDropMeter on a real loopback socket: datagrams the kernel drops
 * because nobody reads the socket are counted (issue 17 item 6(a)).
 */
import assert from "node:assert/strict";
import { KernelDropMeter } from "../../lib/runtime/kernel_drops.ts";
import { UdpTransport } from "../../lib/runtime/udp.ts";
import { LOOPBACK } from "./_harness.ts";

const linux = Deno.build.os === "linux";
if (!linux) console.log("kernel_drops_test.ts: ignored: needs Linux /proc");

Deno.test({
  name: "KernelDropMeter counts what the kernel dropped on an unread socket",
  ignore: !linux,
  async fn() {
    const target = await UdpTransport.bind({ hostname: LOOPBACK, port: 0 });
    const sender = await UdpTransport.bind({ hostname: LOOPBACK, port: 0 });
    try {
      const meter = new KernelDropMeter(target.localAddress.port);
      assert.equal(meter.read(), 0);
      // Far more than a default receive buffer holds; nothing reads it.
      const datagram = new Uint8Array(1200);
      for (let i = 0; i < 4000; i++) {
        await sender.send(datagram, target.localAddress);
      }
      const dropped = meter.read();
      assert.ok(dropped !== undefined && dropped > 0, `dropped: ${dropped}`);
      assert.equal(
        new KernelDropMeter(1).read(),
        undefined,
        "no socket on port 1",
      );
    } finally {
      target.close();
      sender.close();
    }
  },
});
