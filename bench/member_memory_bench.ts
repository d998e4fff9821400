/**
 * The server's memory per registered hybrid member. In one process: a
 * {@linkcode RelayServer} on the in-memory network, and a raw driver that
 * registers N members (each from its own IP, as the host with 1,024
 * addresses of issue 17 did), each proving its key with one keep-alive, as
 * members that stay do. The driver keeps only each member's Fernet key and
 * address; a member's socket is bound while it registers and closed after,
 * so what the server sends it later goes nowhere. Memory (after a full
 * garbage collection) is read with no member, with N members, and after all
 * of them left; the figure per member is the difference divided by N.
 * Bounded; stops by itself.
 *
 * `--udp` measures the setting of issue 17 instead: the server in a child
 * process (`bench/_server_process.ts`) on 127.0.0.1 and N bench clients
 * registering over UDP; the child's resident set and heap before and after.
 *
 *     deno run -A --v8-flags=--expose-gc bench/member_memory_bench.ts
 *         [--members 1000] [--concurrency 8] [--udp]
 *
 * Prints one JSON object: bytes per member of V8 heap (`heapUsed`), of the
 * heap V8 reserved (`heapTotal`), of memory outside the heap (`external`)
 * and of the resident set (`rss`); in memory for "joined" (no member to N
 * members) and "left" (N members to none after they left).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { FernetKey } from "../lib/crypto/fernet.ts";
import { RsaPrivateKey, RsaPublicKey } from "../lib/crypto/rsa.ts";
import { MemoryNetwork } from "../lib/runtime/memory.ts";
import type { PeerAddress } from "../lib/wire/address.ts";
import {
  decodeRecords,
  encodeRecords,
  RecordType,
  type TlvRecord,
} from "../lib/wire/tlv.ts";
import { RelayServer } from "../lib/relay/server/server.ts";
import { closeAll, KeyCache, registerMany } from "./_loadgen.ts";
import { ChildServer } from "./_proc.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    members: { type: "string", default: "1000" },
    concurrency: { type: "string", default: "8" },
    udp: { type: "boolean" },
  },
  strict: true,
});
const MEMBERS = Number(values.members);
const CONCURRENCY = Number(values.concurrency);
const SERVER: PeerAddress = { hostname: "127.0.0.1", port: 5007 };
const encoder = new TextEncoder();
const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) {
  console.error("run with --v8-flags=--expose-gc");
  Deno.exit(2);
}

type Usage = Record<"rss" | "heapTotal" | "heapUsed" | "external", number>;

/** Bytes per member from `a` to `b`, for each field. */
function perMember(a: Usage, b: Usage, members: number): Usage {
  const per = (field: keyof Usage) =>
    Math.round((b[field] - a[field]) / members);
  return {
    heapUsed: per("heapUsed"),
    heapTotal: per("heapTotal"),
    external: per("external"),
    rss: per("rss"),
  };
}

/** The resident set of each reading, in MiB. */
function rssMiB(readings: Record<string, Usage>): Record<string, number> {
  return Object.fromEntries(
    Object.entries(readings).map((
      [name, u],
    ) => [name, Math.round(u.rss / 2 ** 20)]),
  );
}

if (values.udp) {
  // The setting: a server process, clients over UDP on loopback.
  const server = await ChildServer.spawn("bench/_server_process.ts", [
    "--allow-read",
    "--allow-sys=setPriority",
    "--v8-flags=--expose-gc",
  ]);
  try {
    const before = await server.memory() as Usage;
    const keys = new KeyCache();
    const result = await registerMany(
      "relay",
      server.address,
      MEMBERS,
      CONCURRENCY,
      120_000,
      keys,
    );
    const joined = await server.memory() as Usage;
    const datagramsOut = (await server.stats())?.datagramsOut;
    // The members stay, idle (no keep-alives: they stay for 30 s): V8 gives
    // back heap it grew for the registrations' garbage.
    await new Promise((resolve) => setTimeout(resolve, 15_000));
    const idle = await server.memory() as Usage;
    const members = result.clients.length;
    console.log(JSON.stringify({
      members,
      failed: result.failed,
      registrationSeconds: Number(result.durationS.toFixed(1)),
      datagramsOut,
      bytesPerMember: {
        joined: perMember(before, joined, members),
        idle15s: perMember(before, idle, members),
      },
      rssMiB: rssMiB({ before, joined, idle15s: idle }),
    }));
    await closeAll(result.clients);
  } finally {
    await server.close();
  }
  Deno.exit(0);
}

