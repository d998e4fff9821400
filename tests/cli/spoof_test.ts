/**
 * Spoofed-source attacks on the server process (protocol.md section 10),
 * with genuinely forged source addresses: spoof_scenario.ts runs in a
 * private network namespace that the test makes itself (`unshare -n`, see
 * _namespace.ts), where a raw socket sends IPv4/UDP datagrams from any
 * 127.0.0.0/8 address and a packet socket sniffs the server's port on `lo`.
 * Nothing is sent outside that namespace; where it cannot be made (not
 * root, no unshare) or python3 is missing, the tests are ignored with the
 * reason printed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { probeNamespace, runScenario } from "./_namespace.ts";

const SCENARIO = "tests/cli/spoof_scenario.ts";

/** Whether python3 (the raw-socket helper's interpreter) runs here; the reason when not. */
async function probePython(): Promise<string | undefined> {
  try {
    const { success } = await new Deno.Command("python3", {
      args: ["-c", "import socket; socket.AF_PACKET"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success ? undefined : "python3 has no packet sockets (Linux only)";
  } catch (error) {
    return `cannot run python3 for the raw-socket helper: ${
      (error as Error).message
    }`;
  }
}

const notPossible = await probeNamespace() ?? await probePython();
if (notPossible) console.log(`spoof_test.ts: ignored: ${notPossible}`);

Deno.test({
  name:
    "spoofed source: a sniffer that reuses a member's cookie, or fetches a fresh one for its address, with its own key is refused; the member keeps talking and the group sees no forged line",
  ignore: notPossible !== undefined,
  async fn() {
    const { result, kill } = await runScenario(SCENARIO, ["takeover"], 90_000);
    try {
      assert.deepEqual(result.interfaces, ["lo"]);
      const stats = result.stats as Record<string, unknown>;
      const dropped = stats.dropped as Record<string, number>;
      const context = JSON.stringify(result);
      // Refused before any key changed hands.
      assert.equal(dropped.cookie_reused, 1, context);
      assert.equal(dropped.rekey_without_proof, 1, context);
      assert.equal(stats.rekeys, 0, context);
      assert.equal(stats.registrations, 2, context);
      // The forged message and DISCONNECT did not pass under A's key.
      assert.equal(dropped.token_signature, 1, context);
      assert.equal(dropped.forged_disconnect, 1, context);
      // Both still members, nobody left or registered again.
      const clients = result.clients as { address: string }[];
      assert.deepEqual(
        clients.map((c) => c.address).sort(),
        [result.a, result.b].sort(),
      );
      assert.deepEqual(result.leaves, []);
      assert.deepEqual(result.aAgain, []);
      // What each saw: exactly the other's line, nothing forged.
      assert.deepEqual(result.atB, [{
        event: "message",
        from: result.a,
        text: "still mine",
      }]);
      assert.deepEqual(result.atA, [{
        event: "message",
        from: result.b,
        text: "heard you",
      }]);
    } finally {
      await kill();
    }
  },
});

Deno.test({
  name:
    "spoofed source: key requests spoofed from a client's IP at 10/s do not lock that client out (it registers)",
  ignore: notPossible !== undefined,
  async fn() {
    const { result, kill } = await runScenario(
      SCENARIO,
      ["key-requests"],
      90_000,
    );
    try {
      assert.deepEqual(result.interfaces, ["lo"]);
      const context = JSON.stringify(result);
      const clients = result.clients as { address: string }[];
      assert.deepEqual(clients.map((c) => c.address), [result.victim]);
      assert.match(String(result.victim), /^127\.0\.0\.1:\d+$/);
      // The flood ran before and while the client registered, from its IP.
      assert.ok(Number(result.sentWhenRegistered) > 20, context);
      // Each spoofed address spent only its own bucket: answered.
      assert.ok(Number(result.answered) > 20, context);
      const stats = result.stats as Record<string, unknown>;
      assert.equal(stats.registrations, 1, context);
    } finally {
      await kill();
    }
  },
});
