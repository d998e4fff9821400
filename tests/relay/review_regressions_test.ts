/**
 * Regressions for the findings of the code review: each test failed (or hung)
 * before its fix. Loopback only.
 */
import assert from "node:assert/strict";
import { HandshakeError } from "../../lib/errors.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { encodeAddress } from "../../lib/wire/address.ts";
import { NoticeCode, noticeRecord } from "../../lib/wire/notice.ts";
import {
  encodeRecords,
  RecordType,
  TLV_HEADER_SIZE,
  type TlvRecord,
} from "../../lib/wire/tlv.ts";
import { ControlServer } from "../../lib/runtime/control.ts";
import { UdpTransport } from "../../lib/runtime/udp.ts";
import { BasicClient } from "../../lib/relay/basic/client.ts";
import { BasicServer } from "../../lib/relay/basic/server.ts";
import {
  type ClientEvent,
  RelayClient,
} from "../../lib/relay/client/client.ts";
import type { LogRecord } from "../../lib/relay/log.ts";
import { keyAnswerSize, RelayServer } from "../../lib/relay/server/server.ts";
import { Harness, keyRequest, Recorder, recordValue } from "./_harness.ts";

const serverKey = await RsaPrivateKey.generate(2048);
const rsaMemberKey = await RsaPrivateKey.generate(2048);
const encoder = new TextEncoder();

Deno.test("a datagram of several KEY_REQUEST records gets one answer, never more bytes than it had", async () => {
  await using h = new Harness(serverKey);
  const { server, waitDrop } = await h.startServer();
  const raw = await h.socket("amplifier");
  const answer = keyAnswerSize(serverKey);
  // Ten KEY_REQUEST records whose datagram is exactly one answer long.
  const records: TlvRecord[] = [];
  const padding = Math.floor((answer - 10 * TLV_HEADER_SIZE) / 10);
  for (let i = 0; i < 10; i++) {
    records.push({
      type: RecordType.KEY_REQUEST,
      value: new Uint8Array(
        i === 9 ? answer - 10 * TLV_HEADER_SIZE - 9 * padding : padding,
      ),
    });
  }
  const datagram = encodeRecords(records);
  assert.equal(datagram.length, answer);
  await raw.sendRaw(datagram, server.localAddress);
  await raw.received.waitFor(
    (d) => recordValue(d.data, RecordType.SERVER_PUBLIC_KEY) !== undefined,
    "the key answer",
  );
  // Sentinel: its drop is logged once every earlier datagram was handled.
  await raw.sendRaw(keyRequest(10), server.localAddress);
  await waitDrop("short_key_request");
  const answers = raw.received.items.filter((d) =>
    recordValue(d.data, RecordType.SERVER_PUBLIC_KEY) !== undefined
  );
  assert.equal(answers.length, 1);
  assert.ok(answers[0]!.data.length <= datagram.length);
  assert.equal(server.stats().dropped.extra_key_request, 9);
});

Deno.test("a client waiting for a key ignores a stranger's presence, NOTICE and junk key", async () => {
  await using h = new Harness(serverKey);
  const fakeServer = await h.socket("silent server");
  const stranger = await h.socket("stranger");
  const transport = await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 });
  const events: ClientEvent[] = [];
  const log = new Recorder<LogRecord>("client log");
  const connecting = RelayClient.connect({
    transport,
    target: fakeServer.localAddress,
    retryAttempts: 2,
    retryInitialMs: 300,
    onEvent: (e) => events.push(e),
    log: (r) => log.push(r),
  });
  const rejected = assert.rejects(connecting, HandshakeError);
  await fakeServer.received.waitFor(
    (d) => recordValue(d.data, RecordType.KEY_REQUEST) !== undefined,
    "the client's key request",
  );
  const notice = noticeRecord(
    NoticeCode.SERVER_FULL,
    200,
    "fake\n[6.6.6.6:666] hi",
  )!;
  await stranger.sendRaw(
    encodeRecords([
      { type: RecordType.COOKIE, value: new Uint8Array(20) },
      { type: RecordType.SERVER_PUBLIC_KEY, value: encoder.encode("junk") },
      {
        type: RecordType.NOTIFY_CONNECT,
        value: encodeAddress({ hostname: "6.6.6.6", port: 666 }),
      },
      notice,
    ]),
    transport.localAddress,
  );
  await log.waitFor(
    // Not from the unicast server it chose: not even parsed (section 10).
    (r) => r.event === "drop" && r.reason === "key_answer_not_from_server",
    "the stranger's key answer ignored",
  );
  await rejected;
  assert.deepEqual(events, []);
});

