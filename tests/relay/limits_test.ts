/**
 * Every limit of SECURITY.md ("Limits and their defaults") exercised at the
 * library level, in process, over a {@linkcode MemoryNetwork} (so sources can
 * be spoofed and the bytes each endpoint receives are recorded exactly):
 * members, message size, message rate, handshake rate per IP, RSA work in
 * flight, NOTICE size and rate, stranger reassembly caps, the control port's
 * output queue and token, and the client's source and replay checks.
 *
 * Synchronisation is by events only: client events, server log records, and
 * "sentinel" datagrams whose (logged) handling proves that every earlier
 * datagram of the same source was handled, since the server processes one
 * source's datagrams in order. Tests whose counts depend on time freeze the
 * server's clock (`now`), so they never depend on how fast the machine is.
 *
 * No sockets here except the control port's TCP on 127.0.0.1.
 */
import assert from "node:assert/strict";
import { HandshakeError } from "../../lib/errors.ts";
import { FernetKey } from "../../lib/crypto/fernet.ts";
import { RsaPrivateKey, RsaPublicKey } from "../../lib/crypto/rsa.ts";
import { ControlServer } from "../../lib/runtime/control.ts";
import {
  MemoryNetwork,
  type MemoryTransport,
} from "../../lib/runtime/memory.ts";
import type { Datagram } from "../../lib/runtime/transport.ts";
import {
  decodeAddress,
  encodeAddress,
  formatAddress,
  type PeerAddress,
} from "../../lib/wire/address.ts";
import { encodeFragment } from "../../lib/wire/fragment.ts";
import {
  decodeNotice,
  NOTICE_TEXT,
  NoticeCode,
} from "../../lib/wire/notice.ts";
import {
  decodeRecords,
  encodeRecords,
  RecordType,
  type TlvRecord,
} from "../../lib/wire/tlv.ts";
import {
  type ClientEvent,
  RelayClient,
  type RelayClientOptions,
} from "../../lib/relay/client/client.ts";
import type { LogRecord } from "../../lib/log.ts";
import {
  RelayServer,
  type RelayServerOptions,
} from "../../lib/relay/server/server.ts";
import { RSA2048_PRIVATE_PEM } from "../fixtures/rsa_fixtures.ts";
import { ControlClient } from "../cli/_process.ts";
import { Recorder } from "../_support/recorder.ts";
import { frozenClock } from "../_support/stubs.ts";

/** Only a hung test ever reaches this: it bounds waits, it measures nothing. */
const WAITS = { timeoutMs: 10_000 };
const SERVER_ADDRESS: PeerAddress = { hostname: "127.0.0.1", port: 5007 };
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const serverKey = await RsaPrivateKey.fromPkcs8Pem(RSA2048_PRIVATE_PEM);

// ------------------------------------------------------------ helpers

/** Records every datagram delivered to and sent by a memory transport, synchronously. */
function tap(
  transport: MemoryTransport,
  { queue = true } = {},
): {
  inbound: Recorder<Uint8Array>;
  outbound: Recorder<Uint8Array>;
  lose: { keepaliveAnswers: boolean };
} {
  const inbound = new Recorder<Uint8Array>("inbound", WAITS);
  const outbound = new Recorder<Uint8Array>("outbound", WAITS);
  const lose = { keepaliveAnswers: false };
  const enqueue = transport.enqueue.bind(transport);
  transport.enqueue = (datagram: Datagram) => {
    inbound.push(datagram.data.slice());
    if (lose.keepaliveAnswers && hasType(datagram.data, RecordType.KEEPALIVE)) {
      return;
    }
    if (queue) enqueue(datagram);
  };
  const send = transport.send.bind(transport);
  transport.send = (data: Uint8Array, to: PeerAddress) => {
    outbound.push(data.slice());
    return send(data, to);
  };
  return { inbound, outbound, lose };
}

/** A registered test client and what it observed. */
interface Member {
  readonly client: RelayClient;
  readonly transport: MemoryTransport;
  readonly address: string;
  readonly events: Recorder<ClientEvent>;
  /** Datagrams delivered to its transport (before the client reads them). */
  readonly inbound: Recorder<Uint8Array>;
  /** Datagrams its transport sent. */
  readonly outbound: Recorder<Uint8Array>;
  /** Set `keepaliveAnswers` to lose the server's keep-alive answers on the way to it. */
  readonly lose: { keepaliveAnswers: boolean };
}

/** A raw endpoint that only records what it receives (it never reads). */
interface Probe {
  readonly transport: MemoryTransport;
  readonly address: PeerAddress;
  readonly source: string;
  readonly inbound: Recorder<Uint8Array>;
  send(data: Uint8Array): Promise<void>;
}

/**
 * Datagrams whose handling the server logs (once per source and reason),
 * used as sentinels: none of them is sent by a test as traffic.
 */
const SENTINELS: readonly [string, Uint8Array, boolean][] = [
  // [reason, datagram, usable by a member]
  ["unexpected_type", rec(RecordType.SENDER, new Uint8Array(0)), true],
  [
    "cookie_malformed",
    encodeRecords([
      { type: RecordType.COOKIE, value: new Uint8Array(1) },
      { type: RecordType.SYMMETRIC_KEY, value: new Uint8Array(0) },
    ]),
    true,
  ],
  ["malformed_fragment", rec(RecordType.FRAGMENT, new Uint8Array(3)), true],
  ["disconnect_unknown", rec(RecordType.DISCONNECT, new Uint8Array(0)), false],
];

function rec(type: number, value: Uint8Array): Uint8Array {
  return encodeRecords([{ type, value }]);
}

/** A datagram of exactly `size` bytes holding one record of `type`. */
function sized(type: number, size: number, fill = 0): Uint8Array {
  return rec(type, new Uint8Array(size - 4).fill(fill));
}

const paddedKeyRequest = () => sized(RecordType.KEY_REQUEST, 1200);

const isDrop = (reason: string, source?: string) => (r: LogRecord) =>
  r.event === "drop" && r.reason === reason &&
  (source === undefined || r.source === source);

/**
 * One server at a fixed address of a {@linkcode MemoryNetwork}, and members
 * and probes on any source address (spoofed ones included) whose every
 * datagram is recorded synchronously. Not the shared harness of _harness.ts:
 * these tests need the server's address fixed and the probes' traffic
 * delivered without a socket; waits use the shared Recorder.
 */
class SpoofableRelay {
  readonly network = new MemoryNetwork();
  readonly log = new Recorder<LogRecord>("server log", WAITS);
  server!: RelayServer;
  readonly #clients: RelayClient[] = [];
  readonly #transports: MemoryTransport[] = [];

