/**
 * The bench's load generator. It speaks the wire protocol itself with the
 * pure codecs (TLV, fragments, Fernet, RSA-OAEP), so it can drive any
 * implementation of protocol.md, and it speaks the bench's plain relay (no
 * crypto, no framing) for the ceiling case.
 *
 * A message's plaintext carries `run u32 | sender u32 | seq u32 | sent f64`
 * (the sender's `performance.now()` of this process) then padding, so every
 * recipient measures one-way latency on one clock and detects duplicates and
 * losses by (sender, seq).
 *
 * @module
 */
import { FernetKey } from "../lib/crypto/fernet.ts";
import { RsaPublicKey } from "../lib/crypto/rsa.ts";
import { encodeAddress, type PeerAddress } from "../lib/wire/address.ts";
import { fragmentStream } from "../lib/wire/fragment.ts";
import { Reassembler } from "../lib/core/reassembler.ts";
import {
  decodeGroupKeyPlaintext,
  decodeGroupMessageValue,
  decodeGroupPlaintext,
} from "../lib/wire/group.ts";
import {
  decodeRecords,
  encodeRecords,
  RecordType,
  type TlvRecord,
} from "../lib/wire/tlv.ts";
import { UdpTransport } from "../lib/runtime/udp.ts";
import { assertPrivateNetns } from "./_netns.ts";

/**
 * "relay": the mcrelay protocol (hybrid profile). "group": the same, the
 * clients registering as GROUP_CAPABLE, so relayed messages come as
 * GROUP_MESSAGE under the epoch key (protocol.md section 9; the server needs
 * group fan-out on). "plain": the bench's plain UDP relay.
 */
export type Mode = "relay" | "group" | "plain";

/** Largest datagram the generator sends (protocol.md default MTU). */
export const MTU = 1200;
/** Bytes of the message header: run, sender, seq, sent time. */
export const MESSAGE_HEADER_SIZE = 20;

const encoder = new TextEncoder();
const DISCONNECT_TEXT = encoder.encode("DISCONNECT");
const PLAIN_REGISTER = new Uint8Array([0x52]); // "R"
const PLAIN_BYE = encoder.encode("BYE");

/** Receives one decrypted message: recipient index, plaintext, receive time. */
export type Sink = (
  recipient: number,
  plaintext: Uint8Array,
  receivedAt: number,
) => void;

/** What a client saw besides messages. */
export interface ClientCounters {
  /** Datagrams not from the server. */
  foreign: number;
  /** Datagrams or streams that did not parse. */
  malformed: number;
  /** Tokens that did not decrypt under the client's key. */
  decryptFailed: number;
  /** NOTICE records by code. */
  notices: Record<number, number>;
}

/** Bench keys keep one AES cipher each, as the server's member keys do (PERFORMANCE.md). */
const PERSISTENT = { persistentCiphers: true } as const;

/** A client key and its SYMMETRIC_KEY value (RSA-OAEP under the server key), made ahead. */
interface PreparedRegistration {
  readonly key: FernetKey;
  readonly block: Uint8Array;
}

/**
 * The clients' side of key exchanges, shared by every bench client: one RSA
 * import per server PEM, and registrations prepared ahead of a timed phase.
 * A real group's clients encrypt their keys on their own machines; here they
 * would share the server's 2 cores (RSA encryption costs the generator about
 * 140 µs per key), so the key-exchange phase prepares its keys before timing.
 */
export class KeyCache {
  readonly #serverKeys = new Map<string, Promise<RsaPublicKey>>();
  readonly #prepared = new Map<string, PreparedRegistration[]>();

  /** The server key of `pem`, imported once. */
  serverKey(pem: string): Promise<RsaPublicKey> {
    let key = this.#serverKeys.get(pem);
    if (!key) {
      key = RsaPublicKey.fromPem(pem);
      this.#serverKeys.set(pem, key);
    }
    return key;
  }

  /** Makes `count` fresh client keys, each encrypted under the server key of `pem`. */
  async prepare(pem: string, count: number): Promise<void> {
    const serverKey = await this.serverKey(pem);
    const made = await Promise.all(
      Array.from({ length: count }, async () => {
        const key = await FernetKey.generate("node", PERSISTENT);
        const block = await serverKey.encrypt(encoder.encode(key.text));
        return { key, block };
      }),
    );
    const list = this.#prepared.get(pem) ?? [];
    list.push(...made);
    this.#prepared.set(pem, list);
  }

