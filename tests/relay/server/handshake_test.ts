/** Key exchange decisions (lib/relay/server/handshake.ts) over a fake context: no socket, no RSA work. */
import assert from "node:assert/strict";
import { IvMarker } from "../../../lib/crypto/iv_mark.ts";
import { RecordType } from "../../../lib/wire/tlv.ts";
import { Handshake } from "../../../lib/relay/server/handshake.ts";
import { fakeContext } from "./_fake.ts";

const FROM = { hostname: "192.0.2.7", port: 4000 };
const SOURCE = "192.0.2.7:4000";

function handshakeOf(context: ReturnType<typeof fakeContext>): {
  handshake: Handshake;
  decrypts: () => number;
} {
  let decrypts = 0;
  const handshake = new Handshake({
    ...context,
    presence: { joined: () => {}, presentRecords: () => [] },
    rsa: {
      decrypt: () => {
        decrypts++;
        return Promise.reject(new RangeError("not in this test"));
      },
    },
    marker: new IvMarker(),
    strangerReassembly: { forgetSource: () => {} },
    isBanned: () => false,
  });
  return { handshake, decrypts: () => decrypts };
}

Deno.test("handshake: a key request smaller than the answer is dropped unanswered", () => {
  const context = fakeContext();
  const { handshake } = handshakeOf(context);
  const size = context.config.keyAnswerSize - 1;
  handshake.answerKeyRequest(FROM, SOURCE, size, { bytes: size });
  assert.equal(context.sent.length, 0);
  assert.equal(context.drops.snapshot().short_key_request, 1);
});

Deno.test("handshake: a padded key request gets COOKIE and the server's key in one datagram, within the datagram's answer budget", () => {
  const context = fakeContext();
  const { handshake } = handshakeOf(context);
  const size = context.config.keyAnswerSize;
  const budget = { bytes: size };
  handshake.answerKeyRequest(FROM, SOURCE, size, budget);
  assert.equal(context.sent.length, 1);
  assert.deepEqual(
    context.sent[0]!.records.map((r) => r.type),
    [RecordType.COOKIE, RecordType.SERVER_PUBLIC_KEY],
  );
  assert.deepEqual(
    context.sent[0]!.records[1]!.value,
    context.config.publicPem,
  );
  assert.equal(budget.bytes, 0);
  // A second answer to the same datagram would amplify.
  handshake.answerKeyRequest(FROM, SOURCE, size, budget);
  assert.equal(context.sent.length, 1);
  assert.equal(context.drops.snapshot().answer_budget, 1);
});

Deno.test("handshake: registrations without a cookie, or with a forged one, cost no RSA work", async () => {
  const context = fakeContext();
  const { handshake, decrypts } = handshakeOf(context);
  const record = {
    type: RecordType.SYMMETRIC_KEY,
    value: new Uint8Array(256),
  };
  await handshake.register(FROM, SOURCE, record, {
    cookie: undefined,
    proof: undefined,
  }, 1200);
  await handshake.register(FROM, SOURCE, record, {
    cookie: new Uint8Array(40),
    proof: undefined,
  }, 1200);
  assert.equal(decrypts(), 0);
  assert.equal(context.members.size, 0);
  const dropped = context.drops.snapshot();
  assert.equal(dropped.cookie_missing, 1);
  assert.equal(
    Object.keys(dropped).filter((r) => r.startsWith("cookie_")).length,
    2,
  );
});
