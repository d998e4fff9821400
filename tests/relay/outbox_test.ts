/**
 * The client's outbox (issue 17 item 6d): what a member sends while it is
 * not registered (the server down, a NOTICE 5 being checked, re-registering)
 * waits in a bounded outbox and goes out in order once it is registered
 * again; what overflows the outbox, or is still there when the client
 * closes, is reported to the sender (an `undelivered` event), never lost in
 * silence. Over the in-memory network.
 */
import assert from "node:assert/strict";
import { UndeliveredError } from "../../lib/errors.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { MemoryNetwork } from "../../lib/runtime/memory.ts";
import type { ClientEvent } from "../../lib/relay/client/client.ts";
import { noticeRecord } from "../../lib/wire/notice.ts";
import { encodeRecords } from "../../lib/wire/tlv.ts";
import {
  type ClientHandle,
  Harness,
  type ServerHandle,
  sizedText,
  WAIT_TIMEOUT_MS,
} from "./_harness.ts";
import { withTimeout } from "../_support/recorder.ts";

const serverKey = await RsaPrivateKey.generate(2048);

/**
 * `a.client.send(message)`, failing the test when it does not settle in
 * time (a send that waits for the server instead of queueing).
 */
function send(
  c: ClientHandle,
  message: string | Uint8Array,
): Promise<string> {
  return withTimeout(
    c.client.send(message),
    `send() by ${c.name} to return`,
    WAIT_TIMEOUT_MS,
  );
}

type Undelivered = Extract<ClientEvent, { type: "undelivered" }>;

function undelivered(c: ClientHandle, from = 0): Undelivered[] {
  return c.events.filter(
    (e) => e.type === "undelivered",
    from,
  ) as Undelivered[];
}

/** Texts `b` received from `a` (from event index `from` on). */
function textsFrom(b: ClientHandle, a: ClientHandle, from = 0): string[] {
  return b.messages(from).filter((m) => m.from === a.address).map((m) =>
    m.text
  );
}

/** A server on the network and two members that see each other; the clients check a NOTICE 5 within 200 ms. */
async function group(h: Harness, network: MemoryNetwork) {
  const server = await h.startServer({ transport: network.bind() });
  const options = { probeTimeoutMs: 200 };
  const a = await h.connect("a", { transport: network.bind(), ...options });
  const b = await h.connect("b", { transport: network.bind(), ...options });
  await a.waitPresence("join", b.address);
  await b.waitPresence("join", a.address);
  return { server, a, b };
}

/** Closes `server` (NOTICE 5) and waits until `c` re-registers in vain. */
async function serverDown(server: ServerHandle, c: ClientHandle) {
  const from = c.events.mark();
  await server.server.close();
  await c.waitEvent("reconnecting", from);
}

Deno.test("messages sent while the server is down arrive once after it comes back, in order", async () => {
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  const { server, a, b } = await group(h, network);
  const address = server.address;
  const marks = { a: a.events.mark(), b: b.events.mark() };

  await server.server.close();
  // The NOTICE 5 arrived: the client checks it with a probe, and holds what
  // is sent meanwhile (the server may be gone).
  await a.waitEvent("notice", marks.a);
  const outcomes = [];
  for (const text of ["one", "two", "three"]) {
    outcomes.push(await send(a, text));
  }
  await a.waitEvent("reconnecting", marks.a);
  for (const text of ["four", sizedText("five", 3000)]) {
    outcomes.push(await send(a, text));
  }
  assert.deepEqual(outcomes, Array(5).fill("queued"));
  assert.equal(a.client.stats().outbox, 5);
  // a stays away until b is back, so that b is there to receive.
  a.tap.discardSends();

  await h.startServer({
    transport: network.bind(address.hostname, address.port),
  });
  await b.waitEvent("ready", marks.b);
  const fromB = b.events.mark();
  a.tap.resumeSends();
  await a.waitEvent("ready", marks.a);
  await b.waitMessage(sizedText("five", 3000), { sender: a.address });
  assert.equal(await send(a, "six"), "sent");
  await b.waitMessage("six", { sender: a.address });

  assert.deepEqual(textsFrom(b, a, fromB), [
    "one",
    "two",
    "three",
    "four",
    sizedText("five", 3000),
    "six",
  ]);
  assert.equal(a.client.stats().outbox, 0);
  assert.deepEqual(undelivered(a), []);
});