  /** Starts the server (resolves once it can serve). */
  async start(options: Partial<RelayServerOptions> = {}): Promise<this> {
    this.server = await RelayServer.start({
      transport: this.network.bind(
        SERVER_ADDRESS.hostname,
        SERVER_ADDRESS.port,
      ),
      privateKey: serverKey,
      log: (record) => this.log.push(record),
      ...options,
    });
    return this;
  }

  /** A client registered with the server (connect resolved). */
  async connect(
    options: Partial<RelayClientOptions> = {},
    hostname = "127.0.0.1",
  ): Promise<Member> {
    const transport = this.network.bind(hostname);
    const { inbound, outbound, lose } = tap(transport);
    const events = new Recorder<ClientEvent>("client events", WAITS);
    const client = await RelayClient.connect({
      transport,
      target: SERVER_ADDRESS,
      onEvent: (event) => events.push(event),
      probeTimeoutMs: 200,
      ...options,
    });
    this.#clients.push(client);
    return {
      client,
      transport,
      address: formatAddress(transport.localAddress),
      events,
      inbound,
      outbound,
      lose,
    };
  }

  probe(hostname = "127.0.0.1", port = 0): Probe {
    const transport = this.network.bind(hostname, port);
    this.#transports.push(transport);
    const { inbound } = tap(transport, { queue: false });
    return {
      transport,
      address: transport.localAddress,
      source: formatAddress(transport.localAddress),
      inbound,
      send: (data) => transport.send(data, SERVER_ADDRESS),
    };
  }

  /**
   * Sends a sentinel datagram from `transport` and waits until the server has
   * logged its handling: every datagram this source sent before is handled,
   * and the server's answers to them have been delivered.
   */
  async settle(transport: MemoryTransport): Promise<void> {
    const source = formatAddress(transport.localAddress);
    const member = this.server.members().some((m) => m.address === source);
    const sentinel = SENTINELS.find(([reason, , forMember]) =>
      (forMember || !member) &&
      this.log.count(isDrop(reason, source)) === 0
    );
    assert.ok(sentinel, `no unused sentinel left for ${source}`);
    const [reason, datagram] = sentinel;
    const since = this.log.mark();
    await transport.send(datagram, SERVER_ADDRESS);
    await this.log.waitFor(
      isDrop(reason, source),
      `the server to log ${reason} for the sentinel from ${source}`,
      { from: since },
    );
  }

