/**
 * The key exchange as seen on the wire, and the pinned fingerprint: a
 * matching pin connects; a mismatching one makes connect() reject with a
 * HandshakeError before the client sends its key, so the server never
 * registers it. A WELCOME that answers the client's own retried registration
 * is expected, not a drop.
 */
import assert from "node:assert/strict";
import { HandshakeError } from "../../lib/errors.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { MemoryNetwork } from "../../lib/runtime/memory.ts";
import type { Datagram } from "../../lib/runtime/transport.ts";
import { UdpTransport } from "../../lib/runtime/udp.ts";
import {
  decodeAddress,
  encodeAddress,
  formatAddress,
} from "../../lib/wire/address.ts";
import { NoticeCode, noticeRecord } from "../../lib/wire/notice.ts";
import { encodeRecords, RecordType } from "../../lib/wire/tlv.ts";
import {
  type ClientEvent,
  RelayClient,
} from "../../lib/relay/client/client.ts";
import type { LogRecord } from "../../lib/log.ts";
import { keyAnswerSize, RelayServer } from "../../lib/relay/server/server.ts";
import {
  Harness,
  hasRecord,
  Recorder,
  recordsOf,
  recordValue,
} from "./_harness.ts";

const encoder = new TextEncoder();
import {
  keyRequestDatagram,
  registrationRecords,
  reuseUnconfirmedKey,
  UNCONFIRMED_KEY_REUSE_MS,
} from "../../lib/relay/client/handshake_rules.ts";

const [serverKey, otherKey] = await Promise.all([
  RsaPrivateKey.generate(2048),
  RsaPrivateKey.generate(2048),
]);

/** `SHA256:` + unpadded base64 of SHA-256 over the DER SPKI (OpenSSH form), computed here independently. */
async function opensshFingerprint(key: RsaPrivateKey): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", key.publicKey.spki),
  );
  return "SHA256:" + btoa(String.fromCharCode(...digest)).replace(/=+$/, "");
}

Deno.test("key exchange on the wire: padded KEY_REQUEST, COOKIE + SERVER_PUBLIC_KEY, COOKIE + SYMMETRIC_KEY, WELCOME", async () => {
  await using h = new Harness(serverKey);
  const { server, tap: serverTap } = await h.startServer();
  const a = await h.connect("a");

  const sent = a.tap.sent.items.map((d) => recordsOf(d.data));
  assert.equal(sent.length, 2);
  // Key request: one KEY_REQUEST of zeros filling exactly the MTU.
  assert.equal(a.tap.sent.items[0]!.data.length, 1200);
  assert.deepEqual(sent[0]!.map((r) => r.type), [RecordType.KEY_REQUEST]);
  assert.ok(sent[0]![0]!.value.every((b) => b === 0));
  // Registration: the cookie received, unchanged, then the key (one RSA block).
  const answer = recordsOf(a.tap.received.items[0]!.data);
  assert.deepEqual(answer.map((r) => r.type), [
    RecordType.COOKIE,
    RecordType.SERVER_PUBLIC_KEY,
  ]);
  // GROUP_CAPABLE after the key record (section 9; clients ask by default).
  assert.deepEqual(sent[1]!.map((r) => r.type), [
    RecordType.COOKIE,
    RecordType.SYMMETRIC_KEY,
    RecordType.GROUP_CAPABLE,
  ]);
  assert.deepEqual(sent[1]![0]!.value, answer[0]!.value);
  assert.equal(sent[1]![1]!.value.length, 256);
  // WELCOME, from the address that answered the key request.
  const welcome = a.tap.received.items[1]!;
  assert.ok(hasRecord(welcome.data, RecordType.WELCOME));
  assert.equal(formatAddress(welcome.from), formatAddress(server.localAddress));
  assert.equal(a.client.serverAddress, formatAddress(server.localAddress));
  assert.equal(a.address, a.tap.address);
  assert.equal(serverTap.received.items.length, 2);
  // A second member is announced to the first with its address value.
  const b = await h.connect("b");
  const joined = await a.tap.received.waitFor(
    (d) => hasRecord(d.data, RecordType.NOTIFY_CONNECT),
    "NOTIFY_CONNECT of b",
  );
  assert.equal(
    formatAddress(decodeAddress(recordsOf(joined.data)[0]!.value)),
    b.address,
  );
});