Deno.test("an outbox overflow reports exactly the overflowed messages; the rest arrive in order", async () => {
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  const server = await h.startServer({ transport: network.bind() });
  const a = await h.connect("a", {
    transport: network.bind(),
    probeTimeoutMs: 200,
    maxOutboxMessages: 3,
    maxOutboxBytes: 64,
  });
  const b = await h.connect("b", { transport: network.bind() });
  await a.waitPresence("join", b.address);
  const marks = { a: a.events.mark(), b: b.events.mark() };
  await serverDown(server, a);

  const sends: [string, string][] = [];
  for (const text of ["m1", "m2", "x".repeat(61), "m3", "m4", "m5"]) {
    try {
      sends.push([text, await send(a, text)]);
    } catch (error) {
      assert.ok(error instanceof UndeliveredError, String(error));
      assert.equal(error.reason, "outbox_full");
      sends.push([text, "refused"]);
    }
  }
  assert.deepEqual(sends, [
    ["m1", "queued"],
    ["m2", "queued"],
    ["x".repeat(61), "refused"], // 4 + 61 bytes: over 64
    ["m3", "queued"],
    ["m4", "refused"], // a fourth message
    ["m5", "refused"],
  ]);
  assert.deepEqual(
    undelivered(a, marks.a).map((e) => [e.reason, e.text]),
    [
      ["outbox_full", "x".repeat(61)],
      ["outbox_full", "m4"],
      ["outbox_full", "m5"],
    ],
  );

  a.tap.discardSends();
  await h.startServer({
    transport: network.bind(server.address.hostname, server.address.port),
  });
  await b.waitEvent("ready", marks.b);
  const fromB = b.events.mark();
  a.tap.resumeSends();
  await a.waitEvent("ready", marks.a);
  await b.waitMessage("m3", { sender: a.address });
  assert.equal(await send(a, "after"), "sent");
  await b.waitMessage("after", { sender: a.address });
  assert.deepEqual(textsFrom(b, a, fromB), ["m1", "m2", "m3", "after"]);
  assert.equal(a.client.stats().undelivered, 3);
});

Deno.test("close() with messages in the outbox reports each of them, in order", async () => {
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  const { server, a } = await group(h, network);
  const from = a.events.mark();
  await serverDown(server, a);
  assert.equal(await send(a, "first"), "queued");
  assert.equal(await send(a, new Uint8Array([0xff, 0x00])), "queued");
  await a.client.close();
  const reported = undelivered(a, from);
  assert.deepEqual(reported.map((e) => [e.reason, [...e.data]]), [
    ["closed", [..."first"].map((c) => c.charCodeAt(0))],
    ["closed", [0xff, 0x00]],
  ]);
  assert.equal(reported[0].text, "first");
  assert.deepEqual(a.client.stats().outbox, 0);
  assert.equal(a.client.stats().undelivered, 2);
  await assert.rejects(a.client.send("late"), /closed/);
  assert.equal(undelivered(a, from).length, 2);
});

Deno.test("a message sent after the server died, before the client noticed, is reported unconfirmed; one the server answered a keep-alive after is not", async () => {
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  const server = await h.startServer({ transport: network.bind() });
  const a = await h.connect("a", {
    transport: network.bind(),
    keepaliveMs: 100,
  });
  const b = await h.connect("b", { transport: network.bind() });
  await a.waitPresence("join", b.address);
  assert.equal(await send(a, "before"), "sent");
  await b.waitMessage("before", { sender: a.address });
  // Keep-alives sent after it are answered: the server was there.
  await a.log.waitForCount(
    (r) => r.event === "keepalive_answered",
    2,
    "keep-alive answers after the message",
    { from: a.log.mark() },
  );

  // A crash, seen from outside: the server sends nothing from now on.
  server.tap.discardSends();
  await server.server.close();
  const from = a.events.mark();
  assert.equal(await send(a, "after the crash"), "sent");
  // No answer to 3 keep-alives: the server is unreachable.
  await a.waitEvent("reconnecting", from);
  assert.deepEqual(
    undelivered(a).map((e) => [e.reason, e.text]),
    [["unconfirmed", "after the crash"]],
  );
  assert.equal(a.client.stats().undelivered, 1);
});

Deno.test("confirm() answers only once what a probe held has gone out; a NOTICE within a second of an answer holds nothing", async () => {
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  const { server, a, b } = await group(h, network);
  const spoofNotice1 = () =>
    network.deliver(
      encodeRecords([noticeRecord(1, 1200)!]),
      server.address,
      a.tap.localAddress,
    );
  const fromB = b.events.mark();

  // A NOTICE 1 with no answer in the last second: the probe goes out at
  // once, and what is sent meanwhile waits for its answer.
  const marked = a.events.mark();
  spoofNotice1();
  await a.waitEvent("notice", marked);
  const texts = Array.from({ length: 20 }, (_, i) => `held ${i}`);
  const outcomes = [];
  for (const text of texts) outcomes.push(await send(a, text));
  assert.ok(outcomes.includes("queued"), `outcomes ${outcomes}`);
  assert.equal(await a.client.confirm(), true);
  assert.equal(a.client.stats().outbox, 0, "confirmed before all went out");
  await b.waitMessage(texts.at(-1)!, { sender: a.address, from: fromB });
  assert.deepEqual(textsFrom(b, a, fromB), texts);

  // The probe was answered just now: a NOTICE 1 now is probed only when
  // that second is over, and holds nothing meanwhile (a spoofed flood
  // cannot keep a member's messages waiting).
  const again = a.events.mark();
  spoofNotice1();
  await a.waitEvent("notice", again);
  assert.equal(await send(a, "not held"), "sent");
  await b.waitMessage("not held", { sender: a.address, from: fromB });
  assert.deepEqual(undelivered(a), []);
});
