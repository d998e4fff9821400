/**
 * Running the programs needs nothing beyond Deno: `deno task server` and
 * `deno task client` start from an empty DENO_DIR in a private network
 * namespace with only a loopback interface and no route, where no package
 * registry can be reached. (The test-only `fast-check` and the NATS client,
 * loaded only with `--nats`, must not be fetched first.)
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  assertNoStackTrace,
  LOOPBACK_SERVER,
  parseJson,
  Proc,
  withTempDir,
} from "./_process.ts";
import {
  assertNamespaced,
  LOOPBACK_SETUP,
  namespaced,
  probeNamespace,
} from "./_namespace.ts";

/** A first start transpiles every module: generous, only a hung test waits this long. */
const START_MS = 90_000;

/** Starts `deno task args` in a namespace without routes, with DENO_DIR `denoDir`. */
function offlineTask(args: readonly string[], denoDir: string): Proc {
  const command = namespaced(
    [Deno.execPath(), "task", ...args],
    LOOPBACK_SETUP,
  );
  assertNamespaced("unshare", command);
  return Proc.spawn("unshare", command, {
    name: `offline deno task ${args.join(" ")}`,
    env: { DENO_DIR: denoDir },
  });
}

/** Asserts that nothing was downloaded and no error was printed. */
function assertNothingFetched(stderr: string): void {
  assert.doesNotMatch(stderr, /Download|registry|error/i, stderr);
  assertNoStackTrace(stderr);
}

const notPossible = await probeNamespace(LOOPBACK_SETUP);
if (notPossible) console.log(`offline_start_test.ts: ignored: ${notPossible}`);

Deno.test({
  name:
    "offline, from an empty DENO_DIR: deno task server --help, deno task client --help and a server start on 127.0.0.1 need no registry",
  ignore: notPossible !== undefined,
  async fn() {
    await withTempDir(async (denoDir) => {
      for (const program of ["server", "client"]) {
        const proc = offlineTask([program, "--help"], denoDir);
        try {
          const status = await proc.exited(`${program} --help`, START_MS);
          assert.equal(status.code, 0, proc.stderr);
          assert.match(
            proc.stdout.lines[0] ?? "",
            new RegExp(`^mcrelay ${program} `),
          );
          assertNothingFetched(proc.stderr);
        } finally {
          await proc.kill();
        }
        // Each program from its own empty cache.
        await Deno.remove(denoDir, { recursive: true });
        await Deno.mkdir(denoDir);
      }

      const server = offlineTask(
        ["server", ...LOOPBACK_SERVER, "--json"],
        denoDir,
      );
      try {
        const line = await server.stdout.waitLine(
          (l) => parseJson(l) !== undefined,
          "the server's listening line",
          0,
          START_MS,
        );
        const listening = parseJson(line)!;
        assert.equal(listening.event, "listening", line);
        assert.match(String(listening.udp), /^127\.0\.0\.1:\d+$/);
        assertNothingFetched(server.stderr);
      } finally {
        await server.kill();
      }
      // The cache holds no npm package: none was needed.
      const npm = await Array.fromAsync(
        Deno.readDir(`${denoDir}/npm`),
      ).catch(() => []);
      assert.deepEqual(npm, []);
    });
  },
});
