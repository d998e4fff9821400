/**
 * Bench-only entry: the project's {@linkcode RelayServer} on 127.0.0.1 with
 * limits generous enough that one load generator (every client shares
 * 127.0.0.1) measures the relay's throughput, not its rate limits. The
 * `server.ts` CLI has no flags for the per-member message rate or the per-IP
 * handshake rate, hence this script.
 *
 * Prints one JSON line `{"udp":"127.0.0.1:PORT","pid":N,"fingerprint":...}`,
 * then answers `stats` on stdin with one JSON line of counters. Exits when
 * stdin closes or on SIGTERM/SIGINT.
 *
 *     deno run --allow-net --allow-read --allow-sys=setPriority bench/_server_process.ts [--port 0]
 *         [--rsa-sched-idle (with --allow-ffi)] [--no-coalesce]
 *         [--udp-batch-syscalls (with --allow-ffi): the recvmmsg/sendmmsg transport]
 *         [--group-fanout: protocol.md section 9 by unicast, for GROUP_CAPABLE members]
 *         [--group-downstream GROUP:PORT: with --group-fanout, multicast to it instead
 *          (only inside a private network namespace)]
 *
 * @module
 */
import { parseArgs } from "node:util";
import { RsaPrivateKey } from "../lib/crypto/rsa.ts";
import { formatAddress, parseAddress } from "../lib/wire/address.ts";
import { UdpTransport } from "../lib/runtime/udp.ts";
import { UdpMmsgTransport } from "../lib/runtime/udp_mmsg.ts";
import { RelayServer } from "../lib/relay/server/server.ts";
import { LineSplitter } from "../lib/runtime/lines.ts";
import { assertPrivateNetns } from "./_netns.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "0" },
    "rsa-sched-idle": { type: "boolean" },
    "no-coalesce": { type: "boolean" },
    "udp-batch-syscalls": { type: "boolean" },
    "group-fanout": { type: "boolean" },
    "group-downstream": { type: "string" },
  },
  strict: true,
});

if (values["group-downstream"] !== undefined) {
  await assertPrivateNetns("--group-downstream");
}
const privateKey = await RsaPrivateKey.generate(2048);
const bindOptions = { hostname: values.host, port: Number(values.port) };
const transport = values["udp-batch-syscalls"]
  ? await UdpMmsgTransport.bind(bindOptions)
  : await UdpTransport.bind(bindOptions);
const server = await RelayServer.start({
  transport,
  privateKey,
  maxClients: 100_000,
  // Every bench client is 127.0.0.1.
  maxClientsPerIp: 100_000,
  coalesceSends: values["no-coalesce"] !== true,
  // Group fan-out by unicast (no downstream address): one token per message.
  fanout: values["group-fanout"] ? "group" : "unicast",
  // With a downstream group (only inside a private network namespace): one
  // multicast datagram per message; members joined before registering.
  downstream: values["group-downstream"] === undefined
    ? undefined
    : parseAddress(values["group-downstream"]),
  groupNewcomerMs: 0,
  messagesPerSecond: 1e9,
  messageBurst: 1e9,
  handshakesPerSecond: 1e9,
  handshakeBurst: 1e9,
  // The bench measures key exchanges against the RSA ceiling: the global
  // budget (500/s by default, a policy) would cap them near a quarter of it.
  globalHandshakesPerSecond: 1e9,
  globalHandshakeBurst: 1e9,
  maxPendingHandshakes: 100_000,
  rsaSchedIdle: values["rsa-sched-idle"] === true,
  // How the RSA threads run, and any warning, go to stderr for the bench log.
  log: (record) => {
    if (
      record.event === "rsa_threads" || record.level === "warn" ||
      record.level === "error"
    ) {
      console.error(JSON.stringify(record));
    }
  },
});

const encoder = new TextEncoder();
function writeLine(value: unknown): void {
  Deno.stdout.writeSync(encoder.encode(JSON.stringify(value) + "\n"));
}

writeLine({
  udp: formatAddress(transport.localAddress),
  pid: Deno.pid,
  fingerprint: server.fingerprint,
});

let stopping = false;
async function stop(): Promise<void> {
  if (stopping) return;
  stopping = true;
  await server.close();
  Deno.exit(0);
}
Deno.addSignalListener("SIGTERM", () => void stop());
Deno.addSignalListener("SIGINT", () => void stop());

const lines = new LineSplitter();
for await (const chunk of Deno.stdin.readable) {
  for (const raw of lines.push(chunk)) {
    const line = raw.trim();
    if (line === "stats") writeLine({ stats: server.stats() });
    if (line === "memory") {
      // Full collections first when the child runs with --expose-gc.
      const gc = (globalThis as { gc?: () => void }).gc;
      for (let i = 0; i < 3 && gc; i++) gc();
      writeLine({ memory: Deno.memoryUsage() });
    }
  }
}
await stop();
