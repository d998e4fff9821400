/**
 * lib/wire/messages.ts: streams built byte for byte with the TLV encoders,
 * decoded into typed messages and problems in both directions; the odd cases
 * of the server's and the client's stream rules; round trips; the same
 * messages out of a stream fed whole or fragmented at odd points through the
 * reassembler; and random streams checked against a transcription of the
 * server's and the client's record switches as they stood before the decoder.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  decodeAddress,
  encodeAddress,
  formatAddress,
  type PeerAddress,
} from "../../lib/wire/address.ts";
import { encodeFragment, fragmentStream } from "../../lib/wire/fragment.ts";
import { Reassembler } from "../../lib/core/reassembler.ts";
import {
  decodeRecords,
  encodeRecords,
  isKnownRecordType,
  RecordType,
  type TlvRecord,
} from "../../lib/wire/tlv.ts";
import { noticeRecord } from "../../lib/wire/notice.ts";
import {
  decodeToClient,
  decodeToServer,
  encodeToClient,
  encodeToServer,
} from "../../lib/wire/message_codec.ts";
import {
  inStreamOrder,
  MAX_RECORDS_PER_STREAM,
  type StreamProblem,
  type ToClientMessage,
  type ToServerMessage,
} from "../../lib/wire/messages.ts";
import { mulberry32, shuffled } from "../_support/prng.ts";

function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

const OPTIONS = {
  numRuns: 300,
  interruptAfterTimeLimit: 20_000,
  markInterruptAsFailure: true,
};

const bytes = (...values: number[]) => new Uint8Array(values);
const text = (s: string) => new TextEncoder().encode(s);
const rec = (type: number, value: Uint8Array = bytes()): TlvRecord => ({
  type,
  value,
});
const T = RecordType;

const ALICE: PeerAddress = { hostname: "127.0.0.1", port: 5007 };
const BOB: PeerAddress = { hostname: "2001:db8::1", port: 40000 };
const ALICE_VALUE = bytes(127, 0, 0, 1, 0x13, 0x8f);
const BOB_VALUE = encodeAddress(BOB);

/** What the server's decoder makes of a stream's bytes. */
function toServer(stream: Uint8Array) {
  return decodeToServer(decodeRecords(stream));
}

/** What the client's decoder makes of a stream's bytes. */
function toClient(stream: Uint8Array) {
  return decodeToClient(decodeRecords(stream));
}

const problem = <R extends string>(
  reason: R,
  at: number,
  type: number,
): StreamProblem<R> => ({ kind: "problem", reason, at, type });

// ------------------------------------------------------ to the server

test("decodeToServer() reads a hybrid registration: cookie, key, proof, group capable, and encodes it back byte for byte", () => {
  const stream = encodeRecords([
    rec(T.COOKIE, bytes(1, 2, 3)),
    rec(T.SYMMETRIC_KEY, bytes(4, 5)),
    rec(T.KEY_PROOF, bytes(6)),
    rec(T.GROUP_CAPABLE),
  ]);
  const decoded = toServer(stream);
  assert.deepEqual(decoded, {
    messages: [
      {
        kind: "registration",
        keyRecord: rec(T.SYMMETRIC_KEY, bytes(4, 5)),
        cookie: bytes(1, 2, 3),
        proof: bytes(6),
      },
      { kind: "group_capable", value: bytes() },
    ],
    problems: [],
  });
  assert.deepEqual(encodeRecords(encodeToServer(decoded.messages)), stream);
});

test("decodeToServer() reads an RSA registration without a proof", () => {
  const pem = text("-----BEGIN PUBLIC KEY-----");
  const stream = encodeRecords([
    rec(T.COOKIE, bytes(9)),
    rec(T.CLIENT_PUBLIC_KEY, pem),
  ]);
  const decoded = toServer(stream);
  assert.deepEqual(decoded.messages, [{
    kind: "registration",
    keyRecord: rec(T.CLIENT_PUBLIC_KEY, pem),
    cookie: bytes(9),
  }]);
  assert.deepEqual(encodeRecords(encodeToServer(decoded.messages)), stream);
});

test("decodeToServer() gives a KEY_PROOF to the key record right before it, of either profile, and ignores it anywhere else", () => {
  const { messages, problems } = toServer(encodeRecords([
    rec(T.KEY_PROOF, bytes(1)), // first: inert
    rec(T.SYMMETRIC_KEY, bytes(2)),
    rec(T.KEEPALIVE, bytes(3)),
    rec(T.KEY_PROOF, bytes(4)), // after a keep-alive: inert
    rec(T.CLIENT_PUBLIC_KEY, bytes(5)),
    rec(T.KEY_PROOF, bytes(6)), // the RSA key's
    rec(T.KEY_PROOF, bytes(7)), // after a proof: inert
  ]));
  assert.deepEqual(messages, [
    { kind: "registration", keyRecord: rec(T.SYMMETRIC_KEY, bytes(2)) },
    { kind: "keepalive", value: bytes(3) },
    {
      kind: "registration",
      keyRecord: rec(T.CLIENT_PUBLIC_KEY, bytes(5)),
      proof: bytes(6),
    },
  ]);
  assert.deepEqual(problems, []);
});

