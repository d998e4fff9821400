/**
 * The basic profile (protocol.md section 8) end to end over 127.0.0.1:
 * key exchange, whole and fragmented messages with their ACK texts, hostile
 * input rejected with a log line and no crash, and junk RSA floods bounded
 * by the per-IP and global decryption budgets (other loopback IPs,
 * 127.0.0.2 and up, stand for other hosts).
 */
import assert from "node:assert/strict";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { UdpTransport } from "../../lib/runtime/udp.ts";
import {
  basicKeyRequest,
  fragmentBasicCiphertext,
} from "../../lib/wire/basic.ts";
import { BasicClient } from "../../lib/relay/basic/client.ts";
import {
  BasicServer,
  type BasicServerEvent,
  type BasicServerOptions,
} from "../../lib/relay/basic/server.ts";
import type { LogRecord } from "../../lib/log.ts";
import {
  Recorder,
  WAIT_TIMEOUT_MS,
  withTimeout,
} from "../_support/recorder.ts";

const serverKey = await RsaPrivateKey.generate(4096);
const clientKey = await RsaPrivateKey.generate(2048);
const encoder = new TextEncoder();

const dropOf = (reason: string) => (r: LogRecord) =>
  r.event === "drop" && r.reason === reason;

async function startServer(
  compat = false,
  options: Partial<BasicServerOptions> = {},
) {
  const log = new Recorder<LogRecord>("basic server log");
  const messages: BasicServerEvent[] = [];
  const server = BasicServer.start({
    transport: await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 }),
    privateKey: serverKey,
    compat,
    log: (record) => log.push(record),
    onEvent: (event) => messages.push(event),
    ...options,
  });
  const waitForDrop = (reason: string) =>
    log.waitFor(dropOf(reason), `a "${reason}" drop`);
  return { server, logs: log.items, messages, waitForDrop };
}

/**
 * Sends raw datagrams from a fresh socket, then waits for `expectReplies`
 * replies, or (with 0) for `settled` (the server's log of the last datagram).
 */
async function exchangeRaw(
  server: BasicServer,
  datagrams: Uint8Array[],
  expectReplies: number,
  settled?: () => Promise<unknown>,
): Promise<Uint8Array[]> {
  const socket = await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 });
  const replies: Uint8Array[] = [];
  const done = (async () => {
    if (expectReplies === 0) return;
    for await (const { data } of socket) {
      replies.push(data);
      if (replies.length >= expectReplies) return;
    }
  })();
  for (const d of datagrams) await socket.send(d, server.localAddress);
  try {
    await withTimeout(
      expectReplies > 0 ? done : settled!(),
      `${expectReplies} replies`,
      WAIT_TIMEOUT_MS,
    );
  } finally {
    socket.close();
  }
  await done;
  return replies;
}

Deno.test("basic client gets 'ACK' for a whole message and '<id>: ACK' for a fragmented one, encrypted for it", async () => {
  const { server, messages } = await startServer();
  const client = await BasicClient.connect({
    transport: await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 }),
    server: server.localAddress,
    rsaKey: clientKey,
    fingerprint: server.fingerprint,
    retryInitialMs: 200,
  });
  try {
    const whole = await client.send("hello basic");
    assert.equal(whole.text, "ACK");
    assert.equal(whole.msgId, undefined);

    const fragmentingClient = client; // same key, fragments on demand below
    const longText = "x".repeat(400);
    const viaFragments = await BasicClient.connect({
      transport: await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 }),
      server: server.localAddress,
      rsaKey: clientKey,
      fragment: "always",
      retryInitialMs: 200,
    });
    try {
      const ack = await viaFragments.send(longText);
      assert.match(ack.text, /^\d+: ACK$/);
      assert.equal(ack.text, `${ack.msgId}: ACK`);
      assert.equal(ack.encrypted, true);
    } finally {
      await viaFragments.close();
    }
    assert.equal(whole.encrypted, true);
    assert.deepEqual(messages.map((m) => m.text), ["hello basic", longText]);
    assert.equal(messages[1]!.msgId !== undefined, true);
    assert.equal(fragmentingClient.maxMessageBytes, 512 - 66);
    await assert.rejects(client.send("y".repeat(447)), RangeError);
  } finally {
    await client.close();
    await server.close();
  }
});