  /** A prepared registration for the server key of `pem`, used once; undefined when none is left. */
  take(pem: string): PreparedRegistration | undefined {
    return this.#prepared.get(pem)?.pop();
  }

  /** Prepared registrations left for `pem`. */
  left(pem: string): number {
    return this.#prepared.get(pem)?.length ?? 0;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function randomU32(): number {
  return crypto.getRandomValues(new Uint32Array(1))[0];
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** One bench client: a UDP socket on 127.0.0.1, a Fernet key (relay mode), a receive loop. */
export class BenchClient {
  /** Position in the current group (the recipient index given to the sink). */
  index = -1;
  /** Receives messages; undefined drops them. */
  sink: Sink | undefined;
  readonly counters: ClientCounters = {
    foreign: 0,
    malformed: 0,
    decryptFailed: 0,
    notices: {},
  };
  readonly mode: Mode;
  readonly server: PeerAddress;
  readonly transport: UdpTransport;
  /** Group mode with a downstream address: the socket joined to it. */
  readonly downstream: UdpTransport | undefined;
  /** This client's address value (protocol.md section 2.1). */
  readonly #ownAddress: Uint8Array;
  /** The client's Fernet key (relay mode), set by {@linkcode register}. */
  key: FernetKey | undefined;
  /** The server key's PEM, from the last key answer. */
  serverPem: string | undefined;
  #registered = false;
  readonly #reassembler = new Reassembler();
  #keyAnswer:
    | ((answer: { cookie: Uint8Array; pem: string }) => void)
    | undefined;
  #welcome: ((value: Uint8Array) => void) | undefined;
  #ack: (() => void) | undefined;
  #cookie: Uint8Array | undefined;
  /** Group mode: the epoch keys received, the newest last (two kept). */
  #groupKeys: { epoch: number; key: FernetKey }[] = [];
  readonly #loop: Promise<void>;

  private constructor(
    mode: Mode,
    server: PeerAddress,
    transport: UdpTransport,
    downstream: UdpTransport | undefined,
  ) {
    this.mode = mode;
    this.server = server;
    this.transport = transport;
    this.downstream = downstream;
    this.#ownAddress = encodeAddress(transport.localAddress);
    this.#loop = Promise.all([
      this.#receive(transport),
      downstream && this.#receive(downstream),
    ]).then(() => {});
  }

  /**
   * Binds a socket on 127.0.0.1. In relay mode the Fernet key comes with the
   * registration: a prepared one when the {@linkcode KeyCache} has one left,
   * else a fresh one. In group mode with `downstream` (a multicast group and
   * port: run only inside a private network namespace) a second socket
   * joins it on 127.0.0.1 for the GROUP_MESSAGE datagrams.
   */
  static async open(
    mode: Mode,
    server: PeerAddress,
    downstream?: PeerAddress,
  ): Promise<BenchClient> {
    const transport = await UdpTransport.bind({
      hostname: "127.0.0.1",
      port: 0,
    });
    let joined: UdpTransport | undefined;
    if (mode === "group" && downstream) {
      try {
        await assertPrivateNetns("joining a downstream group");
        joined = await UdpTransport.bind({
          hostname: downstream.hostname,
          port: downstream.port,
          reuseAddress: true,
          multicast: {
            group: downstream.hostname,
            interfaceAddress: "127.0.0.1",
          },
        });
      } catch (error) {
        transport.close();
        throw error;
      }
    }
    return new BenchClient(mode, server, transport, joined);
  }

  /** Whether the last {@linkcode register} succeeded (and no disconnect since). */
  get registered(): boolean {
    return this.#registered;
  }

