/**
 * The deployment files in deploy/: the systemd unit passes
 * `systemd-analyze verify` (skipped, saying why, where that is missing), the
 * unit and the container recipe run the server with the permissions of
 * deno.json's `server` task, and the example config is one the server
 * accepts. (The container recipe is not built here: that needs an engine.)
 *
 * @module
 */
import assert from "node:assert/strict";
import denoJson from "../../deno.json" with { type: "json" };
import { loadConfigFile } from "../../lib/cli/config.ts";
import { SERVER_FLAGS } from "../../lib/cli/server_flags.ts";
import { CAN_RUN, NO_RUN_REASON, Proc, ROOT } from "./_process.ts";

if (!CAN_RUN) console.log(`deploy_test.ts: ignored: ${NO_RUN_REASON}`);

const UNIT = `${ROOT}deploy/mcrelay.service`;
const CONTAINERFILE = `${ROOT}deploy/Containerfile`;

/** Why systemd-analyze cannot be used here, or undefined when it can. */
async function noSystemdAnalyze(): Promise<string | undefined> {
  if (!CAN_RUN) return NO_RUN_REASON;
  try {
    const result = await new Deno.Command("systemd-analyze", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return result.success
      ? undefined
      : `systemd-analyze --version failed with status ${result.code}`;
  } catch (error) {
    return `systemd-analyze is not installed (apt-get install systemd): ${
      (error as Error).message
    }`;
  }
}

/** The Deno flags of a `deno run ... server.ts` command line (the words before the script). */
function denoRunFlags(words: readonly string[]): string[] {
  const run = words.indexOf("run");
  const script = words.findIndex((w) => w.endsWith("server.ts"));
  assert.ok(run >= 0 && script > run, `deno run ... server.ts: ${words}`);
  // The lock file is named by its path; compare the flag by the file's name.
  return words.slice(run + 1, script).map((flag) =>
    flag.startsWith("--lock=")
      ? `--lock=${flag.slice("--lock=".length).split("/").at(-1)}`
      : flag
  ).sort();
}

const analyzeMissing = await noSystemdAnalyze();
if (analyzeMissing) {
  console.log(`deploy_test.ts: systemd unit check ignored: ${analyzeMissing}`);
}

Deno.test({
  name:
    "deploy/mcrelay.service passes systemd-analyze verify without a warning",
  ignore: analyzeMissing !== undefined,
  async fn() {
    const proc = Proc.spawn("systemd-analyze", ["verify", UNIT], {
      name: "systemd-analyze verify",
    });
    try {
      const status = await proc.exited("systemd-analyze verify");
      const output = [...proc.stdout.lines, proc.stderr].join("\n");
      assert.equal(status.code, 0, output);
      // Unknown keys and bad values are only warned about: none may be there.
      assert.doesNotMatch(output, /mcrelay\.service/, output);
    } finally {
      await proc.kill();
    }
  },
});

Deno.test({
  name:
    "deploy/: the systemd unit and the container recipe run the server with the permissions of deno.json's server task",
  ignore: !CAN_RUN,
  async fn() {
    const task = denoRunFlags(denoJson.tasks.server.split(" "));
    assert.ok(task.includes("--allow-net"), String(task));

    const unit = await Deno.readTextFile(UNIT);
    const execStart = unit.split("\n").filter((l) =>
      l.startsWith("ExecStart=")
    );
    assert.equal(execStart.length, 1, "one ExecStart");
    assert.deepEqual(denoRunFlags(execStart[0].split(" ")), task);

    const recipe = await Deno.readTextFile(CONTAINERFILE);
    const entrypoint = /^ENTRYPOINT (\[.*\])$/m.exec(recipe);
    assert.ok(entrypoint, "an ENTRYPOINT in exec form");
    assert.deepEqual(denoRunFlags(JSON.parse(entrypoint[1])), task);
  },
});

Deno.test({
  name:
    "deploy/mcrelay.toml, the config the unit and the container read, is one the server accepts",
  ignore: !CAN_RUN,
  async fn() {
    const values = await loadConfigFile(
      `${ROOT}deploy/mcrelay.toml`,
      SERVER_FLAGS,
    );
    assert.equal(values["key-file"], "/var/lib/mcrelay/server.pem");
    assert.equal(values.metrics, "127.0.0.1:9464");
    assert.equal(values["tcp-host"], "127.0.0.1");
    const unit = await Deno.readTextFile(UNIT);
    assert.match(unit, /--config \/etc\/mcrelay\/mcrelay\.toml$/m);
    assert.match(unit, /^StateDirectory=mcrelay$/m, "/var/lib/mcrelay");
  },
});
