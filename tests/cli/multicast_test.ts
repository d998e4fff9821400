/**
 * The relay over real multicast, in a private network namespace that the
 * test makes itself: `unshare -n` (plus a private PID namespace, so every
 * process in it dies with it), loopback up with multicast on and a route for
 * 224.0.0.0/4, then multicast_scenario.ts runs a server joined to 224.1.1.1
 * and two clients that send to the group.
 *
 * Nothing multicast runs outside that namespace: the command is checked to
 * start with `unshare -n` before it is spawned, and the scenario itself
 * refuses to run when it sees any interface other than `lo`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseJson, Proc, PROGRAM_PERMISSIONS } from "./_process.ts";
import { assertNamespaced, namespaced, probeNamespace } from "./_namespace.ts";

/**
 * Runs multicast_scenario.ts with `args` in a private namespace and returns
 * its result line, checked `ok` with exit status 0; `kill` ends it.
 */
async function runScenario(
  args: readonly string[],
  timeoutMs: number,
): Promise<{ result: Record<string, unknown>; kill: () => Promise<void> }> {
  const command = namespaced([
    Deno.execPath(),
    "run",
    ...PROGRAM_PERMISSIONS,
    "--allow-run",
    "tests/cli/multicast_scenario.ts",
    ...args,
  ]);
  assertNamespaced("unshare", command);
  const proc = Proc.spawn("unshare", command, { name: "multicast scenario" });
  try {
    const status = await proc.exited("the multicast scenario", timeoutMs);
    const line = proc.stdout.lines.find((l) => parseJson(l)?.ok !== undefined);
    assert.ok(
      line,
      `no result line; status ${status.code}\nstdout:\n${
        proc.stdout.lines.join("\n")
      }\nstderr:\n${proc.stderr}`,
    );
    const result = parseJson(line)!;
    assert.equal(result.ok, true, `${result.error}\nstderr:\n${proc.stderr}`);
    assert.equal(status.code, 0, proc.stderr);
    return { result, kill: () => proc.kill() };
  } catch (error) {
    await proc.kill();
    throw error;
  }
}

const notPossible = await probeNamespace();
if (notPossible) console.log(`multicast_test.ts: ignored: ${notPossible}`);

Deno.test({
  name:
    "multicast: in a private network namespace, a server joined to 224.1.1.1 relays between two clients that send to the group",
  ignore: notPossible !== undefined,
  async fn() {
    const { result, kill } = await runScenario([], 60_000);
    try {
      // It ran in the namespace, with the group joined on its loopback.
      assert.deepEqual(result.interfaces, ["lo"]);
      assert.match(String(result.memberships), /inet\s+224\.1\.1\.1/);

      // The server joined the group on a free port, bound to 0.0.0.0.
      const server = result.server as Record<string, unknown>;
      const udp = /^0\.0\.0\.0:(\d+)$/.exec(String(server.udp));
      assert.ok(udp, `server udp ${server.udp}`);
      const port = udp[1];
      assert.equal(server.multicast, `224.1.1.1:${port}`);

      // The clients sent to the group (no --server) and were answered by
      // unicast from the server's port.
      assert.deepEqual(result.clientArgs, [
        "--group",
        "224.1.1.1",
        "--port",
        port,
      ]);
      const a = result.a as Record<string, string>;
      const b = result.b as Record<string, string>;
      assert.match(a.server, new RegExp(`:${port}$`));
      assert.match(b.server, new RegExp(`:${port}$`));

      // Each message arrived at the other client with the right sender.
      assert.deepEqual(result.atB, {
        event: "message",
        from: a.address,
        text: "hello over multicast",
      });
      assert.deepEqual(result.atA, {
        event: "message",
        from: b.address,
        text: "and back",
      });
      const stats = result.stats as Record<string, unknown>;
      assert.equal(stats.messagesRelayed, 2);
      assert.equal(stats.registrations, 2);
      const clients = result.clients as Record<string, unknown>[];
      assert.deepEqual(
        new Set(clients.map((c) => c.address)),
        new Set([a.address, b.address]),
      );
    } finally {
      await kill();
    }
  },
});

Deno.test({
  name:
    "multicast: in a private network namespace, group fan-out delivers through the downstream group 224.1.1.1, port + 1, one datagram per message",
  ignore: notPossible !== undefined,
  async fn() {
    const { result, kill } = await runScenario(["group"], 90_000);
    try {
      assert.deepEqual(result.interfaces, ["lo"]);

      const server = result.server as Record<string, unknown>;
      const port = Number(/:(\d+)$/.exec(String(server.udp))![1]);
      assert.equal(server.fanout, "group");
      assert.equal(server.downstream, `224.1.1.1:${port + 1}`);
      assert.match(String(result.memberships), /inet\s+224\.1\.1\.1/);

      // Every message reached both other clients, with the right sender.
      const clients = result.clients as string[];
      for (const label of ["group hello", "downstream only"]) {
        const received = (label === "group hello"
          ? result.received
          : result.downstreamOnly) as Record<string, unknown>[];
        assert.equal(received.length, 6);
        for (const [i, sender] of clients.entries()) {
          const got = received.filter((r) =>
            r.text === `${label} ${i}`
          );
          assert.equal(got.length, 2);
          assert.ok(got.every((r) => r.from === sender), JSON.stringify(got));
        }
      }
      // Relayed as group tokens; the second round took one multicast
      // datagram per message, nothing per recipient.
      const before = result.before as Record<string, unknown>;
      const stats = result.stats as Record<string, unknown>;
      const group = stats.group as Record<string, number>;
      const groupBefore = before.group as Record<string, number>;
      assert.equal(stats.messagesRelayed, 6);
      assert.equal(group.holders, 3);
      assert.equal(group.capable, 3);
      assert.equal(group.messages, 6);
      assert.equal(group.datagrams - groupBefore.datagrams, 3);
      assert.equal(
        (stats.deliveries as number) - (before.deliveries as number),
        6,
      );
      assert.ok(group.epoch >= 1);
    } finally {
      await kill();
    }
  },
});
