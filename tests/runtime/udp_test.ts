/**
 * UdpTransport and MemoryTransport are disposable: `using` closes them when
 * the block ends (the port is free again; Deno's resource sanitizer would
 * also see a socket left open).
 */
import assert from "node:assert/strict";
import { UdpTransport } from "../../lib/runtime/udp.ts";
import { MemoryNetwork } from "../../lib/runtime/memory.ts";
import type { PeerAddress } from "../../lib/wire/address.ts";

Deno.test("a UdpTransport bound with `using` is closed at the end of its block: its port can be bound again", async () => {
  let address: PeerAddress;
  {
    using transport = await UdpTransport.bind({
      hostname: "127.0.0.1",
      port: 0,
    });
    address = transport.localAddress;
    await assert.rejects(
      UdpTransport.bind({ hostname: "127.0.0.1", port: address.port }),
      Deno.errors.AddrInUse,
    );
  }
  using again = await UdpTransport.bind(address);
  assert.equal(again.localAddress.port, address.port);
});

Deno.test("a MemoryTransport bound with `using` is closed at the end of its block: sending on it then fails", async () => {
  const network = new MemoryNetwork();
  let escaped;
  {
    using transport = network.bind("127.0.0.1", 7001);
    escaped = transport;
  }
  await assert.rejects(
    escaped.send(new Uint8Array(1), { hostname: "127.0.0.1", port: 7002 }),
  );
});
