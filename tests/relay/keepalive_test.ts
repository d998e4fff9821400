/**
 * The server answers keep-alives (protocol.md section 10; issue 17 items
 * 6(e) and 9): a hybrid member's KEEPALIVE is answered with a token of the
 * empty plaintext under its key; the client accepts only answers that pass
 * every token check; NOTICE 1 triggers a probe, not a re-registration, so a
 * spoofed NOTICE 1 flood costs nothing; a real loss of membership (kick,
 * an unreachable server) still brings the client back; a v1 server that
 * never answers keeps its members. Keep-alives are rate-limited per member
 * before any crypto, and records acted on per datagram are bounded.
 *
 * In-memory network: spoofed sources are just a `deliver` with another
 * `from`.
 */
import assert from "node:assert/strict";
import { FernetKey } from "../../lib/crypto/fernet.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import {
  MemoryNetwork,
  type MemoryTransport,
} from "../../lib/runtime/memory.ts";
import type { Datagram } from "../../lib/runtime/transport.ts";
import { NoticeCode } from "../../lib/wire/notice.ts";
import { encodeRecords, RecordType } from "../../lib/wire/tlv.ts";
import { MAX_RECORDS_PER_STREAM } from "../../lib/wire/messages.ts";
import {
  type ClientHandle,
  type ConnectOptions,
  Harness,
  hasRecord,
  recordsOf,
} from "./_harness.ts";

const serverKey = await RsaPrivateKey.generate(2048);
const encoder = new TextEncoder();

/** A NOTICE record datagram (what a spoofer sends as the server). */
function notice(code: number): Uint8Array {
  return encodeRecords([{
    type: RecordType.NOTICE,
    value: new Uint8Array([0, code, ...encoder.encode("unknown client")]),
  }]);
}

/** A KEEPALIVE record datagram with `value`. */
function keepalive(value: Uint8Array): Uint8Array {
  return encodeRecords([{ type: RecordType.KEEPALIVE, value }]);
}

/**
 * A transport of `network` whose inbound KEEPALIVE datagrams are lost while
 * `lose.keepaliveAnswers` holds (a v1 server, or a lossy path).
 */
function lossyTransport(
  network: MemoryNetwork,
): { transport: MemoryTransport; lose: { keepaliveAnswers: boolean } } {
  const transport = network.bind();
  const lose = { keepaliveAnswers: false };
  const enqueue = transport.enqueue.bind(transport);
  transport.enqueue = (datagram: Datagram) => {
    if (
      lose.keepaliveAnswers && hasRecord(datagram.data, RecordType.KEEPALIVE)
    ) return;
    enqueue(datagram);
  };
  return { transport, lose };
}

/** Waits until `c` has accepted `n` more authenticated keep-alive answers. */
async function answers(c: ClientHandle, n = 1): Promise<void> {
  const answered = (r: { event?: unknown }) => r.event === "keepalive_answered";
  await c.log.waitForCount(answered, n, "keep-alive answers", {
    from: c.log.mark(),
  });
}

async function setup(
  serverOptions: Parameters<Harness["startServer"]>[0] = {},
  clientOptions: ConnectOptions = {},
) {
  const network = new MemoryNetwork();
  const h = new Harness(serverKey);
  const server = await h.startServer({
    transport: network.bind(),
    ...serverOptions,
  });
  const a = lossyTransport(network);
  const b = lossyTransport(network);
  const connect = (name: string, t: ReturnType<typeof lossyTransport>) =>
    h.connect(name, {
      transport: t.transport,
      keepaliveMs: 100,
      probeTimeoutMs: 1500,
      ...clientOptions,
    });
  const ca = await connect("a", a);
  const cb = await connect("b", b);
  await ca.waitPresence("join", cb.address);
  return { h, network, server, a: ca, b: cb, loseA: a.lose, loseB: b.lose };
}

