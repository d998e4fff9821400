/**
 * Registration needs a valid address-validation cookie, checked before any
 * RSA work: a cookieless key, a tampered cookie, a cookie made for another
 * address and an expired cookie are all dropped and counted without a single
 * RSA decryption, and nobody is added.
 */
import assert from "node:assert/strict";
import { HandshakeError } from "../../lib/errors.ts";
import { FernetKey } from "../../lib/crypto/fernet.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { MemoryNetwork } from "../../lib/runtime/memory.ts";
import { UdpTransport } from "../../lib/runtime/udp.ts";
import {
  type HandshakeProgress,
  RelayClient,
} from "../../lib/relay/client/client.ts";
import { decodeAddress, formatAddress } from "../../lib/wire/address.ts";
import { encodeRecords, RecordType } from "../../lib/wire/tlv.ts";
import { fetchCookie, Harness, recordValue } from "./_harness.ts";

const serverKey = await RsaPrivateKey.generate(2048);
const clientRsaKey = await RsaPrivateKey.generate(2048);
const encoder = new TextEncoder();

/** A fresh Fernet key and its SYMMETRIC_KEY value (RSA-OAEP under the server key). */
async function symmetricKey(): Promise<{ key: FernetKey; value: Uint8Array }> {
  const key = await FernetKey.generate();
  return {
    key,
    value: await serverKey.publicKey.encrypt(encoder.encode(key.text)),
  };
}

Deno.test("registration without a valid cookie is dropped before any RSA decryption", async () => {
  const network = new MemoryNetwork();
  await using h = new Harness(serverKey);
  const { server, address, waitDrop, log } = await h.startServer({
    transport: network.bind(),
  });
  const a = await h.socket("a", network.bind());
  const b = await h.socket("b", network.bind());
  const cookieForA = await fetchCookie(a, address, serverKey.publicKey.pem);
  const { value: symmetricKeyValue } = await symmetricKey();
  const cookieRecord = (value: Uint8Array) => ({
    type: RecordType.COOKIE,
    value,
  });
  const keyRecord = {
    type: RecordType.SYMMETRIC_KEY,
    value: symmetricKeyValue,
  };
  const flipped = cookieForA.slice();
  flipped[19]! ^= 0x01;

  // 1. No cookie at all.
  await a.sendRaw(encodeRecords([keyRecord]), address);
  // 2. A's cookie with one byte of its MAC flipped.
  await a.sendRaw(encodeRecords([cookieRecord(flipped), keyRecord]), address);
  // 3. A cookie covers the key record after it, not one before it.
  await a.sendRaw(
    encodeRecords([keyRecord, cookieRecord(cookieForA)]),
    address,
  );
  // 4. The RSA profile's registration without a cookie.
  await a.sendRaw(
    encodeRecords([{
      type: RecordType.CLIENT_PUBLIC_KEY,
      value: encoder.encode(clientRsaKey.publicKey.pem),
    }]),
    address,
  );
  // 5. A's valid cookie, sent from another bound socket B...
  await b.sendRaw(
    encodeRecords([cookieRecord(cookieForA), keyRecord]),
    address,
  );
  // 6. ...and from a spoofed source nobody is bound to.
  const spoofed = { hostname: "127.0.0.1", port: 9 };
  network.deliver(
    encodeRecords([cookieRecord(cookieForA), keyRecord]),
    spoofed,
    address,
  );

  await waitDrop("cookie_missing");
  await waitDrop("cookie_bad_mac");
  await log.waitFor(
    (r) =>
      r.event === "drop" && r.reason === "cookie_bad_mac" &&
      r.source === b.address,
    "B's cookie_bad_mac drop",
  );
  await log.waitFor(
    (r) =>
      r.event === "drop" && r.reason === "cookie_bad_mac" &&
      r.source === formatAddress(spoofed),
    "the spoofed source's cookie_bad_mac drop",
  );
  // Barrier for A: its next key request is answered only after the above.
  await fetchCookie(a, address, serverKey.publicKey.pem);

  const dropped = server.stats().dropped;
  assert.equal(dropped.cookie_missing, 3, JSON.stringify(dropped));
  assert.equal(dropped.cookie_bad_mac, 3, JSON.stringify(dropped));
  assert.equal(
    server.stats().rsaDecryptions,
    0,
    "RSA decryption without a valid cookie",
  );
  assert.deepEqual(server.members(), []);
  assert.equal(server.stats().registrations, 0);
  assert.equal(
    b.received.count((d) =>
      recordValue(d.data, RecordType.WELCOME) !== undefined
    ),
    0,
  );

  // Control: the same key with A's own cookie, from A, registers (one decryption).
  await a.sendRaw(
    encodeRecords([cookieRecord(cookieForA), keyRecord]),
    address,
  );
  await a.received.waitFor(
    (d) => recordValue(d.data, RecordType.WELCOME) !== undefined,
    "A's WELCOME",
  );
  assert.equal(server.stats().rsaDecryptions, 1);
  assert.deepEqual(server.members().map((m) => m.address), [a.address]);
  assert.equal(server.stats().registrations, 1);
});