  /**
   * Runs the key exchange (relay) or the plain registration, retrying with
   * backoff (250 ms doubling to 2 s) until `deadline` (a `performance.now()` time).
   * @returns whether the server confirmed the registration in time
   */
  async register(deadline: number, keys: KeyCache): Promise<boolean> {
    let timeout = 250;
    if (this.mode === "plain") {
      while (performance.now() < deadline) {
        const acked = await this.#exchange(PLAIN_REGISTER, timeout, (done) => {
          this.#ack = () => done(true);
        });
        this.#ack = undefined;
        if (acked) return this.#registered = true;
        timeout = Math.min(timeout * 2, 2000);
      }
      return false;
    }
    const request = encodeRecords([{
      type: RecordType.KEY_REQUEST,
      value: new Uint8Array(MTU - 4),
    }]);
    while (performance.now() < deadline) {
      const answer = await this.#exchange<{ cookie: Uint8Array; pem: string }>(
        request,
        timeout,
        (done) => this.#keyAnswer = done,
      );
      this.#keyAnswer = undefined;
      if (!answer) {
        timeout = Math.min(timeout * 2, 2000);
        continue;
      }
      this.serverPem = answer.pem;
      const prepared = keys.take(answer.pem);
      if (prepared) {
        this.key?.[Symbol.dispose]();
        this.key = prepared.key;
      }
      this.key ??= await FernetKey.generate("node", PERSISTENT);
      const block = prepared?.block ??
        await (await keys.serverKey(answer.pem)).encrypt(
          encoder.encode(this.key.text),
        );
      const stream = encodeRecords([
        { type: RecordType.COOKIE, value: answer.cookie },
        { type: RecordType.SYMMETRIC_KEY, value: block },
        ...(this.mode === "group"
          ? [{ type: RecordType.GROUP_CAPABLE, value: new Uint8Array(0) }]
          : []),
      ]);
      for (let tries = 0; tries < 3 && performance.now() < deadline; tries++) {
        const welcome = await this.#exchange<Uint8Array>(
          stream,
          timeout,
          (done) => this.#welcome = done,
        );
        this.#welcome = undefined;
        if (welcome && await this.#welcomeVerifies(welcome)) {
          return this.#registered = true;
        }
        timeout = Math.min(timeout * 2, 2000);
      }
    }
    return false;
  }

  async #welcomeVerifies(token: Uint8Array): Promise<boolean> {
    try {
      const { plaintext } = await this.key!.decrypt(token);
      return bytesEqual(plaintext, encodeAddress(this.transport.localAddress));
    } catch {
      return false;
    }
  }

  /** Sends `stream` (fragmented past the MTU) and waits up to `timeoutMs` for `arm`'s callback. */
  async #exchange<T>(
    stream: Uint8Array,
    timeoutMs: number,
    arm: (done: (value: T) => void) => void,
  ): Promise<T | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const result = new Promise<T | undefined>((resolve) => {
      arm(resolve);
      timer = setTimeout(() => resolve(undefined), timeoutMs);
    });
    await this.#sendStream(stream).catch(() => {});
    const value = await result;
    clearTimeout(timer);
    return value;
  }

  async #sendStream(stream: Uint8Array): Promise<void> {
    if (stream.length <= MTU) {
      await this.transport.send(stream, this.server);
      return;
    }
    for (const datagram of fragmentStream(stream, MTU, randomU32())) {
      await this.transport.send(datagram, this.server);
    }
  }

  /** Sends one message: a FERNET_MESSAGE under this client's key (relay) or the bare plaintext (plain). */
  async sendMessage(plaintext: Uint8Array): Promise<void> {
    if (this.mode === "plain") {
      await this.transport.send(plaintext, this.server);
      return;
    }
    const token = await this.key!.encrypt(plaintext);
    await this.#sendStream(
      encodeRecords([{ type: RecordType.FERNET_MESSAGE, value: token }]),
    );
  }

  /** Leaves the group: an authenticated DISCONNECT (relay) or "BYE" (plain). */
  async disconnect(): Promise<void> {
    if (!this.#registered) return;
    this.#registered = false;
    const datagram = this.mode === "plain" ? PLAIN_BYE : encodeRecords([{
      type: RecordType.DISCONNECT,
      value: await this.key!.encrypt(DISCONNECT_TEXT),
    }]);
    await this.transport.send(datagram, this.server).catch(() => {});
  }

  /** Closes the socket and waits for the receive loop to end. */
  async close(): Promise<void> {
    this.transport.close();
    this.downstream?.close();
    await this.#loop;
    this.key?.[Symbol.dispose]();
    for (const { key } of this.#groupKeys) key[Symbol.dispose]();
    this.#groupKeys = [];
  }

  async #receive(transport: UdpTransport): Promise<void> {
    const server = this.server;
    try {
      for await (const { data, from } of transport) {
        if (from.port !== server.port || from.hostname !== server.hostname) {
          this.counters.foreign++;
          continue;
        }
        if (this.mode === "plain") {
          if (data.length === 1) this.#ack?.();
          else this.sink?.(this.index, data, performance.now());
          continue;
        }
        let records: TlvRecord[];
        try {
          records = decodeRecords(data);
        } catch {
          this.counters.malformed++;
          continue;
        }
        await this.#records(records);
      }
    } catch {
      // Socket closed under the loop.
    }
  }

  /** A GROUP_KEY under this client's key: the epoch key kept (the previous one too, for messages in flight). */
  #onGroupKey(value: Uint8Array): void {
    try {
      const grant = decodeGroupKeyPlaintext(
        this.key!.decryptSync(value).plaintext,
      );
      // A grant of an epoch already held (the server answering a resent
      // registration) changes nothing.
      if (this.#groupKeys.some((k) => k.epoch === grant.epoch)) return;
      const key = FernetKey.fromTextSync(grant.keyText, PERSISTENT);
      this.#groupKeys.push({ epoch: grant.epoch, key });
      this.#groupKeys.sort((a, b) => a.epoch - b.epoch);
      for (const old of this.#groupKeys.splice(0, this.#groupKeys.length - 2)) {
        old.key[Symbol.dispose]();
      }
    } catch {
      this.counters.decryptFailed++;
    }
  }

  /** A GROUP_MESSAGE: opened under its epoch's key; this client's own messages skipped. */
  #onGroupMessage(value: Uint8Array): void {
    const sink = this.sink;
    if (!sink) return;
    try {
      const { epoch, token } = decodeGroupMessageValue(value);
      const key = this.#groupKeys.find((k) => k.epoch === epoch)?.key;
      if (!key) {
        this.counters.decryptFailed++;
        return;
      }
      const { senderValue, message } = decodeGroupPlaintext(
        key.decryptSync(token).plaintext,
      );
      if (bytesEqual(senderValue, this.#ownAddress)) return;
      sink(this.index, message, performance.now());
    } catch {
      this.counters.decryptFailed++;
    }
  }

  async #records(records: TlvRecord[]): Promise<void> {
    for (const record of records) {
      switch (record.type) {
        case RecordType.FRAGMENT: {
          const outcome = this.#reassembler.addRecord("server", record.value);
          if (outcome.kind === "dropped") this.counters.malformed++;
          if (outcome.kind === "stream") await this.#records(outcome.records);
          break;
        }
        case RecordType.COOKIE:
          this.#cookie = record.value;
          break;
        case RecordType.SERVER_PUBLIC_KEY:
          if (this.#cookie) {
            this.#keyAnswer?.({
              cookie: this.#cookie,
              pem: new TextDecoder().decode(record.value),
            });
          }
          this.#cookie = undefined;
          break;
        case RecordType.WELCOME:
          this.#welcome?.(record.value);
          break;
        case RecordType.FERNET_MESSAGE: {
          const sink = this.sink;
          if (!sink) break;
          let plaintext: Uint8Array;
          try {
            const key = this.key!;
            plaintext = key.canRunSync
              ? key.decryptSync(record.value).plaintext
              : (await key.decrypt(record.value)).plaintext;
          } catch {
            this.counters.decryptFailed++;
            break;
          }
          sink(this.index, plaintext, performance.now());
          break;
        }
        case RecordType.GROUP_KEY:
          this.#onGroupKey(record.value);
          break;
        case RecordType.GROUP_MESSAGE:
          this.#onGroupMessage(record.value);
          break;
        case RecordType.NOTICE: {
          const code = record.value.length >= 2
            ? (record.value[0] << 8) | record.value[1]
            : 0;
          this.counters.notices[code] = (this.counters.notices[code] ?? 0) + 1;
          break;
        }
        default:
          // SENDER, NOTIFY_CONNECT, NOTIFY_DISCONNECT: not needed here.
          break;
      }
    }
  }
}