/** Memory after two full collections (the second catches what finalizers freed). */
async function settled(): Promise<Deno.MemoryUsage> {
  for (let i = 0; i < 3; i++) {
    gc!();
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return Deno.memoryUsage();
}

interface DriverMember {
  readonly address: PeerAddress;
  readonly key: FernetKey;
  readonly block: Uint8Array;
}

const network = new MemoryNetwork();
const privateKey = await RsaPrivateKey.generate(2048);
const server = await RelayServer.start({
  transport: network.bind(SERVER.hostname, SERVER.port),
  privateKey,
  maxClients: MEMBERS + 16,
  maxClientsPerIp: 4,
  clientTimeoutMs: 3_600_000,
  handshakesPerSecond: 1e9,
  handshakeBurst: 1e9,
  globalHandshakesPerSecond: 1e9,
  globalHandshakeBurst: 1e9,
});
const serverKey = await RsaPublicKey.fromPem(privateKey.publicKey.pem);
const members: DriverMember[] = [];
for (let i = 0; i < MEMBERS; i++) {
  const key = await FernetKey.generate("node");
  members.push({
    address: {
      hostname: `10.${i >> 16}.${(i >> 8) & 255}.${i & 255}`,
      port: 40000,
    },
    key,
    block: await serverKey.encrypt(encoder.encode(key.text)),
  });
}

/** Registers one member and proves its key with a keep-alive (answered). */
async function register(member: DriverMember): Promise<void> {
  const socket = network.bind(member.address.hostname, member.address.port);
  const incoming = socket[Symbol.asyncIterator]();
  const next = async (type: number): Promise<TlvRecord[]> => {
    while (true) {
      const { value, done } = await incoming.next();
      if (done) throw new Error("socket closed");
      const records = decodeRecords(value.data);
      if (records.some((r) => r.type === type)) return records;
    }
  };
  try {
    await socket.send(
      encodeRecords([{
        type: RecordType.KEY_REQUEST,
        value: new Uint8Array(1196),
      }]),
      SERVER,
    );
    const answer = await next(RecordType.SERVER_PUBLIC_KEY);
    const cookie = answer.find((r) => r.type === RecordType.COOKIE)!.value;
    await socket.send(
      encodeRecords([
        { type: RecordType.COOKIE, value: cookie },
        { type: RecordType.SYMMETRIC_KEY, value: member.block },
      ]),
      SERVER,
    );
    await next(RecordType.WELCOME);
    await socket.send(
      encodeRecords([{
        type: RecordType.KEEPALIVE,
        value: member.key.encryptSync(new Uint8Array(0)),
      }]),
      SERVER,
    );
    await next(RecordType.KEEPALIVE);
  } finally {
    socket.close();
  }
}

const before = await settled();
let nextIndex = 0;
await Promise.all(
  Array.from({ length: CONCURRENCY }, async () => {
    while (nextIndex < members.length) await register(members[nextIndex++]);
  }),
);
if (server.members().length !== MEMBERS) {
  throw new Error(`${server.members().length} of ${MEMBERS} registered`);
}
const joined = await settled();
const disconnect = encoder.encode("DISCONNECT");
for (const member of members) {
  network.deliver(
    encodeRecords([{
      type: RecordType.DISCONNECT,
      value: member.key.encryptSync(disconnect),
    }]),
    member.address,
    SERVER,
  );
}
while (server.members().length > 0) {
  await new Promise((resolve) => setTimeout(resolve, 20));
}
const left = await settled();
await server.close();

console.log(JSON.stringify({
  members: MEMBERS,
  bytesPerMember: {
    joined: perMember(before, joined, MEMBERS),
    left: perMember(left, joined, MEMBERS),
  },
  rssMiB: rssMiB({ before, joined, left }),
}));