test("decodeToServer() gives a COOKIE to the next key record only, across other records; the last one wins; alone it is inert", () => {
  const { messages, problems } = toServer(encodeRecords([
    rec(T.COOKIE, bytes(1)),
    rec(T.COOKIE, bytes(2)),
    rec(T.KEEPALIVE, bytes(3)),
    rec(T.SYMMETRIC_KEY, bytes(4)), // takes cookie 2
    rec(T.SYMMETRIC_KEY, bytes(5)), // no cookie left
    rec(T.COOKIE, bytes(6)), // no key after it
    rec(T.DISCONNECT, bytes(7)),
  ]));
  assert.deepEqual(messages, [
    { kind: "keepalive", value: bytes(3) },
    {
      kind: "registration",
      keyRecord: rec(T.SYMMETRIC_KEY, bytes(4)),
      cookie: bytes(2),
    },
    { kind: "registration", keyRecord: rec(T.SYMMETRIC_KEY, bytes(5)) },
    { kind: "disconnect", value: bytes(7) },
  ]);
  assert.deepEqual(problems, []);
});

test("decodeToServer() keeps stream order: GROUP_CAPABLE before or after a key record or keep-alive", () => {
  const kinds = (records: TlvRecord[]) =>
    toServer(encodeRecords(records)).messages.map((m) => m.kind);
  assert.deepEqual(
    kinds([rec(T.GROUP_CAPABLE), rec(T.KEEPALIVE), rec(T.GROUP_CAPABLE)]),
    ["group_capable", "keepalive", "group_capable"],
  );
  assert.deepEqual(
    kinds([rec(T.SYMMETRIC_KEY), rec(T.GROUP_CAPABLE), rec(T.FERNET_MESSAGE)]),
    ["registration", "group_capable", "fernet_message"],
  );
});

test("decodeToServer() reads key requests, messages, RSA blocks in their place, keep-alives, disconnects and fragments", () => {
  const records = [
    rec(T.KEY_REQUEST, new Uint8Array(20)),
    rec(T.FERNET_MESSAGE, text("gAAAAA")),
    rec(T.RSA_BLOCK, bytes(1)),
    rec(T.KEEPALIVE, bytes(2)),
    rec(T.RSA_BLOCK, bytes(3)),
    rec(T.DISCONNECT, text("DISCONNECT")),
    rec(T.FRAGMENT, bytes(0, 0, 0, 1, 0, 0, 0, 1, 9)),
  ];
  const stream = encodeRecords(records);
  const decoded = toServer(stream);
  assert.deepEqual(decoded.messages, [
    { kind: "key_request", value: new Uint8Array(20) },
    { kind: "fernet_message", value: text("gAAAAA") },
    { kind: "rsa_block", value: bytes(1) },
    { kind: "keepalive", value: bytes(2) },
    { kind: "rsa_block", value: bytes(3) },
    { kind: "disconnect", value: text("DISCONNECT") },
    { kind: "fragment", value: bytes(0, 0, 0, 1, 0, 0, 0, 1, 9) },
  ]);
  assert.deepEqual(decoded.problems, []);
  assert.deepEqual(encodeRecords(encodeToServer(decoded.messages)), stream);
});

test("decodeToServer() skips server-only types as unexpected_type and unknown ones as unknown_type, in place, and goes on", () => {
  const serverOnly = [
    T.SERVER_PUBLIC_KEY,
    T.RSA_RELAY_BLOCK,
    T.SENDER,
    T.NOTIFY_CONNECT,
    T.NOTIFY_DISCONNECT,
    T.WELCOME,
    T.NOTICE,
    T.GROUP_KEY,
    T.GROUP_MESSAGE,
  ];
  for (const type of serverOnly) {
    const decoded = toServer(
      encodeRecords([rec(T.KEEPALIVE), rec(type), rec(T.GROUP_CAPABLE)]),
    );
    assert.deepEqual(decoded.problems, [problem("unexpected_type", 1, type)]);
    assert.equal(decoded.messages.length, 2);
  }
  for (const type of [0, 2, 22, 31, 1000, 0xffff]) {
    const decoded = toServer(encodeRecords([rec(type), rec(T.KEEPALIVE)]));
    assert.deepEqual(decoded.problems, [problem("unknown_type", 0, type)]);
    assert.deepEqual(decoded.messages, [{ kind: "keepalive", value: bytes() }]);
  }
});

