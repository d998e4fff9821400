/**
 * Federation over NATS (issue 15): aggregate deliveries per second and the
 * relays' CPU per delivery with 1, 2 and 3 relays, and the latency of a
 * message from a member of one relay to a member of another.
 *
 * For each relay count a real `nats-server` starts on 127.0.0.1 (a free
 * port), then that many `server.ts` processes with `--no-multicast --bind
 * 127.0.0.1 --nats URL` (limits raised with `--message-rate` and
 * `--handshake-rate`); the bench's load generator (bench/_loadgen.ts)
 * registers the members round-robin across the relays (member i with relay
 * i mod R) and runs a closed loop in which every member sends and every
 * other member receives. CPU is each process's user + system time from
 * /proc (all its threads): the relays summed, nats-server apart. Relay
 * count 0 is the reference: one relay without `--nats` (no federation, no
 * nats-server). Then two
 * paced runs between two members: on the same relay, and on two relays.
 * Everything runs on loopback. Bounded; stops by itself; prints a table.
 *
 *     deno task bench:federation [--relays 0,1,2,3] [--members 30]
 *         [--messages 60] [--window 2] [--group-window 8] [--size 100]
 *         [--latency-rate 100] [--latency-messages 300] [--json PATH]
 *         [--relay-cpu-prof DIR (V8 profiles of the relays: bench/_cpuprofile_top.ts)]
 *
 * A relay admits at most 32 members per IP and every bench client is
 * 127.0.0.1, so `--members` stays at or under 32.
 *
 * @module
 */
import { parseArgs } from "node:util";
import { parseAddress } from "../lib/wire/address.ts";
import {
  type BenchClient,
  closeAll,
  KeyCache,
  type LatencySummary,
  registerMany,
  runTraffic,
} from "./_loadgen.ts";
import { loadAverage, machineBusySeconds, processCpuSeconds } from "./_proc.ts";
import { NatsServer, natsUnavailable } from "../tests/_support/nats.ts";
import {
  ControlClient,
  LOOPBACK_SERVER,
  type ServerInfo,
  startServer,
  withTempDir,
  writeFixtureKey,
} from "../tests/cli/_process.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    relays: { type: "string", default: "0,1,2,3" },
    members: { type: "string", default: "30" },
    messages: { type: "string", default: "60" },
    window: { type: "string", default: "2" },
    "group-window": { type: "string", default: "8" },
    size: { type: "string", default: "100" },
    "latency-rate": { type: "string", default: "100" },
    "latency-messages": { type: "string", default: "300" },
    json: { type: "string" },
    "relay-cpu-prof": { type: "string" },
    help: { type: "boolean" },
  },
  strict: true,
});
if (values.help) {
  console.log(
    "deno task bench:federation [--relays 0,1,2,3] [--members 30] [--messages 60] [--window 2] [--group-window 8] [--size 100] [--latency-rate 100] [--latency-messages 300] [--json PATH] [--relay-cpu-prof DIR]",
  );
  Deno.exit(0);
}
const RELAYS = values.relays.split(",").map(Number);
const MEMBERS = Number(values.members);
const MESSAGES = Number(values.messages);
const WINDOW = Number(values.window);
const GROUP_WINDOW = Number(values["group-window"]);
const SIZE = Number(values.size);
const LATENCY_RATE = Number(values["latency-rate"]);
const LATENCY_MESSAGES = Number(values["latency-messages"]);
const CPU_PROF = values["relay-cpu-prof"];
/** Members per IP a relay admits (server.ts has no flag for it). */
const MEMBERS_PER_IP = 32;

if (natsUnavailable) {
  console.error(`federation bench: ${natsUnavailable}`);
  Deno.exit(2);
}
if (
  MEMBERS < 2 * Math.max(...RELAYS) || MEMBERS > MEMBERS_PER_IP ||
  RELAYS.some((r) => !Number.isInteger(r) || r < 0)
) {
  console.error(
    `federation bench: --members must be at least twice the largest relay count and at most ${MEMBERS_PER_IP} (a relay's members per IP), --relays integers (0: one relay without NATS)`,
  );
  Deno.exit(2);
}

/** What one relay count measured. */
interface Row {
  /** Relays; 0: one relay without NATS. */
  readonly relays: number;
  readonly members: number;
  readonly deliveries: number;
  readonly expected: number;
  readonly lost: number;
  readonly duplicates: number;
  readonly deliveriesPerSecond: number;
  /** The relays' CPU (summed), µs per delivery. */
  readonly relayCpuUsPerDelivery: number | undefined;
  /** Each relay's CPU seconds in the closed loop. */
  readonly relayCpuS: (number | undefined)[];
  /** nats-server's CPU, µs per delivery. */
  readonly natsCpuUsPerDelivery: number | undefined;
  /** Average cores busy with everything else on the machine. */
  readonly otherCores: number | undefined;
  readonly sameRelayLatencyMs: LatencySummary;
  readonly crossRelayLatencyMs: LatencySummary | undefined;
  readonly published: number;
  readonly received: number;
  readonly dropped: Record<string, number>;
  readonly loadavg: string | undefined;
}

