/**
 * A server restarted on the same port: after a graceful close (NOTICE 5) the
 * clients keep retrying the key exchange until the new server answers; after
 * a crash (no NOTICE 5) the new server answers the next keep-alive with
 * NOTICE 1 and the clients re-register. Either way messages flow again.
 */
import assert from "node:assert/strict";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { decodeNotice } from "../../lib/wire/notice.ts";
import { RecordType } from "../../lib/wire/tlv.ts";
import {
  type ClientHandle,
  Harness,
  hasRecord,
  recordValue,
} from "./_harness.ts";

const [firstKey, secondKey] = await Promise.all([
  RsaPrivateKey.generate(2048),
  RsaPrivateKey.generate(2048),
]);

/**
 * Event types from `from` on, in order, limited to the interesting ones; a
 * repeated notice counts once (the answer to the client's probe may be a
 * second NOTICE, unless the server's once-a-second gate held it back).
 */
function lifecycle(c: ClientHandle, from: number): string[] {
  return c.events.items.slice(from).flatMap((e) =>
    e.type === "notice"
      ? [`notice ${e.code}`]
      : e.type === "reconnecting" || e.type === "ready"
      ? [e.type]
      : []
  ).filter((type, i, all) => !type.startsWith("notice") || all[i - 1] !== type);
}

async function bothWays(a: ClientHandle, b: ClientHandle, label: string) {
  await a.waitPresence("join", b.address, 0);
  await a.client.send(`${label} a->b`);
  await b.client.send(`${label} b->a`);
  await b.waitMessage(`${label} a->b`, { sender: a.address });
  await a.waitMessage(`${label} b->a`, { sender: b.address });
}

Deno.test("graceful restart: NOTICE 5, clients reconnect to a new server on the same port, messages flow", async () => {
  await using h = new Harness(firstKey);
  const first = await h.startServer();
  const a = await h.connect("a");
  const b = await h.connect("b");
  await bothWays(a, b, "before");
  const marks = [a.events.mark(), b.events.mark()];

  await first.server.close();
  // NOTICE 5 on the wire to each member.
  for (const c of [a, b]) {
    const notice = await c.tap.received.waitFor(
      (d) => hasRecord(d.data, RecordType.NOTICE),
      "NOTICE 5",
    );
    assert.equal(
      decodeNotice(recordValue(notice.data, RecordType.NOTICE)!).code,
      5,
    );
  }
  await a.waitEvent("reconnecting", marks[0]);
  await b.waitEvent("reconnecting", marks[1]);
  assert.equal(a.client.ready, false);
  await first.server.close(); // a second close() is safe

  const second = await h.startServer({ port: first.port });
  assert.equal(second.port, first.port);
  await a.waitEvent("ready", marks[0]);
  await b.waitEvent("ready", marks[1]);
  assert.deepEqual(lifecycle(a, marks[0]!), [
    "notice 5",
    "reconnecting",
    "ready",
  ]);
  assert.deepEqual(lifecycle(b, marks[1]!), [
    "notice 5",
    "reconnecting",
    "ready",
  ]);

  // Presence is rebuilt on the new server and messages flow both ways.
  await a.waitPresence("join", b.address, marks[0]);
  await b.waitPresence("join", a.address, marks[1]);
  await bothWays(a, b, "after");
  assert.deepEqual(
    second.server.members().map((m) => m.address).sort(),
    [a.address, b.address].sort(),
  );
  assert.equal(a.client.stats().registrations, 2);
  assert.equal(a.client.ready, true);
  // Each message arrived once.
  assert.equal(b.messages().length, 2);
  assert.equal(a.messages().length, 2);
});