  async close(): Promise<void> {
    await Promise.all(this.#clients.map((c) => c.close()));
    await this.server.close();
    for (const t of this.#transports) t.close();
  }
}

/** Runs `fn` with a {@linkcode SpoofableRelay} and always closes it. */
async function withHarness(
  options: Partial<RelayServerOptions>,
  fn: (h: SpoofableRelay) => Promise<void>,
): Promise<void> {
  const h = await new SpoofableRelay().start(options);
  try {
    await fn(h);
  } finally {
    await h.close();
  }
}

const messagesOf = (m: Member, since = 0) =>
  m.events.filter((e) => e.type === "message", since) as Extract<
    ClientEvent,
    { type: "message" }
  >[];

const noticesOf = (m: Member, since = 0) =>
  m.events.filter((e) => e.type === "notice", since) as Extract<
    ClientEvent,
    { type: "notice" }
  >[];

/** Waits until `m` has received a message with `text`. */
async function received(m: Member, text: string): Promise<void> {
  await m.events.waitFor(
    (e) => e.type === "message" && e.text === text,
    `${m.address} to receive ${JSON.stringify(text)}`,
  );
}

function cookieAnswer(
  datagram: Uint8Array,
): { cookie: Uint8Array; pem: string } {
  const records = decodeRecords(datagram);
  assert.deepEqual(
    records.map((r) => r.type),
    [RecordType.COOKIE, RecordType.SERVER_PUBLIC_KEY],
  );
  return {
    cookie: records[0].value.slice(),
    pem: decoder.decode(records[1].value),
  };
}

// ------------------------------------------------------------ members

Deno.test("maxClients: the extra client gets NOTICE 4, is not registered, members stay at the maximum", async () => {
  await withHarness({ maxClients: 2 }, async (h) => {
    const a = await h.connect();
    const b = await h.connect();
    const cTransport = h.network.bind();
    const cAddress = formatAddress(cTransport.localAddress);
    const cEvents = new Recorder<ClientEvent>("C events", WAITS);
    await assert.rejects(
      RelayClient.connect({
        transport: cTransport,
        target: SERVER_ADDRESS,
        retryAttempts: 2,
        retryInitialMs: 100,
        onEvent: (event) => cEvents.push(event),
      }),
      (error) =>
        error instanceof HandshakeError &&
        /is full \(NOTICE 4: "server full: retry later"\)/.test(error.message),
    );
    const notices = cEvents.filter((e) => e.type === "notice");
    assert.ok(notices.length >= 1, "the refused client got no NOTICE");
    for (const n of notices) {
      assert.equal(n.type === "notice" && n.code, NoticeCode.SERVER_FULL);
    }
    assert.equal(cEvents.count((e) => e.type === "ready"), 0);

    assert.deepEqual(
      h.server.members().map((m) => m.address).sort(),
      [a.address, b.address].sort(),
    );
    const stats = h.server.stats();
    assert.equal(stats.members, 2);
    assert.equal(stats.registrations, 2);
    assert.ok((stats.dropped.server_full ?? 0) >= 1, JSON.stringify(stats));

    // Nobody was told about the refused client: a later message proves that
    // every earlier datagram from the server to A has been handled.
    await b.client.send("after");
    await received(a, "after");
    assert.deepEqual(
      a.events.filter((e) => e.type === "join").map((e) =>
        e.type === "join" && e.address
      ),
      [b.address],
    );
    assert.ok(!a.client.members().includes(cAddress));
  });
});

Deno.test("maxMessageBytes: a larger message gets NOTICE 2 and is not relayed; one of exactly the maximum is", async () => {
  const clock = frozenClock(); // one NOTICE per second: exactly one here
  await withHarness({ now: clock.now, maxMessageBytes: 100 }, async (h) => {
    const a = await h.connect({ maxMessageBytes: 10_000 });
    const b = await h.connect();
    const big = "x".repeat(101);
    const exact = "y".repeat(100);
    const huge = "z".repeat(5000); // fragmented on the wire
    const sentBefore = a.outbound.mark();
    await a.client.send(big);
    await a.client.send(huge);
    await a.client.send(exact);
    await received(b, exact);
    // The server handled A's datagrams in order: big and huge came first.
    assert.deepEqual(messagesOf(b).map((m) => m.text), [exact]);

    const notice = await a.events.waitFor(
      (e) => e.type === "notice",
      "NOTICE 2 at the sender",
    );
    assert.equal(notice.type === "notice" && notice.code, 2);
    const stats = h.server.stats();
    assert.equal(stats.dropped.message_too_large, 2);
    assert.equal(stats.messagesRelayed, 1);
    assert.equal(stats.deliveries, 1);

    // The NOTICE datagram is no larger than the datagram that caused it.
    const noticeDatagrams = a.inbound.filter((d) =>
      decodeRecords(d).some((r) => r.type === RecordType.NOTICE)
    );
    assert.equal(noticeDatagrams.length, 1, "one NOTICE per second per source");
    const causing = a.outbound.items[sentBefore];
    assert.ok(noticeDatagrams[0].length <= causing.length);
  });
});

Deno.test("maxClients: a newcomer refused with NOTICE 4 joins with the same registration once a slot frees", async () => {
  await withHarness({ maxClients: 1 }, async (h) => {
    const first = await h.connect();
    const notices = new Recorder<ClientEvent>("newcomer events", WAITS);
    const joining = RelayClient.connect({
      transport: h.network.bind("127.0.0.1"),
      target: SERVER_ADDRESS,
      // Retries enough for any machine's pace: the test ends them by
      // freeing the slot, not by a deadline.
      retryInitialMs: 200,
      retryMaxMs: 400,
      retryAttempts: 50,
      onEvent: (e) => notices.push(e),
    });
    await notices.waitFor(
      (e) => e.type === "notice" && e.code === NoticeCode.SERVER_FULL,
      "NOTICE 4",
    );
    await first.client.close();
    const newcomer = await joining;
    try {
      assert.deepEqual(h.server.members().map((m) => m.address), [
        newcomer.address,
      ]);
      assert.equal(h.server.stats().dropped.registration_replayed, undefined);
    } finally {
      await newcomer.close();
    }
  });
});

Deno.test("message rate: past the burst the sender gets NOTICE 3, the others receive exactly what was relayed", async () => {
  const clock = frozenClock();
  await withHarness({
    now: clock.now,
    messagesPerSecond: 1,
    messageBurst: 5,
    handshakeBurst: 1000,
  }, async (h) => {
    const a = await h.connect();
    const b = await h.connect();
    const c = await h.connect();
    const SENT = 30;
    for (let i = 0; i < SENT; i++) await a.client.send(`m${i}`);
    await h.settle(a.transport); // all 30 handled
    const stats = h.server.stats();
    // The clock does not move: exactly the burst goes through.
    assert.equal(stats.messagesRelayed, 5);
    assert.equal(stats.dropped.rate_limited, SENT - 5);
    assert.ok(stats.dropped.rate_limited > 0);

    // A barrier from C reaches A and B after every earlier relay.
    await c.client.send("barrier");
    await received(b, "barrier");
    await received(a, "barrier");
    const fromA = messagesOf(b).filter((m) => m.from === a.address);
    assert.equal(fromA.length, stats.messagesRelayed);
    assert.deepEqual(fromA.map((m) => m.text), ["m0", "m1", "m2", "m3", "m4"]);
    assert.deepEqual(
      messagesOf(c).map((m) => m.text),
      ["m0", "m1", "m2", "m3", "m4"],
    );
    // One NOTICE 3 (at most one per second per source, and the clock stands still).
    assert.deepEqual(noticesOf(a).map((n) => n.code), [
      NoticeCode.RATE_LIMITED,
    ]);
    const member = h.server.members().find((m) => m.address === a.address)!;
    assert.equal(member.messagesIn, 5);

    // A second later one more token: exactly one more message relayed.
    clock.advance(1000);
    await a.client.send("later");
    await a.client.send("too soon");
    await h.settle(a.transport);
    assert.equal(h.server.stats().messagesRelayed, 7); // + C's barrier
    await c.client.send("barrier 2");
    await received(b, "barrier 2");
    assert.deepEqual(
      messagesOf(b).filter((m) => m.from === a.address).map((m) => m.text)
        .slice(5),
      ["later"],
    );
  });
});

// ------------------------------------------------------------ key exchange

Deno.test("handshake rate per address: padded key requests past the burst get no answer and are counted handshake_rate", async () => {
  const clock = frozenClock();
  await withHarness({
    now: clock.now,
    handshakesPerSecond: 1,
    handshakeBurst: 3,
  }, async (h) => {
    const p = h.probe("10.0.0.1");
    // Short requests are refused before the rate limiter and cost no token.
    await p.send(sized(RecordType.KEY_REQUEST, 100));
    await p.send(sized(RecordType.KEY_REQUEST, 400));
    for (let i = 0; i < 10; i++) await p.send(paddedKeyRequest());
    await h.settle(p.transport);
    assert.equal(p.inbound.items.length, 3, "answers on the wire");
    for (const answer of p.inbound.items) {
      cookieAnswer(answer);
      assert.ok(answer.length <= 1200, "an answer larger than its request");
    }
    let stats = h.server.stats();
    assert.equal(stats.dropped.short_key_request, 2);
    assert.equal(stats.dropped.handshake_rate, 7);

    // Another port of the same IP has its own bucket (protocol.md section
    // 10: a spoofer of an IP, or a neighbour behind its NAT, cannot lock
    // that IP out), and so has another IP.
    const sameIp = h.probe("10.0.0.1");
    const otherIp = h.probe("10.0.0.2");
    await sameIp.send(paddedKeyRequest());
    await otherIp.send(paddedKeyRequest());
    await h.settle(sameIp.transport);
    await h.settle(otherIp.transport);
    assert.equal(sameIp.inbound.items.length, 1);
    assert.equal(otherIp.inbound.items.length, 1);
    cookieAnswer(sameIp.inbound.items[0]);
    cookieAnswer(otherIp.inbound.items[0]);
    stats = h.server.stats();
    assert.equal(stats.dropped.handshake_rate, 7);

    // One second later the address has one token again.
    clock.advance(1000);
    await p.send(paddedKeyRequest());
    await p.send(paddedKeyRequest());
    await h.settle(p.transport);
    assert.equal(p.inbound.items.length, 4);
    assert.equal(h.server.stats().dropped.handshake_rate, 8);
  });
});

Deno.test("global handshake budget: key requests from many addresses leave half of it to validated cookies", async () => {
  const clock = frozenClock();
  await withHarness({
    now: clock.now,
    globalHandshakesPerSecond: 1,
    globalHandshakeBurst: 8,
  }, async (h) => {
    // A flood of key requests from ten addresses of one IP (a spoofer):
    // only the upper half of the budget (4 answers) goes to key requests.
    const flooders = Array.from({ length: 10 }, () => h.probe("10.0.0.9"));
    for (const f of flooders) await f.send(paddedKeyRequest());
    for (const f of flooders) await h.settle(f.transport);
    const answered = flooders.filter((f) => f.inbound.items.length > 0);
    assert.equal(answered.length, 4);
    assert.equal(h.server.stats().dropped.handshake_global_rate, 6);
    // A client with a cookie already in hand still registers: the reserve.
    const p = h.probe("10.0.0.1");
    // The budget holds 4 tokens now, all reserved: a key request may not
    // take one...
    await p.send(paddedKeyRequest());
    await h.settle(p.transport);
    assert.equal(p.inbound.items.length, 0);
    assert.equal(h.server.stats().dropped.handshake_global_rate, 7);
    // ...but the registrations of the four answered ones may.
    const key = await FernetKey.generate();
    const { cookie } = cookieAnswer(answered[0].inbound.items[0]);
    await answered[0].send(encodeRecords([
      { type: RecordType.COOKIE, value: cookie },
      {
        type: RecordType.SYMMETRIC_KEY,
        value: await serverKey.publicKey.encrypt(encoder.encode(key.text)),
      },
    ]));
    await h.log.waitFor(
      (r) => r.event === "join" && r.client === answered[0].source,
      "the validated registration to join",
    );
  });
});

Deno.test("maxPendingHandshakes: a burst of valid-cookie registrations is cut with handshake_busy, and the server still relays", async () => {
  await withHarness(
    { maxPendingHandshakes: 1, handshakeBurst: 1000 },
    async (h) => {
      const N = 6;
      const probes = Array.from({ length: N }, () => h.probe());
      // Step 1-2 for each: a real cookie for its own address.
      const registrations: Uint8Array[] = [];
      const keys: FernetKey[] = [];
      for (const p of probes) {
        await p.send(paddedKeyRequest());
        const answer = await p.inbound.waitFor(() => true, "the key answer");
        const { cookie, pem } = cookieAnswer(answer);
        const serverPublic = await RsaPublicKey.fromPem(pem);
        const key = await FernetKey.generate();
        keys.push(key);
        registrations.push(encodeRecords([
          { type: RecordType.COOKIE, value: cookie },
          {
            type: RecordType.SYMMETRIC_KEY,
            value: await serverPublic.encrypt(encoder.encode(key.text)),
          },
        ]));
      }
      // Step 3 from every socket at once.
      const marks = probes.map((p) => p.inbound.mark());
      await Promise.all(probes.map((p, i) => p.send(registrations[i])));
      await h.log.until(
        () =>
          h.log.count((r) => r.event === "join") +
              h.log.count(isDrop("handshake_busy")) === N,
        "every registration to be handled (joined or busy)",
      );
      const stats = h.server.stats();
      const busy = stats.dropped.handshake_busy ?? 0;
      assert.ok(busy >= 1, `no handshake_busy: ${JSON.stringify(stats)}`);
      assert.ok(stats.registrations >= 1);
      assert.equal(stats.registrations + busy, N);
      assert.equal(h.server.members().length, stats.registrations);

      // Exactly the registered probes got a WELCOME (the others: nothing).
      const registered = new Set(h.server.members().map((m) => m.address));
      // (The join is logged just before the WELCOME is sealed and sent.)
      const isWelcome = (d: Uint8Array) =>
        decodeRecords(d).some((r) => r.type === RecordType.WELCOME);
      for (const [i, p] of probes.entries()) {
        if (!registered.has(p.source)) continue;
        await p.inbound.waitFor(isWelcome, `WELCOME to ${p.source}`, {
          from: marks[i],
        });
      }
      for (const [i, p] of probes.entries()) {
        const welcomed = p.inbound.count(isWelcome, marks[i]);
        assert.equal(welcomed, registered.has(p.source) ? 1 : 0, p.source);
        if (!registered.has(p.source)) {
          assert.equal(p.inbound.items.length, marks[i], "busy: no answer");
        }
      }

      // Afterwards the relay works for the members: two clients join, and a
      // message reaches the other client once and every registered probe.
      const a = await h.connect();
      const b = await h.connect();
      await a.client.send("still relaying");
      await received(b, "still relaying");
      assert.equal(
        messagesOf(b).filter((m) => m.text === "still relaying").length,
        1,
      );
      for (const [i, p] of probes.entries()) {
        if (!registered.has(p.source)) continue;
        const relay = await p.inbound.waitFor(
          (d) => decodeRecords(d).some((r) => r.type === RecordType.SENDER),
          `the relay to ${p.source}`,
        );
        const records = decodeRecords(relay);
        assert.equal(
          formatAddress(decodeAddress(records[0].value)),
          a.address,
        );
        const token = records.find((r) =>
          r.type === RecordType.FERNET_MESSAGE
        )!;
        const opened = await keys[i].decrypt(token.value, { ttlSeconds: 60 });
        assert.equal(decoder.decode(opened.plaintext), "still relaying");
      }
    },
  );
});

// ------------------------------------------------------------ NOTICE

Deno.test("NOTICE 1 is never larger than the datagram that caused it", async () => {
  const clock = frozenClock();
  await withHarness({ now: clock.now }, async (h) => {
    const full = encoder.encode(NOTICE_TEXT[NoticeCode.UNKNOWN_CLIENT]);
    const cases: [number, number][] = [];
    for (const type of [RecordType.KEEPALIVE, RecordType.FERNET_MESSAGE]) {
      for (const size of [4, 5, 6, 7, 10, 20, 47, 48, 100, 1200, 3000]) {
        cases.push([type, size]);
      }
    }
    for (const [type, size] of cases) {
      const p = h.probe();
      await p.send(sized(type, size, 0x41));
      await h.settle(p.transport);
      const answers = p.inbound.items;
      if (size < 6) {
        assert.equal(answers.length, 0, `a NOTICE for a ${size}-byte datagram`);
        continue;
      }
      assert.equal(answers.length, 1, `${type}/${size}`);
      const notice = answers[0];
      assert.ok(notice.length <= size, `${notice.length} > ${size}`);
      assert.equal(notice.length, Math.min(size, 6 + full.length));
      const [record] = decodeRecords(notice);
      assert.equal(record.type, RecordType.NOTICE);
      const decoded = decodeNotice(record.value);
      assert.equal(decoded.code, NoticeCode.UNKNOWN_CLIENT);
      assert.ok(NOTICE_TEXT[1].startsWith(decoded.text));
    }
    assert.equal(
      h.server.stats().dropped.unknown_source,
      cases.length,
    );
  });
});

Deno.test("NOTICE 1 is sent at most once per second per source (50 in a burst: exactly 1)", async () => {
  const clock = frozenClock();
  await withHarness({ now: clock.now }, async (h) => {
    const p = h.probe();
    const other = h.probe();
    for (let i = 0; i < 50; i++) {
      await p.send(sized(RecordType.KEEPALIVE, 100));
    }
    await other.send(sized(RecordType.KEEPALIVE, 100));
    await h.settle(p.transport);
    await h.settle(other.transport);
    assert.equal(p.inbound.items.length, 1);
    assert.equal(other.inbound.items.length, 1, "the gate is per source");
    assert.equal(h.server.stats().dropped.unknown_source, 51);

    clock.advance(999);
    await p.send(sized(RecordType.KEEPALIVE, 100));
    await h.settle(p.transport);
    assert.equal(p.inbound.items.length, 1);
    clock.advance(1);
    await p.send(sized(RecordType.KEEPALIVE, 100));
    await p.send(sized(RecordType.KEEPALIVE, 100));
    await h.settle(p.transport);
    assert.equal(p.inbound.items.length, 2);
    assert.equal(h.server.stats().dropped.unknown_source, 54);
  });
});

// ------------------------------------------------------------ reassembly

function fragment(
  msgId: number,
  index: number,
  count: number,
  size: number,
): Uint8Array {
  return rec(
    RecordType.FRAGMENT,
    encodeFragment({ msgId, index, count, chunk: new Uint8Array(size) }),
  );
}

Deno.test("unregistered sources: fragment floods stay within the stranger caps; members' reassembly is unaffected", async () => {
  const clock = frozenClock(); // nothing times out
  await withHarness({ now: clock.now, handshakeBurst: 1000 }, async (h) => {
    const a = await h.connect();
    const b = await h.connect();
    const counters = () => ({ ...h.server.stats().reassembly });

    // Many msg_ids from one source: 2 partial buffers at most.
    const s1 = h.probe();
    for (let id = 0; id < 10; id++) await s1.send(fragment(id, 0, 2, 100));
    await h.settle(s1.transport);
    assert.equal(counters().tooManyPartials, 8);

    // 32 chunks of 1000 bytes for one msg_id: 16 KiB per source at most. The
    // 17th cannot fit with the 16 before it, which can then never complete:
    // that buffer goes with it, and chunks 18-32 (15,000 bytes) open another.
    const s2 = h.probe();
    for (let i = 0; i < 32; i++) await s2.send(fragment(7, i, 32, 1000));
    await h.settle(s2.transport);
    assert.equal(counters().sourceBytesExceeded, 1);
    assert.equal(counters().completed, 0);

    // count above 32 (a member's limit is 1024), and an inconsistent count.
    const s3 = h.probe();
    await s3.send(fragment(1, 0, 33, 10));
    await s3.send(fragment(2, 0, 1024, 10));
    await s3.send(fragment(3, 0, 3, 10));
    await s3.send(fragment(3, 1, 4, 10));
    await h.settle(s3.transport);
    assert.equal(counters().countTooLarge, 2);
    assert.equal(counters().countMismatch, 1);

    // Many sources, each filling 16,000 of its 16 KiB: 4 MiB in all at most.
    // Past it the source holding the most bytes loses its oldest buffer: here
    // always a full 16,000-byte one of an earlier source.
    const before = counters();
    const SOURCES = 300;
    const PER_SOURCE = 16;
    const flood = Array.from({ length: SOURCES }, () => h.probe());
    for (const [n, p] of flood.entries()) {
      for (let i = 0; i < PER_SOURCE; i++) {
        await p.send(fragment(n, i, 32, 1000));
      }
    }
    for (const p of flood) await h.settle(p.transport);
    const after = counters();
    assert.equal(after.sourceBytesExceeded, before.sourceBytesExceeded);
    assert.equal(after.tooManyPartials, before.tooManyPartials);
    const evicted = after.totalBytesExceeded - before.totalBytesExceeded;
    assert.ok(evicted > 0);
    const buffered = (SOURCES - evicted) * PER_SOURCE * 1000;
    const earlier = 2 * 100 + 15 * 1000; // s1 and s2 still buffered (s3's buffer was discarded)
    assert.ok(
      buffered + earlier <= 4 * 1024 * 1024,
      `${buffered + earlier} bytes buffered for strangers`,
    );
    assert.ok(buffered + earlier > 4 * 1024 * 1024 - PER_SOURCE * 1000);
    assert.equal(after.completed, 0);

    // Members use their own reassembler: a fragmented message still goes through.
    const long = "L".repeat(3000);
    await a.client.send(long);
    await received(b, long);
    assert.equal(h.server.stats().reassembly.completed, 1);
  });
});

// ------------------------------------------------------------ control port

/** Records each connection the control server has accepted (and authenticated), as an awaitable event. */
function connectionCounter() {
  const connected = new Recorder<string>("control connections", WAITS);
  return {
    connected,
    onConnect: (c: { remote: string }) => connected.push(c.remote),
  };
}

Deno.test("control port: a stuck reader never blocks broadcast, loses lines (counted), and does not starve a reading connection", async () => {
  const { connected, onConnect } = connectionCounter();
  const control = ControlServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    maxQueuedLines: 4,
    onConnect,
    onLine: () => {},
  });
  const stuck = await Deno.connect({
    hostname: "127.0.0.1",
    port: control.port,
  });
  let reader: ControlClient | undefined;
  try {
    await connected.until(() => connected.items.length === 1, "the stuck one");
    reader = await ControlClient.connect(control.address);
    await connected.until(() => connected.items.length === 2, "the reader");

    // 24 rounds of 4 lines of 512 KiB (48 MiB): far more than the socket
    // buffers of a connection that never reads. Each round waits until the
    // reader has its last line, so the reader's queue is empty every time.
    const filler = "f".repeat(512 * 1024);
    const ROUNDS = 24;
    for (let round = 0; round < ROUNDS; round++) {
      const since = reader.log.mark();
      for (let i = 0; i < 4; i++) control.broadcast(`r${round}l${i} ${filler}`);
      await reader.log.waitLine(
        (l) => l.startsWith(`r${round}l3 `),
        `round ${round}`,
        since,
      );
    }
    assert.equal(reader.log.lines.length, ROUNDS * 4, "the reader lost lines");
    const dropped = control.droppedLines;
    assert.ok(dropped > 0, "the stuck connection never filled its queue");

    // A synchronous burst: the loop finishes; the stuck connection's queue is
    // full (all 10 000 dropped), the reader's takes 4 and drops the rest.
    for (let i = 0; i < 10_000; i++) control.broadcast(`burst ${i}`);
    assert.equal(control.droppedLines - dropped, 10_000 + 9_996);
    await reader.log.waitLine((l) => l === "burst 3", "the burst's 4th line");

    // New lines still reach the reader.
    control.broadcast("fresh");
    await reader.log.waitLine((l) => l === "fresh", "a fresh line");
  } finally {
    await control.close();
    stuck.close();
    await reader?.close();
  }
});