test("decodeToServer() acts on 16 records and drops the rest at the 17th as records_over_limit", () => {
  const keepalives = (n: number) =>
    Array.from({ length: n }, (_, i) => rec(T.KEEPALIVE, bytes(i)));
  assert.equal(MAX_RECORDS_PER_STREAM, 16);
  const exact = toServer(encodeRecords(keepalives(16)));
  assert.equal(exact.messages.length, 16);
  assert.deepEqual(exact.problems, []);
  // The 64 KB datagram of 629 keep-alives.
  const many = toServer(encodeRecords(keepalives(629)));
  assert.deepEqual(
    many.messages,
    keepalives(16).map((r) => ({ kind: "keepalive", value: r.value })),
  );
  assert.deepEqual(many.problems, [
    problem("records_over_limit", 16, T.KEEPALIVE),
  ]);
});

test("decodeToServer() counts cookies, proofs, unknown and server-only types against the limit, but never RSA blocks", () => {
  const filler = [
    rec(T.COOKIE),
    rec(T.KEY_PROOF),
    rec(99),
    rec(T.SENDER),
    ...Array.from({ length: 12 }, () => rec(T.KEEPALIVE)),
  ];
  const withBlocks = [
    rec(T.RSA_BLOCK, bytes(1)),
    ...filler.slice(0, 8),
    rec(T.RSA_BLOCK, bytes(2)),
    ...filler.slice(8),
    rec(T.RSA_BLOCK, bytes(3)), // still before the cut
    rec(T.FERNET_MESSAGE), // the 17th
    rec(T.RSA_BLOCK, bytes(4)), // after the cut
  ];
  const { messages, problems } = toServer(encodeRecords(withBlocks));
  const blocks = messages.filter((m) => m.kind === "rsa_block");
  assert.deepEqual(blocks.map((m) => m.value[0]), [1, 2, 3]);
  assert.equal(messages.length, 3 + 12);
  assert.deepEqual(problems, [
    problem("unknown_type", 1, 99),
    problem("unexpected_type", 1, T.SENDER),
    problem("records_over_limit", 15, T.FERNET_MESSAGE),
  ]);
});

test("decodeToServer() gives the 16th record, a key, the proof past the limit, then cuts; a 17th key is not read", () => {
  const fifteen = Array.from({ length: 15 }, () => rec(T.KEEPALIVE));
  const keyLast = toServer(encodeRecords([
    ...fifteen,
    rec(T.SYMMETRIC_KEY, bytes(1)),
    rec(T.KEY_PROOF, bytes(2)),
  ]));
  assert.deepEqual(keyLast.messages.at(-1), {
    kind: "registration",
    keyRecord: rec(T.SYMMETRIC_KEY, bytes(1)),
    proof: bytes(2),
  });
  assert.deepEqual(keyLast.problems, [
    problem("records_over_limit", 16, T.KEY_PROOF),
  ]);
  const keyPast = toServer(encodeRecords([
    ...fifteen,
    rec(T.COOKIE),
    rec(T.SYMMETRIC_KEY, bytes(1)),
  ]));
  assert.equal(keyPast.messages.length, 15);
  assert.deepEqual(keyPast.problems, [
    problem("records_over_limit", 15, T.SYMMETRIC_KEY),
  ]);
});

test("decodeToServer() takes another limit, and 0 acts on RSA blocks only", () => {
  const records = [rec(T.RSA_BLOCK), rec(T.KEEPALIVE), rec(T.KEEPALIVE)];
  assert.equal(decodeToServer(records, 1).messages.length, 2);
  const none = decodeToServer(records, 0);
  assert.deepEqual(none.messages, [{ kind: "rsa_block", value: bytes() }]);
  assert.deepEqual(none.problems, [
    problem("records_over_limit", 1, T.KEEPALIVE),
  ]);
});

test("encodeToServer() refuses a stream the server would cut, RSA blocks aside", () => {
  const seventeen: ToServerMessage[] = Array.from(
    { length: 17 },
    () => ({ kind: "keepalive", value: bytes() }),
  );
  assert.throws(() => encodeToServer(seventeen), RangeError);
  assert.equal(encodeToServer(seventeen.slice(1)).length, 16);
  const blocks: ToServerMessage[] = Array.from(
    { length: 100 },
    () => ({ kind: "rsa_block", value: bytes(1) }),
  );
  assert.equal(encodeToServer(blocks).length, 100);
});

// ------------------------------------------------------ to a client

test("decodeToClient() reads the key answer, COOKIE then SERVER_PUBLIC_KEY, and encodes it back byte for byte", () => {
  const stream = encodeRecords([
    rec(T.COOKIE, bytes(1, 2)),
    rec(T.SERVER_PUBLIC_KEY, text("PEM")),
  ]);
  const decoded = toClient(stream);
  assert.deepEqual(decoded, {
    messages: [{ kind: "server_key", pem: text("PEM"), cookie: bytes(1, 2) }],
    problems: [],
  });
  assert.deepEqual(encodeRecords(encodeToClient(decoded.messages)), stream);
});

