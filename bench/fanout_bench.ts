/**
 * Server cost per delivery: group fan-out (protocol.md section 9) against
 * per-recipient fan-out, at several group sizes, and the rekey cost with
 * churn. In one process: N group-capable {@linkcode RelayClient}s register
 * with a {@linkcode RelayServer} over the in-memory network; one member's
 * message datagrams are captured, then replayed into the server as fast as
 * it takes them (a closed loop: the whole relay of one datagram runs in the
 * receive loop's turn) while the server's sends go to a sink: a real UDP
 * socket (`--sink udp`, loopback, or the downstream multicast group inside
 * a private network namespace with `--multicast`) or nothing (`--sink null`:
 * the crypto and bookkeeping alone). Modes run in alternating pairs; the
 * figure is the median over pairs. Bounded; stops by itself.
 *
 * With `--paces` the datagrams are replayed at fixed rates instead (an open
 * loop, batched per timer tick): each pace is deliveries per second, so
 * messages per second are the pace over the recipients; each runs for
 * `--seconds`. The figure is then this process's CPU time (user + system,
 * all threads: the server, the pacer and the sink's sends) per delivery,
 * with the rate achieved; the rekey cost is not measured.
 *
 *     deno run -A bench/fanout_bench.ts [--sizes 10,50,100] [--messages 1000]
 *         [--size 100] [--pairs 3] [--sink udp|null] [--multicast] [--json PATH]
 *         [--paces 5000,20000,50000 [--seconds 2]]
 *
 * `--multicast` refuses to run unless this process sees only the `lo`
 * interface (a private namespace: see tests/cli/multicast_test.ts):
 *
 *     unshare -n sh -c 'ip link set lo up; ip link set lo multicast on;
 *       ip route add 224.0.0.0/4 dev lo src 127.0.0.1;
 *       deno run -A bench/fanout_bench.ts --multicast'
 *
 * @module
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { assertPrivateNetns } from "./_netns.ts";
import { RsaPrivateKey } from "../lib/crypto/rsa.ts";
import { MemoryNetwork } from "../lib/runtime/memory.ts";
import type { Datagram, DatagramTransport } from "../lib/runtime/transport.ts";
import { UdpTransport } from "../lib/runtime/udp.ts";
import type { PeerAddress } from "../lib/wire/address.ts";
import { RelayClient } from "../lib/relay/client/client.ts";
import type { LogRecord } from "../lib/log.ts";
import { RelayServer } from "../lib/relay/server/server.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    sizes: { type: "string", default: "10,50,100" },
    messages: { type: "string", default: "1000" },
    size: { type: "string", default: "100" },
    pairs: { type: "string", default: "3" },
    sink: { type: "string", default: "udp" },
    multicast: { type: "boolean" },
    churn: { type: "string", default: "10" },
    paces: { type: "string" },
    seconds: { type: "string", default: "2" },
    json: { type: "string" },
  },
  strict: true,
});
const SIZES = values.sizes.split(",").map(Number);
const MESSAGES = Number(values.messages);
const SIZE = Number(values.size);
const PAIRS = Number(values.pairs);
const SINK = values.sink as "udp" | "null";
const MULTICAST = values.multicast === true;
const CHURN = Number(values.churn);
const PACES = values.paces?.split(",").map(Number);
const SECONDS = Number(values.seconds);
const SERVER: PeerAddress = { hostname: "127.0.0.1", port: 5007 };
const DOWNSTREAM: PeerAddress = { hostname: "224.1.1.1", port: 5008 };
const SINK_ADDRESS: PeerAddress = { hostname: "127.0.0.1", port: 5100 };

if (MULTICAST) {
  try {
    await assertPrivateNetns("--multicast");
  } catch (error) {
    console.error(`refusing: ${(error as Error).message}`);
    Deno.exit(2);
  }
}

type Mode = "unicast" | "group";

/** A transport that passes everything to `inner`; subclasses change sending. */
class PassThrough implements DatagramTransport {
  constructor(readonly inner: DatagramTransport) {}
  get localAddress(): PeerAddress {
    return this.inner.localAddress;
  }
  [Symbol.asyncIterator](): AsyncIterator<Datagram> {
    return this.inner[Symbol.asyncIterator]();
  }
  send(data: Uint8Array, to: PeerAddress): Promise<void> {
    return this.inner.send(data, to);
  }
  close(): void {
    this.inner.close();
  }
}