Deno.test("control port token: wrong token refused and closed, right token works, silence times out, no command before auth", async () => {
  const lines: string[] = [];
  const control = ControlServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    token: "s3cret token",
    authTimeoutMs: 200,
    onLine: (connection, line) => {
      lines.push(line);
      connection.write(`echo: ${line}`);
    },
  });
  const clients: ControlClient[] = [];
  const open = async () => {
    const c = await ControlClient.connect(control.address);
    clients.push(c);
    return c;
  };
  try {
    const wrong = await open();
    await wrong.send("auth s3cret");
    await wrong.log.waitLine(
      (l) => l === "error: authentication failed",
      "the refusal",
    );
    await wrong.closedByPeer();

    const noAuth = await open();
    await noAuth.send("stats");
    await noAuth.log.waitLine(
      (l) => l === "error: authentication failed",
      "the refusal of a command before auth",
    );
    await noAuth.closedByPeer();

    const silent = await open();
    await silent.log.waitLine(
      (l) => l === "error: authentication timed out",
      "the auth timeout",
    );
    await silent.closedByPeer();

    const right = await open();
    await right.send("auth s3cret token");
    await right.log.waitLine((l) => l === "ok: authenticated", "ok");
    await right.send("stats");
    await right.log.waitLine((l) => l === "echo: stats", "the command reply");
    control.broadcast("live line");
    await right.log.waitLine((l) => l === "live line", "a broadcast line");

    // The refused connections never reached the command handler nor got the log.
    assert.deepEqual(lines, ["stats"]);
    for (const c of [wrong, noAuth, silent]) {
      assert.ok(!c.log.lines.includes("live line"));
      assert.ok(!c.log.lines.some((l) => l.startsWith("echo:")));
    }
    assert.equal(control.connectionCount, 1);
  } finally {
    await control.close();
    await Promise.all(clients.map((c) => c.close()));
  }
});