Deno.test("basic server logs a message's size and sender at info, its plaintext only at debug, and delivers it to events() readers", async () => {
  const { server, logs } = await startServer();
  const reader = server.events();
  const transport = await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 });
  const clientAddress = `127.0.0.1:${transport.localAddress.port}`;
  const client = await BasicClient.connect({
    transport,
    server: server.localAddress,
    rsaKey: clientKey,
    retryInitialMs: 200,
  });
  const secret = "the launch code is 0000";
  try {
    assert.equal((await client.send(secret)).text, "ACK");
    const first = await reader.next();
    assert.equal(first.done, false);
    assert.deepEqual(
      { type: first.value!.type, from: first.value!.from },
      { type: "message", from: clientAddress },
    );
    assert.equal(first.value!.text, secret);
    // Key requests are retried on a timer (a late answer to a retry is
    // dropped as not an ACK): only the datagrams' lower bound is exact.
    const { datagramsOut, datagramsIn, dropped: _, ...counts } = client
      .stats();
    assert.deepEqual(counts, {
      messagesSent: 1,
      acks: 1,
      unencryptedAcks: 0,
      ackTimeouts: 0,
    });
    assert.ok(datagramsOut >= 3, `${datagramsOut}`); // key request, key, message
    assert.ok(datagramsIn >= 2, `${datagramsIn}`); // the server's key, the ACK
  } finally {
    await client.close();
    await server.close();
  }
  // A reader ends once the server has closed.
  assert.equal((await reader.next()).done, true);
  const atInfo = logs.filter((r) => r.level !== "debug");
  assert.ok(
    !atInfo.some((r) => JSON.stringify(r).includes(secret)),
    JSON.stringify(atInfo),
  );
  const info = atInfo.filter((r) => r.event === "message");
  assert.deepEqual(info, [{
    level: "info",
    event: "message",
    from: clientAddress,
    bytes: secret.length,
  }]);
  const debug = logs.filter((r) => r.level === "debug");
  assert.deepEqual(debug, [{
    level: "debug",
    event: "message_text",
    from: clientAddress,
    text: secret,
  }]);
});

Deno.test("basic server answers an unregistered sender's message with a plain ACK", async () => {
  const { server, messages } = await startServer();
  try {
    const ciphertext = await serverKey.publicKey.encrypt(
      encoder.encode("anon"),
    );
    const replies = await exchangeRaw(server, [ciphertext], 1);
    assert.equal(new TextDecoder().decode(replies[0]), "ACK");
    assert.equal(messages[0]!.text, "anon");
  } finally {
    await server.close();
  }
});

Deno.test("basic server answers only padded key requests unless compat", async () => {
  const strict = await startServer();
  try {
    const short = encoder.encode("REQ_PUB_KEY\n");
    assert.deepEqual(
      await exchangeRaw(
        strict.server,
        [short],
        0,
        () => strict.waitForDrop("short_key_request"),
      ),
      [],
    );
    assert.equal(strict.server.stats().dropped.short_key_request, 1);
    const padded = await exchangeRaw(strict.server, [basicKeyRequest()], 1);
    assert.equal(new TextDecoder().decode(padded[0]), serverKey.publicKey.pem);
    assert.ok(padded[0]!.length <= basicKeyRequest().length);
  } finally {
    await strict.server.close();
  }
  const compat = await startServer(true);
  try {
    const replies = await exchangeRaw(compat.server, [
      encoder.encode("REQ_PUB_KEY\n"),
    ], 1);
    assert.equal(new TextDecoder().decode(replies[0]), serverKey.publicKey.pem);
  } finally {
    await compat.server.close();
  }
});

Deno.test("basic server rejects bad PEM, wrong-size ciphertexts and inconsistent fragments with a log line", async () => {
  const { server, logs, messages, waitForDrop } = await startServer();
  try {
    const badPem = encoder.encode(
      "-----BEGIN PUBLIC KEY-----\nnot base64 at all!\n-----END PUBLIC KEY-----\n",
    );
    const ciphertext = await serverKey.publicKey.encrypt(encoder.encode("z"));
    // Fragments that reassemble to 500 bytes: not a 512-byte ciphertext.
    const short = fragmentBasicCiphertext(ciphertext.subarray(0, 500), 7, 250);
    // Same msg_id, different totals.
    const inconsistent = [
      ...fragmentBasicCiphertext(ciphertext, 9, 200).slice(0, 1),
      fragmentBasicCiphertext(ciphertext, 9, 100)[1]!,
    ];
    const tooShort = new Uint8Array([1, 2, 3]);
    const badNumber = new Uint8Array([0, 0, 0, 1, 3, 2, 9, 9]);
    await exchangeRaw(
      server,
      [
        badPem,
        ...short,
        ...inconsistent,
        tooShort,
        badNumber,
        // Sentinel: its drop, like the malformed ones, is counted as it
        // arrives, so once it is logged both malformed drops are counted.
        encoder.encode("REQ_PUB_KEY\n"),
      ],
      0,
      async () => {
        await waitForDrop("bad_client_key");
        await waitForDrop("undecryptable");
        await waitForDrop("inconsistent_fragment");
        await waitForDrop("malformed");
        await waitForDrop("short_key_request");
      },
    );
    const dropped = server.stats().dropped;
    assert.equal(dropped.bad_client_key, 1);
    assert.equal(dropped.undecryptable, 1);
    assert.equal(dropped.inconsistent_fragment, 1);
    assert.equal(dropped.malformed, 2);
    const reasons = logs.filter((l) => l.event === "drop").map((l) => l.reason);
    for (
      const reason of [
        "bad_client_key",
        "undecryptable",
        "inconsistent_fragment",
        "malformed",
      ]
    ) {
      assert.ok(reasons.includes(reason), `a log line for ${reason}`);
    }
    assert.equal(messages.length, 0);
    // Still serving.
    const replies = await exchangeRaw(server, [ciphertext], 1);
    assert.equal(new TextDecoder().decode(replies[0]), "ACK");
  } finally {
    await server.close();
  }
});

