/**
 * Kicks and bans as a user sees them (issue 16 item 1): a server process,
 * client processes, `kick`, `ban`, `bans` and `unban` on the control port;
 * what the kicked and the banned client print, and the banned client's exit
 * status. Every server runs with `--no-multicast --bind 127.0.0.1`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  CAN_RUN,
  type ClientInfo,
  closeAll,
  ControlClient,
  killAll,
  NO_RUN_REASON,
  Proc,
  startClient,
  startServer,
} from "./_process.ts";
import { BANNED_EXIT_STATUS } from "../../lib/cli/output.ts";

if (!CAN_RUN) console.log(`ban_cli_test.ts: ignored: ${NO_RUN_REASON}`);

Deno.test({
  name:
    "kick tells the client why and it is back at once; ban makes it say so and exit with status 3; bans lists it",
  ignore: !CAN_RUN,
  async fn() {
    const server = await startServer();
    let watcher: ClientInfo | undefined;
    let text: Proc | undefined;
    let control: ControlClient | undefined;
    try {
      watcher = await startClient(["--server", server.udp]);
      // A client as a person runs it: text output.
      text = Proc.deno(
        "client.ts",
        ["--server", server.udp, "--tcp-port", "0"],
        { name: "text client" },
      );
      const ready = await text.stdout.waitLine(
        (l) => l.startsWith("ready: "),
        "the ready line",
      );
      const address = /as (\S+) /.exec(ready)![1];
      await watcher.proc.stdout.waitJson({ event: "join", address });
      control = await ControlClient.connectServer(server.control, true);

      // Kick with a reason: the client says so and registers again by
      // itself (its keep-alive is 10 s away: the notice does it).
      let since = text.stdout.mark();
      const kickMark = watcher.proc.stdout.mark();
      assert.deepEqual(
        await control.command(`kick ${address} mind your language`, "kicked"),
        { event: "kicked", address },
      );
      await text.stdout.waitLine(
        (l) =>
          l ===
            "! kicked by the server: mind your language (registering again)",
        "the kicked line",
        since,
      );
      await text.stdout.waitLine(
        (l) => l === `* registered with ${server.udp} as ${address}`,
        "registered again",
        since,
      );
      // The others saw it leave and join again.
      await watcher.proc.stdout.waitJson({ event: "leave", address }, kickMark);
      await watcher.proc.stdout.waitJson({ event: "join", address }, kickMark);

      // Ban for 120 s: told, gone, exit status 3, no rejoin.
      since = text.stdout.mark();
      const wMark = watcher.proc.stdout.mark();
      const banned = await control.command(
        `ban ${address} 120 flooding the group`,
        "banned",
      );
      assert.deepEqual(banned, {
        event: "banned",
        target: address,
        seconds: 120,
        removed: [address],
      });
      await text.stdout.waitLine(
        (l) => l === "! banned by the server for 120 s: flooding the group",
        "the banned line",
        since,
      );
      const status = await text.exited("the banned client to exit");
      // Exit status 3 means banned (client --help): a contract, so the
      // number itself is checked.
      assert.equal(status.code, 3, text.stderr);
      assert.ok(
        !text.stdout.lines.slice(since).some((l) =>
          l.startsWith("* registered")
        ),
        "a banned client does not rejoin",
      );
      await watcher.proc.stdout.waitJson({ event: "leave", address }, wMark);

      const bans = await control.command("bans", "bans");
      const list = bans.bans as Record<string, unknown>[];
      assert.equal(list.length, 1);
      assert.equal(list[0].target, address);
      assert.equal(list[0].reason, "flooding the group");
      const left = list[0].secondsLeft as number;
      assert.ok(left > 0 && left <= 120, `secondsLeft ${left}`);
      const clients = await control.command("clients", "clients");
      assert.deepEqual(
        (clients.clients as Record<string, unknown>[]).map((m) => m.address),
        [watcher.address],
      );
    } finally {
      await closeAll(control);
      await killAll(server.proc, watcher?.proc, text);
    }
  },
});

Deno.test({
  name:
    "ban of an IP removes every member from it; a client started then gets nowhere and costs no RSA work; unban lets it in",
  ignore: !CAN_RUN,
  async fn() {
    const server = await startServer();
    let a: ClientInfo | undefined;
    let b: ClientInfo | undefined;
    let late: Proc | undefined;
    let control: ControlClient | undefined;
    try {
      a = await startClient(["--server", server.udp]);
      b = await startClient(["--server", server.udp]);
      await a.proc.stdout.waitJson({ event: "join", address: b.address });
      control = await ControlClient.connectServer(server.control, true);

      const banned = await control.command("ban 127.0.0.1", "banned");
      assert.equal(banned.target, "127.0.0.1");
      assert.equal(banned.seconds, null);
      assert.deepEqual(
        new Set(banned.removed as string[]),
        new Set([a.address, b.address]),
      );
      for (const c of [a, b]) {
        await c.proc.stdout.waitJson({
          event: "banned",
          seconds: null,
          reason: "banned by the server operator",
        });
        const status = await c.proc.exited("a banned client to exit");
        assert.equal(status.code, BANNED_EXIT_STATUS, c.proc.stderr);
      }
      const bans = await control.command("bans", "bans");
      assert.deepEqual(bans.bans, [{
        target: "127.0.0.1",
        secondsLeft: null,
        reason: "banned by the server operator",
      }]);

      // A client started now: its key requests are dropped unanswered.
      const before = (await control.command("stats", "stats")).stats as {
        rsaDecryptions: number;
        dropped: Record<string, number>;
      };
      const logMark = control.log.mark();
      late = Proc.deno(
        "client.ts",
        ["--json", "--tcp-port", "0", "--server", server.udp],
        { name: "late client" },
      );
      // The first drop of a source is logged (on the control port too).
      const drop = await control.log.waitJson(
        { event: "drop", reason: "banned" },
        logMark,
      );
      const stats = (await control.command("stats", "stats"))
        .stats as typeof before;
      assert.ok(
        stats.dropped.banned > (before.dropped.banned ?? 0),
        JSON.stringify(stats.dropped),
      );
      assert.equal(stats.rsaDecryptions, before.rsaDecryptions);
      assert.match(String(drop.source), /^127\.0\.0\.1:\d+$/);
      assert.equal(late.stdout.lines.length, 0, "it is not registered");

      // Unban: its next try gets in.
      assert.deepEqual(await control.command("unban 127.0.0.1", "unbanned"), {
        event: "unbanned",
        target: "127.0.0.1",
      });
      const ready = await late.stdout.waitJson({ event: "ready" });
      assert.equal(ready.server, server.udp);
      assert.deepEqual((await control.command("bans", "bans")).bans, []);
      const again = await control.command("unban 127.0.0.1", "error");
      assert.match(String(again.error), /no ban of 127\.0\.0\.1/);
      const bad = await control.command("ban nowhere", "error");
      assert.match(String(bad.error), /is not a ban target/);
      const usage = await control.command("ban", "error");
      assert.match(String(usage.error), /usage: ban IP\[:PORT\]/);
    } finally {
      await closeAll(control);
      await killAll(server.proc, a?.proc, b?.proc, late);
    }
  },
});
