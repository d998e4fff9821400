/**
 * End-to-end benchmark of the mcrelay relay over UDP on 127.0.0.1:
 * throughput (deliveries/s), one-way latency, losses and duplicates, server
 * CPU and peak RSS, key exchanges per second against a raw RSA-OAEP
 * ceiling, latency at half load and under a registration flood, a sweep of
 * group sizes, and the same traffic through a plain UDP relay (no crypto)
 * as a ceiling. Bounded in count and time; stops by itself.
 *
 *     deno task bench [--quick] [--clients 10] [--messages 200] [--size 100]
 *                     [--window 8] [--server HOST:PORT] [--skip-sweep]
 *                     [--skip-curve | --curve-only]
 *
 * Then the paced cost curve: an open loop at fixed paces of deliveries/s
 * (1k, 5k, 20k, 50k) for groups of 10 and 100, relay and plain relay
 * alternating on the same generator, with server CPU per delivery.
 *
 * Writes bench/results/latest.json, bench/results/chart.svg and
 * bench/results/curve.svg (and PNGs when `rsvg-convert` is installed).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { RsaPrivateKey } from "../lib/crypto/rsa.ts";
import { RsaDecryptPool } from "../lib/runtime/rsa_pool.ts";
import {
  formatAddress,
  parseAddress,
  type PeerAddress,
} from "../lib/wire/address.ts";
import { renderChart, renderCostChart } from "./_chart.ts";
import { assertPrivateNetns } from "./_netns.ts";
import {
  type BenchClient,
  closeAll,
  type FloodResult,
  KeyCache,
  type LatencySummary,
  MESSAGE_HEADER_SIZE,
  type Mode,
  MTU,
  registerMany,
  registrationFlood,
  runTraffic,
  type TrafficResult,
} from "./_loadgen.ts";
import {
  ChildServer,
  loadAverage,
  machineBusySeconds,
  readFiles,
  UsageMeter,
  type WindowUsage,
} from "./_proc.ts";

const USAGE = `mcrelay relay benchmark (loopback only, bounded, stops by itself)

Usage: deno task bench [flags]

Flags:
  --clients N         group size of the main run (default 10)
  --messages M        messages each client sends in the main run (default 200)
  --size BYTES        plaintext bytes per message, ${MESSAGE_HEADER_SIZE}-32768 (default 100)
  --window W          incomplete messages a sender keeps at most (default 8);
                      a group keeps at most ceil(90 W / (N-1)) messages in
                      flight (the default group's 10 W), senders taking turns,
                      and at most ~160 kB of datagrams (large --size)
  --server IP:PORT    drive an external server on 127.x.x.x instead of
                      spawning one (its own rate limits apply; server CPU/RSS
                      are n/a)
  --quick             short smoke-test run (small counts, short phases)
  --skip-sweep        skip the group-size sweep (no chart)
  --skip-curve        skip the paced cost curve
  --curve-only        run only the paced cost curve (bench/results/curve.json,
                      curve.svg)
  --curve-rates LIST  paces of the curve, deliveries/s, comma-separated
                      (default 1000,5000,20000,50000; --quick 1000,5000)
  --curve-sizes LIST  group sizes of the curve (default 10,100; --quick 10)
  --curve-seconds S   deliveries of each pace: S seconds' worth (default 3;
                      --quick 0.5)
  --curve-group       add a third series to the curve: the relay with group
                      fan-out by unicast (protocol.md section 9: one token per
                      message for GROUP_CAPABLE clients); not with --server
  --curve-group-multicast GROUP:PORT  the same, the group datagrams multicast
                      once per message to GROUP:PORT, which the clients join
                      on 127.0.0.1. Sends and joins multicast: refused unless
                      the only network link is lo (run it inside unshare -n,
                      see PERFORMANCE.md)
  --no-coalesce       spawned relay servers send one datagram per delivery
                      (coalesceSends: false), for A/B runs
  --rsa-sched-idle    run the spawned relay servers' RSA threads under Linux's
                      SCHED_IDLE (the server's --rsa-sched-idle; gives them
                      --allow-ffi)
  --udp-batch-syscalls  run the spawned relay servers and plain relays on the
                      recvmmsg/sendmmsg transport (the server's
                      --udp-batch-syscalls; gives them --allow-ffi)
  --server-cpu-prof DIR  run the spawned relay servers with --cpu-prof into DIR
                      (summarise with bench/_cpuprofile_top.ts)
  --help              show this help

A message is complete when all N-1 recipients got it. The half-rate phases
pace at half of a closed loop of about 2 s run after the five short ones (the
sustained rate). The server runs in its
own process (bench/_server_process.ts: the project's RelayServer with
generous rate limits); the ceiling is bench/_plain_relay.ts, a UDP relay with
no cryptography on the same runtime, driven by the same load generator.
Results: bench/results/latest.json, bench/results/chart.svg.
`;

const HERE = new URL(".", import.meta.url);
const SERVER_SCRIPT = new URL("_server_process.ts", HERE).pathname;
const PLAIN_SCRIPT = new URL("_plain_relay.ts", HERE).pathname;
const RESULTS_DIR = new URL("results/", HERE).pathname;

interface Config {
  clients: number;
  messages: number;
  size: number;
  window: number;
  server: PeerAddress | undefined;
  quick: boolean;
  skipSweep: boolean;
  /** Skip the paced cost curve, or run only it. */
  skipCurve: boolean;
  curveOnly: boolean;
  /** Paces of the cost curve, deliveries/s (messages/s x recipients). */
  curveRates: number[];
  /** Group sizes of the cost curve. */
  curveSizes: number[];
  /** Deliveries of each pace: its rate times this. */
  curveSeconds: number;
  /** The curve also runs the relay with group fan-out (by unicast). */
  curveGroup: boolean;
  /** With curveGroup: the multicast group and port of the group datagrams. */
  curveDownstream: PeerAddress | undefined;
  /** Spawned relay servers run their RSA threads under SCHED_IDLE. */
  rsaSchedIdle: boolean;
  /** Spawned relay servers do not coalesce sends. */
  noCoalesce: boolean;
  /** Spawned relay servers use the recvmmsg/sendmmsg transport. */
  udpBatchSyscalls: boolean;
  warmupMessages: number;
  /** Deliveries sent to warm each fresh server of the sweep before measuring. */
  sweepWarmupDeliveries: number;
  /** Length of the closed-loop run whose rate the half-rate phases pace at. */
  sustainedSeconds: number;
  pacedSeconds: number;
  floodConcurrency: number;
  /** Length of the timed key-exchange phase. */
  handshakeSeconds: number;
  handshakeConcurrency: number;
  rsaSeconds: number;
  sweepSizes: number[];
  sweepDeliveries: number;
  giveUpMs: number;
  idleMs: number;
  repeats: number;
  serverDenoFlags: string[];
}

