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
 * With the argument `group` it runs group fan-out instead (protocol.md
 * section 9): the server with `--fanout group` (downstream 224.1.1.1, port
 * + 1), three clients that join the downstream group, one message each.
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

import { assertPrivateNamespace, output, scenarioMain } from "./_namespace.ts";
import { NEWCOMER_UNICAST_MS } from "../../lib/relay/server/group_fanout.ts";

const GROUP = "224.1.1.1";
/** A server joined to the group, bound to 0.0.0.0 on a free port. */
const SERVER_ARGS = [
  "--group",
  GROUP,
  "--bind",
  "0.0.0.0",
  "--port",
  "0",
  "--tcp-port",
  "0",
];

/** Group fan-out through the downstream group: three clients, a message each. */
async function groupScenario(): Promise<Record<string, unknown>> {
  const seen = await assertPrivateNamespace();
  let server: ServerInfo | undefined;
  const clients: ClientInfo[] = [];
  const controls: ControlClient[] = [];
  try {
    server = await startServer([...SERVER_ARGS, "--fanout", "group"]);
    const port = server.udp.split(":").at(-1)!;
    const clientArgs = ["--group", GROUP, "--port", port];
    for (let i = 0; i < 3; i++) clients.push(await startClient(clientArgs));
    await server.proc.stdout.waitJson({ event: "group_epoch", holders: 3 });
    const memberships = await output("ip", ["maddr", "show", "dev", "lo"]);
    const control = await ControlClient.connectServer(server.control);
    controls.push(control);
    for (const sender of clients) {
      controls.push(await ControlClient.connect(sender.control));
    }
    const round = async (label: string) => {
      const received: Record<string, unknown>[] = [];
      for (const [i, sender] of clients.entries()) {
        const text = `${label} ${i}`;
        await controls[i + 1].send(text);
        for (const receiver of clients) {
          if (receiver === sender) continue;
          received.push(
            await receiver.proc.stdout.waitJson({ event: "message", text }),
          );
        }
      }
      return received;
    };
    // While the clients are new holders the server also sends them each
    // group datagram by unicast (NEWCOMER_UNICAST_MS). That window is a
    // time, not an event: the second round waits it out, so its messages
    // can only have come through the downstream group.
    const received = await round("group hello");
    const before = (await control.command("stats", "stats")).stats;
    await new Promise((resolve) =>
      setTimeout(resolve, NEWCOMER_UNICAST_MS + 500)
    );
    const downstreamOnly = await round("downstream only");
    const stats = (await control.command("stats", "stats")).stats;
    return {
      ok: true,
      interfaces: seen,
      server: server.first,
      memberships,
      clients: clients.map((c) => c.address),
      received,
      downstreamOnly,
      before,
      stats,
    };
  } finally {
    await closeAll(...controls);
    await killAll(server?.proc, ...clients.map((c) => c.proc));
  }
}

async function scenario(): Promise<Record<string, unknown>> {
  const seen = await assertPrivateNamespace();
  let server: ServerInfo | undefined;
  let a: ClientInfo | undefined;
  let b: ClientInfo | undefined;
  let controlA: ControlClient | undefined;
  let controlB: ControlClient | undefined;
  let control: ControlClient | undefined;
  try {
    server = await startServer(SERVER_ARGS);
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
  await scenarioMain(Deno.args[0] === "group" ? groupScenario : scenario);
}