Deno.test("the server answers a member's keep-alive with a KEEPALIVE token under its key; the client counts it", async () => {
  const { h, server, a } = await setup();
  await using _ = h;
  await answers(a, 2);
  const answer = a.tap.received.items.find((d) =>
    hasRecord(d.data, RecordType.KEEPALIVE)
  )!;
  assert.equal(answer.from.port, server.address.port, "not from the server");
  const records = recordsOf(answer.data);
  assert.deepEqual(records.map((r) => r.type), [RecordType.KEEPALIVE]);
  // A Fernet token of the empty plaintext: 73 bytes, 100 in base64.
  assert.match(new TextDecoder().decode(records[0].value), /^gAAAAA/);
  assert.equal(records[0].value.length, 100);
  // As large as the keep-alive that caused it: no amplification.
  const sent = a.tap.sent.items.find((d) =>
    hasRecord(d.data, RecordType.KEEPALIVE)
  )!;
  assert.equal(answer.data.length, sent.data.length);
  assert.deepEqual(a.client.stats().dropped, {});
});

Deno.test("a keep-alive answer reflected, replayed or under another key is dropped and not counted", async () => {
  const { h, network, server, a } = await setup({}, { keepaliveMs: 60_000 });
  await using _ = h;
  const to = a.tap.localAddress;
  const firstAnswer = a.tap.received.mark();
  // Make a send one keep-alive now: a NOTICE 1 triggers a probe.
  network.deliver(notice(NoticeCode.UNKNOWN_CLIENT), server.address, to);
  await answers(a);
  const probe = a.tap.sent.items.findLast((d) =>
    hasRecord(d.data, RecordType.KEEPALIVE)
  )!;
  const answer = a.tap.received.filter(
    (d) => hasRecord(d.data, RecordType.KEEPALIVE),
    firstAnswer,
  )[0];
  const before = a.client.stats().keepaliveAnswers;
  const stranger = await FernetKey.generate();
  for (
    const datagram of [
      probe.data, // reflected: a's own mark
      answer.data, // replayed: its IV was accepted already
      keepalive(await stranger.encrypt(new Uint8Array(0))), // another key
    ]
  ) network.deliver(datagram, server.address, to);
  // Barrier: a message relayed to a after the forgeries.
  const c = await h.connect("c", { transport: network.bind() });
  await c.client.send("barrier");
  await a.waitMessage("barrier");
  const dropped = a.client.stats().dropped;
  assert.equal(dropped.keepalive_token_reflected, 1, JSON.stringify(dropped));
  assert.equal(dropped.keepalive_token_replayed, 1, JSON.stringify(dropped));
  assert.equal(dropped.keepalive_token_signature, 1, JSON.stringify(dropped));
  assert.equal(a.client.stats().keepaliveAnswers, before);
});

Deno.test("a spoofed NOTICE 1 flood (20/s) does not make a member re-register, and no message is lost", async () => {
  const { h, network, server, a, b } = await setup();
  await using _ = h;
  await answers(a);
  const since = a.events.mark();
  // 20 spoofed NOTICE 1 per second for 3 s, a message from a after each.
  const texts: string[] = [];
  const sends: Promise<unknown>[] = [];
  await new Promise<void>((resolve) => {
    const flood = setInterval(() => {
      network.deliver(
        notice(NoticeCode.UNKNOWN_CLIENT),
        server.address,
        a.tap.localAddress,
      );
      const text = `message ${texts.length}`;
      texts.push(text);
      sends.push(a.client.send(text));
      if (texts.length === 60) {
        clearInterval(flood);
        resolve();
      }
    }, 50);
  });
  await Promise.all(sends);
  await b.waitMessage(texts.at(-1)!, { sender: a.address });
  const notices = a.events.count((e) => e.type === "notice", since);
  assert.equal(notices, 60);
  assert.equal(a.events.count((e) => e.type === "reconnecting", since), 0);
  assert.equal(a.client.stats().registrations, 1);
  assert.equal(server.server.stats().rekeys, 0);
  // Every message exactly once, in order.
  assert.deepEqual(
    b.messages().filter((m) => m.from === a.address).map((m) => m.text),
    texts,
  );
  assert.ok((a.client.stats().dropped.notice_unconfirmed ?? 0) > 0);
});