Deno.test("control port token: wrong tokens past the throttle are refused without comparison, the right one too, until the IP's bucket refills", async () => {
  const { connected, onConnect } = connectionCounter();
  let clock = 0;
  const control = ControlServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    token: "s3cret token",
    authFailuresPerSecond: 0.5,
    authFailureBurst: 3,
    now: () => clock,
    onConnect,
    onLine: () => {},
  });
  const clients: ControlClient[] = [];
  /** Connects, sends `line` first and returns the one line the port answers. */
  const attempt = async (line: string) => {
    const c = await ControlClient.connect(control.address);
    clients.push(c);
    await c.send(line);
    return await c.log.waitLine((l) => l.length > 0, `the answer to ${line}`);
  };
  try {
    for (const wrong of ["auth s3cret", "auth x", "stats"]) {
      assert.equal(await attempt(wrong), "error: authentication failed");
    }
    // The IP has used up its wrong tokens: the next attempts are refused
    // unread, the right token among them.
    const throttled =
      "error: too many failed authentications from 127.0.0.1: wait 2 s before the next try";
    assert.equal(await attempt("auth s3cret token"), throttled);
    assert.equal(await attempt("auth guess"), throttled);
    assert.equal(control.authFailures, 3, "only the first three compared");
    assert.equal(control.authThrottled, 2);
    assert.equal(connected.items.length, 0);
    // 2 s later the IP may try once more.
    clock += 2_000;
    assert.equal(await attempt("auth s3cret token"), "ok: authenticated");
    await connected.until(() => connected.items.length === 1, "the operator");
    // Every refused connection was closed by the port.
    for (const c of clients.slice(0, -1)) await c.closedByPeer();
  } finally {
    await control.close();
    await Promise.all(clients.map((c) => c.close()));
  }
});