Deno.test("crash restart: no NOTICE 5; the new server answers a keep-alive with NOTICE 1 and clients re-register", async () => {
  await using h = new Harness(firstKey);
  const first = await h.startServer();
  const a = await h.connect("a", { keepaliveMs: 100 });
  const b = await h.connect("b", { keepaliveMs: 100 });
  await bothWays(a, b, "before");
  const marks = [a.events.mark(), b.events.mark()];
  const received = [a.tap.received.mark(), b.tap.received.mark()];

  // The crash, seen from outside: from now on the server sends nothing.
  first.tap.discardSends();
  await first.server.close();
  assert.equal(first.tap.discarded, 2, "the NOTICE 5s were not discarded");

  // A new process with a new key on the same port.
  const second = await h.startServer({
    port: first.port,
    privateKey: secondKey,
  });
  await a.waitEvent("ready", marks[0]);
  await b.waitEvent("ready", marks[1]);
  assert.deepEqual(lifecycle(a, marks[0]!), [
    "notice 1",
    "reconnecting",
    "ready",
  ]);
  assert.deepEqual(lifecycle(b, marks[1]!), [
    "notice 1",
    "reconnecting",
    "ready",
  ]);
  assert.equal(a.client.serverFingerprint, secondKey.publicKey.fingerprint);

  // The NOTICE 1 was no larger than the keep-alive that caused it.
  for (const [i, c] of [a, b].entries()) {
    const notices = c.tap.received.filter(
      (d) => hasRecord(d.data, RecordType.NOTICE),
      received[i],
    );
    assert.ok(notices.length >= 1);
    const keepalive = c.tap.sent.items.find((d) =>
      hasRecord(d.data, RecordType.KEEPALIVE)
    )!;
    for (const n of notices) {
      assert.equal(
        decodeNotice(recordValue(n.data, RecordType.NOTICE)!).code,
        1,
      );
      assert.ok(n.data.length <= keepalive.data.length);
    }
  }
  assert.ok((second.server.stats().dropped.unknown_source ?? 0) >= 2);

  await a.waitPresence("join", b.address, marks[0]);
  await b.waitPresence("join", a.address, marks[1]);
  await bothWays(a, b, "after");
  assert.deepEqual(
    second.server.members().map((m) => m.address).sort(),
    [a.address, b.address].sort(),
  );
  assert.equal(b.messages().length, 2);
  assert.equal(a.messages().length, 2);
});

Deno.test("late restart: the new server comes up after a whole reconnect attempt failed; the client keeps retrying and rejoins", async () => {
  await using h = new Harness(firstKey);
  const first = await h.startServer();
  // 7 tries from 100 ms to 1 s apart: a whole key exchange gives up after
  // about 4.5 s, time for a WELCOME even from RSA threads slowed by a busy
  // machine (they run at the lowest priority). The waits below are for
  // events, with a safety bound that leaves room for that pace.
  const retry = { retryAttempts: 7, retryInitialMs: 100, retryMaxMs: 1_000 };
  const slow = { timeoutMs: 30_000 };
  const a = await h.connect("a", retry);
  const b = await h.connect("b", retry);
  await bothWays(a, b, "before");
  const marks = [a.events.mark(), b.events.mark()];

  await first.server.close();
  // Both clients give up one whole key exchange (7 tries) and go on.
  await a.log.waitFor(
    (r) => r.event === "reconnect_failed",
    "a's failed reconnect",
    slow,
  );
  await b.log.waitFor(
    (r) => r.event === "reconnect_failed",
    "b's failed reconnect",
    slow,
  );

  const second = await h.startServer({ port: first.port });
  for (const [i, c] of [a, b].entries()) {
    await c.events.waitFor((e) => e.type === "ready", `${c.name} ready`, {
      from: marks[i],
      ...slow,
    });
  }
  assert.deepEqual(lifecycle(a, marks[0]!), [
    "notice 5",
    "reconnecting",
    "ready",
  ]);
  await a.waitPresence("join", b.address, marks[0]);
  await b.waitPresence("join", a.address, marks[1]);
  await bothWays(a, b, "after");
  assert.equal(second.server.members().length, 2);
});
