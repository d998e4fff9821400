/**
 * What a client does about the server's key and its progress, as a library
 * (issue 16 items 4 and 6): each try announced, a restart with another key
 * refused by a pin or a `verifyKey` record (the client stops with one
 * `failed` event instead of retrying forever) or warned about with both keys,
 * and `confirm()` answered by a live server only.
 */
import assert from "node:assert/strict";
import { ServerKeyError } from "../../lib/errors.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import type { HandshakeProgress } from "../../lib/relay/client/client.ts";
import { Harness } from "./_harness.ts";

const [firstKey, secondKey] = await Promise.all([
  RsaPrivateKey.generate(2048),
  RsaPrivateKey.generate(2048),
]);

Deno.test("a server restarted with another key: a pinned client and one whose verifyKey refuses it stop with one failed event; an unpinned one warns with both keys and registers again", async () => {
  await using h = new Harness(firstKey);
  const first = await h.startServer();
  const oldKey = first.server.fingerprint;
  const pinned = await h.connect("pinned", {
    fingerprint: oldKey,
    keepaliveMs: 100,
  });
  const checked: [string, string][] = [];
  const recorded = await h.connect("recorded", {
    keepaliveMs: 100,
    verifyKey: (server, fingerprint) => {
      checked.push([server, fingerprint]);
      return fingerprint === oldKey ? undefined : `refused ${fingerprint}`;
    },
  });
  const loose = await h.connect("loose", { keepaliveMs: 100 });
  assert.deepEqual(checked, [[`127.0.0.1:${first.port}`, oldKey]]);
  const marks = [pinned, recorded, loose].map((c) => c.events.mark());

  // A crash (no NOTICE 5) and a new process with a new key on the port.
  first.tap.discardSends();
  await first.server.close();
  const second = await h.startServer({
    port: first.port,
    privateKey: secondKey,
  });
  const newKey = second.server.fingerprint;

  const failed = await pinned.waitEvent("failed", marks[0]);
  assert.ok(failed.type === "failed");
  assert.match(failed.reason, /does not match the pinned fingerprint/);
  assert.ok(failed.reason.includes(oldKey) && failed.reason.includes(newKey));
  const refused = await recorded.waitEvent("failed", marks[1]);
  assert.deepEqual(refused, { type: "failed", reason: `refused ${newKey}` });
  for (const client of [pinned, recorded]) {
    // One event, and the client is closed: it neither retries nor sends.
    assert.equal(
      client.events.filter((e) => e.type === "failed").length,
      1,
    );
    await assert.rejects(client.client.send("after"), /closed/);
  }

  await loose.waitEvent("ready", marks[2]);
  // The refused clients never registered with the new server.
  assert.deepEqual(
    second.server.members().map((m) => m.address),
    [loose.address],
  );
  const warning = await loose.log.waitFor(
    (r) => r.event === "server_key_changed",
    "the server_key_changed warning",
  );
  assert.equal(warning.level, "warn");
  assert.equal(warning.previous, oldKey);
  assert.equal(warning.fingerprint, newKey);
  assert.match(
    String(warning.message),
    new RegExp(
      `^the server's key changed from ${escape(oldKey)} to ${escape(newKey)}`,
    ),
  );
});

Deno.test("a dead server: every key request is announced, then connect() fails; confirm() is true while the server answers and false once it is gone", async () => {
  await using h = new Harness(firstKey);
  const dead = await h.socket("dead server");
  const progress: HandshakeProgress[] = [];
  await assert.rejects(
    h.connect("nobody's", {
      target: dead.localAddress,
      retryAttempts: 3,
      retryInitialMs: 20,
      onProgress: (p) => progress.push(p),
    }),
    (error: unknown) =>
      !(error instanceof ServerKeyError) &&
      /No answer to the key request .* after 3 tries over 0\.1 s/.test(
        (error as Error).message,
      ),
  );
  const to = `127.0.0.1:${dead.localAddress.port}`;
  assert.deepEqual(progress, [
    { step: "key", server: to, attempt: 1, attempts: 3, waitMs: 20 },
    { step: "key", server: to, attempt: 2, attempts: 3, waitMs: 40 },
    { step: "key", server: to, attempt: 3, attempts: 3, waitMs: 80 },
  ]);

  const server = await h.startServer();
  const steps: string[] = [];
  // Three tries 1, 2 and 4 s apart (the library's default pace): a live
  // server's answers come in the first, however busy the machine; only the
  // dead server below uses them all.
  const a = await h.connect("a", {
    retryAttempts: 3,
    retryInitialMs: 1_000,
    keepaliveMs: 60_000,
    onProgress: (p) => steps.push(`${p.step} ${p.attempt}`),
  });
  // The RSA work of the registration may still need a second try.
  assert.deepEqual(steps.slice(0, 2), ["key 1", "register 1"]);
  assert.ok(steps.slice(2).every((s) => s.startsWith("register")), `${steps}`);
  steps.length = 0;
  await a.client.send("sent before the confirmation");
  assert.equal(await a.client.confirm(), true);
  assert.equal(steps[0], "confirm 1");

  server.tap.discardSends(); // a crash: the server answers nothing more
  steps.length = 0;
  assert.equal(await a.client.confirm(), false);
  assert.deepEqual(steps, ["confirm 1", "confirm 2", "confirm 3"]);
});

/** Escapes a fingerprint for a RegExp. */
function escape(text: string): string {
  return text.replace(/[+/]/g, "\\$&");
}