test("decodeToClient() gives a COOKIE to every later SERVER_PUBLIC_KEY and none to an earlier one", () => {
  const { messages } = toClient(encodeRecords([
    rec(T.SERVER_PUBLIC_KEY, bytes(1)),
    rec(T.COOKIE, bytes(2)),
    rec(T.SERVER_PUBLIC_KEY, bytes(3)),
    rec(T.SERVER_PUBLIC_KEY, bytes(4)),
  ]));
  assert.deepEqual(messages, [
    { kind: "server_key", pem: bytes(1) },
    { kind: "server_key", pem: bytes(3), cookie: bytes(2) },
    { kind: "server_key", pem: bytes(4), cookie: bytes(2) },
  ]);
});

test("decodeToClient() reads a coalesced relay stream, several SENDER/message pairs, and encodes it back byte for byte", () => {
  const stream = encodeRecords([
    rec(T.SENDER, ALICE_VALUE),
    rec(T.FERNET_MESSAGE, text("one")),
    rec(T.SENDER, BOB_VALUE),
    rec(T.FERNET_MESSAGE, text("two")),
    rec(T.SENDER, ALICE_VALUE),
    rec(T.FERNET_MESSAGE, text("three")),
  ]);
  const decoded = toClient(stream);
  assert.deepEqual(decoded.messages, [
    { kind: "relayed_message", sender: ALICE, token: text("one") },
    { kind: "relayed_message", sender: BOB, token: text("two") },
    { kind: "relayed_message", sender: ALICE, token: text("three") },
  ]);
  assert.deepEqual(decoded.problems, []);
  assert.deepEqual(encodeRecords(encodeToClient(decoded.messages)), stream);
});

test("decodeToClient() gives a SENDER to every message after it, and a message before any SENDER none", () => {
  const { messages } = toClient(encodeRecords([
    rec(T.FERNET_MESSAGE, text("a")),
    rec(T.SENDER, ALICE_VALUE),
    rec(T.FERNET_MESSAGE, text("b")),
    rec(T.FERNET_MESSAGE, text("c")),
  ]));
  assert.deepEqual(messages, [
    { kind: "relayed_message", token: text("a") },
    { kind: "relayed_message", sender: ALICE, token: text("b") },
    { kind: "relayed_message", sender: ALICE, token: text("c") },
  ]);
});

test("decodeToClient() drops a malformed SENDER as malformed_sender, in place, and it clears the sender", () => {
  for (const bad of [bytes(), bytes(1, 2, 3, 4, 5), new Uint8Array(7)]) {
    const { messages, problems } = toClient(encodeRecords([
      rec(T.SENDER, ALICE_VALUE),
      rec(T.FERNET_MESSAGE, text("a")),
      rec(T.SENDER, bad),
      rec(T.FERNET_MESSAGE, text("b")),
      rec(T.SENDER, BOB_VALUE),
      rec(T.FERNET_MESSAGE, text("c")),
    ]));
    assert.deepEqual(messages, [
      { kind: "relayed_message", sender: ALICE, token: text("a") },
      { kind: "relayed_message", token: text("b") },
      { kind: "relayed_message", sender: BOB, token: text("c") },
    ]);
    assert.deepEqual(problems, [problem("malformed_sender", 1, T.SENDER)]);
  }
});

test("decodeToClient() makes the RSA_RELAY_BLOCK records one message, last, from the stream's last sender", () => {
  const stream = encodeRecords([
    rec(T.SENDER, BOB_VALUE),
    rec(T.RSA_RELAY_BLOCK, bytes(1)),
    rec(T.RSA_RELAY_BLOCK, bytes(2)),
    rec(T.RSA_RELAY_BLOCK, bytes(3)),
  ]);
  const decoded = toClient(stream);
  assert.deepEqual(decoded.messages, [{
    kind: "rsa_relayed",
    sender: BOB,
    blocks: [bytes(1), bytes(2), bytes(3)],
  }]);
  assert.deepEqual(encodeRecords(encodeToClient(decoded.messages)), stream);
  // Blocks interleaved with other records: collected, handled after them,
  // with the sender the stream ends with.
  const mixed = toClient(encodeRecords([
    rec(T.SENDER, ALICE_VALUE),
    rec(T.RSA_RELAY_BLOCK, bytes(1)),
    rec(T.FERNET_MESSAGE, text("f")),
    rec(T.RSA_RELAY_BLOCK, bytes(2)),
    rec(T.SENDER, BOB_VALUE),
    rec(T.KEEPALIVE, bytes(9)),
  ]));
  assert.deepEqual(mixed.messages, [
    { kind: "relayed_message", sender: ALICE, token: text("f") },
    { kind: "keepalive_answer", value: bytes(9) },
    { kind: "rsa_relayed", sender: BOB, blocks: [bytes(1), bytes(2)] },
  ]);
  // A malformed SENDER after the blocks leaves them without a sender.
  const cleared = toClient(encodeRecords([
    rec(T.SENDER, ALICE_VALUE),
    rec(T.RSA_RELAY_BLOCK, bytes(1)),
    rec(T.SENDER, bytes(1)),
  ]));
  assert.deepEqual(cleared.messages, [
    { kind: "rsa_relayed", blocks: [bytes(1)] },
  ]);
  assert.deepEqual(cleared.problems, [
    problem("malformed_sender", 0, T.SENDER),
  ]);
});