function parseConfig(): Config | undefined {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      clients: { type: "string" },
      messages: { type: "string" },
      size: { type: "string" },
      window: { type: "string" },
      server: { type: "string" },
      quick: { type: "boolean" },
      "skip-sweep": { type: "boolean" },
      "skip-curve": { type: "boolean" },
      "curve-only": { type: "boolean" },
      "no-coalesce": { type: "boolean" },
      "curve-rates": { type: "string" },
      "curve-sizes": { type: "string" },
      "curve-seconds": { type: "string" },
      "curve-group": { type: "boolean" },
      "curve-group-multicast": { type: "string" },
      "server-cpu-prof": { type: "string" },
      "rsa-sched-idle": { type: "boolean" },
      "udp-batch-syscalls": { type: "boolean" },
      help: { type: "boolean" },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(USAGE);
    return undefined;
  }
  const quick = values.quick === true;
  const int = (
    name: string,
    text: string | undefined,
    fallback: number,
    min: number,
    max: number,
  ) => {
    if (text === undefined) return fallback;
    const value = Number(text);
    if (!Number.isInteger(value) || value < min || value > max) {
      throw new RangeError(
        `--${name} must be a whole number from ${min} to ${max}, not "${text}"`,
      );
    }
    return value;
  };
  const list = (
    name: string,
    text: string | undefined,
    fallback: number[],
    min: number,
    max: number,
  ) =>
    text === undefined
      ? fallback
      : text.split(",").map((part) => int(name, part.trim(), 0, min, max));
  let server: PeerAddress | undefined;
  if (values.server !== undefined) {
    try {
      server = parseAddress(values.server);
    } catch {
      throw new RangeError(
        `--server must be IP:PORT with a literal IP (e.g. 127.0.0.1:5007), not "${values.server}"`,
      );
    }
  }
  if (server && !server.hostname.startsWith("127.")) {
    throw new RangeError(
      `--server must be a loopback address (127.x.x.x): the bench's clients bind 127.0.0.1, not "${values.server}"`,
    );
  }
  const cpuProf = values["server-cpu-prof"];
  const rsaSchedIdle = values["rsa-sched-idle"] === true;
  if (rsaSchedIdle && server) {
    throw new RangeError(
      "--rsa-sched-idle sets up the spawned server; start an external one with its own --rsa-sched-idle instead",
    );
  }
  let curveDownstream: PeerAddress | undefined;
  const multicastText = values["curve-group-multicast"];
  if (multicastText !== undefined) {
    try {
      curveDownstream = parseAddress(multicastText);
    } catch {
      throw new RangeError(
        `--curve-group-multicast must be GROUP:PORT with an IPv4 multicast group (e.g. 239.255.0.9:5008), not "${multicastText}"`,
      );
    }
    const first = Number(curveDownstream.hostname.split(".")[0]);
    if (!(first >= 224 && first <= 239)) {
      throw new RangeError(
        `--curve-group-multicast needs an IPv4 multicast group (224.0.0.0/4), not ${curveDownstream.hostname}`,
      );
    }
  }
  if ((values["curve-group"] || curveDownstream) && server) {
    throw new RangeError(
      "--curve-group spawns a relay with group fan-out on; it cannot drive an external --server",
    );
  }
  const udpBatchSyscalls = values["udp-batch-syscalls"] === true;
  if (udpBatchSyscalls && server) {
    throw new RangeError(
      "--udp-batch-syscalls sets up the spawned server; start an external one with its own --udp-batch-syscalls instead",
    );
  }
  return {
    clients: int("clients", values.clients, quick ? 4 : 10, 2, 1000),
    messages: int("messages", values.messages, quick ? 30 : 200, 1, 100_000),
    size: int("size", values.size, 100, MESSAGE_HEADER_SIZE, 32768),
    window: int("window", values.window, 8, 1, 1000),
    server,
    quick,
    skipSweep: values["skip-sweep"] === true,
    skipCurve: values["skip-curve"] === true,
    curveOnly: values["curve-only"] === true,
    curveRates: list(
      "curve-rates",
      values["curve-rates"],
      quick ? [1_000, 5_000] : [1_000, 5_000, 20_000, 50_000],
      1,
      1_000_000,
    ),
    curveSizes: list(
      "curve-sizes",
      values["curve-sizes"],
      quick ? [10] : [10, 100],
      2,
      1000,
    ),
    curveSeconds: values["curve-seconds"] === undefined
      ? (quick ? 0.5 : 3)
      : int("curve-seconds", values["curve-seconds"], 3, 1, 600),
    curveGroup: values["curve-group"] === true || curveDownstream !== undefined,
    curveDownstream,
    rsaSchedIdle,
    noCoalesce: values["no-coalesce"] === true,
    udpBatchSyscalls,
    warmupMessages: quick ? 5 : 200,
    pacedSeconds: quick ? 1 : 5,
    floodConcurrency: quick ? 4 : 8,
    handshakeSeconds: quick ? 0.5 : 3,
    handshakeConcurrency: 8,
    rsaSeconds: quick ? 0.3 : 1.5,
    sweepSizes: quick ? [2, 5] : [2, 10, 50, 100],
    sweepDeliveries: quick ? 1_000 : 40_000,
    sweepWarmupDeliveries: quick ? 200 : 20_000,
    sustainedSeconds: quick ? 0.3 : 2,
    giveUpMs: 5_000,
    idleMs: 1_000,
    repeats: quick ? 1 : 5,
    // As `deno task server`: the RSA worker module is read from disk, and
    // its threads lower their priority.
    serverDenoFlags: [
      "--allow-read",
      "--allow-sys=setPriority",
      ...(rsaSchedIdle || udpBatchSyscalls ? ["--allow-ffi"] : []),
      // The server checks for itself that it is in a private namespace.
      ...(curveDownstream ? ["--allow-run=ip"] : []),
      ...(cpuProf === undefined
        ? []
        : ["--cpu-prof", `--cpu-prof-dir=${cpuProf}`]),
    ],
  };
}

// ---------------------------------------------------------------------------
// Servers

interface Target {
  readonly address: PeerAddress;
  readonly child: ChildServer | undefined;
}

async function startTarget(config: Config, mode: Mode): Promise<Target> {
  if (mode === "relay" && config.server) {
    return { address: config.server, child: undefined };
  }
  const child = mode !== "plain"
    ? await ChildServer.spawn(
      SERVER_SCRIPT,
      config.serverDenoFlags,
      [
        ...(mode === "group" ? ["--group-fanout"] : []),
        ...(mode === "group" && config.curveDownstream
          ? ["--group-downstream", formatAddress(config.curveDownstream)]
          : []),
        ...(config.rsaSchedIdle ? ["--rsa-sched-idle"] : []),
        ...(config.noCoalesce ? ["--no-coalesce"] : []),
        ...(config.udpBatchSyscalls ? ["--udp-batch-syscalls"] : []),
      ],
    )
    : await ChildServer.spawn(
      PLAIN_SCRIPT,
      config.udpBatchSyscalls ? ["--allow-ffi"] : [],
      config.udpBatchSyscalls ? ["--udp-batch-syscalls"] : [],
    );
  return { address: child.address, child };
}

// ---------------------------------------------------------------------------
// Measurements

interface TrafficPhase {
  readonly mode: Mode;
  readonly clients: number;
  readonly messagesPerClient: number;
  readonly window: number;
  /** Messages the group kept in flight at most. */
  readonly groupWindow: number;
  readonly size: number;
  readonly traffic: TrafficResult;
  readonly usage: WindowUsage;
  /** Server CPU µs per delivery, when the server is local. */
  readonly serverCpuUsPerDelivery: number | undefined;
  /** Server peak RSS (VmHWM) in MiB after the phase, when local. */
  readonly serverPeakRssMiB: number | undefined;
  /** The server's own counters after the phase, when local. */
  readonly serverStats: Record<string, unknown> | undefined;
  /** Client-side counters summed over the group. */
  readonly clientCounters: Record<string, number>;
  /** Repeated runs: deliveries/s of each (this phase is the median one). */
  readonly repeats?: readonly number[];
}

/**
 * Messages a group keeps in flight at most (senders take turns): about
 * W x 90 deliveries, what the default group (10 clients, 9 recipients) has
 * with W messages per sender, so every group size sees the same queue of
 * deliveries and saturated latencies stay comparable. Also at most about
 * 160 kB of datagrams (kernel accounting: payload + ~1 kB each), so a burst
 * fits a default 208 KiB socket receive buffer: large messages fragment into
 * several full-MTU datagrams, and Deno cannot enlarge SO_RCVBUF.
 */
