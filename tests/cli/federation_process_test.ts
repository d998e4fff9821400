/**
 * Issue 15 as processes: three `server.ts` relays federated over a real
 * nats-server on 127.0.0.1, one `client.ts` member at each, every message
 * delivered exactly once to every other member with the right sender; then a
 * relay killed with SIGKILL: its member fails over to the next relay in its
 * `--server` list, the others see it leave and come back, and messages flow
 * again. The test prints the failover time it saw (it asserts none: timings
 * are the benchmark's business).
 *
 * Every relay runs with `--no-multicast --bind 127.0.0.1`.
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
  LOOPBACK_SERVER,
  NO_RUN_REASON,
  parseJson,
  type ServerInfo,
  startClient,
  startServer,
  withTempDir,
  writeFixtureKey,
} from "./_process.ts";
import { NatsServer, natsUnavailable } from "../_support/nats.ts";

if (!CAN_RUN) {
  console.log(`federation_process_test.ts: ignored: ${NO_RUN_REASON}`);
}

const KEEPALIVE_S = "0.5";

/** The flags of one relay of the cluster (all relays share key and cluster key). */
function relayArgs(
  nats: NatsServer,
  keyFile: string,
  clusterKeyFile: string,
): string[] {
  return [
    ...LOOPBACK_SERVER,
    "--key-file",
    keyFile,
    "--client-timeout",
    "3",
    "--nats",
    nats.url,
    "--cluster",
    "process-test",
    "--cluster-key-file",
    clusterKeyFile,
  ];
}

/** Count of `message` lines from `from` with `text` in a client's stdout. */
function received(c: ClientInfo, from: string, text: string): number {
  return c.proc.stdout.lines.map(parseJson).filter((j) =>
    j?.event === "message" && j.from === from && j.text === text
  ).length;
}

/**
 * Sends one line from each member and waits for it at each other member;
 * then a last line from the first member, after which every line of the
 * round must have arrived exactly once everywhere (a duplicate would have
 * had time to arrive: each relay forwards in order).
 */
async function roundTrip(members: readonly ClientInfo[], label: string) {
  const controls = await Promise.all(
    members.map((m) => ControlClient.connect(m.control)),
  );
  try {
    const sent: [ClientInfo, string][] = [];
    for (const [i, from] of members.entries()) {
      const text = `${label} from ${from.address}`;
      await controls[i].send(text);
      sent.push([from, text]);
    }
    for (const [from, text] of sent) {
      for (const to of members.filter((m) => m !== from)) {
        await to.proc.stdout.waitJson(
          { event: "message", from: from.address, text },
          0,
          60_000,
        );
      }
    }
    // Per-sender order holds across relays: once each member's "end" line
    // arrived, anything of the round that was to be duplicated has come.
    for (const [i, from] of members.entries()) {
      await controls[i].send(`${label} end ${from.address}`);
    }
    for (const from of members) {
      for (const to of members.filter((m) => m !== from)) {
        await to.proc.stdout.waitJson(
          {
            event: "message",
            from: from.address,
            text: `${label} end ${from.address}`,
          },
          0,
          60_000,
        );
      }
    }
    for (const [from, text] of sent) {
      for (const to of members.filter((m) => m !== from)) {
        assert.equal(
          received(to, from.address, text),
          1,
          `${text} at ${to.address}`,
        );
      }
      assert.equal(received(from, from.address, text), 0, "echo to the sender");
    }
  } finally {
    await closeAll(...controls);
  }
}

Deno.test({
  name:
    "federation processes: three relays over nats-server deliver exactly once; a relay killed with SIGKILL: its member fails over, the others see it leave and come back, messages flow",
  ignore: !CAN_RUN || natsUnavailable !== undefined,
  async fn() {
    await using nats = await NatsServer.start();
    await withTempDir(async (dir) => {
      const keyFile = await writeFixtureKey(dir);
      const clusterKeyFile = `${dir}/cluster.key`;
      const relays: ServerInfo[] = [];
      const members: ClientInfo[] = [];
      try {
        // The first relay makes the cluster key; the others load it.
        relays.push(
          await startServer(relayArgs(nats, keyFile, clusterKeyFile), {
            name: "relay 1",
          }),
        );
        for (const name of ["relay 2", "relay 3"]) {
          relays.push(
            await startServer(relayArgs(nats, keyFile, clusterKeyFile), {
              name,
            }),
          );
        }
        // Member i registers with relay i, then the next relay in turn.
        for (const [i, relay] of relays.entries()) {
          const next = relays[(i + 1) % relays.length];
          members.push(
            await startClient([
              "--server",
              `${relay.udp},${next.udp}`,
              "--keepalive",
              KEEPALIVE_S,
            ], { name: `member ${i + 1}` }),
          );
        }
        for (const m of members) {
          for (const other of members.filter((o) => o !== m)) {
            await m.proc.stdout.waitJson(
              { event: "join", address: other.address },
              0,
              60_000,
            );
          }
        }
        await roundTrip(members, "before");

        const [moved, ...others] = members;
        const marks = members.map((m) => m.proc.stdout.mark());
        const killedAt = performance.now();
        await relays[0].proc.kill(); // SIGKILL: no NOTICE 5, no goodbye on NATS
        const registered = await moved.proc.stdout.waitJson(
          { event: "registered" },
          marks[0],
          60_000,
        ).catch((error) => {
          throw new Error(`${error.message}\nstderr: ${moved.proc.stderr}`);
        });
        const failoverMs = performance.now() - killedAt;
        assert.equal(
          registered.server,
          relays[1].udp,
          "moved to the next relay",
        );
        assert.equal(registered.address, moved.address);
        for (const [i, other] of others.entries()) {
          const since = marks[i + 1];
          const isLeave = (line: string) => {
            const j = parseJson(line);
            return j?.event === "leave" && j.address === moved.address;
          };
          await other.proc.stdout.waitLine(isLeave, "the leave", since, 60_000);
          const leftAt = other.proc.stdout.lines.findIndex((line, index) =>
            index >= since && isLeave(line)
          );
          await other.proc.stdout.waitJson(
            { event: "join", address: moved.address },
            leftAt + 1,
            60_000,
          );
        }
        console.log(
          `federation processes: member of the killed relay registered with the next relay ${
            Math.round(failoverMs)
          } ms after SIGKILL (keep-alive ${KEEPALIVE_S} s, 3 missed)`,
        );
        await roundTrip(members, "after the kill");
      } finally {
        await killAll(
          ...members.map((m) => m.proc),
          ...relays.map((r) => r.proc),
        );
      }
    });
  },
});