/** Registrations of many clients with bounded concurrency. */
export interface RegistrationResult {
  /** Clients that registered, in completion order. */
  readonly clients: BenchClient[];
  /** Clients that did not register before the deadline (already closed). */
  readonly failed: number;
  /** Seconds from the first request to the last confirmation. */
  readonly durationS: number;
  /** Per-registration time from first request to confirmation, ms. */
  readonly latenciesMs: Float64Array;
}

/**
 * Opens and registers `count` clients, at most `concurrency` key exchanges at once.
 * Clients that fail are closed; the caller owns (and must close) the others.
 */
export async function registerMany(
  mode: Mode,
  server: PeerAddress,
  count: number,
  concurrency: number,
  timeoutMs: number,
  keys: KeyCache,
  downstream?: PeerAddress,
): Promise<RegistrationResult> {
  const clients: BenchClient[] = [];
  const latencies: number[] = [];
  let failed = 0;
  let next = 0;
  const t0 = performance.now();
  let last = t0;
  const deadline = t0 + timeoutMs;
  const worker = async () => {
    while (next < count) {
      next++;
      const client = await BenchClient.open(mode, server, downstream);
      const start = performance.now();
      if (await client.register(deadline, keys)) {
        last = performance.now();
        latencies.push(last - start);
        clients.push(client);
      } else {
        failed++;
        await client.close();
      }
    }
  };
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, worker),
  );
  return {
    clients,
    failed,
    durationS: (last - t0) / 1000,
    latenciesMs: Float64Array.from(latencies),
  };
}

