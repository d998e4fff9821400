/**
 * A real `nats-server` for tests, on 127.0.0.1 with a free port (the server
 * picks it: `-p -1`), restartable on the same port. It runs as a
 * {@linkcode Proc} of tests/cli/_process.ts, so it is ready when its
 * "Listening" line has come (awaited, never timed). Tests that need it are
 * skipped with a printed reason where `nats-server` is not installed
 * (`.ci/run` installs it).
 *
 * @module
 */
import { Proc } from "../cli/_process.ts";

/** Why NATS tests cannot run here, or undefined when `nats-server` is installed. */
export const natsUnavailable: string | undefined = await (async () => {
  try {
    const { success } = await new Deno.Command("nats-server", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    }).output();
    return success ? undefined : "nats-server --version failed";
  } catch (error) {
    return `nats-server is not installed (${
      (error as Error).name
    }): apt-get install -y nats-server`;
  }
})();

if (natsUnavailable) {
  console.log(`NATS tests skipped: ${natsUnavailable}`);
}

const LISTENING = /Listening for client connections on 127\.0\.0\.1:(\d+)/;

/** Only a hung nats-server ever reaches this. */
const START_SAFETY_MS = 10_000;

/** One running nats-server process. */
export class NatsServer implements AsyncDisposable {
  #proc: Proc | undefined;

  private constructor(readonly port: number) {}

  /** The process id of the running nats-server, or undefined once stopped. */
  get pid(): number | undefined {
    return this.#proc?.pid;
  }

  /** The URL clients connect to. */
  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** Starts a nats-server on 127.0.0.1 (a free port unless `port` is given). */
  static async start(port = -1): Promise<NatsServer> {
    const { proc, port: bound } = await spawn(port);
    const server = new NatsServer(bound);
    server.#proc = proc;
    return server;
  }

  /** Stops the server (SIGTERM) and waits for it to exit. Safe to call twice. */
  async stop(): Promise<void> {
    const proc = this.#proc;
    if (!proc) return;
    this.#proc = undefined;
    proc.signal("SIGTERM");
    try {
      await proc.exited("nats-server to stop");
    } finally {
      await proc.kill();
    }
  }

  /** Starts it again on the same port. */
  async restart(): Promise<void> {
    await this.stop();
    this.#proc = (await spawn(this.port)).proc;
  }

  /** Same as {@linkcode stop}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

async function spawn(port: number): Promise<{ proc: Proc; port: number }> {
  const proc = Proc.spawn("nats-server", ["-a", "127.0.0.1", "-p", `${port}`], {
    name: "nats-server",
  });
  try {
    const line = await proc.stderrLines.waitLine(
      (l) => LISTENING.test(l),
      "the line that it listens",
      0,
      START_SAFETY_MS,
    );
    return { proc, port: Number(LISTENING.exec(line)![1]) };
  } catch (error) {
    await proc.kill();
    throw error;
  }
}