// ------------------------------------------------------------ client side

Deno.test("client: datagrams from an address other than its server are dropped and produce no event", async () => {
  await withHarness({}, async (h) => {
    const a = await h.connect();
    const b = await h.connect();
    const since = a.events.mark();
    const spoofers: PeerAddress[] = [
      { hostname: "127.0.0.1", port: SERVER_ADDRESS.port + 1 }, // same IP
      { hostname: "10.6.6.6", port: SERVER_ADDRESS.port }, // same port
      { hostname: "192.0.2.1", port: 4444 },
    ];
    const forged: Uint8Array[] = [
      // NOTICE 1 and 5 would make a client re-register; 4 is a hint.
      rec(RecordType.NOTICE, new Uint8Array([0, 1])),
      rec(RecordType.NOTICE, new Uint8Array([0, 5])),
      rec(RecordType.NOTICE, new Uint8Array([0, 4])),
      rec(RecordType.NOTIFY_CONNECT, encodeAddress(spoofers[2])),
      rec(
        RecordType.NOTIFY_DISCONNECT,
        encodeAddress(b.transport.localAddress),
      ),
      // A relay-shaped message and a key answer (not awaited now).
      encodeRecords([
        { type: RecordType.SENDER, value: encodeAddress(spoofers[2]) },
        { type: RecordType.FERNET_MESSAGE, value: encoder.encode("gAAAA") },
      ]),
      encodeRecords([
        { type: RecordType.COOKIE, value: new Uint8Array(20) },
        {
          type: RecordType.SERVER_PUBLIC_KEY,
          value: encoder.encode(serverKey.publicKey.pem),
        },
      ]),
    ];
    // A real relay datagram captured from the server, re-sent from elsewhere.
    await b.client.send("genuine");
    await received(a, "genuine");
    const genuine = a.inbound.items.findLast((d) =>
      decodeRecords(d).some((r) => r.type === RecordType.SENDER)
    )!;
    const afterGenuine = a.events.mark();
    forged.push(genuine);

    for (const from of spoofers) {
      for (const datagram of forged) {
        assert.ok(h.network.deliver(datagram, from, a.transport.localAddress));
      }
    }
    // B's next message arrives after the forged datagrams (in order).
    await b.client.send("barrier");
    await received(a, "barrier");
    assert.deepEqual(
      a.events.items.slice(afterGenuine).map((e) => e.type),
      ["message"],
    );
    assert.deepEqual(
      messagesOf(a, since).map((m) => m.text),
      ["genuine", "barrier"],
    );
    assert.equal(
      a.client.stats().dropped.not_from_server,
      spoofers.length * forged.length,
    );
    assert.ok(a.client.ready);
    assert.deepEqual(a.client.members(), [b.address]);
    assert.equal(a.client.stats().registrations, 1);
  });
});

Deno.test("client: a replayed relay datagram from the server's address yields one message event and counts token_replayed", async () => {
  await withHarness({}, async (h) => {
    const a = await h.connect();
    const b = await h.connect();
    await a.client.send("once");
    await received(b, "once");
    const relay = b.inbound.items.findLast((d) =>
      decodeRecords(d).some((r) => r.type === RecordType.FERNET_MESSAGE)
    )!;
    assert.ok(relay);
    for (let i = 0; i < 3; i++) {
      h.network.deliver(relay, SERVER_ADDRESS, b.transport.localAddress);
    }
    await a.client.send("barrier");
    await received(b, "barrier");
    assert.deepEqual(messagesOf(b).map((m) => m.text), ["once", "barrier"]);
    assert.equal(b.client.stats().dropped.token_replayed, 3);
    assert.equal(b.client.stats().messagesReceived, 2);
  });
});

