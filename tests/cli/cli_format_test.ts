import assert from "node:assert/strict";
import { escapeControl, roundNumbers } from "../../lib/cli/log_format.ts";
import { formatClientEvent } from "../../lib/cli/client_format.ts";

const test = (name: string, fn: () => void) =>
  Deno.test({ name, permissions: "none", fn });

test("escapeControl() escapes C0, DEL and C1 controls but keeps tab and text", () => {
  assert.equal(
    escapeControl("a\nb\r\x1b[2J\x07\x7f\x9b\tç€😀"),
    "a\\u000ab\\u000d\\u001b[2J\\u0007\\u007f\\u009b\tç€😀",
  );
});

test("a message cannot forge a second line or escape sequences in text output", () => {
  const line = formatClientEvent({
    type: "message",
    from: "127.0.0.1:4000",
    text: "hi\n[10.0.0.9:5007] send me your password\x1b]0;owned\x07",
    data: new Uint8Array(),
  }, false);
  assert.equal(line.split("\n").length, 1);
  assert.ok(!line.includes("\x1b"));
  assert.ok(line.startsWith("[127.0.0.1:4000] hi\\u000a[10.0.0.9:5007]"));
  // JSON output escapes by construction and keeps the text exact.
  const json = formatClientEvent({
    type: "message",
    from: "127.0.0.1:4000",
    text: "a\nb",
    data: new Uint8Array(),
  }, true);
  assert.deepEqual(JSON.parse(json), {
    event: "message",
    from: "127.0.0.1:4000",
    text: "a\nb",
  });
});

test("NOTICE text is escaped too", () => {
  assert.equal(
    formatClientEvent(
      { type: "notice", code: 4, text: "full\n* x joined" },
      false,
    ),
    "! notice 4: full\\u000a* x joined",
  );
});

test("kicked and banned: what the user reads, and the JSON events", () => {
  assert.equal(
    formatClientEvent({ type: "kicked", reason: "rude\n* x" }, false),
    "! kicked by the server: rude\\u000a* x (registering again)",
  );
  assert.equal(
    formatClientEvent(
      { type: "banned", seconds: 60, reason: "spam" },
      false,
    ),
    "! banned by the server for 60 s: spam",
  );
  assert.equal(
    formatClientEvent(
      { type: "banned", seconds: undefined, reason: "spam" },
      false,
    ),
    "! banned by the server: spam",
  );
  assert.deepEqual(
    JSON.parse(formatClientEvent({ type: "kicked", reason: "r" }, true)),
    { event: "kicked", reason: "r" },
  );
  assert.deepEqual(
    JSON.parse(
      formatClientEvent(
        { type: "banned", seconds: undefined, reason: "r" },
        true,
      ),
    ),
    { event: "banned", seconds: null, reason: "r" },
  );
});

test("an undelivered message is shown with why, escaped, and exact in JSON", () => {
  const event = {
    type: "undelivered",
    reason: "outbox_full",
    text: "hi\nthere",
    data: new Uint8Array(),
  } as const;
  assert.equal(
    formatClientEvent(event, false),
    "! not delivered (the outbox of messages waiting for the server is full): hi\\u000athere",
  );
  assert.deepEqual(JSON.parse(formatClientEvent(event, true)), {
    event: "undelivered",
    reason: "outbox_full",
    text: "hi\nthere",
  });
  assert.equal(
    formatClientEvent({ ...event, reason: "closed" }, false),
    "! not delivered (the client stopped before the server came back): hi\\u000athere",
  );
});

test("an unconfirmed message says it may not have arrived", () => {
  assert.equal(
    formatClientEvent({
      type: "undelivered",
      reason: "unconfirmed",
      text: "hi",
      data: new Uint8Array(),
    }, false),
    "! not delivered (the server stopped answering after it was sent: it may not have arrived): hi",
  );
});

test("roundNumbers() rounds fractions to 3 decimals, in objects and arrays too, and keeps whole numbers", () => {
  assert.deepEqual(
    roundNumbers({
      loopUtilization: 0.0007959618109113498,
      members: 12,
      nested: { rate: 2.34567, list: [1.0005, 7] },
      name: "x",
      none: null,
    }),
    {
      loopUtilization: 0.001,
      members: 12,
      nested: { rate: 2.346, list: [1.001, 7] },
      name: "x",
      none: null,
    },
  );
});

test("a member present at registration is reported as present, a newcomer as joined", () => {
  const present = {
    type: "join",
    address: "127.0.0.1:4000",
    present: true,
  } as const;
  const joined = {
    type: "join",
    address: "127.0.0.1:4001",
    present: false,
  } as const;
  assert.equal(
    formatClientEvent(present, false),
    "* 127.0.0.1:4000 present",
  );
  assert.equal(
    formatClientEvent(joined, false),
    "* 127.0.0.1:4001 joined",
  );
  assert.equal(
    formatClientEvent(present, true),
    '{"event":"join","address":"127.0.0.1:4000","present":true}',
  );
});
