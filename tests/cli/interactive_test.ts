/**
 * The interactive client driven as a user would: lines typed on stdin
 * (`--stdio`) are sent, `/help`, `/who` and `/quit` work, and what arrives
 * is printed. Servers run with `--no-multicast --bind 127.0.0.1`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  CAN_RUN,
  ControlClient,
  jsonWith,
  killAll,
  NO_RUN_REASON,
  Proc,
  startClient,
  startServer,
} from "./_process.ts";

if (!CAN_RUN) console.log(`interactive_test.ts: ignored: ${NO_RUN_REASON}`);

Deno.test({
  name:
    "interactive client: typed lines are sent, /help and /who answer, incoming messages print, /quit leaves",
  ignore: !CAN_RUN,
  async fn() {
    const server = await startServer();
    let peer: Awaited<ReturnType<typeof startClient>> | undefined;
    let user: Proc | undefined;
    let control: ControlClient | undefined;
    try {
      peer = await startClient(["--server", server.udp]);
      user = Proc.deno(
        "client.ts",
        ["--server", server.udp, "--tcp-port", "0", "--stdio"],
        { name: "interactive", stdin: "piped" },
      );
      const ready = await user.stdout.waitLine(
        (l) => l.startsWith("ready: "),
        "the ready line",
      );
      const address = /as (\S+) \(server key/.exec(ready)?.[1];
      assert.ok(address, ready);

      await user.write("/help\n");
      await user.stdout.waitLine(
        (l) => l === "/who   members present",
        "the /help text",
      );

      await user.write("/who\n");
      await user.stdout.waitLine((l) => l === `you: ${address}`, "/who: you");
      await user.stdout.waitLine(
        (l) => l === `member: ${peer!.address}`,
        "/who: the other member",
      );

      await user.write("/bogus\n");
      await user.stdout.waitLine(
        (l) => l === "unknown command /bogus: try /help",
        "the unknown-command hint",
      );

      await user.write("hello from the keyboard\n//slash\n");
      await peer.proc.stdout.waitLine(
        jsonWith({
          event: "message",
          from: address,
          text: "hello from the keyboard",
        }),
        "the typed line at the other member",
      );
      await peer.proc.stdout.waitLine(
        jsonWith({ event: "message", from: address, text: "/slash" }),
        "a //-escaped line sent with one slash",
      );

      control = await ControlClient.connect(peer.control);
      await control.send("a reply");
      await user.stdout.waitLine(
        (l) => l === `[${peer!.address}] a reply`,
        "the reply printed",
      );

      await user.write("/quit\n");
      const status = await user.exited("the client to leave on /quit");
      assert.equal(status.code, 0, user.stderr);
      await peer.proc.stdout.waitLine(
        jsonWith({ event: "leave", address }),
        "the other member sees the leave",
      );
    } finally {
      await control?.close();
      await killAll(user, peer?.proc, server.proc);
    }
  },
});
