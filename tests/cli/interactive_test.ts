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
  closeAll,
  ControlClient,
  jsonWith,
  killAll,
  NO_RUN_REASON,
  parseJson,
  Proc,
  PROGRAM_PERMISSIONS,
  ROOT,
  SAFETY_MS,
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

/** Whether tmux is installed: the pseudo-terminal test runs the client in it. */
const TMUX = CAN_RUN &&
  await new Deno.Command("tmux", {
    args: ["-V"],
    stdout: "null",
    stderr: "null",
  })
    .output().then((o) => o.success, () => false);
if (CAN_RUN && !TMUX) {
  console.log("interactive_test.ts: pseudo-terminal test ignored: no tmux");
}

/**
 * A program in a tmux pane of a fixed size on a private tmux server: keys
 * are typed into it and the screen is read back as the user sees it.
 */
class Pane implements AsyncDisposable {
  readonly #socket: string;
  readonly #dir: string;

  private constructor(dir: string) {
    this.#dir = dir;
    this.#socket = `${dir}/tmux.sock`;
  }

  /** Starts `command` in a `columns` x `rows` pane. */
  static async start(
    columns: number,
    rows: number,
    command: readonly string[],
  ): Promise<Pane> {
    const pane = new Pane(
      await Deno.makeTempDir({ prefix: "mcrelay_tty_test_" }),
    );
    await pane.#tmux(
      "new-session",
      "-d",
      "-x",
      String(columns),
      "-y",
      String(rows),
      "--",
      "env",
      "NO_COLOR=1",
      // A config directory of its own: never the user's known-servers file.
      `XDG_CONFIG_HOME=${pane.#dir}`,
      ...command,
    );
    await pane.#tmux("set-option", "-g", "remain-on-exit", "on");
    return pane;
  }

  /** Types `text` literally. */
  async type(text: string): Promise<void> {
    await this.#tmux("send-keys", "-l", "--", text);
  }

  /** Presses keys by tmux name (Enter, Left, Home, Up, C-u, ...). */
  async press(...keys: string[]): Promise<void> {
    await this.#tmux("send-keys", ...keys);
  }

  /** The screen's rows, trailing blanks removed. */
  async screen(): Promise<string[]> {
    const text = await this.#tmux("capture-pane", "-p");
    return text.replace(/\n$/, "").split("\n").map((row) => row.trimEnd());
  }

  /**
   * Waits until the screen satisfies `predicate` (tmux tells no screen
   * change, so it is read again every 50 ms); returns it.
   */
  async waitScreen(
    predicate: (rows: string[]) => boolean,
    what: string,
    ms = SAFETY_MS,
  ): Promise<string[]> {
    const deadline = Date.now() + ms;
    let rows = await this.screen();
    while (!predicate(rows)) {
      if (Date.now() > deadline) {
        throw new Error(
          `Timed out waiting for ${what}; the screen:\n${rows.join("\n")}`,
        );
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
      rows = await this.screen();
    }
    return rows;
  }

  /** Kills the tmux server (and the program) and removes its directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.#tmux("kill-server").catch(() => {});
    await Deno.remove(this.#dir, { recursive: true });
  }

  async #tmux(...args: string[]): Promise<string> {
    const output = await new Deno.Command("tmux", {
      args: ["-S", this.#socket, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (!output.success) {
      throw new Error(
        `tmux ${args[0]} failed: ${new TextDecoder().decode(output.stderr)}`,
      );
    }
    return new TextDecoder().decode(output.stdout);
  }
}

Deno.test({
  name:
    "interactive client on a 40-column terminal: a long line scrolls without stale copies, messages and warnings go above it, cursor keys and history edit it",
  ignore: !TMUX,
  async fn() {
    const server = await startServer();
    let peer: Awaited<ReturnType<typeof startClient>> | undefined;
    let control: ControlClient | undefined;
    let operator: ControlClient | undefined;
    try {
      peer = await startClient(["--server", server.udp]);
      await using pane = await Pane.start(40, 12, [
        Deno.execPath(),
        "run",
        ...PROGRAM_PERMISSIONS,
        `${ROOT}client.ts`,
        "--server",
        server.udp,
        "--tcp-port",
        "0",
      ]);
      const prompt = (rows: string[]) => rows.findLast((r) => r !== "") ?? "";
      let rows = await pane.waitScreen(
        (r) => prompt(r) === ">",
        "the prompt",
      );
      await peer.proc.stdout.waitJson({ event: "join" });
      const joined = parseJson(
        peer.proc.stdout.lines.findLast(jsonWith({ event: "join" }))!,
      )!;
      const address = String(joined.address);

      // 60 characters on a 40-column terminal: the row shows the end.
      const long =
        "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWX";
      await pane.type(long);
      rows = await pane.waitScreen(
        (r) => prompt(r) === `> ${long.slice(-36)}`,
        "the end of the long line on the prompt row",
      );
      const onScreen = (r: string[], text: string) =>
        r.filter((row) => row.includes(text)).length;
      assert.equal(onScreen(rows, "WX"), 1, rows.join("\n"));

      // A message arrives: printed above, the prompt row drawn once below it.
      control = await ControlClient.connect(peer.control);
      await control.send("a reply");
      rows = await pane.waitScreen(
        (r) => r.some((row) => row.includes("a reply")),
        "the reply",
      );
      assert.equal(prompt(rows), `> ${long.slice(-36)}`, rows.join("\n"));
      assert.equal(onScreen(rows, "WX"), 1, rows.join("\n"));
      assert.equal(onScreen(rows, "0123"), 0, rows.join("\n"));

      // A warning (the client logs a kick at level warn) goes above too.
      operator = await ControlClient.connectServer(server.control);
      await operator.command(`kick ${address} tidy up`, "kicked");
      rows = await pane.waitScreen(
        (r) =>
          r.some((row) => row.includes("WARN")) &&
          r.some((row) => row.startsWith("! kicked")),
        "the warning and the kick line",
      );
      assert.equal(prompt(rows), `> ${long.slice(-36)}`, rows.join("\n"));
      assert.equal(onScreen(rows, "WX"), 1, rows.join("\n"));

      // Home, a character, End, another: edited at both ends, then sent.
      await pane.press("Home");
      await pane.type("<");
      rows = await pane.waitScreen(
        (r) => prompt(r) === `> <${long.slice(0, 36)}`,
        "the start of the line after Home",
      );
      await pane.press("End");
      await pane.type(">");
      await pane.press("Left", "Left");
      await pane.type("|");
      await pane.press("Enter");
      const sent = `<${long.slice(0, -1)}|X>`;
      await peer.proc.stdout.waitJson({ event: "message", text: sent });

      // Up recalls it, Enter sends it again; Ctrl-U clears a line.
      const since = peer.proc.stdout.mark();
      await pane.press("Up");
      await pane.waitScreen(
        (r) => prompt(r) === `> ${sent.slice(-36)}`,
        "the recalled line",
      );
      await pane.press("Enter");
      await peer.proc.stdout.waitJson({ event: "message", text: sent }, since);
      await pane.type("never sent");
      await pane.waitScreen((r) => prompt(r) === "> never sent", "typed text");
      await pane.press("C-u");
      await pane.waitScreen((r) => prompt(r) === ">", "the cleared line");

      await pane.type("/quit");
      await pane.press("Enter");
      await peer.proc.stdout.waitJson({ event: "leave", address });
    } finally {
      await closeAll(control, operator);
      await killAll(peer?.proc, server.proc);
    }
  },
});

Deno.test({
  name:
    "interactive client says when a line reached no one (alone) and when it waits for the client to register again",
  ignore: !CAN_RUN,
  async fn() {
    const server = await startServer();
    let user: Proc | undefined;
    try {
      user = Proc.deno(
        "client.ts",
        [
          "--server",
          server.udp,
          "--tcp-port",
          "0",
          "--stdio",
          "--keepalive",
          "0.2",
          "--log-level",
          "debug",
        ],
        { name: "interactive", stdin: "piped" },
      );
      await user.stdout.waitLine((l) => l.startsWith("ready: "), "ready");
      await user.write("anyone?\n");
      await user.stdout.waitLine(
        (l) => l === "(no one else is here)",
        "the note that no one else is here",
      );
      // The server answers keep-alives (so its silence will count), then
      // stops: three unanswered keep-alives later the client re-registers.
      await user.stderrLines.waitLine(
        (l) => l.includes("keepalive_answered"),
        "a keep-alive answer (debug log)",
      );
      server.proc.signal("SIGSTOP");
      await user.stdout.waitLine(
        (l) => l.startsWith("* reconnecting: server unreachable"),
        "the reconnecting line",
      );
      const since = user.stdout.mark();
      await user.write("still there?\n");
      await user.stdout.waitLine(
        (l) => l.startsWith("not connected: "),
        "the note that the line waits",
        since,
      );
    } finally {
      server.proc.signal("SIGCONT");
      await killAll(user, server.proc);
    }
  },
});
