/**
 * Load shedding: while the server's load probe says the event loop is
 * overloaded, key requests and registrations are dropped (`handshake_shed`,
 * no RSA work, no answer) and registered members keep relaying; when it
 * clears, clients register again. The probe is a stub the test flips, so
 * nothing here depends on how busy the machine is.
 *
 * Traffic goes to 127.0.0.1 only.
 */
import assert from "node:assert/strict";
import { FernetKey } from "../../lib/crypto/fernet.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { encodeRecords, RecordType } from "../../lib/protocol/tlv.ts";
import type { LoadProbe } from "../../lib/relay/load.ts";
import { Harness, keyRequest, recordValue } from "./_harness.ts";

const serverKey = await RsaPrivateKey.generate(2048);
const encoder = new TextEncoder();

/** A load probe the test sets by hand. */
class StubLoad implements LoadProbe {
  overloaded = false;
  utilization = 0;
  waits = 0;
  waited(): void {
    this.waits++;
  }
}

Deno.test("while overloaded, key requests and registrations are shed (no answer, no RSA) and members keep relaying; afterwards clients register", async () => {
  const load = new StubLoad();
  await using h = new Harness(serverKey);
  const { server, address } = await h.startServer({ load });
  const a = await h.connect("a");
  const b = await h.connect("b");
  assert.ok(load.waits > 0, "the receive loop reports its waits");

  // A cookie obtained before the overload, for a registration during it.
  const peer = await h.socket("peer");
  await peer.sendRaw(keyRequest(1200), address);
  const answer = await peer.received.waitFor(
    (d) => recordValue(d.data, RecordType.COOKIE) !== undefined,
    "the key answer before the overload",
  );
  const cookie = recordValue(answer.data, RecordType.COOKIE)!.slice();
  const key = await FernetKey.generate();
  const block = await serverKey.publicKey.encrypt(encoder.encode(key.text));
  const rsaBefore = server.stats().rsaDecryptions;

  load.overloaded = true;
  const mark = peer.received.mark();
  await peer.sendRaw(keyRequest(1200), address);
  await peer.sendRaw(
    encodeRecords([
      { type: RecordType.COOKIE, value: cookie },
      { type: RecordType.SYMMETRIC_KEY, value: block },
    ]),
    address,
  );
  // The server handles one source's datagrams in order: the NOTICE to this
  // unregistered source's message proves both were handled before it.
  await peer.sendRaw(
    encodeRecords([{
      type: RecordType.FERNET_MESSAGE,
      value: await key.encrypt(encoder.encode("hello?")),
    }]),
    address,
  );
  await peer.received.waitFor(
    (d) => recordValue(d.data, RecordType.NOTICE) !== undefined,
    "the NOTICE after the shed datagrams",
    { from: mark },
  );
  const during = peer.received.items.slice(mark);
  assert.equal(during.length, 1, "only the NOTICE: no key answer, no WELCOME");
  assert.equal(server.stats().dropped.handshake_shed, 2);
  assert.equal(server.stats().rsaDecryptions, rsaBefore, "no RSA work");
  assert.equal(server.stats().members, 2);

  // Members relay as before.
  const from = b.events.mark();
  await a.client.send("still relaying");
  await b.waitMessage("still relaying", { from, sender: a.address });

  load.overloaded = false;
  const c = await h.connect("c");
  await a.waitPresence("join", c.address);
  assert.equal(server.stats().members, 3);
  assert.equal(server.stats().dropped.handshake_shed, 2);
});

Deno.test("the server logs that it is shedding, with the loop's utilization, at most once per 10 s", async () => {
  const load = new StubLoad();
  await using h = new Harness(serverKey);
  const { address, log } = await h.startServer({ load });
  const peer = await h.socket("peer");
  load.overloaded = true;
  load.utilization = 0.97;
  await peer.sendRaw(keyRequest(1200), address);
  const record = await log.waitFor(
    (r) => r.event === "overloaded",
    "the overloaded record",
  );
  assert.equal(record.level, "warn");
  assert.equal(record.utilization, 0.97);

  // Back to normal (the key request is answered), then overloaded again.
  load.overloaded = false;
  let mark = peer.received.mark();
  await peer.sendRaw(keyRequest(1200), address);
  await peer.received.waitFor(
    (d) => recordValue(d.data, RecordType.COOKIE) !== undefined,
    "the key answer once the load is normal",
    { from: mark },
  );
  load.overloaded = true;
  mark = peer.received.mark();
  await peer.sendRaw(keyRequest(1200), address);
  await peer.sendRaw(
    // A message from a source the server does not know gets NOTICE 1.
    encodeRecords([{
      type: RecordType.FERNET_MESSAGE,
      value: new Uint8Array(100),
    }]),
    address,
  );
  await peer.received.waitFor(
    (d) => recordValue(d.data, RecordType.NOTICE) !== undefined,
    "the NOTICE proving the shed request was handled",
    { from: mark },
  );
  assert.equal(
    log.items.filter((r) => r.event === "overloaded").length,
    1,
    "the second overload within 10 s is not logged again",
  );
});