/** The server's transport: memory network while members register, then the sink. */
class SwitchTransport extends PassThrough {
  sink: ((data: Uint8Array, to: PeerAddress) => Promise<void>) | undefined;
  sent = 0;
  #target = 0;
  #reached: (() => void) | undefined;
  override send(data: Uint8Array, to: PeerAddress): Promise<void> {
    if (!this.sink) return this.inner.send(data, to);
    const done = this.sink(data, to);
    if (++this.sent === this.#target) {
      done.then(() => this.#reached?.());
    }
    return done;
  }
  /** Resolves when `count` sends to the sink have been made and the last has completed. */
  sends(count: number): Promise<void> {
    this.sent = 0;
    this.#target = count;
    return new Promise((resolve) => this.#reached = resolve);
  }
}

/** Forwards sends unless capturing; captured datagrams are kept. */
class CaptureTransport extends PassThrough {
  capturing = false;
  readonly captured: Uint8Array[] = [];
  override send(data: Uint8Array, to: PeerAddress): Promise<void> {
    if (!this.capturing) return this.inner.send(data, to);
    this.captured.push(data.slice());
    return Promise.resolve();
  }
}

interface Group {
  readonly server: RelayServer;
  readonly transport: SwitchTransport;
  readonly clients: RelayClient[];
  /** Each member's transport, in the order of `clients`. */
  readonly captures: CaptureTransport[];
  readonly log: LogRecord[];
  readonly waitLog: (p: (r: LogRecord) => boolean) => Promise<LogRecord>;
}

const privateKey = await RsaPrivateKey.generate(2048);

async function makeGroup(mode: Mode, members: number): Promise<Group> {
  const network = new MemoryNetwork();
  const transport = new SwitchTransport(
    network.bind(SERVER.hostname, SERVER.port),
  );
  const log: LogRecord[] = [];
  const waiters = new Set<
    { p: (r: LogRecord) => boolean; resolve: (r: LogRecord) => void }
  >();
  const server = await RelayServer.start({
    transport,
    privateKey,
    fanout: mode,
    downstream: MULTICAST ? DOWNSTREAM : undefined,
    groupNewcomerMs: 0, // steady state: every member has joined the group
    maxClients: 100_000,
    maxClientsPerIp: 100_000,
    messagesPerSecond: 1e9,
    messageBurst: 1e9,
    handshakesPerSecond: 1e9,
    handshakeBurst: 1e9,
    globalHandshakesPerSecond: 1e9,
    globalHandshakeBurst: 1e9,
    maxQueuedPerSource: 1e6,
    maxQueuedTotal: 1e7,
    log: (record) => {
      if (record.event !== "group_epoch" && record.level !== "error") return;
      log.push(record);
      for (const w of [...waiters]) {
        if (w.p(record)) {
          waiters.delete(w);
          w.resolve(record);
        }
      }
    },
  });
  const waitLog = (p: (r: LogRecord) => boolean) => {
    const found = log.find(p);
    if (found) return Promise.resolve(found);
    return new Promise<LogRecord>((resolve) => waiters.add({ p, resolve }));
  };
  const clients: RelayClient[] = [];
  const captures: CaptureTransport[] = [];
  for (let i = 0; i < members; i++) {
    const own = new CaptureTransport(network.bind());
    captures.push(own);
    clients.push(
      await RelayClient.connect({
        transport: own,
        target: SERVER,
        retryInitialMs: 200,
        bindDownstream: (group) => Promise.resolve(network.joinGroup(group)),
      }),
    );
  }
  if (mode === "group") {
    await waitLog((r) => r.holders === members);
  }
  return { server, transport, clients, captures, log, waitLog };
}

async function closeGroup(group: Group): Promise<void> {
  await Promise.all(group.clients.map((c) => c.close()));
  await group.server.close();
}

/**
 * Captures `count` message datagrams (not sent) of the first `senders`
 * members in turn. The server remembers 4,096 tokens per member, so a
 * member whose datagrams are replayed must send fewer within a second.
 */
async function capture(
  group: Group,
  count: number,
  senders = 1,
): Promise<Datagram[]> {
  const captures = group.captures.slice(0, senders);
  for (const c of captures) c.capturing = true;
  const text = "x".repeat(SIZE);
  const datagrams: Datagram[] = [];
  for (let i = 0; i < count; i++) {
    const c = captures[i % senders];
    await group.clients[i % senders].send(text);
    for (const data of c.captured.splice(0)) {
      datagrams.push({ data, from: c.localAddress });
    }
  }
  for (const c of captures) c.capturing = false;
  return datagrams;
}

/** Where the server's sends go once members have registered. */
interface Sink {
  send: (data: Uint8Array, to: PeerAddress) => Promise<void>;
  close: () => void;
}

async function sinkFor(): Promise<Sink> {
  if (SINK === "null") return { send: () => Promise.resolve(), close() {} };
  // Never read: the kernel drops what overflows its buffer, as a slow peer's would.
  const receiver = await UdpTransport.bind({
    hostname: MULTICAST ? "0.0.0.0" : "127.0.0.1",
    port: MULTICAST ? DOWNSTREAM.port : SINK_ADDRESS.port,
    reuseAddress: MULTICAST,
    multicast: MULTICAST ? { group: DOWNSTREAM.hostname } : undefined,
  });
  const sender = await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 });
  return {
    // Multicast goes to the group; every unicast to the one sink port.
    send: (data, to) =>
      sender.send(data, to === DOWNSTREAM ? DOWNSTREAM : SINK_ADDRESS),
    close() {
      sender.close();
      receiver.close();
    },
  };
}