/**
 * Sends `count` junk ciphertexts (512 bytes, first byte 0 so that each is
 * below the modulus and costs a whole RSA-4096 decryption before it fails)
 * from a fresh socket on `hostname`. Once `send` returns, loopback has put
 * them in the server's socket queue, ahead of anything sent later.
 */
async function sendJunk(
  server: BasicServer,
  hostname: string,
  count: number,
): Promise<void> {
  const socket = await UdpTransport.bind({ hostname, port: 0 });
  try {
    for (let i = 0; i < count; i++) {
      const junk = crypto.getRandomValues(new Uint8Array(512));
      junk[0] = 0;
      await socket.send(junk, server.localAddress);
    }
  } finally {
    socket.close();
  }
}

/** A clock that never moves: token buckets hold exactly their bursts. */
const frozen = () => 1_800_000_000_000;

Deno.test("basic server: a junk RSA flood from one IP costs at most that IP's budget of decryptions, and a client on another IP is still served", async () => {
  const { server, messages } = await startServer(false, {
    now: frozen,
    messagesPerSecond: 5, // burst 10 per IP
    globalDecryptionBurst: 15,
  });
  try {
    await sendJunk(server, "127.0.0.1", 60);
    // Read after the flood (one socket queue, in order), from another IP.
    const client = await BasicClient.connect({
      transport: await UdpTransport.bind({ hostname: "127.0.0.2", port: 0 }),
      server: server.localAddress,
      rsaKey: clientKey,
      retryInitialMs: 200,
    });
    try {
      const ack = await client.send("served after the flood");
      assert.equal(ack.text, "ACK");
    } finally {
      await client.close();
    }
  } finally {
    await server.close(); // waits for every decryption under way
  }
  const stats = server.stats();
  assert.equal(stats.rsaDecryptions, 10 + 1, JSON.stringify(stats));
  assert.equal(stats.dropped.undecryptable, 10);
  assert.equal(stats.dropped.rate_limited, 50);
  assert.equal(stats.dropped.rsa_global_rate, undefined);
  assert.deepEqual(messages.map((m) => m.text), ["served after the flood"]);
});

Deno.test("basic server: the global RSA budget caps a junk flood from many source IPs", async () => {
  const { server, messages } = await startServer(false, {
    now: frozen,
    messagesPerSecond: 5, // burst 10 per IP: each source stays within it
    globalDecryptionBurst: 30,
  });
  const sources = 20;
  try {
    for (let i = 0; i < sources; i++) {
      await sendJunk(server, `127.0.0.${10 + i}`, 10);
      // The answer to a key request sent next: the server has read these
      // (and the socket buffer never holds more than one source's share).
      await exchangeRaw(server, [basicKeyRequest()], 1);
    }
  } finally {
    await server.close(); // waits for every datagram read and decryption
  }
  const stats = server.stats();
  assert.equal(stats.datagramsIn, sources * (10 + 1));
  assert.equal(stats.rsaDecryptions, 30, JSON.stringify(stats));
  assert.equal(stats.dropped.undecryptable, 30);
  assert.equal(stats.dropped.rsa_global_rate, sources * 10 - 30);
  assert.equal(stats.dropped.rate_limited, undefined);
  assert.equal(messages.length, 0);
});

Deno.test("the basic server bounds RSA work per source: past the rate, datagrams are dropped undecrypted", async () => {
  const frozen = Date.now();
  const log = new Recorder<LogRecord>("basic log");
  const server = BasicServer.start({
    transport: await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 }),
    privateKey: serverKey,
    messagesPerSecond: 2, // burst 4
    now: () => frozen, // no token refills while the test sends
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
      server.onEvent((event) => {
        if (event.type === "message" && ++decrypted === 4) resolve();
      })
    );
    const ciphertext = await serverKey.publicKey.encrypt(encoder.encode("x"));
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

Deno.test("a basic client closed with a send in flight leaves no timer and no unhandled rejection", async () => {
  // A server that answers the key request but never ACKs.
  const server = await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 });
  const serving = (async () => {
    for await (const d of server) {
      if (new TextDecoder().decode(d.data.subarray(0, 11)) === "REQ_PUB_KEY") {
        await server.send(encoder.encode(serverKey.publicKey.pem), d.from);
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
