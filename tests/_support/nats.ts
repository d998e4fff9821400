/**
 * A real `nats-server` for tests, on 127.0.0.1 with a free port (the server
 * picks it: `-p -1`), restartable on the same port. Tests that need it are
 * skipped with a printed reason where `nats-server` is not installed
 * (`.ci/run` installs it).
 */

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

/** One running nats-server process. */
export class NatsServer implements AsyncDisposable {
  #process: Deno.ChildProcess | undefined;
  #drained: Promise<void> = Promise.resolve();

  private constructor(readonly port: number) {}

  /** The process id of the running nats-server, or undefined once stopped. */
  get pid(): number | undefined {
    return this.#process?.pid;
  }

  /** The URL clients connect to. */
  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  /** Starts a nats-server on 127.0.0.1 (a free port unless `port` is given). */
  static async start(port = -1): Promise<NatsServer> {
    const { process, port: bound, drained } = await spawn(port);
    const server = new NatsServer(bound);
    server.#process = process;
    server.#drained = drained;
    return server;
  }

  /** Stops the server (SIGTERM) and waits for it to exit. Safe to call twice. */
  async stop(): Promise<void> {
    const process = this.#process;
    if (!process) return;
    this.#process = undefined;
    try {
      process.kill("SIGTERM");
    } catch {
      // already gone
    }
    await process.status;
    await this.#drained;
  }

  /** Starts it again on the same port. */
  async restart(): Promise<void> {
    await this.stop();
    const { process, drained } = await spawn(this.port);
    this.#process = process;
    this.#drained = drained;
  }

  /** Same as {@linkcode stop}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

async function spawn(
  port: number,
): Promise<
  { process: Deno.ChildProcess; port: number; drained: Promise<void> }
> {
  const process = new Deno.Command("nats-server", {
    args: ["-a", "127.0.0.1", "-p", String(port)],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines = process.stderr.pipeThrough(new TextDecoderStream())
    .getReader();
  let text = "";
  const deadline = setTimeout(() => {
    try {
      process.kill("SIGKILL");
    } catch {
      // already gone
    }
  }, 10_000);
  try {
    while (true) {
      const { value, done } = await lines.read();
      if (done) {
        throw new Error(`nats-server exited before listening:\n${text}`);
      }
      text += value;
      const match = text.match(LISTENING);
      if (match) {
        // Keep reading so the process never blocks on a full pipe.
        const drained = (async () => {
          while (!(await lines.read()).done) { /* discard */ }
        })();
        return { process, port: Number(match[1]), drained };
      }
    }
  } catch (error) {
    await process.status;
    throw error;
  } finally {
    clearTimeout(deadline);
  }
}