Deno.test("a kicked member whose kick notice is lost is back without user action: NOTICE 1, an unanswered probe, a new registration", async () => {
  const { h, server, a, b } = await setup();
  await using _ = h;
  // The NOTICE 6 is lost: only the server knows the member is gone.
  const link = a.tap.inner as MemoryTransport;
  const enqueue = link.enqueue.bind(link);
  link.enqueue = (datagram: Datagram) => {
    const notice = recordsOf(datagram.data).find((r) =>
      r.type === RecordType.NOTICE
    );
    if (notice?.value[1] !== NoticeCode.KICKED) enqueue(datagram);
  };
  const since = a.events.mark();
  const bSince = b.events.mark();
  assert.ok(server.server.kick(a.address));
  await b.waitPresence("leave", a.address);
  const reconnecting = await a.waitEvent("reconnecting", since);
  assert.equal(
    reconnecting.type === "reconnecting" && reconnecting.reason,
    "server does not know this client",
  );
  await a.waitEvent("ready", since);
  await b.waitPresence("join", a.address, bSince);
  assert.equal(a.client.stats().registrations, 2);
  await a.client.send("back");
  await b.waitMessage("back", { sender: a.address });
});

Deno.test("a server that stops answering keep-alives is reported unreachable after 3 and the client re-registers", async () => {
  const { h, a, loseA } = await setup();
  await using _ = h;
  await answers(a);
  const since = a.events.mark();
  loseA.keepaliveAnswers = true;
  const reconnecting = await a.waitEvent("reconnecting", since);
  assert.equal(
    reconnecting.type === "reconnecting" && reconnecting.reason,
    "server unreachable: no answer to 3 keep-alives in a row",
  );
  assert.ok(
    a.log.items.some((r) => r.event === "server_unreachable"),
    "no server_unreachable log record",
  );
  loseA.keepaliveAnswers = false;
  await a.waitEvent("ready", since);
});

Deno.test("a v1 server (no keep-alive answers) keeps its members; its NOTICE 1 still makes them re-register", async () => {
  const { h, network, server } = await setup();
  await using _ = h;
  // Its keep-alive answers are lost from the start, as with a v1 server.
  const fresh = lossyTransport(network);
  fresh.lose.keepaliveAnswers = true;
  const v1 = await h.connect("v1", {
    transport: fresh.transport,
    keepaliveMs: 50,
  });
  const since = v1.events.mark();
  // Many keep-alive intervals without an answer: no reconnection.
  const sent = v1.tap.sent.mark();
  await v1.tap.sent.waitForCount(
    (d) => hasRecord(d.data, RecordType.KEEPALIVE),
    10,
    "10 keep-alives",
    { from: sent },
  );
  assert.equal(v1.events.count((e) => e.type === "reconnecting", since), 0);
  assert.equal(v1.client.stats().keepaliveAnswers, 0);
  // A NOTICE 1: the probe gets no answer, so it re-registers (v1 behaviour).
  network.deliver(
    notice(NoticeCode.UNKNOWN_CLIENT),
    server.address,
    v1.tap.localAddress,
  );
  await v1.waitEvent("reconnecting", since);
  await v1.waitEvent("ready", since);
});

Deno.test("keep-alives beyond a member's rate are dropped before any crypto; records acted on per datagram are bounded", async () => {
  const frozen = Date.now();
  const { h, network, server, a } = await setup({
    keepalivesPerSecond: 1,
    keepaliveBurst: 5,
    now: () => frozen, // the bucket never refills, however slow the test
  }, { keepaliveMs: 60_000 });
  await using _ = h;
  const from = a.tap.localAddress;
  const forged = keepalive(encoder.encode("gAAAAAforged-keepalive-token=="));
  for (let i = 0; i < 12; i++) network.deliver(forged, from, server.address);
  // One datagram of 629 forged keep-alive records (the 64 KB one).
  const many = encodeRecords(
    Array.from({ length: 629 }, () => ({
      type: RecordType.KEEPALIVE,
      value: encoder.encode("gAAAAAforged-keepalive-token=="),
    })),
  );
  network.deliver(many, from, server.address);
  await server.waitDrop("records_over_limit");
  const dropped = server.server.stats().dropped;
  // The bucket held 5: those were opened (and failed), the rest never were.
  assert.equal(dropped.token_format, 5, JSON.stringify(dropped));
  assert.equal(
    dropped.keepalive_rate,
    12 - 5 + MAX_RECORDS_PER_STREAM,
    JSON.stringify(dropped),
  );
  assert.equal(dropped.records_over_limit, 1, JSON.stringify(dropped));
  assert.ok(server.server.members().some((m) => m.address === a.address));
});