test("decodeToClient() reads a WELCOME stream with presence and the group key, and encodes it back byte for byte", () => {
  const stream = encodeRecords([
    rec(T.WELCOME, text("token")),
    rec(T.NOTIFY_CONNECT, ALICE_VALUE),
    rec(T.NOTIFY_CONNECT, BOB_VALUE),
    rec(T.GROUP_KEY, text("gk")),
    rec(T.NOTIFY_DISCONNECT, ALICE_VALUE),
  ]);
  const decoded = toClient(stream);
  assert.deepEqual(decoded.messages, [
    { kind: "welcome", value: text("token") },
    { kind: "presence", change: "connect", address: ALICE },
    { kind: "presence", change: "connect", address: BOB },
    { kind: "group_key", value: text("gk") },
    { kind: "presence", change: "disconnect", address: ALICE },
  ]);
  assert.deepEqual(encodeRecords(encodeToClient(decoded.messages)), stream);
});

test("decodeToClient() drops a NOTIFY with a malformed address as malformed_presence, in place", () => {
  const { messages, problems } = toClient(encodeRecords([
    rec(T.NOTIFY_CONNECT, ALICE_VALUE),
    rec(T.NOTIFY_DISCONNECT, bytes(1, 2)),
    rec(T.NOTIFY_CONNECT, bytes()),
    rec(T.NOTIFY_CONNECT, BOB_VALUE),
  ]));
  assert.equal(messages.length, 2);
  assert.deepEqual(problems, [
    problem("malformed_presence", 1, T.NOTIFY_DISCONNECT),
    problem("malformed_presence", 1, T.NOTIFY_CONNECT),
  ]);
});

test("decodeToClient() reads notices, keep-alive answers, group messages and fragments, and encodes them back", () => {
  const stream = encodeRecords([
    noticeRecord(1, 1200)!,
    rec(T.KEEPALIVE, text("ka")),
    rec(T.GROUP_MESSAGE, bytes(0, 0, 0, 7, 1)),
    rec(T.FRAGMENT, bytes(0, 0, 0, 1, 0, 0, 0, 1)),
  ]);
  const decoded = toClient(stream);
  assert.deepEqual(decoded.messages.map((m) => m.kind), [
    "notice",
    "keepalive_answer",
    "group_message",
    "fragment",
  ]);
  assert.deepEqual(encodeRecords(encodeToClient(decoded.messages)), stream);
});

test("decodeToClient() counts every type a server does not send as unexpected_type, in place, and goes on", () => {
  const notFromServer = [
    T.RSA_BLOCK,
    T.CLIENT_PUBLIC_KEY,
    T.KEY_REQUEST,
    T.DISCONNECT,
    T.SYMMETRIC_KEY,
    T.GROUP_CAPABLE,
    T.KEY_PROOF,
    0,
    2,
    22,
    0xffff,
  ];
  for (const type of notFromServer) {
    const decoded = toClient(encodeRecords([
      rec(T.WELCOME),
      rec(type),
      rec(T.KEEPALIVE),
    ]));
    assert.deepEqual(decoded.problems, [problem("unexpected_type", 1, type)]);
    assert.equal(decoded.messages.length, 2);
  }
});

test("encodeToClient() refuses message lists the stream cannot carry as such", () => {
  const relayed = (sender?: PeerAddress): ToClientMessage => ({
    kind: "relayed_message",
    ...(sender && { sender }),
    token: bytes(1),
  });
  const rsa = (sender?: PeerAddress): ToClientMessage => ({
    kind: "rsa_relayed",
    ...(sender && { sender }),
    blocks: [bytes(2)],
  });
  assert.throws(() => encodeToClient([relayed(ALICE), relayed()]), RangeError);
  assert.throws(() => encodeToClient([relayed(ALICE), rsa()]), RangeError);
  assert.throws(() => encodeToClient([rsa(ALICE), relayed(ALICE)]), RangeError);
  assert.throws(
    () => encodeToClient([{ kind: "rsa_relayed", blocks: [] }]),
    RangeError,
  );
  assert.throws(
    () =>
      encodeToClient([
        { kind: "server_key", pem: bytes(), cookie: bytes(1) },
        { kind: "server_key", pem: bytes() },
      ]),
    RangeError,
  );
  assert.throws(
    () =>
      encodeToClient([{
        kind: "presence",
        change: "connect",
        address: { hostname: "example.org", port: 1 },
      }]),
    TypeError,
  );
  // Allowed: no sender before a sender; the same sender again.
  assert.equal(
    encodeToClient([relayed(), relayed(ALICE), rsa(ALICE)]).length,
    5,
  );
});

// ------------------------------------------------------ inStreamOrder