function relayArgs(
  nats: NatsServer | undefined,
  keyFile: string,
  clusterKeyFile: string,
): string[] {
  return [
    ...LOOPBACK_SERVER,
    "--key-file",
    keyFile,
    ...(nats
      ? [
        "--nats",
        nats.url,
        "--cluster",
        "bench",
        "--cluster-key-file",
        clusterKeyFile,
      ]
      : []),
    "--message-rate",
    "1000000",
    "--handshake-rate",
    "1000",
  ];
}

type Stats = Record<string, unknown> & {
  federation?:
    & { relays: number; remoteMembers: number }
    & Record<
      string,
      number
    >;
  dropped?: Record<string, number>;
};

async function stats(control: ControlClient): Promise<Stats> {
  return (await control.command("stats", "stats")).stats as Stats;
}

/** Polls every relay's stats until each sees the others and all their members (bounded). */
async function awaitCluster(
  controls: readonly ControlClient[],
  local: readonly number[],
): Promise<void> {
  const deadline = performance.now() + 30_000;
  while (true) {
    const all = await Promise.all(controls.map(stats));
    const ready = all.every((s, i) =>
      controls.length === 1 ||
      (s.federation?.relays === controls.length - 1 &&
        s.federation.remoteMembers === MEMBERS - local[i])
    );
    if (ready) return;
    if (performance.now() > deadline) {
      throw new Error(
        `the relays did not see each other's members within 30 s: ${
          JSON.stringify(all.map((s) => s.federation))
        }`,
      );
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** CPU seconds of each process, the machine's busy seconds, and the time. */
function cpuSnapshot(pids: readonly number[]) {
  return {
    cpu: pids.map(processCpuSeconds),
    machine: machineBusySeconds(),
    t: performance.now(),
  };
}
const minus = (a: number | undefined, b: number | undefined) =>
  a === undefined || b === undefined ? undefined : a - b;
const sum = (xs: readonly (number | undefined)[]) =>
  xs.some((x) => x === undefined)
    ? undefined
    : xs.reduce((a: number, b) => a + b!, 0);

async function pairLatency(pair: BenchClient[]): Promise<LatencySummary> {
  const result = await runTraffic({
    clients: pair,
    size: SIZE,
    messagesPerClient: 0,
    window: 1,
    pacedRate: LATENCY_RATE,
    totalMessages: LATENCY_MESSAGES,
    giveUpMs: 2_000,
    idleMs: 500,
    maxDurationMs: 60_000,
  });
  return result.latencyMs;
}

async function measure(requested: number, dir: string): Promise<Row> {
  const relayCount = Math.max(1, requested);
  await using nats = requested > 0 ? await NatsServer.start() : undefined;
  const keyFile = await writeFixtureKey(dir);
  const clusterKeyFile = `${dir}/cluster-${requested}.key`;
  const relays: ServerInfo[] = [];
  const controls: ControlClient[] = [];
  const members: BenchClient[] = [];
  const keys = new KeyCache();
  try {
    // The first relay makes the cluster key; the others load it.
    for (let i = 0; i < relayCount; i++) {
      relays.push(
        await startServer(relayArgs(nats, keyFile, clusterKeyFile), {
          name: `relay ${i + 1}`,
          denoFlags: [
            "--allow-sys=setPriority",
            ...(CPU_PROF === undefined
              ? []
              : ["--cpu-prof", `--cpu-prof-dir=${CPU_PROF}`]),
          ],
        }),
      );
      controls.push(await ControlClient.connect(relays[i].control));
    }
    // Member i registers with relay i mod R.
    const local = relays.map((_, r) =>
      Math.floor(MEMBERS / relayCount) + (r < MEMBERS % relayCount ? 1 : 0)
    );
    const byRelay: BenchClient[][] = [];
    for (const [r, relay] of relays.entries()) {
      const result = await registerMany(
        "relay",
        parseAddress(relay.udp),
        local[r],
        8,
        30_000,
        keys,
      );
      byRelay.push(result.clients);
      members.push(...result.clients);
      if (result.failed > 0) {
        throw new Error(
          `${result.failed} of ${
            local[r]
          } members did not register with relay ${r + 1}`,
        );
      }
    }
    const group = Array.from(
      { length: MEMBERS },
      (_, i) => byRelay[i % relayCount][Math.floor(i / relayCount)],
    );
    await awaitCluster(controls, local);

    const traffic = (messagesPerClient: number) =>
      runTraffic({
        clients: group,
        size: SIZE,
        messagesPerClient,
        window: WINDOW,
        groupWindow: GROUP_WINDOW,
        giveUpMs: 2_000,
        idleMs: 500,
        maxDurationMs: 60_000,
      });
    await traffic(Math.max(1, Math.round(MESSAGES / 10))); // warm-up
    // CPU of the relays, then nats-server (when running), then this bench.
    const pids = [
      ...relays.map((r) => r.proc.pid),
      ...(nats ? [nats.pid!] : []),
      Deno.pid,
    ];
    const before = cpuSnapshot(pids);
    const loadavg = loadAverage();
    const run = await traffic(MESSAGES);
    const after = cpuSnapshot(pids);
    const used = after.cpu.map((a, i) => minus(a, before.cpu[i]));
    const relayCpuS = used.slice(0, relayCount);
    const relaysTotal = sum(relayCpuS);
    const natsS = nats ? used[relayCount] : 0;
    const machineS = minus(after.machine, before.machine);
    const everyone = sum(used);
    const otherCores = machineS === undefined || everyone === undefined
      ? undefined
      : Math.max(0, machineS - everyone) / ((after.t - before.t) / 1000);

    // Latency: member 0 (relay 1) with a member of the same relay, then with
    // member 1 (relay 2). Every other member receives these messages too.
    const sameRelayLatencyMs = await pairLatency([
      group[0],
      group[relayCount],
    ]);
    const crossRelayLatencyMs = relayCount > 1
      ? await pairLatency([group[0], group[1]])
      : undefined;

    const all = await Promise.all(controls.map(stats));
    const dropped: Record<string, number> = {};
    for (const s of all) {
      for (const [k, v] of Object.entries(s.dropped ?? {})) {
        if (v > 0) dropped[k] = (dropped[k] ?? 0) + v;
      }
    }
    const perDelivery = (s: number | undefined) =>
      s === undefined || run.deliveries === 0
        ? undefined
        : s * 1e6 / run.deliveries;
    return {
      relays: requested,
      members: MEMBERS,
      deliveries: run.deliveries,
      expected: run.expectedDeliveries,
      lost: run.lost,
      duplicates: run.duplicates,
      deliveriesPerSecond: Math.round(run.deliveriesPerSecond),
      relayCpuUsPerDelivery: perDelivery(relaysTotal),
      relayCpuS,
      natsCpuUsPerDelivery: nats ? perDelivery(natsS) : undefined,
      otherCores,
      sameRelayLatencyMs,
      crossRelayLatencyMs,
      published: all.reduce((a, s) => a + (s.federation?.published ?? 0), 0),
      received: all.reduce((a, s) => a + (s.federation?.received ?? 0), 0),
      dropped,
      loadavg,
    };
  } finally {
    await closeAll(members);
    await Promise.all(controls.map((c) => c.close()));
    await Promise.all(relays.map(async (r) => {
      r.proc.signal("SIGTERM");
      await r.proc.exited("a relay to stop", 10_000).catch(() => r.proc.kill());
    }));
  }
}

const f1 = (x: number | undefined) => x === undefined ? "n/a" : x.toFixed(1);
const f2 = (x: number | undefined) => x === undefined ? "n/a" : x.toFixed(2);
const lat = (l: LatencySummary | undefined) =>
  l === undefined ? "-" : `${f2(l.p50)} / ${f2(l.p99)}`;

console.log(
  `federation bench: ${MEMBERS} members (round-robin over the relays), ${MESSAGES} messages of ${SIZE} B per member, window ${WINDOW} (group ${GROUP_WINDOW}); latency: ${LATENCY_MESSAGES} messages at ${LATENCY_RATE}/s between two members; deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores, load ${
    loadAverage() ?? "n/a"
  }`,
);
const rows: Row[] = [];
await withTempDir(async (dir) => {
  for (const r of RELAYS) {
    const row = await measure(r, dir);
    rows.push(row);
    console.log(JSON.stringify(row));
  }
});

console.log(
  "\n| relays | deliveries/s | relays CPU µs/delivery | nats-server µs/delivery | other cores | lost/dup | same relay p50/p99 ms | cross relay p50/p99 ms | load average |",
);
console.log(
  "| ------ | ------------ | ---------------------- | ----------------------- | ----------- | -------- | --------------------- | ---------------------- | ------------ |",
);
for (const row of rows) {
  console.log(
    `| ${
      row.relays === 0 ? "1, no NATS" : row.relays
    } | ${row.deliveriesPerSecond} | ${f1(row.relayCpuUsPerDelivery)} | ${
      row.relays === 0 ? "-" : f2(row.natsCpuUsPerDelivery)
    } | ${f2(row.otherCores)} | ${row.lost}/${row.duplicates} | ${
      lat(row.sameRelayLatencyMs)
    } | ${lat(row.crossRelayLatencyMs)} | ${row.loadavg ?? "n/a"} |`,
  );
}
if (values.json) {
  await Deno.writeTextFile(
    values.json,
    JSON.stringify({ date: new Date().toISOString(), rows }, null, 2) + "\n",
  );
}