interface Run {
  readonly mode: Mode;
  readonly members: number;
  readonly nsPerDelivery: number;
  readonly datagramsPerMessage: number;
  readonly deliveries: number;
}

/** What one replay measured. */
interface Replay {
  readonly elapsedMs: number;
  /** This process's CPU time (user + system, all threads), µs. */
  readonly cpuUs: number;
  readonly deliveries: number;
  readonly datagramsPerMessage: number;
  /** Paced: the pacer's worst lateness, ms. */
  readonly lagMs: number;
}

/**
 * Feeds `datagrams` into the server, all at once (closed loop) or `rate`
 * per second, and waits until the server has made every send to the sink.
 */
async function replay(
  group: Group,
  sink: Sink,
  mode: Mode,
  members: number,
  datagrams: readonly Datagram[],
  rate?: number,
): Promise<Replay> {
  const memory = group.transport.inner as unknown as {
    enqueue(d: Datagram): void;
  };
  const before = group.server.stats();
  group.transport.sink = sink.send;
  const perMessage = mode === "group" && MULTICAST ? 1 : members - 1;
  const done = group.transport.sends(datagrams.length * perMessage);
  const cpu = process.cpuUsage();
  const started = performance.now();
  let lagMs = 0;
  if (rate === undefined) {
    for (const datagram of datagrams) memory.enqueue(datagram);
  } else {
    const interval = 1000 / rate;
    for (let k = 0; k < datagrams.length;) {
      const now = performance.now();
      while (k < datagrams.length && started + k * interval <= now) {
        lagMs = Math.max(lagMs, now - (started + k * interval));
        memory.enqueue(datagrams[k++]);
      }
      if (k < datagrams.length) {
        const wait = started + k * interval - performance.now();
        await new Promise((r) => setTimeout(r, Math.max(0, wait)));
      }
    }
  }
  await done;
  const elapsedMs = performance.now() - started;
  const used = process.cpuUsage(cpu);
  const after = group.server.stats();
  group.transport.sink = undefined;
  return {
    elapsedMs,
    cpuUs: used.user + used.system,
    deliveries: after.deliveries - before.deliveries,
    datagramsPerMessage: group.transport.sent /
      (after.messagesRelayed - before.messagesRelayed),
    lagMs,
  };
}

async function measure(mode: Mode, members: number): Promise<Run> {
  const group = await makeGroup(mode, members);
  const sink = await sinkFor();
  try {
    const datagrams = await capture(group, MESSAGES);
    const run = await replay(group, sink, mode, members, datagrams);
    return {
      mode,
      members,
      nsPerDelivery: run.elapsedMs * 1e6 / run.deliveries,
      datagramsPerMessage: run.datagramsPerMessage,
      deliveries: run.deliveries,
    };
  } finally {
    sink.close();
    await closeGroup(group);
  }
}

/** One pace of a paced run. */
interface PacedRun {
  readonly mode: Mode;
  readonly members: number;
  /** Deliveries per second asked for. */
  readonly pace: number;
  readonly messagesPerSecond: number;
  /** CPU of this process per delivery, ns. */
  readonly cpuNsPerDelivery: number;
  /** Deliveries per second achieved (first send to last). */
  readonly achieved: number;
  readonly lagMs: number;
  readonly datagramsPerMessage: number;
  /** CPU of this process per second with the group idle (members' and server's timers), µs. */
  readonly idleCpuUsPerSecond: number;
}

