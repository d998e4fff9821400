/**
 * Silence the server caused is not the members' (issue 17 items 6(b) and
 * 6(c)): after a stall (the presence sweep ran 40 s late, as after SIGSTOP)
 * nobody is removed before the queued datagrams have been read; while the
 * server itself drops datagrams (its event loop saturated, the kernel
 * dropping on its socket) silent members' windows are extended, a bounded
 * number of times, and counted.
 *
 * The server's clock is injected and moved by the test; the sweep is called
 * directly (the server's own timer sweeps too, on the frozen clock: no-ops).
 */
import assert from "node:assert/strict";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { MemoryNetwork } from "../../lib/runtime/memory.ts";
import { type ClientHandle, Harness } from "./_harness.ts";
import { frozenClock, StubLoad } from "../_support/stubs.ts";

const serverKey = await RsaPrivateKey.generate(2048);
const TIMEOUT_MS = 5_000;

function present(server: { members(): { address: string }[] }): string[] {
  return server.members().map((m) => m.address).sort();
}

/** Waits until the server has accepted one more keep-alive of `c` (its answer reached `c`). */
async function heard(c: ClientHandle): Promise<void> {
  await c.log.waitFor(
    (r) => r.event === "keepalive_answered",
    `a keep-alive answer to ${c.name}`,
    { from: c.log.mark() },
  );
}

/** A server on a memory network with a frozen clock and a 5 s member timeout. */
async function clockedServer(
  h: Harness,
  options: Parameters<Harness["startServer"]>[0] = {},
) {
  const clock = frozenClock();
  const network = new MemoryNetwork();
  const handle = await h.startServer({
    transport: network.bind(),
    clientTimeoutMs: TIMEOUT_MS,
    now: clock.now,
    ...options,
  });
  /** A member that keeps alive every `keepaliveMs`. */
  const member = (name: string, keepaliveMs: number) =>
    h.connect(name, { transport: network.bind(), keepaliveMs });
  return { ...handle, clock, member };
}

Deno.test("after a 40 s stall no member is removed before it could be read again; one that stays silent is removed after a whole timeout", async () => {
  await using h = new Harness(serverKey);
  const { server, log, clock, member } = await clockedServer(h);
  const a = await member("a", 100);
  const b = await member("b", 100);
  const c = await member("c", 3_600_000); // silent from here on
  const everyone = [a.address, b.address, c.address].sort();

  // The process stood still for 40 s (from before its first sweep); the
  // first sweep after it runs before any queued datagram is read.
  clock.advance(40_000);
  server.tick();
  assert.deepEqual(present(server), everyone, "members removed after a stall");
  assert.equal(server.stats().presence.stalls, 1);
  assert.ok(log.items.some((r) => r.event === "stall"));

  // Sweeps on time from now on: a and b are heard, c is not.
  for (let elapsed = 0; elapsed <= TIMEOUT_MS; elapsed += 1000) {
    await Promise.all([heard(a), heard(b)]);
    clock.advance(1000);
    server.tick();
  }
  assert.deepEqual(present(server), [a.address, b.address].sort());
  assert.ok(
    log.items.some((r) =>
      r.event === "leave" && r.client === c.address && r.reason === "timeout"
    ),
  );
  assert.equal(server.stats().presence.stalls, 1);
});

Deno.test("while the server is overloaded a silent member's window is extended (counted), at most 3 times in a row", async () => {
  const load = new StubLoad();
  await using h = new Harness(serverKey);
  const { server, log, clock, member } = await clockedServer(h, { load });
  const a = await member("a", 3_600_000);
  server.tick();
  load.overloaded = true;
  // Past its timeout while the server could not keep up: kept, 3 times.
  const sweeps = (n: number) => {
    for (let i = 0; i < n; i++) {
      clock.advance(1000);
      server.tick();
    }
  };
  sweeps(6);
  assert.deepEqual(present(server), [a.address]);
  assert.equal(server.stats().presence.timeoutsExtended, 1);
  sweeps(6 * 2);
  assert.deepEqual(present(server), [a.address]);
  assert.equal(server.stats().presence.timeoutsExtended, 3);
  assert.equal(
    log.count((r) => r.event === "timeout_extended" && r.client === a.address),
    3,
  );
  // A fourth window under lasting overload: removed after all.
  sweeps(6);
  assert.deepEqual(present(server), []);
  assert.equal(server.stats().presence.timeoutsExtended, 3);
});

Deno.test("kernel drops on the server's socket extend silent members' windows and show in stats; without new drops they are judged", async () => {
  let kernelDrops = 0;
  await using h = new Harness(serverKey);
  const { server, clock, member } = await clockedServer(h, {
    kernelDrops: () => kernelDrops,
  });
  const a = await member("a", 3_600_000);
  server.tick();
  assert.equal(server.stats().kernelDropped, 0);
  for (let i = 0; i < 6; i++) {
    kernelDrops += 100; // the socket overflows while a's keep-alives are due
    clock.advance(1000);
    server.tick();
  }
  assert.equal(server.stats().kernelDropped, 600);
  assert.deepEqual(present(server), [a.address]);
  assert.equal(server.stats().presence.timeoutsExtended, 1);
  // The kernel drops nothing more: a whole window later a is judged.
  for (let i = 0; i < 6; i++) {
    clock.advance(1000);
    server.tick();
  }
  assert.deepEqual(present(server), []);
});
