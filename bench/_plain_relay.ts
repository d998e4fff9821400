/**
 * Bench-only ceiling: a plain UDP relay with no cryptography and no framing,
 * on the same runtime and the same {@linkcode UdpTransport} as the real
 * server. The first datagram from a new address registers it (answered with
 * one byte, "K"); every later datagram from a registered address is sent
 * unchanged to every other registered address; the 3-byte datagram "BYE"
 * unregisters.
 *
 * Prints one JSON line `{"udp":"127.0.0.1:PORT","pid":N}`, then answers
 * `stats` on stdin. Exits when stdin closes or on SIGTERM/SIGINT.
 *
 *     deno run --allow-net bench/_plain_relay.ts [--udp-batch-syscalls (with --allow-ffi)]
 *
 * `--udp-batch-syscalls`: on {@linkcode UdpMmsgTransport} (recvmmsg/sendmmsg)
 * instead, to measure the transport without the relay's crypto.
 *
 * @module
 */
import { formatAddress, type PeerAddress } from "../lib/wire/address.ts";
import { UdpTransport } from "../lib/runtime/udp.ts";
import { UdpMmsgTransport } from "../lib/runtime/udp_mmsg.ts";
import { LineSplitter } from "../lib/runtime/lines.ts";

const bindOptions = { hostname: "127.0.0.1", port: 0 };
const transport = Deno.args.includes("--udp-batch-syscalls")
  ? await UdpMmsgTransport.bind(bindOptions)
  : await UdpTransport.bind(bindOptions);
const members = new Map<string, PeerAddress>();
const ACK = new Uint8Array([0x4b]);
let datagramsIn = 0;
let datagramsOut = 0;
let sendFailed = 0;

function send(data: Uint8Array, to: PeerAddress): void {
  datagramsOut++;
  transport.send(data, to).catch(() => sendFailed++);
}

function isBye(data: Uint8Array): boolean {
  return data.length === 3 && data[0] === 0x42 && data[1] === 0x59 &&
    data[2] === 0x45;
}

async function serve(): Promise<void> {
  for await (const { data, from } of transport) {
    datagramsIn++;
    const key = formatAddress(from);
    if (!members.has(key)) {
      if (isBye(data)) continue;
      members.set(key, from);
      send(ACK, from);
      continue;
    }
    if (isBye(data)) {
      members.delete(key);
      continue;
    }
    for (const [other, address] of members) {
      if (other !== key) send(data, address);
    }
  }
}
const serving = serve();

const encoder = new TextEncoder();
function writeLine(value: unknown): void {
  Deno.stdout.writeSync(encoder.encode(JSON.stringify(value) + "\n"));
}
writeLine({ udp: formatAddress(transport.localAddress), pid: Deno.pid });

function stop(): void {
  transport.close();
  Deno.exit(0);
}
Deno.addSignalListener("SIGTERM", stop);
Deno.addSignalListener("SIGINT", stop);

const lines = new LineSplitter();
for await (const chunk of Deno.stdin.readable) {
  for (const raw of lines.push(chunk)) {
    const line = raw.trim();
    if (line === "stats") {
      writeLine({
        stats: {
          datagramsIn,
          datagramsOut,
          sendFailed,
          members: members.size,
        },
      });
    }
  }
}
transport.close();
await serving;