function groupWindow(window: number, clients: number, size: number): number {
  const byDeliveries = Math.ceil((window * 90) / (clients - 1));
  // The relay's datagrams for one message: a Fernet token (base64 of
  // 57 bytes + the padded ciphertext) in a TLV record, fragmented past the MTU.
  const token = 4 * Math.ceil((57 + 16 * Math.ceil((size + 1) / 16)) / 3);
  const stream = 4 + token + 10;
  const datagrams = stream <= MTU ? 1 : Math.ceil(stream / (MTU - 12));
  const bytes = datagrams * (Math.min(stream, MTU) + 1024);
  const byBuffer = Math.floor(160_000 / bytes);
  return Math.max(1, Math.min(byDeliveries, byBuffer));
}

function sumCounters(clients: readonly BenchClient[]): Record<string, number> {
  const total: Record<string, number> = {
    foreign: 0,
    malformed: 0,
    decryptFailed: 0,
  };
  for (const c of clients) {
    total.foreign += c.counters.foreign;
    total.malformed += c.counters.malformed;
    total.decryptFailed += c.counters.decryptFailed;
    for (const [code, count] of Object.entries(c.counters.notices)) {
      total[`notice${code}`] = (total[`notice${code}`] ?? 0) + count;
    }
  }
  return total;
}

async function measureTraffic(
  config: Config,
  target: Target,
  mode: Mode,
  clients: readonly BenchClient[],
  options: {
    messagesPerClient: number;
    warmup: number;
    pacedRate?: number;
    totalMessages?: number;
    maxDurationMs: number;
  },
): Promise<TrafficPhase> {
  const window = config.window;
  const cap = groupWindow(window, clients.length, config.size);
  if (options.warmup > 0) {
    await runTraffic({
      clients,
      size: config.size,
      messagesPerClient: options.warmup,
      window,
      groupWindow: cap,
      giveUpMs: config.giveUpMs,
      idleMs: config.idleMs,
      maxDurationMs: 30_000,
    });
  }
  const meter = new UsageMeter(
    target.child?.pid,
    target.address.hostname === "127.0.0.1" ? target.address.port : undefined,
    clients.map((c) => c.transport.localAddress.port),
  );
  const traffic = await runTraffic({
    clients,
    size: config.size,
    messagesPerClient: options.messagesPerClient,
    window,
    groupWindow: cap,
    pacedRate: options.pacedRate,
    totalMessages: options.totalMessages,
    giveUpMs: config.giveUpMs,
    idleMs: config.idleMs,
    maxDurationMs: options.maxDurationMs,
  });
  const usage = meter.stop();
  const memory = target.child?.memoryKiB();
  return {
    mode,
    clients: clients.length,
    messagesPerClient: options.pacedRate === undefined
      ? options.messagesPerClient
      : Math.ceil((options.totalMessages ?? 0) / clients.length),
    window,
    groupWindow: Math.min(cap, window * clients.length),
    size: config.size,
    traffic,
    usage,
    serverCpuUsPerDelivery:
      usage.serverCpuS !== undefined && traffic.deliveries > 0
        ? (usage.serverCpuS * 1e6) / traffic.deliveries
        : undefined,
    serverPeakRssMiB: memory ? memory.peak / 1024 : undefined,
    serverStats: await target.child?.stats(),
    clientCounters: sumCounters(clients),
  };
}

/**
 * The closed-loop run `config.repeats` times on one group (warm-up before
 * the first): the median run by deliveries/s, with every run's figure.
 */
async function measureRepeated(
  config: Config,
  target: Target,
  mode: Mode,
  group: readonly BenchClient[],
): Promise<TrafficPhase> {
  const runs: TrafficPhase[] = [];
  for (let i = 0; i < config.repeats; i++) {
    runs.push(
      await measureTraffic(config, target, mode, group, {
        messagesPerClient: config.messages,
        warmup: i === 0 ? config.warmupMessages : 0,
        maxDurationMs: 90_000,
      }),
    );
  }
  const sorted = [...runs].sort((a, b) =>
    a.traffic.deliveriesPerSecond - b.traffic.deliveriesPerSecond
  );
  return {
    ...sorted[Math.floor((sorted.length - 1) / 2)],
    repeats: runs.map((r) => r.traffic.deliveriesPerSecond),
  };
}

async function registerGroup(
  config: Config,
  target: Target,
  mode: Mode,
  count: number,
  keys: KeyCache,
): Promise<BenchClient[]> {
  const result = await registerMany(
    mode,
    target.address,
    count,
    16,
    config.server && mode === "relay" ? 60_000 : 20_000,
    keys,
    mode === "group" ? config.curveDownstream : undefined,
  );
  if (result.failed > 0) {
    progress(
      `  warning: ${result.failed} of ${count} ${mode} clients did not register; the group has ${result.clients.length}`,
    );
  }
  if (result.clients.length < 2) {
    await closeAll(result.clients);
    throw new Error(
      `only ${result.clients.length} ${mode} client(s) registered with ${
        formatAddress(target.address)
      }: cannot measure a group`,
    );
  }
  return result.clients;
}

interface RsaCeiling {
  readonly singlePerSecond: number;
  /** The best all-core rate of the two ways measured. */
  readonly allCoresPerSecond: number;
  /** WebCrypto `crypto.subtle.decrypt`, `concurrency` calls in flight. */
  readonly webCryptoPerSecond: number;
  /** `node:crypto` on one worker thread per core (RsaDecryptPool at normal priority). */
  readonly workersPerSecond: number;
  /** Which of the two gave {@linkcode allCoresPerSecond}. */
  readonly best: "webcrypto" | "workers";
  readonly concurrency: number;
  /** Average cores used by other processes while it ran (noise indicator). */
  readonly otherCores: number | undefined;
}

/**
 * Raw RSA-OAEP-2048 decryptions per second, one at a time and on all cores.
 * The all-core ceiling is the better of two ways the runtime offers:
 * WebCrypto (Deno's own thread pool) and synchronous `node:crypto` on one
 * worker thread per core, as the server's RsaDecryptPool does but at normal
 * priority.
 */
async function measureRsa(seconds: number): Promise<RsaCeiling> {
  const key = await RsaPrivateKey.generate(2048);
  const block = await key.publicKey.encrypt(new Uint8Array(44));
  const cores = navigator.hardwareConcurrency;
  const pool = new RsaDecryptPool(key, { threads: cores, lowPriority: false });
  const run = async (
    concurrency: number,
    decrypt: () => Promise<Uint8Array>,
  ) => {
    let count = 0;
    const t0 = performance.now();
    const end = t0 + seconds * 1000;
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (performance.now() < end) {
          await decrypt();
          count++;
        }
      }),
    );
    return count / ((performance.now() - t0) / 1000);
  };
  const webCrypto = () => key.decrypt(block);
  const workers = () => pool.decrypt(block);
  // More calls in flight than cores keep every core busy (8 measured best on 2 cores).
  const concurrency = Math.max(4, 4 * cores);
  try {
    await run(2, webCrypto); // warm-up
    await run(concurrency, workers); // starts and warms the threads
    const meter = new UsageMeter(undefined);
    const singlePerSecond = await run(1, webCrypto);
    const webCryptoPerSecond = await run(concurrency, webCrypto);
    const workersPerSecond = await run(concurrency, workers);
    return {
      singlePerSecond,
      allCoresPerSecond: Math.max(webCryptoPerSecond, workersPerSecond),
      webCryptoPerSecond,
      workersPerSecond,
      best: workersPerSecond > webCryptoPerSecond ? "workers" : "webcrypto",
      concurrency,
      otherCores: meter.stop().otherCores,
    };
  } finally {
    await pool.close();
  }
}

