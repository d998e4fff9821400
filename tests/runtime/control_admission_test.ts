import assert from "node:assert/strict";
import {
  ControlAdmission,
  ControlToken,
} from "../../lib/runtime/control_admission.ts";
import { sha256 } from "../../lib/crypto/sha256.ts";
import { isLoopbackAddress } from "../../lib/wire/address.ts";

const test = (name: string, fn: () => void | Promise<void>) =>
  Deno.test({ name, permissions: "none", fn });

const LOCAL = "127.0.0.1";

test("ControlAdmission: past maxConnections a new ready connection closes the one silent longest, never itself", () => {
  const admission = new ControlAdmission<string>({ maxConnections: 3 });
  assert.equal(admission.admit("a", LOCAL, true, 0), undefined);
  assert.equal(admission.admit("b", LOCAL, true, 1), undefined);
  assert.equal(admission.admit("c", LOCAL, true, 2), undefined);
  // "a" opened first but sent a line since: "b" is the one silent longest.
  admission.lineFrom("a", 5);
  assert.equal(admission.admit("d", LOCAL, true, 6), "b");
  assert.equal(admission.readyCount, 3);
  // Sixty-four idle ones later, whoever connects last is in.
  let last = "d";
  for (let i = 0; i < 64; i++) {
    const victim = admission.admit(`idle${i}`, LOCAL, true, 10 + i);
    assert.notEqual(victim, `idle${i}`);
    assert.notEqual(victim, undefined);
    last = `idle${i}`;
  }
  const operator = "operator";
  const victim = admission.admit(operator, LOCAL, true, 100);
  assert.notEqual(victim, operator);
  assert.notEqual(victim, last);
  assert.equal(admission.readyCount, 3);
});

test("ControlAdmission: pending connections never take a ready slot, and an authenticated one always gets in", () => {
  const admission = new ControlAdmission<string>({
    maxConnections: 2,
    maxPending: 4,
  });
  admission.admit("watcher", LOCAL, false, 0);
  assert.equal(admission.authenticated("watcher", 0), undefined);
  // A flood of pending connections closes only pending ones.
  for (let i = 0; i < 100; i++) {
    const victim = admission.admit(`p${i}`, LOCAL, false, 1 + i);
    if (i >= 4) assert.equal(victim, `p${i - 4}`); // the oldest pending
    else assert.equal(victim, undefined);
  }
  assert.equal(admission.pendingCount, 4);
  assert.equal(admission.readyCount, 1);
  // The operator's connection is the newest pending one: it authenticates.
  assert.equal(admission.admit("operator", LOCAL, false, 200), "p96");
  assert.equal(admission.authenticated("operator", 201), undefined);
  assert.equal(admission.readyCount, 2);
  assert.equal(admission.pendingCount, 3);
  // A third authenticated connection closes the one silent longest.
  admission.lineFrom("operator", 300);
  admission.admit("second", LOCAL, false, 301);
  assert.equal(admission.authenticated("second", 302), "watcher");
  assert.equal(admission.readyCount, 2);
  // Released connections are forgotten, twice is harmless.
  admission.release("second");
  admission.release("second");
  assert.equal(admission.readyCount, 1);
});

test("ControlAdmission: one IP past maxPendingPerIp closes its own oldest; the crowded IP gives way first; loopback last", () => {
  const admission = new ControlAdmission<string>({
    maxPending: 6,
    maxPendingPerIp: 3,
  });
  // The operator waits on loopback, a neighbour on 10.0.0.2.
  admission.admit("operator", LOCAL, false, 0);
  admission.admit("neighbour", "10.0.0.2", false, 1);
  // An attacker on 10.6.6.6 holds three: a fourth closes its own oldest.
  admission.admit("x0", "10.6.6.6", false, 2);
  admission.admit("x1", "10.6.6.6", false, 3);
  admission.admit("x2", "10.6.6.6", false, 4);
  assert.equal(admission.admit("x3", "10.6.6.6", false, 5), "x0");
  // A second attacker IP fills the pending slots; past them the IP holding
  // the most gives way, never the operator or the neighbour.
  admission.admit("y0", "10.7.7.7", false, 6);
  assert.equal(admission.pendingCount, 6);
  assert.equal(admission.admit("y1", "10.7.7.7", false, 7), "x1"); // 3 vs 2
  assert.equal(admission.admit("y2", "10.7.7.7", false, 8), "y0"); // 2 vs 3
  // A tie (two each) goes to the IP whose connection came first.
  assert.equal(admission.admit("z", "10.8.8.8", false, 9), "x2");
  assert.equal(admission.pendingCount, 6);
  for (let i = 0; i < 50; i++) {
    const victim = admission.admit(`r${i}`, `10.9.${i}.1`, false, 11 + i);
    assert.ok(victim !== "operator", `r${i} closed the loopback operator`);
  }
  // With only loopback ones left, the oldest loopback one gives way.
  const local = new ControlAdmission<string>({ maxPending: 2 });
  local.admit("l0", LOCAL, false, 0);
  local.admit("l1", "::1", false, 1);
  assert.equal(local.admit("l2", "127.0.0.2", false, 2), "l0");
  // Loopback is one host, not an IP to cap: only maxPending applies.
  const many = new ControlAdmission<string>({
    maxPending: 10,
    maxPendingPerIp: 2,
  });
  for (let i = 0; i < 10; i++) {
    assert.equal(many.admit(`m${i}`, LOCAL, false, i), undefined);
  }
});