test("inStreamOrder() puts each problem before the message that followed it, and returns the messages as they are without problems", () => {
  const decoded = toServer(encodeRecords([
    rec(99),
    rec(T.KEEPALIVE),
    rec(T.SENDER),
    rec(T.WELCOME),
    rec(T.GROUP_CAPABLE),
    rec(100),
  ]));
  assert.deepEqual(inStreamOrder(decoded).map((s) => s.kind), [
    "problem",
    "keepalive",
    "problem",
    "problem",
    "group_capable",
    "problem",
  ]);
  const clean = toServer(encodeRecords([rec(T.KEEPALIVE)]));
  assert.equal(inStreamOrder(clean), clean.messages);
});

// ------------------------------------------------------ fragmentation

/** Streams that the relay makes or could meet, both directions. */
function sampleStreams(): { name: string; stream: Uint8Array }[] {
  const big = Uint8Array.from({ length: 3000 }, (_, i) => i % 251);
  return [
    {
      name: "registration",
      stream: encodeRecords([
        rec(T.COOKIE, new Uint8Array(32).fill(7)),
        rec(T.SYMMETRIC_KEY, big.subarray(0, 256)),
        rec(T.KEY_PROOF, text("gAAAAAproof")),
        rec(T.GROUP_CAPABLE),
      ]),
    },
    {
      name: "rsa message and limit",
      stream: encodeRecords([
        ...Array.from(
          { length: 8 },
          (_, i) => rec(T.RSA_BLOCK, big.subarray(i, 200 + i)),
        ),
        ...Array.from({ length: 18 }, (_, i) => rec(T.KEEPALIVE, bytes(i))),
        rec(T.SENDER, ALICE_VALUE),
      ]),
    },
    {
      name: "coalesced relay",
      stream: encodeRecords([
        rec(T.SENDER, ALICE_VALUE),
        rec(T.FERNET_MESSAGE, big.subarray(0, 1000)),
        rec(T.SENDER, bytes(1, 2)),
        rec(T.FERNET_MESSAGE, big.subarray(1000, 1100)),
        rec(T.SENDER, BOB_VALUE),
        rec(T.RSA_RELAY_BLOCK, big.subarray(0, 256)),
        rec(T.FERNET_MESSAGE, big),
        rec(T.NOTIFY_CONNECT, BOB_VALUE),
        rec(77),
      ]),
    },
  ];
}

/**
 * Feeds datagrams to a fresh reassembler the way the server and client do:
 * each datagram's records decoded, each FRAGMENT message handed to the
 * reassembler; returns the records of the completed stream.
 */
function reassemble(datagrams: Uint8Array[]): TlvRecord[] {
  const reassembler = new Reassembler({}, () => 0);
  const completed: TlvRecord[][] = [];
  for (const datagram of datagrams) {
    for (const message of toServer(datagram).messages) {
      assert.equal(message.kind, "fragment");
      const outcome = reassembler.addRecord("127.0.0.1:1", message.value);
      if (outcome.kind === "dropped") assert.fail(outcome.reason);
      if (outcome.kind === "stream") completed.push(outcome.records);
    }
  }
  assert.equal(completed.length, 1);
  return completed[0];
}

/** Cuts `stream` at `cuts` (sorted offsets) into FRAGMENT datagrams. */
function cutAt(stream: Uint8Array, cuts: number[], msgId = 42): Uint8Array[] {
  const bounds = [0, ...cuts, stream.length];
  const count = bounds.length - 1;
  return Array.from({ length: count }, (_, index) =>
    encodeRecords([rec(
      T.FRAGMENT,
      encodeFragment({
        msgId,
        index,
        count,
        chunk: stream.subarray(bounds[index], bounds[index + 1]),
      }),
    )]));
}

test("a stream fragmented at any MTU, in order or shuffled, decodes to the same messages and problems as whole", () => {
  for (const { name, stream } of sampleStreams()) {
    const server = toServer(stream);
    const client = toClient(stream);
    for (const mtu of [13, 14, 17, 64, 101, 576, 1200, 1500]) {
      const datagrams = fragmentStream(stream, mtu, 7);
      // One datagram is not fragmented; past 1024 is the reassembler's bound.
      if (datagrams.length === 1 || datagrams.length > 1024) continue;
      for (const order of [datagrams, shuffled(datagrams, mtu)]) {
        const records = reassemble(order);
        assert.deepEqual(decodeToServer(records), server, `${name} @${mtu}`);
        assert.deepEqual(decodeToClient(records), client, `${name} @${mtu}`);
      }
    }
  }
});

test("a stream cut in two at every offset, or at random odd offsets, decodes to the same messages as whole", () => {
  const random = mulberry32(12);
  for (const { name, stream } of sampleStreams()) {
    const server = toServer(stream);
    const client = toClient(stream);
    for (let cut = 0; cut <= stream.length; cut++) {
      const records = reassemble(cutAt(stream, [cut]));
      assert.deepEqual(decodeToServer(records), server, `${name} /${cut}`);
      assert.deepEqual(decodeToClient(records), client, `${name} /${cut}`);
    }
    for (let round = 0; round < 50; round++) {
      const cuts = Array.from(
        { length: 1 + Math.floor(random() * 40) },
        () => Math.floor(random() * (stream.length + 1)),
      ).sort((a, b) => a - b);
      const datagrams = shuffled(cutAt(stream, cuts, round), round);
      const records = reassemble(datagrams);
      assert.deepEqual(decodeToServer(records), server, `${name} ${cuts}`);
      assert.deepEqual(decodeToClient(records), client, `${name} ${cuts}`);
    }
  }
});