interface HandshakePhase {
  readonly registered: number;
  readonly failed: number;
  readonly concurrency: number;
  readonly durationS: number;
  readonly perSecond: number;
  readonly latencyMs: LatencySummary;
  readonly usage: WindowUsage;
  /** Client keys ready before timing (prepared now or left from earlier phases), and how many were left unused. */
  readonly prepared: number;
  readonly preparedLeft: number;
  readonly serverCpuMsPerHandshake: number | undefined;
  readonly serverPeakRssMiB: number | undefined;
}

/**
 * Key exchanges per second: `handshakeConcurrency` clients at a time, each
 * registering (key request, cookie + SYMMETRIC_KEY, WELCOME) then leaving
 * with an authenticated DISCONNECT, for `handshakeSeconds`. The group stays
 * small, so the figure is the key exchange's, not the presence fan-out's.
 * Client keys are encrypted under the server key before timing.
 */
async function measureHandshakes(
  config: Config,
  keys: KeyCache,
  rsaCeilingPerSecond: number,
): Promise<HandshakePhase> {
  const target = await startTarget(config, "relay");
  try {
    // Learn the server key and warm the server with a short flood.
    const primer = await registerGroup(config, target, "relay", 2, keys);
    const pem = primer[0].serverPem!;
    await closeAll(primer);
    await keys.prepare(
      pem,
      Math.ceil(rsaCeilingPerSecond * (config.handshakeSeconds + 0.5) * 1.2),
    );
    // What is ready before timing: an external server keeps its key between
    // phases, so keys left from the flood count too.
    const prepared = keys.left(pem);
    const warm = { stopped: false };
    const warming = registrationFlood(
      target.address,
      config.handshakeConcurrency,
      warm,
      keys,
    );
    await new Promise((resolve) => setTimeout(resolve, 300));
    warm.stopped = true;
    await warming;
    const meter = new UsageMeter(target.child?.pid);
    const stop = { stopped: false };
    const timer = setTimeout(
      () => stop.stopped = true,
      config.handshakeSeconds * 1000,
    );
    const result = await registrationFlood(
      target.address,
      config.handshakeConcurrency,
      stop,
      keys,
    );
    clearTimeout(timer);
    const usage = meter.stop();
    const memory = target.child?.memoryKiB();
    return {
      registered: result.completed,
      failed: result.failed,
      concurrency: config.handshakeConcurrency,
      durationS: result.durationS,
      perSecond: result.perSecond,
      latencyMs: result.latencyMs,
      usage,
      prepared,
      preparedLeft: keys.left(pem),
      serverCpuMsPerHandshake:
        usage.serverCpuS !== undefined && result.completed > 0
          ? (usage.serverCpuS * 1000) / result.completed
          : undefined,
      serverPeakRssMiB: memory ? memory.peak / 1024 : undefined,
    };
  } finally {
    await target.child?.close();
  }
}

interface SweepRow {
  readonly clients: number;
  readonly relay: TrafficPhase;
  readonly plain: TrafficPhase;
  readonly shareOfCeiling: number;
}

async function measureGroup(
  config: Config,
  mode: Mode,
  clients: number,
  messagesPerClient: number,
  keys: KeyCache,
): Promise<TrafficPhase> {
  const target = await startTarget(config, mode);
  try {
    const group = await registerGroup(config, target, mode, clients, keys);
    try {
      return await measureTraffic(config, target, mode, group, {
        messagesPerClient,
        // A fresh server is cold: warm it with the same number of
        // deliveries at every group size, so sizes compare like for like.
        warmup: Math.max(
          1,
          Math.ceil(
            config.sweepWarmupDeliveries / (clients * (clients - 1)),
          ),
        ),
        maxDurationMs: 60_000,
      });
    } finally {
      await closeAll(group);
    }
  } finally {
    await target.child?.close();
  }
}

/** One pace of the cost curve: the relay and the plain relay on the same generator. */
interface CurveRow {
  readonly clients: number;
  /** Target deliveries/s (messages/s x recipients). */
  readonly pace: number;
  readonly relay: TrafficPhase;
  readonly plain: TrafficPhase;
  /** The relay with group fan-out by unicast (`--curve-group`). */
  readonly group?: TrafficPhase;
  /** relay µs per delivery / plain µs per delivery. */
  readonly costRatio: number | undefined;
  /** group µs per delivery / plain µs per delivery (`--curve-group`). */
  readonly groupCostRatio?: number;
  /** Datagrams the relay sent per delivery at this pace (below 1: coalesced sends). */
  readonly relayDatagramsPerDelivery: number | undefined;
  /** /proc/loadavg after the pair. */
  readonly loadAverage: string | undefined;
}

/**
 * The paced cost curve: for each group size one relay and one plain relay
 * (and with `--curve-group` a relay with group fan-out), each with its group
 * registered and warmed; then at every pace an open-loop run of
 * `pace x curveSeconds` deliveries on the relay, then the same on the others
 * (paired, so machine noise hits them alike).
 */
async function measureCurve(
  config: Config,
  keys: KeyCache,
): Promise<CurveRow[]> {
  const rows: CurveRow[] = [];
  const modes: readonly Mode[] = config.curveGroup
    ? ["relay", "plain", "group"]
    : ["relay", "plain"];
  for (const size of config.curveSizes) {
    const targets: Target[] = [];
    const groups: BenchClient[][] = [];
    try {
      for (const mode of modes) {
        const target = await startTarget(config, mode);
        targets.push(target);
        groups.push(await registerGroup(config, target, mode, size, keys));
      }
      // Each fresh server is warmed as the sweep's are; the relay's counters
      // before each pace give its datagrams per delivery at that pace.
      let relayStats: Record<string, unknown> | undefined;
      for (const [i, mode] of modes.entries()) {
        const warm = await measureTraffic(config, targets[i], mode, groups[i], {
          messagesPerClient: Math.max(
            1,
            Math.ceil(
              config.sweepWarmupDeliveries /
                (groups[i].length * (groups[i].length - 1)),
            ),
          ),
          warmup: 0,
          maxDurationMs: 60_000,
        });
        if (mode === "relay") relayStats = warm.serverStats;
        if (mode === "group") {
          // The series is group fan-out only if every member holds the
          // epoch key; the others would get per-recipient streams.
          const group = warm.serverStats?.group as
            | { holders?: number }
            | undefined;
          if (group?.holders !== groups[i].length) {
            progress(
              `  warning: after the warm-up ${group?.holders ?? "no"} of ${
                groups[i].length
              } members hold the group key: the group series mixes in per-recipient streams`,
            );
          }
        }
      }
      for (const pace of config.curveRates) {
        const phases: TrafficPhase[] = [];
        for (const [i, mode] of modes.entries()) {
          const recipients = groups[i].length - 1;
          phases.push(
            await measureTraffic(config, targets[i], mode, groups[i], {
              messagesPerClient: 0,
              warmup: 0,
              pacedRate: pace / recipients,
              totalMessages: Math.max(
                groups[i].length,
                Math.round((pace * config.curveSeconds) / recipients),
              ),
              maxDurationMs: config.curveSeconds * 1000 * 4 + 10_000,
            }),
          );
        }
        const [relay, plain, group] = phases;
        const counter = (
          stats: Record<string, unknown> | undefined,
          name: string,
        ) => (stats?.[name] as number | undefined) ?? NaN;
        const sent = counter(relay.serverStats, "datagramsOut") -
          counter(relayStats, "datagramsOut");
        const delivered = counter(relay.serverStats, "deliveries") -
          counter(relayStats, "deliveries");
        relayStats = relay.serverStats;
        const row: CurveRow = {
          clients: size,
          pace,
          relay,
          plain,
          costRatio: relay.serverCpuUsPerDelivery !== undefined &&
              plain.serverCpuUsPerDelivery
            ? relay.serverCpuUsPerDelivery / plain.serverCpuUsPerDelivery
            : undefined,
          relayDatagramsPerDelivery: delivered > 0
            ? sent / delivered
            : undefined,
          loadAverage: loadAverage(),
          ...(group && {
            group,
            groupCostRatio: group.serverCpuUsPerDelivery !== undefined &&
                plain.serverCpuUsPerDelivery
              ? group.serverCpuUsPerDelivery / plain.serverCpuUsPerDelivery
              : undefined,
          }),
        };
        rows.push(row);
        progress(
          `  N=${size} at ${fmt.int(pace)} deliveries/s: relay ${
            fmt.x(relay.serverCpuUsPerDelivery)
          } µs/delivery (lost ${relay.traffic.lost}), plain ${
            fmt.x(plain.serverCpuUsPerDelivery)
          } µs (lost ${plain.traffic.lost}): ${fmt.x(row.costRatio)}x${
            group
              ? `; group fan-out ${
                fmt.x(group.serverCpuUsPerDelivery)
              } µs (lost ${group.traffic.lost}): ${fmt.x(row.groupCostRatio)}x`
              : ""
          }`,
        );
      }
    } finally {
      for (const group of groups) await closeAll(group);
      for (const target of targets) await target.child?.close();
    }
  }
  return rows;
}