Deno.test("an RSA member's blocks are paid for before any RSA work", async () => {
  await using h = new Harness(serverKey);
  const { server, waitDrop } = await h.startServer({
    rsaBlocksPerSecond: 1,
    handshakesPerSecond: 1000,
    handshakeBurst: 1000,
  });
  const sender = await h.connect("rsa sender", {
    profile: "rsa",
    rsaKey: rsaMemberKey,
  });
  const receiver = await h.connect("receiver");
  const decryptsBefore = server.stats().rsaDecryptions;
  const big = "r".repeat(30_000); // 158 blocks of 190 bytes
  await sender.client.send(big);
  await receiver.waitMessage(big);
  assert.equal(server.stats().rsaDecryptions - decryptsBefore, 158);
  // The burst (200 blocks) has 42 left: the second message is refused
  // before decryption, with NOTICE 3.
  await sender.client.send(big);
  await waitDrop("rate_limited");
  await sender.waitEvent("notice");
  assert.equal(server.stats().rsaDecryptions - decryptsBefore, 158);
  assert.equal(server.stats().messagesRelayed, 1);
});

Deno.test("the basic server bounds RSA work per source: past the rate, datagrams are dropped undecrypted", async () => {
  const key4096 = await RsaPrivateKey.generate(4096);
  const log = new Recorder<LogRecord>("basic log");
  const server = BasicServer.start({
    transport: await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 }),
    privateKey: key4096,
    messagesPerSecond: 2, // burst 4
    log: (r) => log.push(r),
  });
  const raw = await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 });
  const acks: Uint8Array[] = [];
  const reading = (async () => {
    for await (const d of raw) acks.push(d.data);
  })();
  try {
    let decrypted = 0;
    const fourDecrypted = new Promise<void>((resolve) =>
      server.onMessage(() => {
        if (++decrypted === 4) resolve();
      })
    );
    const ciphertext = await key4096.publicKey.encrypt(encoder.encode("x"));
    for (let i = 0; i < 20; i++) {
      await raw.send(ciphertext, server.localAddress);
    }
    await raw.send(encoder.encode("REQ_PUB_KEY\n"), server.localAddress); // sentinel
    await log.waitFor(
      (r) => r.event === "drop" && r.reason === "short_key_request",
      "the sentinel",
    );
    assert.equal(server.stats().dropped.rate_limited, 16);
    await fourDecrypted;
    assert.equal(server.stats().rsaDecryptions, 4);
  } finally {
    raw.close();
    await reading;
    await server.close();
  }
  assert.ok(acks.length <= 4);
});

Deno.test("an RSA member kicked re-registers with the same key once its cookie is fresh", async () => {
  await using h = new Harness(serverKey);
  const { server } = await h.startServer();
  const member = await h.connect("rsa member", {
    profile: "rsa",
    rsaKey: rsaMemberKey,
    keepaliveMs: 100,
    retryInitialMs: 100,
  });
  const since = member.events.mark();
  assert.ok(server.kick(member.address));
  await member.events.waitFor(
    (e) => e.type === "ready",
    "registered again after the kick",
    { from: since },
  );
  assert.deepEqual(server.members().map((m) => m.address), [member.address]);
  // Cookies are a function of address and second (protocol.md section 4),
  // and an RSA member's key never changes: a re-registration carrying the
  // cookie of its first registration's second is byte for byte a replay, and
  // refused. The client retries that step (at most retryAttempts times),
  // then starts over with a fresh cookie and gets in: locked out for one
  // round of retries, not for the cookie's 66 s.
  const replayed = server.stats().dropped.registration_replayed ?? 0;
  assert.ok(replayed <= 5, `${replayed} registrations refused as replays`);
});

Deno.test("a newcomer refused with NOTICE 4 joins with the same registration once a slot frees", async () => {
  await using h = new Harness(serverKey);
  const { server } = await h.startServer({ maxClients: 1 });
  const first = await h.connect("first");
  const notices = new Recorder<ClientEvent>("newcomer events");
  const transport = await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 });
  const joining = RelayClient.connect({
    transport,
    target: server.localAddress,
    retryInitialMs: 200,
    retryAttempts: 5,
    onEvent: (e) => notices.push(e),
  });
  await notices.waitFor(
    (e) => e.type === "notice" && e.code === NoticeCode.SERVER_FULL,
    "NOTICE 4",
  );
  await first.client.close();
  const newcomer = await joining;
  try {
    assert.deepEqual(server.members().map((m) => m.address), [
      newcomer.address,
    ]);
    assert.equal(server.stats().dropped.registration_replayed, undefined);
  } finally {
    await newcomer.close();
  }
});