test("a stream fed one byte per fragment decodes to the same messages as whole", () => {
  const { stream } = sampleStreams()[0];
  const cuts = Array.from({ length: stream.length - 1 }, (_, i) => i + 1);
  const records = reassemble(shuffled(cutAt(stream, cuts), 3));
  assert.deepEqual(decodeToServer(records), toServer(stream));
});

// ------------------------------------------- the switches, transcribed

const hex = (value: Uint8Array | undefined) =>
  value === undefined
    ? "-"
    : Array.from(value, (b) => b.toString(16)).join(".");

/**
 * The server's `#processStream` switch as it stood before the decoder, with
 * every act on state replaced by an event: what it acted on, in order.
 */
function serverSwitch(records: readonly TlvRecord[]): string[] {
  const serverOnly = new Set([5, 6, 10, 11, 12, 15, 16, 19, 20]);
  const events: string[] = [];
  let cookie: Uint8Array | undefined;
  const rsaBlocks: Uint8Array[] = [];
  let acted = 0;
  for (let i = 0; i < records.length; i++) {
    const record = records[i];
    if (record.type !== T.RSA_BLOCK && ++acted > 16) {
      events.push(`drop records_over_limit ${records.length}`);
      return events;
    }
    switch (record.type) {
      case T.FRAGMENT:
      case T.KEY_REQUEST:
      case T.FERNET_MESSAGE:
      case T.KEEPALIVE:
      case T.GROUP_CAPABLE:
      case T.DISCONNECT:
        events.push(`${record.type} ${hex(record.value)}`);
        break;
      case T.COOKIE:
        cookie = record.value;
        break;
      case T.SYMMETRIC_KEY:
      case T.CLIENT_PUBLIC_KEY: {
        const next = records[i + 1];
        const proof = next?.type === T.KEY_PROOF ? next.value : undefined;
        events.push(
          `register ${record.type} ${hex(record.value)} ${hex(cookie)} ${
            hex(proof)
          }`,
        );
        cookie = undefined;
        break;
      }
      case T.KEY_PROOF:
        break;
      case T.RSA_BLOCK:
        events.push(`block ${hex(record.value)}`);
        rsaBlocks.push(record.value);
        break;
      default:
        if (serverOnly.has(record.type)) events.push("drop unexpected_type");
        else if (!isKnownRecordType(record.type)) {
          events.push("count unknown_type");
        }
    }
  }
  if (rsaBlocks.length > 0) events.push(`rsa ${rsaBlocks.map(hex)}`);
  return events;
}

/** The same events from the decoder, as the server would run them. */
function serverEvents(records: readonly TlvRecord[]): string[] {
  const events: string[] = [];
  const rsaBlocks: Uint8Array[] = [];
  for (const step of inStreamOrder(decodeToServer(records))) {
    switch (step.kind) {
      case "problem":
        if (step.reason === "records_over_limit") {
          events.push(`drop records_over_limit ${records.length}`);
          return events;
        }
        events.push(
          step.reason === "unknown_type"
            ? "count unknown_type"
            : `drop ${step.reason}`,
        );
        break;
      case "registration":
        events.push(
          `register ${step.keyRecord.type} ${hex(step.keyRecord.value)} ${
            hex(step.cookie)
          } ${hex(step.proof)}`,
        );
        break;
      case "rsa_block":
        events.push(`block ${hex(step.value)}`);
        rsaBlocks.push(step.value);
        break;
      default: {
        const encoded = encodeToServer([step])[0];
        events.push(`${encoded.type} ${hex(step.value)}`);
      }
    }
  }
  if (rsaBlocks.length > 0) events.push(`rsa ${rsaBlocks.map(hex)}`);
  return events;
}

/** The client's `#processStream` switch (and `#onPresence`'s address check) as events. */
function clientSwitch(records: readonly TlvRecord[]): string[] {
  const events: string[] = [];
  let cookie: Uint8Array | undefined;
  let sender: string | undefined;
  const rsaBlocks: Uint8Array[] = [];
  for (const record of records) {
    switch (record.type) {
      case T.FRAGMENT:
      case T.WELCOME:
      case T.NOTICE:
      case T.KEEPALIVE:
      case T.GROUP_KEY:
      case T.GROUP_MESSAGE:
        events.push(`${record.type} ${hex(record.value)}`);
        break;
      case T.COOKIE:
        cookie = record.value;
        break;
      case T.SERVER_PUBLIC_KEY:
        events.push(`key ${hex(record.value)} ${hex(cookie)}`);
        break;
      case T.NOTIFY_CONNECT:
      case T.NOTIFY_DISCONNECT:
        try {
          const address = formatAddress(decodeAddress(record.value));
          events.push(`presence ${record.type} ${address}`);
        } catch {
          events.push("drop malformed_presence");
        }
        break;
      case T.SENDER:
        try {
          sender = formatAddress(decodeAddress(record.value));
        } catch {
          events.push("drop malformed_sender");
          sender = undefined;
        }
        break;
      case T.FERNET_MESSAGE:
        events.push(`message ${sender} ${hex(record.value)}`);
        break;
      case T.RSA_RELAY_BLOCK:
        rsaBlocks.push(record.value);
        break;
      default:
        events.push("count unexpected_type");
    }
  }
  if (rsaBlocks.length > 0) {
    events.push(`rsa ${sender} ${rsaBlocks.map(hex)}`);
  }
  return events;
}