Deno.test("pinned fingerprint: a matching pin connects", async () => {
  await using h = new Harness(serverKey);
  const { server } = await h.startServer();
  const expected = await opensshFingerprint(serverKey);
  assert.equal(server.fingerprint, expected);
  assert.match(expected, /^SHA256:[A-Za-z0-9+/]{43}$/);

  const a = await h.connect("a", { fingerprint: expected });
  assert.equal(a.client.serverFingerprint, expected);
  assert.equal(a.client.ready, true);
  assert.deepEqual(server.members().map((m) => m.address), [a.address]);
});

Deno.test("pinned fingerprint: a mismatching pin rejects with HandshakeError and the client never sends its key", async () => {
  await using h = new Harness(serverKey);
  const { server, tap } = await h.startServer();
  const wrong = await opensshFingerprint(otherKey);
  const events: string[] = [];

  await assert.rejects(
    h.connect("pinned", {
      fingerprint: wrong,
      // No retry falls due while the test runs: the one key request below
      // proves the mismatching answer alone ended the key exchange.
      retryAttempts: 1,
      retryInitialMs: 60_000,
      onEvent: (e) => events.push(e.type),
    }),
    (error: unknown) => {
      assert.ok(error instanceof HandshakeError, String(error));
      assert.match(error.message, /does not match the pinned fingerprint/);
      assert.ok(error.message.includes(server.fingerprint));
      assert.ok(error.message.includes(wrong));
      return true;
    },
  );
  assert.deepEqual(events, []);
  assert.deepEqual(server.members(), []);
  const stats = server.stats();
  assert.equal(stats.registrations, 0);
  // Only one key request reached the server: the unicast target itself
  // answered with another key, so the client failed at once (no retry), and
  // sent no SYMMETRIC_KEY and no COOKIE.
  assert.equal(tap.received.items.length, 1);
  for (const d of tap.received.items) {
    assert.deepEqual(
      recordsOf(d.data).map((r) => r.type),
      [RecordType.KEY_REQUEST],
    );
  }
  assert.equal(stats.datagramsOut, 1);
});

Deno.test("no server: connect() rejects with HandshakeError after its retries and leaves nothing open", async () => {
  await using h = new Harness(serverKey);
  // A bound socket that never answers stands in for a dead server.
  const silent = await h.socket("silent");
  await assert.rejects(
    h.connect("lonely", {
      target: silent.localAddress,
      retryAttempts: 3,
      retryInitialMs: 20,
    }),
    (error: unknown) =>
      error instanceof HandshakeError && /No answer/.test(error.message),
  );
  // Three key requests, each padded to the MTU.
  await silent.received.waitForCount(() => true, 3, "key requests");
  assert.ok(
    silent.received.items.every((d) =>
      d.data.length === 1200 && hasRecord(d.data, RecordType.KEY_REQUEST)
    ),
  );
});

Deno.test("a WELCOME answering the client's own retried registration is not counted as a drop; the same WELCOME replayed is", async () => {
  await using h = new Harness(serverKey);
  const network = new MemoryNetwork();
  const { server } = await h.startServer({ transport: network.bind() });
  // The first WELCOME (and what follows it) is held until the server has
  // answered the client's retry too, then both arrive: what happens when the
  // server's RSA threads take longer than the client's first retry delay.
  const transport = network.bind();
  const enqueue = transport.enqueue.bind(transport);
  let held: Datagram[] | undefined;
  let welcomes = 0;
  transport.enqueue = (datagram: Datagram) => {
    if (hasRecord(datagram.data, RecordType.WELCOME) && ++welcomes === 1) {
      held = [];
    }
    if (held === undefined) return enqueue(datagram);
    held.push(datagram);
    if (welcomes < 2) return;
    for (const d of held) enqueue(d);
    held = undefined;
  };
  const a = await h.connect("a", { transport });
  // Anything a receives after b joins was processed after both WELCOMEs.
  const b = await h.connect("b", { transport: network.bind() });
  await a.waitPresence("join", b.address);
  const registrations = a.tap.sent.filter((d) =>
    hasRecord(d.data, RecordType.SYMMETRIC_KEY)
  );
  assert.ok(registrations.length >= 2, "the client did not retry");
  // The retry resends the same bytes (one cookie, one key).
  for (const d of registrations) {
    assert.deepEqual(d.data, registrations[0]!.data);
  }
  const answers = a.tap.received.filter((d) =>
    hasRecord(d.data, RecordType.WELCOME)
  );
  assert.ok(answers.length >= 2);
  assert.ok(server.stats().dropped.registration_repeated! >= 1);
  assert.deepEqual(a.client.stats().dropped, {});
  assert.equal(a.client.stats().registrations, 1);
  assert.ok(a.log.count((r) => r.event === "welcome_repeated") >= 1);

  // Replayed from the server's address, the last WELCOME fails the replay
  // check and is counted as before.
  network.deliver(
    answers.at(-1)!.data,
    server.localAddress,
    a.tap.localAddress,
  );
  const c = await h.connect("c", { transport: network.bind() });
  await a.waitPresence("join", c.address);
  assert.deepEqual(a.client.stats().dropped, { unexpected_welcome: 1 });
  assert.equal(a.client.stats().registrations, 1);
});