Deno.test("RelayServer refuses an MTU that cannot carry its key answer in one datagram", async () => {
  const transport = await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 });
  try {
    await assert.rejects(
      () => RelayServer.start({ transport, privateKey: serverKey, mtu: 400 }),
      (error: unknown) =>
        error instanceof RangeError && /at least 479/.test(error.message),
    );
  } finally {
    transport.close();
  }
  assert.equal(keyAnswerSize(serverKey), 479);
});

Deno.test("a client whose cookies keep going stale gives up after its attempts instead of looping", async () => {
  // A server that answers every key request with a cookie and the real key,
  // and never sends a WELCOME.
  const fakeServer = await UdpTransport.bind({
    hostname: "127.0.0.1",
    port: 0,
  });
  const answer = encodeRecords([
    { type: RecordType.COOKIE, value: new Uint8Array(20) },
    {
      type: RecordType.SERVER_PUBLIC_KEY,
      value: encoder.encode(serverKey.publicKey.pem),
    },
  ]);
  const serving = (async () => {
    for await (const d of fakeServer) {
      if (recordValue(d.data, RecordType.KEY_REQUEST) !== undefined) {
        await fakeServer.send(answer, d.from);
      }
    }
  })();
  let clock = 0;
  const transport = await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 });
  try {
    await assert.rejects(
      RelayClient.connect({
        transport,
        target: fakeServer.localAddress,
        retryAttempts: 7,
        retryInitialMs: 20,
        // Every reading of the clock is a minute later: each cookie is stale.
        now: () => (clock += 60_000),
      }),
      HandshakeError,
    );
  } finally {
    fakeServer.close();
    await serving;
  }
});

Deno.test("the control port makes room past maxConnections (the one silent longest is told and closed) and keeps a long reply whole", async () => {
  const control = ControlServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    maxConnections: 2,
    maxQueuedLines: 3,
    onLine: (connection) =>
      connection.write(
        Array.from({ length: 50 }, (_, i) => `line ${i}`).join("\n"),
      ),
  });
  const conns: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      conns.push(
        await Deno.connect({ hostname: "127.0.0.1", port: control.port }),
      );
    }
    const closing = await readUntilClosed(conns[0]!);
    assert.match(
      closing,
      /^error: closed to make room for a new control connection \(2 at most; .*\n$/,
    );
    assert.equal(control.evictedConnections, 1);
    await conns[1]!.write(encoder.encode("clients\n"));
    const reply = await readLines(conns[1]!, 50);
    assert.deepEqual(reply, Array.from({ length: 50 }, (_, i) => `line ${i}`));
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch {
        // closed by the server
      }
    }
    await control.close();
  }
});

Deno.test("a basic client closed with a send in flight leaves no timer and no unhandled rejection", async () => {
  const key4096 = await RsaPrivateKey.generate(4096);
  // A server that answers the key request but never ACKs.
  const server = await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const d of server) {
      if (new TextDecoder().decode(d.data.subarray(0, 11)) === "REQ_PUB_KEY") {
        await server.send(encoder.encode(key4096.publicKey.pem), d.from);
      }
    }
  })();
  try {
    const client = await BasicClient.connect({
      transport: await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 }),
      server: server.localAddress,
      ackTimeoutMs: 60_000,
      retryInitialMs: 200,
    });
    const rejected = assert.rejects(client.send("hello"), /closed/);
    await client.close();
    await rejected;
    // The ACK timer is gone (the ops sanitizer would report it), and a
    // second send fails at once.
    await assert.rejects(client.send("again"), /closed/);
  } finally {
    server.close();
    await serving;
  }
});

async function readUntilClosed(conn: Deno.TcpConn): Promise<string> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(1024);
  while (true) {
    const n = await conn.read(buffer).catch(() => null);
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
  }
  return new TextDecoder().decode(
    chunks.reduce((all, c) => new Uint8Array([...all, ...c]), new Uint8Array()),
  );
}

async function readLines(conn: Deno.TcpConn, count: number): Promise<string[]> {
  let text = "";
  const buffer = new Uint8Array(4096);
  while (text.split("\n").length <= count) {
    const n = await conn.read(buffer);
    if (n === null) break;
    text += new TextDecoder().decode(buffer.subarray(0, n));
  }
  return text.split("\n").slice(0, count);
}