/** The cost curve as a table. */
function curveTable(rows: readonly CurveRow[]): string {
  const drops = (p: TrafficPhase) => {
    const stats = p.serverStats;
    const own = stats?.dropped as Record<string, number> | undefined;
    const ownTotal = own
      ? Object.values(own).reduce((a, b) => a + b, 0)
      : undefined;
    return `${fmt.int(p.usage.serverSocketDrops)}/${fmt.int(ownTotal)}`;
  };
  const withGroup = rows.some((r) => r.group !== undefined);
  const groupCells = (r: CurveRow) =>
    withGroup
      ? [
        fmt.x(r.group?.serverCpuUsPerDelivery),
        fmt.x(r.groupCostRatio),
        `${r.group?.traffic.lost ?? "n/a"}`,
      ]
      : [];
  return table(
    [
      "N",
      "pace deliv/s",
      "relay deliv/s",
      "relay µs/deliv",
      "plain µs/deliv",
      "ratio",
      ...(withGroup ? ["group µs/deliv", "group ratio", "group lost"] : []),
      "relay dgrams/deliv",
      "relay p50/p99 ms",
      "plain p50/p99 ms",
      "lost relay/plain",
      "relay drops sock/own",
      "gen sock drops",
      "other cores",
      "loadavg",
    ],
    rows.map((r) => [
      `${r.clients}`,
      fmt.int(r.pace),
      fmt.int(r.relay.traffic.deliveriesPerSecond),
      fmt.x(r.relay.serverCpuUsPerDelivery),
      fmt.x(r.plain.serverCpuUsPerDelivery),
      fmt.x(r.costRatio),
      ...groupCells(r),
      fmt.x(r.relayDatagramsPerDelivery),
      `${fmt.ms(r.relay.traffic.latencyMs.p50)}/${
        fmt.ms(r.relay.traffic.latencyMs.p99)
      }`,
      `${fmt.ms(r.plain.traffic.latencyMs.p50)}/${
        fmt.ms(r.plain.traffic.latencyMs.p99)
      }`,
      `${r.relay.traffic.lost}/${r.plain.traffic.lost}`,
      drops(r.relay),
      `${fmt.int(r.relay.usage.clientSocketDrops)}/${
        fmt.int(r.plain.usage.clientSocketDrops)
      }`,
      fmt.x(
        ((r.relay.usage.otherCores ?? NaN) +
          (r.plain.usage.otherCores ?? NaN)) /
          2,
      ),
      r.loadAverage?.split(" ").slice(0, 3).join(" ") ?? "n/a",
    ]),
  );
}

/** Runs the curve, prints its table and writes curve.svg (and curve.png); returns the rows. */
async function runCurve(
  config: Config,
  keys: KeyCache,
  startedAt: string,
): Promise<CurveRow[]> {
  progress(
    `\npaced cost curve: open loop at ${
      config.curveRates.map((r) => fmt.int(r)).join(", ")
    } deliveries/s, ${
      config.curveSizes.join(" and ")
    } clients, ${config.curveSeconds} s of deliveries per pace; relay and plain relay alternate`,
  );
  const rows = await measureCurve(config, keys);
  console.log(
    [
      "",
      "paced cost curve (open loop: messages sent round-robin at a fixed pace, whatever the replies; µs/deliv = server process CPU, all threads, /proc, per delivery;",
      "relay dgrams/deliv = datagrams the relay sent per delivery (below 1: coalesced); drops sock/own = the relay socket's kernel drops (/proc/net/udp) / the relay's own drop counters (cumulative); gen sock drops = the generator's sockets' kernel drops, relay/plain run; loadavg after the pair)",
      "",
      curveTable(rows),
    ].join("\n"),
  );
  await Deno.mkdir(RESULTS_DIR, { recursive: true });
  const svgPath = `${RESULTS_DIR}curve.svg`;
  await Deno.writeTextFile(
    svgPath,
    renderCostChart(
      rows.map((r) => ({
        clients: r.clients,
        pace: r.pace,
        relayUsPerDelivery: r.relay.serverCpuUsPerDelivery,
        plainUsPerDelivery: r.plain.serverCpuUsPerDelivery,
        groupUsPerDelivery: r.group?.serverCpuUsPerDelivery,
      })),
      `${config.size} B messages, open loop${
        config.curveDownstream
          ? `, group fan-out multicast to ${
            formatAddress(config.curveDownstream)
          }`
          : ""
      }; ${
        startedAt.slice(0, 16).replace("T", " ")
      } UTC; deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores; load average ${
        loadAverage() ?? "n/a"
      }`,
    ),
  );
  console.log(`wrote ${relative(svgPath)}`);
  if (await toPng(svgPath, `${RESULTS_DIR}curve.png`)) {
    console.log(`wrote ${relative(`${RESULTS_DIR}curve.png`)} (rsvg-convert)`);
  }
  return rows;
}

// ---------------------------------------------------------------------------
// Output

function progress(line: string): void {
  console.log(line);
}

const fmt = {
  runs: (v: readonly number[] | undefined) =>
    v === undefined || v.length <= 1
      ? "1 run"
      : `${v.length} runs: ${
        v.map((x) => Math.round(x).toLocaleString("en-US")).join(" / ")
      }`,
  int: (v: number | undefined) =>
    v === undefined || !Number.isFinite(v)
      ? "n/a"
      : Math.round(v).toLocaleString("en-US"),
  ms: (v: number | undefined) =>
    v === undefined || !Number.isFinite(v)
      ? "n/a"
      : v < 10
      ? v.toFixed(2)
      : v.toFixed(1),
  s: (v: number | undefined) =>
    v === undefined || !Number.isFinite(v) ? "n/a" : v.toFixed(2),
  pct: (v: number | undefined) =>
    v === undefined || !Number.isFinite(v) ? "n/a" : `${(v * 100).toFixed(1)}%`,
  mib: (v: number | undefined) =>
    v === undefined || !Number.isFinite(v) ? "n/a" : `${v.toFixed(1)} MiB`,
  x: (v: number | undefined) =>
    v === undefined || !Number.isFinite(v) ? "n/a" : v.toFixed(2),
};

function table(headers: string[], rows: string[][]): string {
  const widths = headers.map((h, i) =>
    Math.max(h.length, ...rows.map((r) => r[i].length))
  );
  const line = (cells: string[]) =>
    cells.map((c, i) => i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))
      .join("  ");
  return [
    line(headers),
    widths.map((w) => "-".repeat(w)).join("  "),
    ...rows.map(line),
  ].join("\n");
}