// ------------------------------------------------------------ replayed registrations

/** The registration datagram (COOKIE + SYMMETRIC_KEY) a member sent. */
function registrationOf(m: Member): Uint8Array {
  const found = m.outbound.items.findLast((d) => {
    const records = decodeRecords(d);
    return records.some((r: TlvRecord) => r.type === RecordType.SYMMETRIC_KEY);
  });
  assert.ok(found, "no registration captured");
  return found;
}

Deno.test("a replayed registration does not reopen the replay window: a replayed message is not relayed twice", async () => {
  await withHarness({}, async (h) => {
    const a = await h.connect();
    const b = await h.connect();
    await a.client.send("m1");
    await received(b, "m1");
    const message = a.outbound.items.findLast((d) =>
      decodeRecords(d).some((r) => r.type === RecordType.FERNET_MESSAGE)
    )!;
    const from = a.transport.localAddress;
    // A spoofer replays A's captured datagrams with A's source address:
    // its registration (cookie still fresh), then its message.
    h.network.deliver(registrationOf(a), from, SERVER_ADDRESS);
    h.network.deliver(message, from, SERVER_ADDRESS);
    await h.settle(a.transport);
    await a.client.send("m2");
    await received(b, "m2");
    const stats = h.server.stats();
    // A replayed registration with the member's current key only repeats the
    // WELCOME: the key's replay window survives, so the replayed message is
    // rejected (protocol.md 6: a token whose IV was already accepted under
    // the same key is rejected).
    assert.deepEqual(
      messagesOf(b).map((m) => m.text),
      ["m1", "m2"],
      `rekeys ${stats.rekeys}, messagesRelayed ${stats.messagesRelayed}, token_replayed ${stats.dropped.token_replayed}`,
    );
    assert.equal(stats.dropped.token_replayed, 1);
    assert.equal(stats.dropped.registration_repeated, 1);
    assert.equal(stats.rekeys, 0);
    assert.equal(stats.messagesRelayed, 2);
  });
});

Deno.test("a replayed old registration does not roll a member back to its previous key", async () => {
  await withHarness({}, async (h) => {
    const a = await h.connect();
    const b = await h.connect();
    const oldRegistration = registrationOf(a);
    await reRegister(h, a);
    assert.equal(h.server.stats().rekeys, 1);
    // A spoofer replays A's first registration with A's address.
    h.network.deliver(
      oldRegistration,
      a.transport.localAddress,
      SERVER_ADDRESS,
    );
    await a.client.send("after rollback");
    await h.settle(a.transport);
    const c = await h.connect();
    await c.client.send("barrier");
    await received(b, "barrier");
    // The replayed registration of an earlier key is refused, so A stays on
    // its current key and its message goes through.
    const stats = h.server.stats();
    assert.equal(stats.dropped.registration_replayed, 1);
    assert.equal(stats.rekeys, 1);
    assert.deepEqual(
      messagesOf(b).map((m) => m.text),
      ["after rollback", "barrier"],
      `rekeys ${stats.rekeys}, token_signature ${stats.dropped.token_signature}`,
    );
  });
});

// ------------------------------------------------- registration hardening (protocol.md section 10)

/**
 * Makes `m` register again while the server still holds it: a NOTICE 1 from
 * the server's address, and the answer to the client's probe lost on the way
 * (what a spoofed NOTICE 1 on a lossy path does).
 */
async function reRegister(h: SpoofableRelay, m: Member): Promise<void> {
  const since = m.events.mark();
  m.lose.keepaliveAnswers = true;
  try {
    h.network.deliver(
      rec(RecordType.NOTICE, new Uint8Array([0, 1])),
      SERVER_ADDRESS,
      m.transport.localAddress,
    );
    await m.events.waitFor((e) => e.type === "ready", "registered again", {
      from: since,
    });
  } finally {
    m.lose.keepaliveAnswers = false;
  }
}

/**
 * A fresh cookie for `m`'s address, as the strongest sniffer gets it: a key
 * request spoofed as `m`, and the answer read where it reaches `m`.
 */
async function spoofedCookie(
  h: SpoofableRelay,
  m: Member,
): Promise<Uint8Array> {
  const since = m.inbound.mark();
  h.network.deliver(
    paddedKeyRequest(),
    m.transport.localAddress,
    SERVER_ADDRESS,
  );
  const answer = await m.inbound.waitFor(
    (d) => hasType(d, RecordType.SERVER_PUBLIC_KEY),
    "the key answer to the spoofed request",
    { from: since },
  );
  return cookieAnswer(answer).cookie;
}

/** A COOKIE + SYMMETRIC_KEY stream carrying a fresh key of the attacker's own. */
async function attackerRegistration(
  cookie: Uint8Array,
  extra: TlvRecord[] = [],
): Promise<{ datagram: Uint8Array; key: FernetKey }> {
  const key = await FernetKey.generate();
  const value = await serverKey.publicKey.encrypt(encoder.encode(key.text));
  return {
    datagram: encodeRecords([
      { type: RecordType.COOKIE, value: cookie },
      { type: RecordType.SYMMETRIC_KEY, value },
      ...extra,
    ]),
    key,
  };
}

Deno.test("identity takeover: a member's cookie reused with another key from its spoofed address is refused, and the member keeps its key", async () => {
  await withHarness({}, async (h) => {
    const a = await h.connect();
    const b = await h.connect();
    const cookie = decodeRecords(registrationOf(a)).find((r) =>
      r.type === RecordType.COOKIE
    )!.value.slice();
    // The sniffer of section 10: A's cookie, its own key, A's address.
    const { datagram } = await attackerRegistration(cookie);
    h.network.deliver(datagram, a.transport.localAddress, SERVER_ADDRESS);
    await h.settle(a.transport);
    const stats = h.server.stats();
    assert.equal(stats.dropped.cookie_reused, 1);
    assert.equal(stats.rekeys, 0);
    assert.equal(stats.rsaDecryptions, 2, "no RSA work for the reused cookie");
    // A still speaks for itself.
    await a.client.send("still mine");
    await received(b, "still mine");
    assert.deepEqual(
      messagesOf(b).map((m) => [m.from, m.text]),
      [[a.address, "still mine"]],
    );
  });
});

