/**
 * The README's three-terminal walk-through, run as written by
 * readme_test.ts INSIDE a private network namespace (`unshare -n`), so its
 * fixed ports (5007, 9000, 9001, 9999) clash with nothing on the machine.
 * Not a test file itself: it refuses to run when the namespace has any
 * interface other than `lo`.
 *
 * It takes the command lines of the section's `sh` blocks from README.md and
 * runs them through `sh` with HOME set to a scratch directory: the server
 * (Terminal 1), the interactive client under a pseudo-terminal (`script`,
 * Terminal 2), the background client and `nc` in one shell (Terminal 3, so
 * its screen is the shell's output), and the server's control port (`nc`),
 * the README's example addresses replaced by the real ones. It checks what
 * the README says each terminal shows, and prints one JSON result line:
 * `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Proc, ROOT, SAFETY_MS, withTempDir } from "./_process.ts";
import { assertPrivateNamespace, output, scenarioMain } from "./_namespace.ts";

/** The example addresses of the README, replaced by the real ones. */
const EXAMPLE_TERMINAL_2 = "127.0.0.1:41234";

/** The command lines of each `sh` block of the README's "Three terminals" section. */
export async function walkthroughBlocks(): Promise<string[][]> {
  const readme = await Deno.readTextFile(`${ROOT}README.md`);
  const start = readme.indexOf("## Three terminals");
  const end = readme.indexOf("### Over multicast", start);
  assert.ok(start >= 0 && end > start, "README: the section is missing");
  const section = readme.slice(start, end);
  return [...section.matchAll(/```sh\n([^]*?)```/g)].map((block) =>
    block[1].split("\n").filter((line) => line !== "" && !line.startsWith("#"))
  );
}

/**
 * Waits until a TCP connection to `port` on this namespace's loopback is
 * established (`ss` is read again every 50 ms: nothing tells of it).
 */