/** The same events from the decoder, as the client would run them. */
function clientEvents(records: readonly TlvRecord[]): string[] {
  const events: string[] = [];
  const format = (a?: PeerAddress) => a && formatAddress(a);
  for (const step of inStreamOrder(decodeToClient(records))) {
    switch (step.kind) {
      case "problem":
        events.push(
          step.reason === "unexpected_type"
            ? "count unexpected_type"
            : `drop ${step.reason}`,
        );
        break;
      case "server_key":
        events.push(`key ${hex(step.pem)} ${hex(step.cookie)}`);
        break;
      case "presence": {
        const type = step.change === "connect"
          ? T.NOTIFY_CONNECT
          : T.NOTIFY_DISCONNECT;
        events.push(`presence ${type} ${formatAddress(step.address)}`);
        break;
      }
      case "relayed_message":
        events.push(`message ${format(step.sender)} ${hex(step.token)}`);
        break;
      case "rsa_relayed":
        events.push(`rsa ${format(step.sender)} ${step.blocks.map(hex)}`);
        break;
      default: {
        const encoded = encodeToClient([step])[0];
        events.push(`${encoded.type} ${hex(step.value)}`);
      }
    }
  }
  return events;
}

const addressValue = fc.oneof(
  fc.uint8Array({ minLength: 6, maxLength: 6 }),
  fc.uint8Array({ minLength: 18, maxLength: 18 }),
  fc.uint8Array({ maxLength: 20 }),
);

/** Records of every type, known ones most often, with short values. */
const anyRecord: fc.Arbitrary<TlvRecord> = fc.oneof(
  {
    weight: 8,
    arbitrary: fc.record({
      type: fc.constantFrom(...Object.values(RecordType)),
      value: fc.uint8Array({ maxLength: 6 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      type: fc.constantFrom(
        T.SENDER,
        T.NOTIFY_CONNECT,
        T.NOTIFY_DISCONNECT,
      ),
      value: addressValue,
    }),
  },
  {
    weight: 1,
    arbitrary: fc.record({
      type: fc.integer({ min: 0, max: 0xffff }),
      value: fc.uint8Array({ maxLength: 4 }),
    }),
  },
);
const anyStream = fc.array(anyRecord, { maxLength: 40 });

test("decodeToServer() makes the same decisions, in the same order, as the server's record switch did", () => {
  fc.assert(
    fc.property(anyStream, (records) => {
      assert.deepEqual(serverEvents(records), serverSwitch(records));
    }),
    OPTIONS,
  );
});

test("decodeToClient() makes the same decisions, in the same order, as the client's record switch did", () => {
  fc.assert(
    fc.property(anyStream, (records) => {
      assert.deepEqual(clientEvents(records), clientSwitch(records));
    }),
    OPTIONS,
  );
});

test("encodeToServer() of decoded messages decodes to the same messages, and is a fixed point byte for byte", () => {
  fc.assert(
    fc.property(anyStream, (records) => {
      const { messages } = decodeToServer(records);
      let encoded: TlvRecord[];
      try {
        encoded = encodeToServer(messages);
      } catch (error) {
        // Only a proof read past the limit makes a 17th record.
        assert.ok(error instanceof RangeError);
        return;
      }
      const again = decodeToServer(encoded);
      assert.deepEqual(again.messages, messages);
      assert.deepEqual(again.problems, []);
      assert.deepEqual(
        encodeRecords(encodeToServer(again.messages)),
        encodeRecords(encoded),
      );
    }),
    OPTIONS,
  );
});

test("encodeToClient() of decoded messages decodes to the same messages, and is a fixed point byte for byte", () => {
  fc.assert(
    fc.property(anyStream, (records) => {
      const { messages } = decodeToClient(records);
      let encoded: TlvRecord[];
      try {
        encoded = encodeToClient(messages);
      } catch (error) {
        // A sender or cookie cleared midway cannot be written back.
        assert.ok(error instanceof RangeError);
        return;
      }
      const again = decodeToClient(encoded);
      assert.deepEqual(again.messages, messages);
      assert.deepEqual(again.problems, []);
      assert.deepEqual(
        encodeRecords(encodeToClient(again.messages)),
        encodeRecords(encoded),
      );
    }),
    OPTIONS,
  );
});