Deno.test("a cookie older than 60 s is refused without RSA work; a fresh one from the same address works", async () => {
  const network = new MemoryNetwork();
  let skewMs = 0;
  await using h = new Harness(serverKey);
  const { server, address, waitDrop } = await h.startServer({
    transport: network.bind(),
    now: () => Date.now() + skewMs,
  });
  const a = await h.socket("a", network.bind());
  const old = await fetchCookie(a, address, serverKey.publicKey.pem);
  const fernet = await symmetricKey();
  const keyRecord = { type: RecordType.SYMMETRIC_KEY, value: fernet.value };

  skewMs = 62_000;
  await a.sendRaw(
    encodeRecords([{ type: RecordType.COOKIE, value: old }, keyRecord]),
    address,
  );
  await waitDrop("cookie_expired");
  assert.equal(server.stats().rsaDecryptions, 0);
  assert.deepEqual(server.members(), []);

  const fresh = await fetchCookie(a, address, serverKey.publicKey.pem);
  await a.sendRaw(
    encodeRecords([{ type: RecordType.COOKIE, value: fresh }, keyRecord]),
    address,
  );
  const welcome = await a.received.waitFor(
    (d) => recordValue(d.data, RecordType.WELCOME) !== undefined,
    "A's WELCOME",
  );
  assert.equal(server.stats().rsaDecryptions, 1);
  assert.deepEqual(server.members().map((m) => m.address), [a.address]);
  // WELCOME: a token under the registered key of A's address as seen by the server.
  const opened = await fernet.key.decrypt(
    recordValue(welcome.data, RecordType.WELCOME)!,
    { nowSeconds: Math.floor((Date.now() + skewMs) / 1000) },
  );
  assert.deepEqual(decodeAddress(opened.plaintext), a.localAddress);
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
  let registrations = 0;
  const serving = (async () => {
    for await (const d of fakeServer) {
      if (recordValue(d.data, RecordType.KEY_REQUEST) !== undefined) {
        await fakeServer.send(answer, d.from);
      } else if (recordValue(d.data, RecordType.COOKIE) !== undefined) {
        registrations++;
      }
    }
  })();
  let clock = 0;
  const progress: HandshakeProgress[] = [];
  const transport = await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 });
  try {
    await assert.rejects(
      RelayClient.connect({
        transport,
        target: fakeServer.localAddress,
        retryAttempts: 7,
        // The fake server answers at once; these tries (25 s in all) only
        // bound a round whose answer a busy machine delays.
        retryInitialMs: 200,
        // Every reading of the clock is a minute later: each cookie is stale.
        now: () => (clock += 60_000),
        onProgress: (p) => progress.push(p),
      }),
      (error: unknown) =>
        error instanceof HandshakeError &&
        /sent its key but no valid WELCOME after 7 tries/.test(error.message),
    );
  } finally {
    fakeServer.close();
    await serving;
  }
  // Each stale cookie started the key exchange over, 7 times at most (8
  // rounds of key requests); no stale cookie was ever sent.
  assert.equal(
    progress.filter((p) => p.step === "key" && p.attempt === 1)
      .length,
    8,
  );
  assert.equal(progress.filter((p) => p.step === "register").length, 0);
  assert.equal(registrations, 0);
});

Deno.test("one key, one member: a captured key record replayed from another address with its own cookie is refused (key_in_use) while the key is held and after its holder left, and the holder's token sent from there is not relayed", async () => {
  await using h = new Harness(serverKey);
  const { server, address, waitDrop, log } = await h.startServer();
  const victim = await h.socket("victim");
  const replayer = await h.socket("replayer");
  const { key, value } = await symmetricKey();
  const registration = (cookie: Uint8Array) =>
    encodeRecords([
      { type: RecordType.COOKIE, value: cookie },
      { type: RecordType.SYMMETRIC_KEY, value },
    ]);

  const mark = victim.received.mark();
  await victim.sendRaw(
    registration(await fetchCookie(victim, address)),
    address,
  );
  await victim.received.waitFor(
    (d) => recordValue(d.data, RecordType.WELCOME) !== undefined,
    "the victim's WELCOME",
    { from: mark },
  );
  const listener = await h.connect("listener");

  // The same key record, with a cookie the replayer fetched for itself.
  await replayer.sendRaw(
    registration(await fetchCookie(replayer, address)),
    address,
  );
  await waitDrop("key_in_use");
  assert.deepEqual(
    server.members().map((m) => m.address).sort(),
    [formatAddress(victim.localAddress), listener.address].sort(),
  );

  // A token under the victim's key, from the replayer: an unknown source.
  const token = await key.encrypt(encoder.encode("the victim's words"));
  const message = encodeRecords([{
    type: RecordType.FERNET_MESSAGE,
    value: token,
  }]);
  await replayer.sendRaw(message, address);
  await waitDrop("unknown_source");
  // From the victim, the same token is relayed, once.
  await victim.sendRaw(message, address);
  await listener.waitMessage("the victim's words", {
    sender: formatAddress(victim.localAddress),
  });
  assert.deepEqual(listener.messages().map((m) => m.text), [
    "the victim's words",
  ]);
  assert.equal(server.stats().messagesRelayed, 1);

  // The victim leaves; while its tokens can still pass the age checks its
  // key stays refused, so the captured record still admits no one.
  const left = listener.events.mark();
  await victim.sendRaw(
    encodeRecords([{
      type: RecordType.DISCONNECT,
      value: await key.encrypt(encoder.encode("DISCONNECT")),
    }]),
    address,
  );
  await listener.waitPresence(
    "leave",
    formatAddress(victim.localAddress),
    left,
  );
  const later = await h.socket("later replayer");
  const dropsBefore = log.mark();
  await later.sendRaw(registration(await fetchCookie(later, address)), address);
  await waitDrop("key_in_use", dropsBefore);
  assert.deepEqual(server.members().map((m) => m.address), [listener.address]);
});