Deno.test("a client waiting for a key ignores a stranger's presence, NOTICE and junk key", async () => {
  await using h = new Harness(serverKey);
  const fakeServer = await h.socket("silent server");
  const stranger = await h.socket("stranger");
  const transport = await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 });
  const events: ClientEvent[] = [];
  const log = new Recorder<LogRecord>("client log");
  // The client waits for its key answer for as long as the test needs (its
  // first retry is a minute away); the test ends the wait by aborting.
  const abort = new AbortController();
  const connecting = RelayClient.connect({
    transport,
    target: fakeServer.localAddress,
    retryAttempts: 1,
    retryInitialMs: 60_000,
    signal: abort.signal,
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
  abort.abort();
  await rejected;
  assert.deepEqual(events, []);
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

/** Bytes from hex, spaces ignored. */
function hex(text: string): Uint8Array {
  const digits = text.replaceAll(" ", "");
  return Uint8Array.from(
    { length: digits.length / 2 },
    (_, i) => parseInt(digits.slice(2 * i, 2 * i + 2), 16),
  );
}

Deno.test("the client's key request and registration streams, byte for byte", () => {
  // One KEY_REQUEST (type 7) of zeros filling the MTU; at least its header.
  assert.deepEqual(keyRequestDatagram(12), hex("0007 0008 0000000000000000"));
  assert.deepEqual(keyRequestDatagram(1), hex("0007 0000"));
  const cookie = hex("c0c1c2");
  const keyValue = hex("4b45");
  // Hybrid, a rekey, asking for group fan-out: COOKIE (17), SYMMETRIC_KEY
  // (13), KEY_PROOF (21), GROUP_CAPABLE (18).
  const rekey = registrationRecords(cookie, {
    profile: "hybrid",
    keyValue,
    proof: hex("50"),
    groupCapable: true,
  });
  assert.deepEqual(
    encodeRecords(rekey),
    hex("0011 0003 c0c1c2  000d 0002 4b45  0015 0001 50  0012 0000"),
  );
  // Hybrid, first registration, no group fan-out: COOKIE, SYMMETRIC_KEY.
  assert.deepEqual(
    encodeRecords(registrationRecords(cookie, {
      profile: "hybrid",
      keyValue,
      proof: undefined,
      groupCapable: false,
    })),
    hex("0011 0003 c0c1c2  000d 0002 4b45"),
  );
  // RSA profile: COOKIE, CLIENT_PUBLIC_KEY (4).
  assert.deepEqual(
    encodeRecords(registrationRecords(cookie, {
      profile: "rsa",
      keyValue,
      proof: undefined,
      groupCapable: false,
    })),
    hex("0011 0003 c0c1c2  0004 0002 4b45"),
  );
});

Deno.test({
  name:
    "reuseUnconfirmedKey: an unconfirmed key is offered again for the server's member timeout (30 s) after its registration was last sent, then a new key is made",
  permissions: "none",
  fn() {
    assert.equal(UNCONFIRMED_KEY_REUSE_MS, 30_000);
    assert.equal(reuseUnconfirmedKey(1_000, 1_000), true);
    assert.equal(reuseUnconfirmedKey(1_000, 31_000), true);
    assert.equal(reuseUnconfirmedKey(1_000, 31_001), false);
  },
});