async function untilConnected(port: string): Promise<void> {
  const deadline = Date.now() + SAFETY_MS;
  while (true) {
    const listed = await output("ss", [
      "-Htn",
      "state",
      "established",
      `( dport = :${port} )`,
    ]);
    if (listed.trim() !== "") return;
    assert.ok(Date.now() < deadline, `no connection to port ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Progress on stderr, for a scenario that fails. */
function step(what: string): void {
  console.error(`readme_scenario: ${what}`);
}

async function walkthrough(): Promise<Record<string, unknown>> {
  const interfaces = await assertPrivateNamespace();
  const blocks = await walkthroughBlocks();
  assert.equal(blocks.length, 4, `README: 4 sh blocks: ${blocks.join(" | ")}`);
  const [terminal1, terminal2, terminal3, control] = blocks;
  return await withTempDir(async (home) => {
    const env = {
      HOME: home,
      // The user's Deno cache, not one under the scratch HOME.
      DENO_DIR: Deno.env.get("DENO_DIR") ??
        `${Deno.env.get("HOME")}/.cache/deno`,
      PATH: `${Deno.execPath().replace(/\/[^/]*$/, "")}:${
        Deno.env.get("PATH")
      }`,
    };
    const shell = (script: string, name: string, stdin?: "piped") =>
      Proc.spawn("sh", ["-c", script], { env, name, stdin });
    const procs: Proc[] = [];
    try {
      // Terminal 1: every line but the last runs to its end; the last is the server.
      for (const line of terminal1.slice(0, -1)) {
        const status = await shell(line, line).exited(line);
        assert.equal(status.code, 0, line);
      }
      const server = shell(`exec ${terminal1.at(-1)}`, "terminal 1");
      procs.push(server);
      const listening = await server.stdout.waitLine(
        (l) => /INFO {2}listening /.test(l),
        "the server's first line",
      );
      assert.match(
        listening,
        / listening udp=127\.0\.0\.1:5007 control=127\.0\.0\.1:9999 fingerprint=SHA256:\S+ profile=relay protocol=1\.1 fanout=unicast$/,
      );
      const keyFile = await Deno.stat(`${home}/.config/mcrelay/server.pem`);
      assert.equal(keyFile.mode! & 0o777, 0o600);

      step("terminal 2");
      // Terminal 2: an interactive client on a pseudo-terminal.
      assert.equal(terminal2.length, 1, terminal2.join("\n"));
      const two = Proc.spawn(
        "script",
        ["-qfec", terminal2[0], "/dev/null"],
        { env, name: "terminal 2", stdin: "piped" },
      );
      procs.push(two);
      const ready = await two.stdout.waitLine(
        (l) => l.includes("ready: registered with 127.0.0.1:5007 as "),
        "terminal 2's ready line",
      );
      const address2 = /as (\S+) \(server key/.exec(ready)![1];

      // Terminal 3: the background client and nc, in one shell. A person
      // types nc after the first line; the script waits for the port.
      assert.equal(terminal3.length, 2, terminal3.join("\n"));
      const ncPort = /^nc \S+ (\d+)$/.exec(terminal3[1])![1];
      step("terminal 3");
      const three = shell(
        `${
          terminal3[0]
        }\nuntil nc -z 127.0.0.1 ${ncPort}; do sleep 0.1; done\nexec ${
          terminal3[1]
        }`,
        "terminal 3",
        "piped",
      );
      procs.push(three);
      const joined = await two.stdout.waitLine(
        (l) => /\* 127\.0\.0\.1:\d+ joined$/.test(l),
        "terminal 3's client joining, on terminal 2",
      );
      const address3 = /(127\.0\.0\.1:\d+) joined/.exec(joined)![1];
      // Lines reach nc once it is connected: wait for its connection.
      await untilConnected(ncPort);

      await two.write("hello everyone\r");
      const hello = `[${address2}] hello everyone`;
      await three.stdout.waitLine(
        (l) => l === hello,
        "the hello on terminal 3",
      );
      await three.write("hi from three\n");
      await two.stdout.waitLine(
        (l) => l.includes(`[${address3}] hi from three`),
        "the reply on terminal 2",
      );
      // exit stops Terminal 3's client.
      await three.write("exit\n");
      await three.stdout.waitLine((l) => l === "ok: stopping", "ok: stopping");
      await two.stdout.waitLine(
        (l) => l.includes(`* ${address3} left`),
        "terminal 3's client leaving, on terminal 2",
      );

      step("control port");
      // The server's control port, the example address replaced.
      const [ncLine, ...commands] = control;
      const operator = shell(`exec ${ncLine}`, "operator", "piped");
      procs.push(operator);
      await operator.stdout.waitLine(
        (l) =>
          l === "mcrelay server 0.1.0 control port: type help for the commands",
        "the greeting",
      );
      const replies: Record<string, string> = {};
      const expect: Record<string, (l: string) => boolean> = {
        help: (l) => l === "  exit             stop the server",
        clients: (l) => l === "1 member(s)",
        stats: (l) => l.startsWith("datagramsPerMessage="),
        kick: (l) => l.startsWith("ok: kicked "),
        ban: (l) => l.startsWith("ok: banned "),
        bans: (l) => l === "1 ban(s)",
        unban: (l) => l.startsWith("ok: unbanned "),
        exit: (l) => l === "ok: stopping",
      };
      for (const written of commands) {
        const command = written.replaceAll(EXAMPLE_TERMINAL_2, address2);
        const word = command.split(" ")[0];
        assert.ok(expect[word], `README: unexpected command ${command}`);
        const since = operator.stdout.mark();
        await operator.write(`${command}\n`);
        replies[command] = await operator.stdout.waitLine(
          expect[word],
          `the reply to ${command}`,
          since,
        );
        if (word === "kick") {
          await two.stdout.waitLine(
            (l) =>
              l.includes(
                "! kicked by the server: mind your language (registering again)",
              ),
            "the kick on terminal 2",
          );
          // It registers again at once; a person reads that before going on.
          await two.stdout.waitLine(
            (l) =>
              l.includes(`* registered with 127.0.0.1:5007 as ${address2}`),
            "terminal 2 registered again",
          );
        }
        if (word === "ban") {
          await two.stdout.waitLine(
            (l) =>
              l.includes(
                "! banned by the server for 600 s: flooding the group",
              ),
            "the ban on terminal 2",
          );
          assert.equal((await two.exited("terminal 2 to exit")).code, 3);
        }
      }
      assert.equal((await server.exited("the server to stop")).code, 0);
      // Terminal 3 showed the hello once (its client's own output set aside).
      assert.equal(
        three.stdout.lines.filter((l) => l.includes("hello everyone")).length,
        1,
        three.stdout.lines.join("\n"),
      );
      return {
        ok: true,
        interfaces,
        listening,
        address2,
        address3,
        replies,
        terminal3: three.stdout.lines,
      };
    } finally {
      // `deno task` runs the programs as its children, which a kill of the
      // shell leaves running: whatever is left dies with the namespace when
      // this scenario exits, so nothing is awaited here.
      for (const proc of procs) proc.signal("SIGKILL");
    }
  });
}

if (import.meta.main) await scenarioMain(walkthrough);