function trafficRow(label: string, p: TrafficPhase): string[] {
  const t = p.traffic;
  return [
    label,
    `${p.clients}`,
    fmt.int(t.messagesSent),
    fmt.int(t.deliveriesPerSecond),
    fmt.ms(t.latencyMs.p50),
    fmt.ms(t.latencyMs.p90),
    fmt.ms(t.latencyMs.p99),
    fmt.ms(t.latencyMs.max),
    `${t.lost}/${t.duplicates}`,
    fmt.s(p.usage.serverCpuS),
    fmt.x(p.serverCpuUsPerDelivery),
    fmt.s(p.usage.benchCpuS),
    fmt.x(p.usage.otherCores),
  ];
}

const TRAFFIC_HEADERS = [
  "run",
  "N",
  "msgs",
  "deliv/s",
  "p50 ms",
  "p90 ms",
  "p99 ms",
  "max ms",
  "lost/dup",
  "srv CPU s",
  "srv µs/deliv",
  "gen CPU s",
  "other cores",
];

function socketDrops(p: TrafficPhase): string {
  return `${fmt.int(p.usage.serverSocketDrops)}/${
    fmt.int(p.usage.clientSocketDrops)
  }`;
}

function nonZeroDrops(stats: Record<string, unknown> | undefined): string {
  const dropped = stats?.dropped as Record<string, number> | undefined;
  if (!dropped) return "";
  const entries = Object.entries(dropped).filter(([, v]) => v > 0);
  return entries.map(([k, v]) => `${k}=${v}`).join(" ");
}

// ---------------------------------------------------------------------------
// Main