/** Disconnects and closes clients. */
export async function closeAll(clients: readonly BenchClient[]): Promise<void> {
  await Promise.all(clients.map((c) => c.disconnect()));
  await Promise.all(clients.map((c) => c.close()));
}

/** Latency summary in milliseconds. */
export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly max: number;
  readonly mean: number;
}

/** Summarises samples (sorts a copy). */
export function summarize(samples: Float64Array): LatencySummary {
  const sorted = samples.slice().sort();
  const n = sorted.length;
  const at = (p: number) =>
    n === 0 ? NaN : sorted[Math.min(n - 1, Math.max(0, Math.ceil(p * n) - 1))];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += sorted[i];
  return {
    count: n,
    p50: at(0.5),
    p90: at(0.9),
    p99: at(0.99),
    max: n === 0 ? NaN : sorted[n - 1],
    mean: n === 0 ? NaN : sum / n,
  };
}

/** One traffic run over a registered group. */
export interface TrafficSpec {
  /** The group: every client sends and receives. At least 2. */
  readonly clients: readonly BenchClient[];
  /** Plaintext bytes per message, at least {@linkcode MESSAGE_HEADER_SIZE}. */
  readonly size: number;
  /** Closed loop: messages per sender. */
  readonly messagesPerClient: number;
  /** Closed loop: incomplete messages one sender keeps at most. */
  readonly window: number;
  /** Closed loop: incomplete messages the whole group keeps at most (senders take turns). Default: no cap beyond the windows. */
  readonly groupWindow?: number;
  /** Open loop instead: send `totalMessages` round-robin at this many messages per second. */
  readonly pacedRate?: number;
  /** Open loop: messages in all. */
  readonly totalMessages?: number;
  /**
   * A message not complete this long after sending is given up: its window
   * slot is freed (its deliveries still count if they arrive before the
   * end). The bound actually used is 10 times the running average time to
   * complete a message, at least 250 ms and at most this.
   */
  readonly giveUpMs: number;
  /** Once everything is sent and no message is in flight, the run ends after this long without a delivery. */
  readonly idleMs: number;
  /** Hard bound on the run. */
  readonly maxDurationMs: number;
}

/** What one traffic run measured. */
export interface TrafficResult {
  readonly senders: number;
  readonly recipientsPerMessage: number;
  readonly messagesSent: number;
  /** Messages whose every recipient got them. */
  readonly messagesComplete: number;
  readonly expectedDeliveries: number;
  /** Distinct (message, recipient) pairs received. */
  readonly deliveries: number;
  readonly duplicates: number;
  /** expectedDeliveries - deliveries: never arrived before the run ended. */
  readonly lost: number;
  /** Messages given up after `giveUpMs` (their slot freed; some may have completed later). */
  readonly givenUp: number;
  /** Messages that were not ours or not of this run. */
  readonly stray: number;
  readonly sendErrors: number;
  /** Whether the run hit `maxDurationMs`. */
  readonly timedOut: boolean;
  /** First send to last delivery. */
  readonly durationS: number;
  readonly deliveriesPerSecond: number;
  readonly messagesPerSecond: number;
  readonly latencyMs: LatencySummary;
  /** Open loop: the pacer's worst lateness, ms. */
  readonly paceLagMs?: number;
}