/** Every pace of `PACES` on one group: fresh datagrams for each (replays would be dropped). */
async function measurePaced(mode: Mode, members: number): Promise<PacedRun[]> {
  const group = await makeGroup(mode, members);
  const sink = await sinkFor();
  try {
    const rates = PACES!.map((pace) => pace / (members - 1));
    const counts = rates.map((r) => Math.max(10, Math.round(r * SECONDS)));
    const total = counts.reduce((a, b) => a + b, 0);
    const all = await capture(
      group,
      total,
      Math.min(members, Math.ceil(total / 2000)),
    );
    // What the group costs doing nothing, for `--seconds`.
    const idleStart = process.cpuUsage();
    await new Promise((r) => setTimeout(r, SECONDS * 1000));
    const idle = process.cpuUsage(idleStart);
    const idleCpuUsPerSecond = Math.round(
      (idle.user + idle.system) / SECONDS,
    );
    const runs: PacedRun[] = [];
    let offset = 0;
    for (const [i, pace] of PACES!.entries()) {
      const datagrams = all.slice(offset, offset += counts[i]);
      const run = await replay(group, sink, mode, members, datagrams, rates[i]);
      runs.push({
        mode,
        members,
        pace,
        messagesPerSecond: Math.round(rates[i]),
        cpuNsPerDelivery: run.cpuUs * 1e3 / run.deliveries,
        achieved: Math.round(run.deliveries / (run.elapsedMs / 1000)),
        lagMs: Math.round(run.lagMs * 10) / 10,
        datagramsPerMessage: run.datagramsPerMessage,
        idleCpuUsPerSecond,
      });
    }
    return runs;
  } finally {
    sink.close();
    await closeGroup(group);
  }
}

