/**
 * The README's three-terminal walk-through, run as written (its command
 * lines taken from README.md) by readme_scenario.ts in a private network
 * namespace the test makes itself (`unshare -n`, and a private PID
 * namespace so every process started there dies with it): the fixed ports
 * of the walk-through clash with nothing, and nothing leaves loopback.
 *
 * @module
 */
import assert from "node:assert/strict";
import { probeNamespace, runScenario } from "./_namespace.ts";

const notPossible = await probeNamespace();
const tools = await Promise.all(
  ["script", "nc", "ss"].map((tool) =>
    new Deno.Command("sh", {
      args: ["-c", `command -v ${tool}`],
      stdout: "null",
      stderr: "null",
    }).output().then((o) => o.success ? undefined : tool, () => tool)
  ),
);
const missing = tools.filter((t) => t !== undefined);
const ignored = notPossible ??
  (missing.length > 0 ? `needs ${missing.join(", ")}` : undefined);
if (ignored) console.log(`readme_test.ts: ignored: ${ignored}`);

Deno.test({
  name:
    "README: the three-terminal walk-through works as written (loopback, key outside the checkout, each line shown once)",
  ignore: ignored !== undefined,
  async fn() {
    const { result, kill } = await runScenario(
      "tests/cli/readme_scenario.ts",
      [],
      120_000,
    );
    try {
      assert.deepEqual(result.interfaces, ["lo"]);
      assert.match(String(result.address2), /^127\.0\.0\.1:\d+$/);
    } finally {
      await kill();
    }
  },
});
