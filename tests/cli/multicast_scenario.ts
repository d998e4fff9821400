/**
 * The multicast scenario, run by multicast_test.ts INSIDE a private network
 * namespace (`unshare -n`, loopback up with a multicast route). Not a test
 * file itself: it refuses to run when the namespace has any interface other
 * than `lo`, so nothing it does can join a group or send multicast on a real
 * network.
 *
 * It starts a real server joined to 224.1.1.1 (no --no-multicast, bound to
 * 0.0.0.0 on a free port) and two clients that send to the group address (no
 * --server), sends a message each way, and prints one JSON result line:
 * `{"ok":true,...}` or `{"ok":false,"error":"..."}`.
 *
 * @module
 */
import {
  type ClientInfo,
  closeAll,
  ControlClient,
  killAll,
  type ServerInfo,
  startClient,
  startServer,
} from "./_process.ts";

const GROUP = "224.1.1.1";

/** The network interfaces this process sees (its namespace's), from `ip -o link show`. */
async function interfaces(): Promise<string[]> {
  const text = await output("ip", ["-o", "link", "show"]);
  return text.split("\n").map((l) => /^\d+: ([^:@]+)[:@]/.exec(l)?.[1])
    .filter((name): name is string => name !== undefined);
}

/** Runs a command and returns its stdout. */
async function output(command: string, args: string[]): Promise<string> {
  const result = await new Deno.Command(command, {
    args,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!result.success) {
    throw new Error(
      `${command} ${args.join(" ")} failed: ${
        new TextDecoder().decode(result.stderr)
      }`,
    );
  }
  return new TextDecoder().decode(result.stdout);
}

async function scenario(): Promise<Record<string, unknown>> {
  const seen = await interfaces();
  if (seen.length !== 1 || seen[0] !== "lo") {
    throw new Error(
      `refusing to run: this is not a private network namespace (interfaces: ${
        seen.join(", ")
      })`,
    );
  }
  let server: ServerInfo | undefined;
  let a: ClientInfo | undefined;
  let b: ClientInfo | undefined;
  let controlA: ControlClient | undefined;
  let controlB: ControlClient | undefined;
  let control: ControlClient | undefined;
  try {
    server = await startServer([
      "--group",
      GROUP,
      "--bind",
      "0.0.0.0",
      "--port",
      "0",
      "--tcp-port",
      "0",
    ]);
    const port = server.udp.split(":").at(-1)!;
    const memberships = await output("ip", ["maddr", "show", "dev", "lo"]);
    const clientArgs = ["--group", GROUP, "--port", port];
    a = await startClient(clientArgs);
    b = await startClient(clientArgs);
    await a.proc.stdout.waitJson({ event: "join", address: b.address });

    controlA = await ControlClient.connect(a.control);
    await controlA.send("hello over multicast");
    const atB = await b.proc.stdout.waitJson({
      event: "message",
      text: "hello over multicast",
    });
    controlB = await ControlClient.connect(b.control);
    await controlB.send("and back");
    const atA = await a.proc.stdout.waitJson({
      event: "message",
      text: "and back",
    });

    control = await ControlClient.connectServer(server.control);
    const stats = (await control.command("stats", "stats")).stats;
    const clients = (await control.command("clients", "clients")).clients;
    return {
      ok: true,
      interfaces: seen,
      server: server.first,
      memberships,
      clientArgs,
      a: { address: a.address, server: a.server },
      b: { address: b.address, server: b.server },
      atB,
      atA,
      stats,
      clients,
    };
  } finally {
    await closeAll(controlA, controlB, control);
    await killAll(server?.proc, a?.proc, b?.proc);
  }
}

if (import.meta.main) {
  let result: Record<string, unknown>;
  try {
    result = await scenario();
  } catch (error) {
    result = { ok: false, error: String((error as Error)?.message ?? error) };
  }
  console.log(JSON.stringify(result));
  Deno.exit(result.ok ? 0 : 1);
}