let nextRunId = 1;

// Message states (0: not sent yet).
const IN_FLIGHT = 1;
const COMPLETE = 2;
const GIVEN_UP = 3;

/** Runs traffic over a registered group and measures it. */
export function runTraffic(spec: TrafficSpec): Promise<TrafficResult> {
  const { clients, size, giveUpMs } = spec;
  const n = clients.length;
  const recipients = n - 1;
  const paced = spec.pacedRate !== undefined;
  const total = paced ? spec.totalMessages! : n * spec.messagesPerClient;
  const perSender = paced ? Math.ceil(total / n) : spec.messagesPerClient;
  const slots = n * perSender;
  const groupCap = spec.groupWindow ?? Infinity;
  const runId = nextRunId++;

  const state = new Uint8Array(slots);
  const received = new Uint32Array(slots);
  const seen = new Uint8Array(slots * n);
  const sentAt = new Float64Array(slots);
  const latencies = new Float64Array(Math.max(1, total * recipients));
  const inFlight = new Int32Array(n);
  const nextSeq = new Int32Array(n);
  const queues: number[][] = Array.from({ length: n }, () => []);
  const heads = new Int32Array(n);
  let totalInFlight = 0;
  let turn = 0;
  let latencyCount = 0;
  let deliveries = 0;
  let duplicates = 0;
  let stray = 0;
  let sendErrors = 0;
  let messagesSent = 0;
  let messagesComplete = 0;
  let givenUp = 0;
  let firstSend = NaN;
  let lastDelivery = NaN;
  let lastActivity = performance.now();
  /** Exponentially weighted average time to complete a message, ms. */
  let completionMs = 0;
  let paceLag = 0;
  let finished = false;
  let timedOut = false;
  let sentAll = false;

  let resolveDone!: () => void;
  const done = new Promise<void>((resolve) => resolveDone = resolve);

  const send = (s: number, q: number) => {
    const idx = s * perSender + q;
    const plaintext = new Uint8Array(size);
    const view = new DataView(plaintext.buffer);
    view.setUint32(0, runId);
    view.setUint32(4, s);
    view.setUint32(8, q);
    const now = performance.now();
    view.setFloat64(12, now);
    if (messagesSent === 0) firstSend = now;
    messagesSent++;
    if (messagesSent === total) sentAll = true;
    sentAt[idx] = now;
    state[idx] = IN_FLIGHT;
    inFlight[s]++;
    totalInFlight++;
    queues[s].push(idx);
    clients[s].sendMessage(plaintext).catch(() => sendErrors++);
  };

  const release = (s: number) => {
    inFlight[s]--;
    totalInFlight--;
  };

  // Closed loop: fills free slots, senders taking turns.
  const pump = () => {
    if (paced) return;
    let idle = 0;
    while (totalInFlight < groupCap && idle < n) {
      const s = turn;
      turn = (turn + 1) % n;
      if (inFlight[s] < spec.window && nextSeq[s] < perSender) {
        send(s, nextSeq[s]++);
        idle = 0;
      } else {
        idle++;
      }
    }
  };

  const finish = () => {
    if (!finished) resolveDone();
  };

  const sink: Sink = (r, plaintext, receivedAt) => {
    if (finished || plaintext.length < MESSAGE_HEADER_SIZE) {
      stray++;
      return;
    }
    const view = new DataView(
      plaintext.buffer,
      plaintext.byteOffset,
      plaintext.byteLength,
    );
    if (view.getUint32(0) !== runId) {
      stray++;
      return;
    }
    const s = view.getUint32(4);
    const q = view.getUint32(8);
    if (s >= n || q >= perSender || s === r) {
      stray++;
      return;
    }
    const idx = s * perSender + q;
    const bit = idx * n + r;
    if (seen[bit] !== 0) {
      duplicates++;
      return;
    }
    seen[bit] = 1;
    latencies[latencyCount++] = receivedAt - view.getFloat64(12);
    deliveries++;
    lastDelivery = receivedAt;
    lastActivity = receivedAt;
    if (++received[idx] === recipients) {
      messagesComplete++;
      const took = receivedAt - sentAt[idx];
      completionMs = completionMs === 0
        ? took
        : completionMs + (took - completionMs) / 32;
      if (state[idx] === IN_FLIGHT) {
        state[idx] = COMPLETE;
        release(s);
        pump();
      }
      if (sentAll && messagesComplete === total) finish();
    }
  };

  // Frees the slots of messages that take too long; ends the run when idle.
  const reaper = setInterval(() => {
    const now = performance.now();
    const giveUp = completionMs === 0
      ? giveUpMs
      : Math.min(giveUpMs, Math.max(250, 10 * completionMs));
    for (let s = 0; s < n; s++) {
      const queue = queues[s];
      let head = heads[s];
      while (head < queue.length) {
        const idx = queue[head];
        if (state[idx] === IN_FLIGHT) {
          if (now - sentAt[idx] < giveUp) break;
          state[idx] = GIVEN_UP;
          release(s);
          givenUp++;
        }
        head++;
      }
      heads[s] = head;
      if (head > 1024 && head * 2 > queue.length) {
        queue.splice(0, head);
        heads[s] = 0;
      }
    }
    pump();
    if (sentAll && totalInFlight === 0 && now - lastActivity > spec.idleMs) {
      finish();
    }
  }, 20);

  const limit = setTimeout(() => {
    timedOut = true;
    finish();
  }, spec.maxDurationMs);

  for (const [i, client] of clients.entries()) {
    client.index = i;
    client.sink = sink;
  }

  if (paced) {
    const interval = 1000 / spec.pacedRate!;
    (async () => {
      const t0 = performance.now();
      let k = 0;
      while (k < total && !finished && !timedOut) {
        const now = performance.now();
        while (k < total && t0 + k * interval <= now) {
          paceLag = Math.max(paceLag, now - (t0 + k * interval));
          send(k % n, Math.floor(k / n));
          k++;
        }
        if (k < total) {
          await sleep(Math.max(0, t0 + k * interval - performance.now()));
        }
      }
    })();
  } else {
    pump();
  }

  return done.then(async () => {
    clearInterval(reaper);
    clearTimeout(limit);
    // A short grace period to catch duplicates of complete messages.
    await sleep(100);
    finished = true;
    for (const client of clients) client.sink = undefined;
    const expected = messagesSent * recipients;
    const durationS = Number.isNaN(lastDelivery)
      ? 0
      : (lastDelivery - firstSend) / 1000;
    const result: TrafficResult = {
      senders: n,
      recipientsPerMessage: recipients,
      messagesSent,
      messagesComplete,
      expectedDeliveries: expected,
      deliveries,
      duplicates,
      lost: expected - deliveries,
      givenUp,
      stray,
      sendErrors,
      timedOut,
      durationS,
      deliveriesPerSecond: durationS > 0 ? deliveries / durationS : 0,
      messagesPerSecond: durationS > 0 ? messagesComplete / durationS : 0,
      latencyMs: summarize(latencies.subarray(0, latencyCount)),
      ...(paced ? { paceLagMs: paceLag } : {}),
    };
    return result;
  });
}

/** Registration flood: `concurrency` loops of open, register, disconnect, close until `stop.stopped`. */
export interface FloodResult {
  readonly completed: number;
  readonly failed: number;
  readonly durationS: number;
  readonly perSecond: number;
  readonly latencyMs: LatencySummary;
}

/** Runs a registration flood until `stop.stopped` is set; resolves when every loop has ended. */
export async function registrationFlood(
  server: PeerAddress,
  concurrency: number,
  stop: { stopped: boolean },
  keys: KeyCache,
): Promise<FloodResult> {
  let completed = 0;
  let failed = 0;
  const latencies: number[] = [];
  const t0 = performance.now();
  const loop = async () => {
    while (!stop.stopped) {
      const client = await BenchClient.open("relay", server);
      const start = performance.now();
      if (await client.register(start + 5_000, keys)) {
        latencies.push(performance.now() - start);
        completed++;
        await client.disconnect();
      } else {
        failed++;
      }
      await client.close();
    }
  };
  await Promise.all(Array.from({ length: concurrency }, loop));
  const durationS = (performance.now() - t0) / 1000;
  return {
    completed,
    failed,
    durationS,
    perSecond: completed / durationS,
    latencyMs: summarize(Float64Array.from(latencies)),
  };
}