/** Rekey cost with `members` holders: one leave, then `CHURN` leaves and joins within a second. */
async function rekeyCost(members: number): Promise<Record<string, number>> {
  const group = await makeGroup("group", members);
  try {
    const epochs = () =>
      group.log.filter((r) => r.event === "group_epoch").length;
    const first = epochs();
    // One leave, well after the last epoch: a rekey at once.
    await new Promise((r) => setTimeout(r, 1100));
    // Members leave by DISCONNECT: a kicked one would register again at
    // once (it is told why and comes back), and the holders it waits for
    // might never be reached.
    const victim = group.clients.pop()!;
    await victim.close();
    const single = await group.waitLog((r) =>
      r.event === "group_epoch" && r.holders === members - 1
    );
    // Churn: CHURN members leave (kicked) at once: batched into few epochs.
    const startEpochs = epochs();
    const churned = group.clients.splice(-CHURN);
    const started = performance.now();
    await Promise.all(churned.map((c) => c.close()));
    const last = await group.waitLog((r) =>
      r.event === "group_epoch" && r.holders === members - 1 - CHURN
    );
    const churnMs = performance.now() - started;
    return {
      members,
      epochsBefore: first,
      singleLeaveRekeyMs: single.ms as number,
      churnLeaves: CHURN,
      churnEpochs: epochs() - startEpochs,
      churnLastRekeyMs: last.ms as number,
      churnUntilRekeyedMs: Math.round(churnMs),
    };
  } finally {
    await closeGroup(group);
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2
    ? s[(s.length - 1) / 2]
    : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

const results: Record<string, unknown>[] = [];
console.log(
  `fan-out bench: sink ${SINK}${
    MULTICAST ? " (multicast downstream)" : " (unicast)"
  }, ${
    PACES
      ? `paced at ${PACES.join(", ")} deliveries/s for ${SECONDS} s each`
      : `${MESSAGES} messages`
  } of ${SIZE} B, ${PAIRS} pairs, load ${
    Deno.loadavg().map((x) => x.toFixed(2)).join(" ")
  }`,
);
/** Paced: every size and pace, modes in alternating pairs; medians over pairs. */
async function pacedSweep(): Promise<void> {
  const lines: string[] = [];
  for (const members of SIZES) {
    const runs: Record<Mode, PacedRun[][]> = { unicast: [], group: [] };
    for (let p = 0; p < PAIRS; p++) {
      const order: Mode[] = p % 2 === 0
        ? ["unicast", "group"]
        : ["group", "unicast"];
      for (const mode of order) {
        runs[mode].push(await measurePaced(mode, members));
      }
    }
    for (const [i, pace] of PACES!.entries()) {
      const of = (mode: Mode) => runs[mode].map((pair) => pair[i]);
      const cost = (mode: Mode) =>
        Math.round(median(of(mode).map((r) => r.cpuNsPerDelivery)));
      const row = {
        members,
        pace,
        messagesPerSecond: of("unicast")[0].messagesPerSecond,
        unicastCpuNsPerDelivery: cost("unicast"),
        groupCpuNsPerDelivery: cost("group"),
        medianRatio: Math.round(
          median(
            of("unicast").map((u, k) =>
              u.cpuNsPerDelivery / of("group")[k].cpuNsPerDelivery
            ),
          ) * 10,
        ) / 10,
        unicastAchieved: of("unicast").map((r) => r.achieved),
        groupAchieved: of("group").map((r) => r.achieved),
        unicastLagMs: of("unicast").map((r) => r.lagMs),
        groupLagMs: of("group").map((r) => r.lagMs),
        datagramsPerMessage: {
          unicast: of("unicast")[0].datagramsPerMessage,
          group: of("group")[0].datagramsPerMessage,
        },
        idleCpuUsPerSecond: {
          unicast: of("unicast").map((r) => r.idleCpuUsPerSecond),
          group: of("group").map((r) => r.idleCpuUsPerSecond),
        },
        loadavg: Deno.loadavg().map((x) => x.toFixed(2)).join(" "),
      };
      results.push(row);
      console.log(JSON.stringify(row));
      lines.push(
        `| ${members} | ${pace} | ${row.messagesPerSecond} | ${
          (row.unicastCpuNsPerDelivery / 1000).toFixed(2)
        } µs | ${
          (row.groupCpuNsPerDelivery / 1000).toFixed(2)
        } µs | ${row.medianRatio}x | ${Math.min(...row.unicastAchieved)} / ${
          Math.min(...row.groupAchieved)
        } | ${row.loadavg} |`,
      );
    }
  }
  console.log(
    "\n| members | deliveries/s asked | messages/s | per-recipient CPU/delivery | group CPU/delivery | ratio | achieved (lowest) per-recipient / group | load average |",
  );
  console.log(
    "| ------- | ------------------ | ---------- | -------------------------- | ------------------ | ----- | --------------------------------------- | ------------ |",
  );
  for (const line of lines) console.log(line);
}

for (const members of PACES ? [] : SIZES) {
  const per: Record<Mode, number[]> = { unicast: [], group: [] };
  const ratios: number[] = [];
  let dpm: Record<Mode, number> = { unicast: 0, group: 0 };
  for (let p = 0; p < PAIRS; p++) {
    const order: Mode[] = p % 2 === 0
      ? ["unicast", "group"]
      : ["group", "unicast"];
    const pair: Partial<Record<Mode, Run>> = {};
    for (const mode of order) pair[mode] = await measure(mode, members);
    per.unicast.push(pair.unicast!.nsPerDelivery);
    per.group.push(pair.group!.nsPerDelivery);
    ratios.push(pair.unicast!.nsPerDelivery / pair.group!.nsPerDelivery);
    dpm = {
      unicast: pair.unicast!.datagramsPerMessage,
      group: pair.group!.datagramsPerMessage,
    };
  }
  const row = {
    members,
    unicastNsPerDelivery: Math.round(median(per.unicast)),
    groupNsPerDelivery: Math.round(median(per.group)),
    medianRatio: Math.round(median(ratios) * 10) / 10,
    unicastRuns: per.unicast.map(Math.round),
    groupRuns: per.group.map(Math.round),
    datagramsPerMessage: dpm,
  };
  results.push(row);
  console.log(JSON.stringify(row));
}
if (PACES) await pacedSweep();
const rekey = PACES ? undefined : await rekeyCost(Math.max(...SIZES));
if (rekey) console.log(JSON.stringify({ rekey }));
if (values.json) {
  await Deno.writeTextFile(
    values.json,
    JSON.stringify(
      {
        sink: SINK,
        multicast: MULTICAST,
        messages: MESSAGES,
        size: SIZE,
        pairs: PAIRS,
        ...(PACES ? { paces: PACES, seconds: SECONDS } : {}),
        loadavg: Deno.loadavg(),
        results,
        rekey,
      },
      null,
      2,
    ) + "\n",
  );
}