test("ControlAdmission: past maxPending only connections that have had pendingGraceMs make room; acceptDelayMs says how long to wait until one has", () => {
  const admission = new ControlAdmission<string>({
    maxPending: 3,
    pendingGraceMs: 1000,
  });
  assert.equal(admission.acceptDelayMs(0), 0);
  admission.admit("a", LOCAL, false, 0);
  admission.admit("b", LOCAL, false, 500);
  assert.equal(admission.acceptDelayMs(900), 0, "room left");
  admission.admit("c", LOCAL, false, 900);
  assert.equal(admission.acceptDelayMs(900), 100);
  assert.equal(admission.acceptDelayMs(1000), 0);
  assert.equal(admission.admit("d", LOCAL, false, 1000), "a");
  assert.equal(admission.acceptDelayMs(1000), 500); // b is 500 ms old
  // A young crowd from one IP is not closed before an old loopback one.
  const mixed = new ControlAdmission<string>({
    maxPending: 3,
    pendingGraceMs: 1000,
  });
  mixed.admit("local", LOCAL, false, 0);
  mixed.admit("x0", "10.6.6.6", false, 900);
  mixed.admit("x1", "10.6.6.6", false, 950);
  assert.equal(mixed.admit("x2", "10.6.6.6", false, 1000), "local");
  // Once they have had their grace, the crowd goes first.
  assert.equal(mixed.acceptDelayMs(1500), 400); // x0's grace ends at 1900
  assert.equal(mixed.admit("operator", LOCAL, false, 1900), "x0");
  assert.equal(mixed.admit("y", "10.7.7.7", false, 2000), "x1");
  // A connection that is being authenticated is no longer pending.
  assert.equal(mixed.authenticated("operator", 2001), undefined);
  assert.equal(mixed.pendingCount, 2);
  assert.equal(mixed.acceptDelayMs(2001), 0);
});

test("ControlAdmission: wrong tokens past the burst are refused until the IP's bucket refills; right ones cost nothing; other IPs unaffected", () => {
  const admission = new ControlAdmission<string>({
    authFailuresPerSecond: 2,
    authFailureBurst: 3,
    maxAuthSources: 2,
  });
  // Right tokens do not count.
  for (let i = 0; i < 10; i++) assert.ok(admission.mayTryToken("10.0.0.1", 0));
  for (let i = 0; i < 3; i++) {
    assert.ok(admission.mayTryToken("10.0.0.1", 0));
    admission.authFailed("10.0.0.1", 0);
  }
  assert.equal(admission.mayTryToken("10.0.0.1", 0), false);
  assert.equal(admission.mayTryToken("10.0.0.1", 499), false);
  assert.ok(admission.mayTryToken("10.0.0.2", 499), "another IP");
  assert.ok(admission.mayTryToken("10.0.0.1", 500), "one try after 0.5 s");
  admission.authFailed("10.0.0.1", 500);
  assert.equal(admission.mayTryToken("10.0.0.1", 500), false);
  // The table holds two IPs: two others make it forget 10.0.0.1 (the price
  // of a bounded table: a fresh bucket).
  admission.mayTryToken("10.0.0.2", 600);
  admission.mayTryToken("10.0.0.3", 600);
  assert.ok(admission.mayTryToken("10.0.0.1", 600));
});

test("ControlAdmission: limits out of range are refused with the option's name", () => {
  for (
    const options of [
      { maxConnections: 0 },
      { maxPending: 1.5 },
      { maxPendingPerIp: -1 },
      { authFailuresPerSecond: 0 },
      { authFailureBurst: 0 },
      { maxAuthSources: 0 },
    ]
  ) {
    const name = Object.keys(options)[0]!;
    assert.throws(
      () => new ControlAdmission(options),
      (error: Error) =>
        error instanceof RangeError && error.message.includes(name),
    );
  }
});

test("ControlToken compares the SHA-256 digests of attempt and token (32 bytes each, whatever the attempt's length)", () => {
  const secret = "s3cret token";
  const compared: [Uint8Array, Uint8Array][] = [];
  const token = new ControlToken(secret, (a, b) => {
    compared.push([a, b]);
    return a.length === b.length && a.every((byte, i) => byte === b[i]);
  });
  const attempts = [
    "",
    "s",
    secret.slice(0, -1),
    secret,
    secret + "x",
    "S3cret token",
    "x".repeat(65_536),
  ];
  const results = attempts.map((attempt) => token.matches(attempt));
  assert.deepEqual(results, attempts.map((attempt) => attempt === secret));
  assert.equal(compared.length, attempts.length);
  const digest = sha256(new TextEncoder().encode(secret));
  compared.forEach(([attempt, expected], i) => {
    assert.equal(attempt.length, 32, `attempt ${i} compared as is`);
    assert.deepEqual(expected, digest);
    assert.deepEqual(attempt, sha256(new TextEncoder().encode(attempts[i]!)));
  });
  // The default comparison is the constant-time one, on the same digests.
  const real = new ControlToken(secret);
  assert.deepEqual(attempts.map((a) => real.matches(a)), results);
});

test("isLoopbackAddress: 127.0.0.0/8, ::1 and mapped 127/8, nothing else", () => {
  for (const yes of ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"]) {
    assert.ok(isLoopbackAddress(yes), yes);
  }
  for (
    const no of [
      "10.0.0.1",
      "128.0.0.1",
      "::",
      "::2",
      "1::1",
      "::ffff:10.0.0.1",
      "localhost",
      "127.0.0.1:9999",
    ]
  ) {
    assert.equal(isLoopbackAddress(no), false, no);
  }
});
