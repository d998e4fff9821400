/**
 * The relay server's error paths: start() leaves nothing running when it
 * fails half way (the op sanitizer sees a timer left behind); close()
 * closes the transport and settles closed() and status() even when a part
 * (here the federation link) fails to close.
 */
import assert from "node:assert/strict";
import { FernetKey } from "../../lib/crypto/fernet.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { MemoryNetwork } from "../../lib/runtime/memory.ts";
import {
  Federation,
  type FederationLink,
  type FederationLinkHandlers,
} from "../../lib/relay/server/federation.ts";
import { RelayServer } from "../../lib/relay/server/server.ts";
import { WAIT_TIMEOUT_MS, withTimeout } from "../_support/recorder.ts";

const serverKey = await RsaPrivateKey.generate(2048);

/** A link whose start or close fails when told to. */
class FaultyLink implements FederationLink {
  connected = true;
  constructor(
    readonly failStart: boolean,
    readonly failClose: boolean,
  ) {}
  start(_handlers: FederationLinkHandlers): void {
    if (this.failStart) throw new Error("link cannot start");
  }
  publish(_payload: Uint8Array): void {}
  close(): Promise<void> {
    return this.failClose
      ? Promise.reject(new Error("link cannot close"))
      : Promise.resolve();
  }
}

async function federation(link: FederationLink): Promise<Federation> {
  return new Federation({
    link,
    clusterKey: await FernetKey.generate("node"),
  });
}

Deno.test("start() that fails while attaching the federation leaves no timer running and closes the transport", async () => {
  const network = new MemoryNetwork();
  const transport = network.bind("127.0.0.1", 7100);
  await assert.rejects(
    RelayServer.start({
      transport,
      privateKey: serverKey,
      rsaThreads: 0,
      federation: await federation(new FaultyLink(true, false)),
    }),
    /link cannot start/,
  );
  // The transport was handed to the server: a failed start must close it.
  await assert.rejects(
    transport.send(new Uint8Array(1), { hostname: "127.0.0.1", port: 1 }),
    Deno.errors.BadResource,
  );
  // (Deno's op sanitizer also reports the presence ticker left running.)
});

Deno.test("close() closes the transport and settles closed() even when the federation fails to close", async () => {
  const network = new MemoryNetwork();
  const transport = network.bind("127.0.0.1", 7101);
  const server = await RelayServer.start({
    transport,
    privateKey: serverKey,
    rsaThreads: 0,
    federation: await federation(new FaultyLink(false, true)),
  });
  const status = server.status();
  await server.close().catch(() => {});
  // closed() is documented to resolve when the server has stopped.
  await withTimeout(server.closed(), "closed() to resolve", WAIT_TIMEOUT_MS);
  const next = await withTimeout(
    status.next(),
    "status() to end",
    WAIT_TIMEOUT_MS,
  );
  assert.equal(next.done, true);
  await assert.rejects(
    transport.send(new Uint8Array(1), { hostname: "127.0.0.1", port: 1 }),
    Deno.errors.BadResource,
  );
});