async function main(): Promise<number> {
  let config: Config | undefined;
  try {
    config = parseConfig();
  } catch (error) {
    console.error(`error: ${(error as Error).message} (see --help)`);
    return 2;
  }
  if (!config) return 0;
  if (config.curveDownstream) {
    try {
      await assertPrivateNetns("--curve-group-multicast");
    } catch (error) {
      console.error(`error: ${(error as Error).message}`);
      return 2;
    }
  }
  const started = performance.now();
  const startedAt = new Date().toISOString();
  const loadAvgStart = loadAverage();
  const machineStart = machineBusySeconds();
  const keys = new KeyCache();
  const external = config.server !== undefined;

  progress(
    `mcrelay relay benchmark: ${config.clients} clients x ${config.messages} messages x ${config.size} B, window ${config.window}` +
      (config.quick ? " (quick)" : ""),
  );
  progress(
    `deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores, load average at start ${
      loadAvgStart ?? "n/a"
    }`,
  );
  if (external) {
    progress(
      `server: external ${
        formatAddress(config.server!)
      }: its own limits apply (defaults: 200 messages/s per member, burst 400; 5 key exchanges/s per IP, burst 10; every bench client is 127.0.0.1); server CPU and RSS are n/a`,
    );
  } else {
    progress(
      `server: bench/_server_process.ts (RelayServer, limits raised: messages/s, handshakes/s and bursts 1e9, 100000 pending handshakes; RSA threads ${
        config.rsaSchedIdle
          ? "at niceness 19 and under SCHED_IDLE"
          : "at niceness 19"
      }; ${
        config.udpBatchSyscalls
          ? "UDP through recvmmsg/sendmmsg (FFI)"
          : "UDP through Deno"
      })`,
    );
  }

  if (config.curveOnly) {
    const curve = await runCurve(config, keys, startedAt);
    const jsonPath = `${RESULTS_DIR}curve.json`;
    await Deno.writeTextFile(
      jsonPath,
      JSON.stringify(
        {
          startedAt,
          loadAverageStart: loadAvgStart,
          loadAverageEnd: loadAverage(),
          cores: navigator.hardwareConcurrency,
          cpu: readCpuModel(),
          udpBatchSyscalls: config.udpBatchSyscalls,
          curve,
        },
        null,
        2,
      ) + "\n",
    );
    console.log(`wrote ${relative(jsonPath)}`);
    return 0;
  }

  // 1. RSA ceiling (no server running yet).
  progress(
    `\n[1/7] RSA-OAEP-2048 decryption ceiling (${config.rsaSeconds} s per setting)`,
  );
  const rsa = await measureRsa(config.rsaSeconds);
  progress(
    `  ${
      fmt.int(rsa.singlePerSecond)
    }/s one at a time; all cores, ${rsa.concurrency} in flight: ${
      fmt.int(rsa.webCryptoPerSecond)
    }/s with crypto.subtle.decrypt, ${
      fmt.int(rsa.workersPerSecond)
    }/s with node:crypto on ${navigator.hardwareConcurrency} worker threads; ceiling ${
      fmt.int(rsa.allCoresPerSecond)
    }/s (other processes: ${fmt.x(rsa.otherCores)} cores)`,
  );

  // 2-4. Main run, half-rate run and registration flood on one relay server and group.
  progress(
    `\n[2/7] relay: ${config.clients} clients, closed loop, window ${config.window}`,
  );
  const relayTarget = await startTarget(config, "relay");
  let main: TrafficPhase;
  let sustained: TrafficPhase;
  let half: TrafficPhase;
  let flood: TrafficPhase;
  let floodResult: FloodResult;
  try {
    const group = await registerGroup(
      config,
      relayTarget,
      "relay",
      config.clients,
      keys,
    );
    try {
      main = await measureRepeated(config, relayTarget, "relay", group);
      progress(
        `  ${
          fmt.int(main.traffic.deliveriesPerSecond)
        } deliveries/s (median of ${fmt.runs(main.repeats)}), p99 ${
          fmt.ms(main.traffic.latencyMs.p99)
        } ms, lost ${main.traffic.lost}`,
      );

      // The half-rate phases pace at half of a closed loop long enough
      // (about sustainedSeconds) to include the garbage collections and slow
      // spells that the short runs above can miss.
      sustained = await measureTraffic(config, relayTarget, "relay", group, {
        messagesPerClient: Math.max(
          config.messages,
          Math.round(
            main.traffic.messagesPerSecond * config.sustainedSeconds /
              group.length,
          ),
        ),
        warmup: 0,
        maxDurationMs: 90_000,
      });
      progress(
        `  sustained: ${
          fmt.int(sustained.traffic.deliveriesPerSecond)
        } deliveries/s over ${
          fmt.int(sustained.traffic.messagesSent)
        } messages, p99 ${
          fmt.ms(sustained.traffic.latencyMs.p99)
        } ms, lost ${sustained.traffic.lost}`,
      );
      const rate = Math.max(1, sustained.traffic.messagesPerSecond / 2);
      const total = Math.min(
        100_000,
        Math.max(2 * group.length, Math.round(rate * config.pacedSeconds)),
      );
      progress(
        `\n[3/7] relay at half the sustained rate: ${
          fmt.int(rate)
        } messages/s (${
          fmt.int(rate * (group.length - 1))
        } deliveries/s), ${total} messages`,
      );
      half = await measureTraffic(config, relayTarget, "relay", group, {
        messagesPerClient: 0,
        warmup: 0,
        pacedRate: rate,
        totalMessages: total,
        maxDurationMs: 60_000,
      });
      progress(
        `  p50 ${fmt.ms(half.traffic.latencyMs.p50)} ms, p99 ${
          fmt.ms(half.traffic.latencyMs.p99)
        } ms`,
      );

      progress(
        `\n[4/7] relay at half rate during a registration flood (${config.floodConcurrency} concurrent key exchanges, register + disconnect, client keys encrypted before timing)`,
      );
      // As in [6/7], the flooding clients' keys are encrypted before timing:
      // the server is under test, not the generator's RSA encryption.
      const pem = group[0].serverPem;
      if (pem) {
        await keys.prepare(
          pem,
          Math.ceil(rsa.allCoresPerSecond * (config.pacedSeconds + 2)),
        );
      }
      const stop = { stopped: false };
      const flooding = registrationFlood(
        relayTarget.address,
        config.floodConcurrency,
        stop,
        keys,
      );
      await new Promise((resolve) => setTimeout(resolve, 200));
      flood = await measureTraffic(config, relayTarget, "relay", group, {
        messagesPerClient: 0,
        warmup: 0,
        pacedRate: rate,
        totalMessages: total,
        maxDurationMs: 60_000,
      });
      stop.stopped = true;
      floodResult = await flooding;
      progress(
        `  p99 ${fmt.ms(flood.traffic.latencyMs.p99)} ms while ${
          fmt.int(floodResult.perSecond)
        } key exchanges/s ran`,
      );
    } finally {
      await closeAll(group);
    }
  } finally {
    await relayTarget.child?.close();
  }

  // 5. Ceiling: the same main traffic through the plain relay.
  progress(`\n[5/7] plain UDP relay (no crypto): same traffic as [2/7]`);
  const plainTarget = await startTarget(config, "plain");
  let ceiling: TrafficPhase;
  try {
    const group = await registerGroup(
      config,
      plainTarget,
      "plain",
      config.clients,
      keys,
    );
    try {
      ceiling = await measureRepeated(config, plainTarget, "plain", group);
    } finally {
      await closeAll(group);
    }
  } finally {
    await plainTarget.child?.close();
  }
  const share = main.traffic.deliveriesPerSecond /
    ceiling.traffic.deliveriesPerSecond;
  progress(
    `  ${
      fmt.int(ceiling.traffic.deliveriesPerSecond)
    } deliveries/s: the relay reaches ${fmt.pct(share)} of it`,
  );

  // 6. Key exchanges per second.
  progress(
    `\n[6/7] key exchanges: ${config.handshakeConcurrency} clients at a time, each registering then leaving, for ${config.handshakeSeconds} s`,
  );
  const handshakes = await measureHandshakes(
    config,
    keys,
    rsa.allCoresPerSecond,
  );
  progress(
    `  ${
      fmt.int(handshakes.perSecond)
    } registrations/s (${handshakes.registered} done, ${handshakes.failed} failed), ${
      fmt.pct(handshakes.perSecond / rsa.allCoresPerSecond)
    } of the RSA ceiling`,
  );

  // 7. Sweep of group sizes.
  const sweep: SweepRow[] = [];
  if (!config.skipSweep) {
    progress(
      `\n[7/7] group-size sweep: ${config.sweepSizes.join(", ")} clients`,
    );
    for (const size of config.sweepSizes) {
      const messages = Math.max(
        3,
        Math.min(
          20_000,
          Math.round(config.sweepDeliveries / (size * (size - 1))),
        ),
      );
      const relay = await measureGroup(config, "relay", size, messages, keys);
      const plain = await measureGroup(config, "plain", size, messages, keys);
      const row = {
        clients: size,
        relay,
        plain,
        shareOfCeiling: relay.traffic.deliveriesPerSecond /
          plain.traffic.deliveriesPerSecond,
      };
      sweep.push(row);
      progress(
        `  N=${size}: ${messages} msgs/client, ${relay.groupWindow} in flight: relay ${
          fmt.int(relay.traffic.deliveriesPerSecond)
        } deliveries/s (p99 ${fmt.ms(relay.traffic.latencyMs.p99)} ms), plain ${
          fmt.int(plain.traffic.deliveriesPerSecond)
        }/s: ${fmt.pct(row.shareOfCeiling)}`,
      );
    }
  } else {
    progress(`\n[7/7] group-size sweep skipped (--skip-sweep)`);
  }

  const curve = config.skipCurve ? [] : await runCurve(config, keys, startedAt);

  const elapsedS = (performance.now() - started) / 1000;
  const machineEnd = machineBusySeconds();
  const loadAvgEnd = loadAverage();

  // Report.
  const lines: string[] = [];
  lines.push("", "=".repeat(100), "RESULTS", "=".repeat(100));
  lines.push(
    `message ${config.size} B plaintext; latency = one-way, sender's send call to recipient's decrypted message (one process clock)`,
  );
  lines.push(
    "deliv/s = distinct (message, recipient) pairs / (last delivery - first send); lost = expected - distinct deliveries",
  );
  lines.push(
    "srv CPU = server process user+sys seconds in the window (/proc); gen CPU = this load generator's; other cores = average cores used by other processes",
    "(the flood row's server CPU includes the key exchanges of the flood)",
    "",
  );
  lines.push(table(TRAFFIC_HEADERS, [
    trafficRow("relay (closed loop)", main),
    trafficRow("relay sustained", sustained),
    trafficRow("relay at 50% rate", half),
    trafficRow("relay 50% + reg flood", flood),
    trafficRow("plain UDP ceiling", ceiling),
  ]));
  lines.push("");
  lines.push(
    `relay share of the plain-UDP ceiling (deliveries/s): ${
      fmt.pct(share)
    } (closed-loop rows: median of ${fmt.runs(main.repeats)} relay; ${
      fmt.runs(ceiling.repeats)
    } plain)`,
  );
  lines.push(
    `server peak RSS (VmHWM): ${
      fmt.mib(main.serverPeakRssMiB)
    } after the main run, ${
      fmt.mib(flood.serverPeakRssMiB)
    } after the flood; plain relay ${fmt.mib(ceiling.serverPeakRssMiB)}`,
  );
  lines.push(
    `p99 latency: ${fmt.ms(main.traffic.latencyMs.p99)} ms saturated, ${
      fmt.ms(half.traffic.latencyMs.p99)
    } ms at 50% rate, ${
      fmt.ms(flood.traffic.latencyMs.p99)
    } ms at 50% rate during the flood (${
      fmt.int(floodResult.perSecond)
    } registrations/s, ${floodResult.completed} done, ${floodResult.failed} failed, handshake p99 ${
      fmt.ms(floodResult.latencyMs.p99)
    } ms)`,
  );
  lines.push(
    `pacer: worst lateness ${fmt.ms(half.traffic.paceLagMs)} ms (50%), ${
      fmt.ms(flood.traffic.paceLagMs)
    } ms (flood)`,
  );
  const drops = [
    ["main", main],
    ["50%", half],
    ["flood", flood],
  ].map(([label, p]) => {
    const phase = p as TrafficPhase;
    return `${label}: ${nonZeroDrops(phase.serverStats) || "none"}`;
  });
  if (!external) {
    lines.push(`server drop counters (cumulative): ${drops.join("; ")}`);
  }
  // The group of runs 2-4 is one set of clients: its counters are cumulative.
  const notices = Object.entries(flood.clientCounters).filter(([k, v]) =>
    k.startsWith("notice") && v > 0
  );
  if (notices.length > 0) {
    lines.push(
      `NOTICEs received by the clients (cumulative; 3 = RATE_LIMITED, 1 = UNKNOWN_CLIENT): ${
        notices.map(([k, v]) => `${k}=${v}`).join(" ")
      }`,
    );
  }
  lines.push(
    `UDP receive-buffer drops (/proc/net/udp), server socket / client sockets: main ${
      socketDrops(main)
    }, 50% ${socketDrops(half)}, flood ${socketDrops(flood)}, ceiling ${
      socketDrops(ceiling)
    }; messages given up (slot freed) main ${main.traffic.givenUp}, 50% ${half.traffic.givenUp}, flood ${flood.traffic.givenUp}`,
  );
  lines.push("");
  lines.push(
    `key exchanges: ${
      fmt.int(handshakes.perSecond)
    }/s (${handshakes.registered} registered and left, ${handshakes.failed} failed, ${handshakes.concurrency} at a time, ${
      fmt.s(handshakes.durationS)
    } s, client keys encrypted before timing (${
      handshakes.prepared - handshakes.preparedLeft
    } of ${handshakes.prepared} used); handshake p50 ${
      fmt.ms(handshakes.latencyMs.p50)
    } ms, p99 ${fmt.ms(handshakes.latencyMs.p99)} ms; server ${
      fmt.x(handshakes.serverCpuMsPerHandshake)
    } CPU ms each, generator ${
      fmt.s(handshakes.usage.benchCpuS)
    } CPU s, other cores ${fmt.x(handshakes.usage.otherCores)})`,
  );
  lines.push(
    `RSA-OAEP-2048 decrypt ceiling: ${
      fmt.int(rsa.singlePerSecond)
    }/s one at a time, ${
      fmt.int(rsa.allCoresPerSecond)
    }/s on all ${navigator.hardwareConcurrency} cores (${
      rsa.best === "workers" ? "node:crypto worker threads" : "crypto.subtle"
    }, ${rsa.concurrency} in flight; the other way: ${
      fmt.int(
        rsa.best === "workers" ? rsa.webCryptoPerSecond : rsa.workersPerSecond,
      )
    }/s); key exchanges reach ${
      fmt.pct(handshakes.perSecond / rsa.allCoresPerSecond)
    } of it`,
  );
  if (sweep.length > 0) {
    lines.push(
      "",
      "group-size sweep (fresh server per size; in flight = messages the group keeps in flight: min(N W, ceil(90 W / (N-1)), ~160 kB)):",
    );
    lines.push(table(
      [
        "N",
        "msgs/client",
        "in flight",
        "relay deliv/s",
        "p50 ms",
        "p99 ms",
        "srv µs/deliv",
        "lost/dup",
        "sock drops",
        "plain deliv/s",
        "plain p99 ms",
        "share",
        "other cores",
      ],
      sweep.map((r) => [
        `${r.clients}`,
        `${r.relay.messagesPerClient}`,
        `${r.relay.groupWindow}`,
        fmt.int(r.relay.traffic.deliveriesPerSecond),
        fmt.ms(r.relay.traffic.latencyMs.p50),
        fmt.ms(r.relay.traffic.latencyMs.p99),
        fmt.x(r.relay.serverCpuUsPerDelivery),
        `${r.relay.traffic.lost}/${r.relay.traffic.duplicates}`,
        socketDrops(r.relay),
        fmt.int(r.plain.traffic.deliveriesPerSecond),
        fmt.ms(r.plain.traffic.latencyMs.p99),
        fmt.pct(r.shareOfCeiling),
        `${fmt.x(r.relay.usage.otherCores)}/${fmt.x(r.plain.usage.otherCores)}`,
      ]),
    ));
    lines.push(
      "(sock drops: relay server socket / client sockets; other cores: relay run / plain run)",
    );
    const sweepDrops = sweep.map((
      r,
    ) => [r.clients, nonZeroDrops(r.relay.serverStats)])
      .filter(([, d]) => d !== "");
    if (sweepDrops.length > 0) {
      lines.push(
        `server drop counters in the sweep: ${
          sweepDrops.map(([n, d]) => `N=${n}: ${d}`).join("; ")
        }${
          sweepDrops.some(([, d]) => String(d).includes("token_window_full"))
            ? " (token_window_full: the server remembers at most 65,536 IVs per member key, so a member sending more than that within one second gets drops)"
            : ""
        }`,
      );
    }
  }
  let otherCoresOverall: number | undefined;
  if (machineStart !== undefined && machineEnd !== undefined) {
    // Everything busy on the machine during the run: a context figure.
    otherCoresOverall = (machineEnd - machineStart) / elapsedS;
  }
  lines.push(
    "",
    `run time ${elapsedS.toFixed(1)} s; load average ${
      loadAvgStart ?? "n/a"
    } -> ${loadAvgEnd ?? "n/a"}; machine busy ${
      fmt.x(otherCoresOverall)
    } of ${navigator.hardwareConcurrency} cores on average (bench and servers included)`,
  );
  if (external) {
    lines.push(
      `external server ${
        formatAddress(config.server!)
      }: its own rate limits applied; server CPU/RSS n/a`,
    );
  }
  const noisy = [
    main,
    half,
    flood,
    ceiling,
    ...sweep.flatMap((r) => [r.relay, r.plain]),
  ].some((p) => (p.usage.otherCores ?? 0) > 0.3) ||
    (rsa.otherCores ?? 0) > 0.3;
  if (noisy) {
    lines.push(
      "note: other processes used more than 0.3 cores during at least one phase (column 'other cores'): figures are noisy",
    );
  }
  for (const line of lines) console.log(line);

  // Files.
  await Deno.mkdir(RESULTS_DIR, { recursive: true });
  const json = {
    startedAt,
    elapsedS,
    config: {
      ...config,
      server: config.server ? formatAddress(config.server) : null,
    },
    environment: {
      deno: Deno.version.deno,
      v8: Deno.version.v8,
      cores: navigator.hardwareConcurrency,
      cpu: readCpuModel(),
      loadAverageStart: loadAvgStart,
      loadAverageEnd: loadAvgEnd,
      server: external ? "external" : "bench/_server_process.ts",
      rsaSchedIdle: config.rsaSchedIdle,
      udpBatchSyscalls: config.udpBatchSyscalls,
      serverLimits: external
        ? "the external server's own"
        : "messagesPerSecond/messageBurst/handshakesPerSecond/handshakeBurst 1e9, maxPendingHandshakes 100000, maxClients 100000",
    },
    rsaCeiling: rsa,
    main,
    sustained,
    halfRate: half,
    flood: { traffic: flood, registrations: floodResult },
    ceiling,
    shareOfCeiling: share,
    handshakes,
    sweep,
    curve,
  };
  const jsonPath = `${RESULTS_DIR}latest.json`;
  await Deno.writeTextFile(jsonPath, JSON.stringify(json, null, 2) + "\n");
  console.log(`\nwrote ${relative(jsonPath)}`);
  if (sweep.length > 0) {
    const svgPath = `${RESULTS_DIR}chart.svg`;
    await Deno.writeTextFile(
      svgPath,
      renderChart(
        sweep.map((r) => ({
          clients: r.clients,
          relayDeliveriesPerSecond: r.relay.traffic.deliveriesPerSecond,
          relayP99Ms: r.relay.traffic.latencyMs.p99,
          plainDeliveriesPerSecond: r.plain.traffic.deliveriesPerSecond,
          plainP99Ms: r.plain.traffic.latencyMs.p99,
        })),
        `${config.size} B messages, closed loop; ${
          startedAt.slice(0, 16).replace("T", " ")
        } UTC; deno ${Deno.version.deno}, ${navigator.hardwareConcurrency} cores; server ${
          external ? "external" : "local process"
        }`,
      ),
    );
    console.log(`wrote ${relative(svgPath)}`);
    if (await toPng(svgPath, `${RESULTS_DIR}chart.png`)) {
      console.log(
        `wrote ${relative(`${RESULTS_DIR}chart.png`)} (rsvg-convert)`,
      );
    }
  }
  return 0;
}

function readCpuModel(): string | undefined {
  try {
    return /^model name\s*:\s*(.*)$/m.exec(
      readFiles(["/proc/cpuinfo"])[0] ?? "",
    )?.[1];
  } catch {
    return undefined;
  }
}

function relative(path: string): string {
  const cwd = Deno.cwd() + "/";
  return path.startsWith(cwd) ? path.slice(cwd.length) : path;
}

/** Converts the SVG with rsvg-convert when it is installed; quietly does nothing otherwise. */
async function toPng(svg: string, png: string): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("rsvg-convert", {
      args: ["-o", png, svg],
      stdout: "null",
      stderr: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

if (import.meta.main) {
  Deno.exit(await main());
}