Deno.test("identity takeover: a fresh cookie for a member's address does not replace its key without KEY_PROOF under that key", async () => {
  await withHarness({}, async (h) => {
    const a = await h.connect();
    const b = await h.connect();
    const victim = a.transport.localAddress;
    // An attacker that can also see what reaches A's address (the strongest
    // sniffer) asks for a cookie as A and reads the answer.
    const cookie = await spoofedCookie(h, a);
    // Without a proof, and with proofs that do not hold.
    const { datagram: bare } = await attackerRegistration(cookie);
    h.network.deliver(bare, victim, SERVER_ADDRESS);
    await h.settle(a.transport);
    assert.equal(h.server.stats().dropped.rekey_without_proof, 1);
    const ownKey = await FernetKey.generate();
    const { datagram: forgedProof } = await attackerRegistration(
      await spoofedCookie(h, a),
      [{
        type: RecordType.KEY_PROOF,
        value: await ownKey.encrypt(new Uint8Array(16)),
      }],
    );
    h.network.deliver(forgedProof, victim, SERVER_ADDRESS);
    await h.settle(a.transport);
    const stats = h.server.stats();
    assert.equal(stats.dropped.rekey_proof_token_signature, 1);
    assert.equal(stats.rekeys, 0);
    await a.client.send("after the attempts");
    await received(b, "after the attempts");
    assert.deepEqual(messagesOf(b).map((m) => m.text), ["after the attempts"]);
  });
});

Deno.test("a client's own rekey carries KEY_PROOF and is accepted", async () => {
  await withHarness({}, async (h) => {
    const a = await h.connect();
    const b = await h.connect();
    await reRegister(h, a);
    const registration = decodeRecords(registrationOf(a));
    assert.deepEqual(registration.map((r) => r.type), [
      RecordType.COOKIE,
      RecordType.SYMMETRIC_KEY,
      RecordType.KEY_PROOF,
      RecordType.GROUP_CAPABLE,
    ]);
    assert.equal(h.server.stats().rekeys, 1);
    assert.equal(h.server.stats().dropped.rekey_without_proof, undefined);
    await a.client.send("rekeyed");
    await received(b, "rekeyed");
  });
});

Deno.test("client: a key answer from anyone but its unicast server is ignored, and nothing is registered with it", async () => {
  const network = new MemoryNetwork();
  const log = new Recorder<LogRecord>("server log", WAITS);
  const transport = network.bind("127.0.0.1");
  const impostor = network.bind("127.0.0.1");
  // The chosen server (SERVER_ADDRESS) never answers; the impostor answers
  // every key request sent there with a key answer from its own address.
  const forgedAnswer = encodeRecords([
    { type: RecordType.COOKIE, value: new Uint8Array(20) },
    {
      type: RecordType.SERVER_PUBLIC_KEY,
      value: encoder.encode(serverKey.publicKey.pem),
    },
  ]);
  const silent = network.bind(SERVER_ADDRESS.hostname, SERVER_ADDRESS.port);
  const registrations: Uint8Array[] = [];
  silent.enqueue = (datagram: Datagram) => {
    if (hasType(datagram.data, RecordType.KEY_REQUEST)) {
      void impostor.send(forgedAnswer, transport.localAddress);
    } else registrations.push(datagram.data.slice());
  };
  try {
    await assert.rejects(
      RelayClient.connect({
        transport,
        target: SERVER_ADDRESS,
        retryInitialMs: 20,
        retryAttempts: 3,
        log: (r) => log.push(r),
      }),
      HandshakeError,
    );
    assert.equal(log.count(isDrop("key_answer_not_from_server")), 1); // logged once per source
    assert.deepEqual(registrations, []);
  } finally {
    silent.close();
    impostor.close();
  }
});

/** Whether a datagram holds a record of `type`. */
function hasType(datagram: Uint8Array, type: number): boolean {
  return decodeRecords(datagram).some((r) => r.type === type);
}

Deno.test("maxClientsPerIp: one host's extra addresses get NOTICE 4 (shown to the client) while another IP still joins", async () => {
  await withHarness({ maxClientsPerIp: 2 }, async (h) => {
    await h.connect({}, "10.0.0.5");
    await h.connect({}, "10.0.0.5");
    const transport = h.network.bind("10.0.0.5");
    const events = new Recorder<ClientEvent>("client events", WAITS);
    const abort = new AbortController();
    const refused = assert.rejects(
      RelayClient.connect({
        transport,
        target: SERVER_ADDRESS,
        signal: abort.signal,
        onEvent: (e) => events.push(e),
      }),
      HandshakeError,
    );
    // The client reports NOTICE 4; closing it ends its retries.
    await events.waitFor(
      (e) => e.type === "notice" && e.code === NoticeCode.SERVER_FULL,
      "NOTICE 4 reported to the client",
    );
    abort.abort();
    await refused;
    assert.equal(events.count((e) => e.type === "ready"), 0);
    assert.ok((h.server.stats().dropped.ip_full ?? 0) >= 1);
    await h.connect({}, "10.0.0.6");
    assert.equal(h.server.stats().members, 3);
  });
});

Deno.test("amplification: key answers to the streams one datagram completes together stay within that datagram's size", async () => {
  await withHarness({}, async (h) => {
    const p = h.probe("10.0.0.7");
    // One 1200-byte datagram of three single-chunk FRAGMENT records, each a
    // whole stream holding a KEY_REQUEST: three answers would be 1.2x.
    const inner = encodeRecords([{
      type: RecordType.KEY_REQUEST,
      value: new Uint8Array(400 - 12 - 4), // FRAGMENT header 12, KEY_REQUEST header 4
    }]);
    const datagram = encodeRecords([1, 2, 3].map((msgId) => ({
      type: RecordType.FRAGMENT,
      value: encodeFragment({ msgId, index: 0, count: 1, chunk: inner }),
    })));
    assert.equal(datagram.length, 1200);
    await p.send(datagram);
    await h.settle(p.transport);
    const answered = p.inbound.items.reduce((n, d) => n + d.length, 0);
    assert.equal(p.inbound.items.length, 2);
    assert.ok(answered <= datagram.length, `${answered} bytes answered`);
    assert.equal(h.server.stats().dropped.answer_budget, 1);
  });
});

Deno.test("a rekey whose WELCOMEs are all lost is completed by the next key exchange with the same key (no lock-out)", async () => {
  await withHarness({}, async (h) => {
    const b = await h.connect(); // the RSA threads are warm after this
    const a = await h.connect({ retryInitialMs: 100, retryAttempts: 3 });
    // Lose every WELCOME of A's next key exchange (3 tries): the server has
    // taken A's new key, A does not know it.
    let toLose = 3;
    const enqueue = a.transport.enqueue.bind(a.transport);
    a.transport.enqueue = (datagram: Datagram) => {
      if (toLose > 0 && hasType(datagram.data, RecordType.WELCOME)) {
        toLose--;
        return;
      }
      enqueue(datagram);
    };
    await reRegister(h, a);
    assert.equal(toLose, 0);
    const stats = h.server.stats();
    assert.equal(stats.rekeys, 1);
    assert.equal(stats.dropped.rekey_proof_token_signature, undefined);
    assert.equal(stats.dropped.rekey_without_proof, undefined);
    await a.client.send("not locked out");
    await received(b, "not locked out");
  });
});
