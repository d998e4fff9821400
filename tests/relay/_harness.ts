/**
 * Shared helpers of the end-to-end tests: the {@linkcode Recorder} of
 * tests/_support/recorder.ts (re-exported) keeps client events, log records
 * and datagrams so a test awaits them; a {@linkcode TapTransport} records
 * the datagrams a socket receives and sends and can send raw bytes from the
 * same socket; a {@linkcode Harness} starts servers and clients on 127.0.0.1
 * (clients with {@linkcode PATIENT_RETRIES}) and closes everything it
 * started.
 *
 * Traffic goes to 127.0.0.1 only: never to a multicast group.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  RelayServer,
  type RelayServerOptions,
} from "../../lib/relay/server/server.ts";
import {
  type ClientEvent,
  RelayClient,
  type RelayClientOptions,
} from "../../lib/relay/client/client.ts";
import type { LogRecord } from "../../lib/log.ts";
import { UdpTransport } from "../../lib/runtime/udp.ts";
import type {
  Datagram,
  DatagramTransport,
} from "../../lib/runtime/transport.ts";
import { formatAddress, type PeerAddress } from "../../lib/wire/address.ts";
import {
  decodeRecords,
  encodeRecords,
  RecordType,
  type TlvRecord,
} from "../../lib/wire/tlv.ts";
import { Recorder } from "../_support/recorder.ts";

export { Recorder, WAIT_TIMEOUT_MS } from "../_support/recorder.ts";

/** Loopback only. */
export const LOOPBACK = "127.0.0.1";

/**
 * Client retries for a test: quick, and enough of them (about 20 s in all)
 * that a key exchange ends with its answer, not with a deadline: on a busy
 * machine the server's RSA threads (lowest priority) can be seconds late.
 * The registrations a client repeats meanwhile are counted by the server;
 * see {@linkcode registrationRetries}.
 */
export const PATIENT_RETRIES = {
  retryInitialMs: 100,
  retryMaxMs: 400,
  retryAttempts: 50,
} as const;

/** A datagram a {@linkcode TapTransport} sent, with its destination. */
export interface SentDatagram {
  readonly data: Uint8Array;
  readonly to: PeerAddress;
}

/**
 * Wraps a transport: records every datagram received and sent, sends raw
 * bytes from the same socket ({@linkcode sendRaw}), and can silently discard
 * the wrapped owner's sends from some point on ({@linkcode discardSends}), as
 * if the process had crashed. Use {@linkcode listen} when nothing else reads
 * it (a raw test peer).
 */
export class TapTransport implements DatagramTransport, AsyncDisposable {
  readonly received: Recorder<Datagram>;
  readonly sent: Recorder<SentDatagram>;
  /** Sends swallowed after {@linkcode discardSends}. */
  discarded = 0;
  #discarding = false;
  #listening: Promise<void> | undefined;

  constructor(readonly inner: DatagramTransport, name = "tap") {
    this.received = new Recorder<Datagram>(`${name} received`);
    this.sent = new Recorder<SentDatagram>(`${name} sent`);
  }

  /** Binds a UDP socket on 127.0.0.1 (port 0: a free one) and wraps it. */
  static async bind(name = "tap", port = 0): Promise<TapTransport> {
    return new TapTransport(
      await UdpTransport.bind({ hostname: LOOPBACK, port }),
      name,
    );
  }

  get localAddress(): PeerAddress {
    return this.inner.localAddress;
  }

  /** `IP:PORT` of the socket. */
  get address(): string {
    return formatAddress(this.inner.localAddress);
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Datagram> {
    for await (const datagram of this.inner) {
      this.received.push(datagram);
      yield datagram;
    }
  }

  /**
   * The wrapped transport's batches, recorded (single datagrams as batches
   * of one when it has none).
   */
  async *receiveBatches(): AsyncIterableIterator<readonly Datagram[]> {
    if (!this.inner.receiveBatches) {
      for await (const datagram of this) yield [datagram];
      return;
    }
    for await (const batch of this.inner.receiveBatches()) {
      for (const datagram of batch) this.received.push(datagram);
      yield batch;
    }
  }

  /** The owner's send: recorded (or discarded after {@linkcode discardSends}). */
  send(data: Uint8Array, to: PeerAddress): Promise<void> {
    if (this.#discarding) {
      this.discarded++;
      return Promise.resolve();
    }
    this.sent.push({ data: data.slice(), to });
    return this.inner.send(data, to);
  }

  /** Sends raw bytes from this socket (not recorded in {@linkcode sent}). */
  sendRaw(data: Uint8Array, to: PeerAddress): Promise<void> {
    return this.inner.send(data, to);
  }

  /** From now on the owner's sends are silently dropped (a crash, seen from outside). */
  discardSends(): void {
    this.#discarding = true;
  }

  /** Ends {@linkcode discardSends}: the owner's sends go out again (a network that came back). */
  resumeSends(): void {
    this.#discarding = false;
  }

  /** Reads datagrams into {@linkcode received} until closed (for a raw peer nobody else reads). */
  listen(): this {
    this.#listening ??= (async () => {
      for await (const _ of this) {
        // recorded by the iterator
      }
    })();
    return this;
  }

  close(): void {
    this.inner.close();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.#listening;
  }
}

/** Records of a datagram (empty when malformed). */
export function recordsOf(data: Uint8Array): TlvRecord[] {
  try {
    return decodeRecords(data);
  } catch {
    return [];
  }
}

/** Whether a datagram carries a record of `type` (at top level). */
export function hasRecord(data: Uint8Array, type: number): boolean {
  return recordsOf(data).some((r) => r.type === type);
}

/**
 * The server drop counters that the clients' own registration retries
 * account for, read from what each client sent: a registration datagram
 * (COOKIE + key record) sent again as the same bytes is a retry whose
 * WELCOME was late (the server's RSA threads run at low priority, so on a
 * busy machine a retry fires before the first WELCOME comes back). The
 * server answers each without RSA work and counts it
 * `registration_repeated` (PROTOCOL.md section 10). Empty when no client
 * retried, so a test can compare it with the whole `stats().dropped`.
 */
export function registrationRetries(
  clients: readonly ClientHandle[],
): Record<string, number> {
  let repeated = 0;
  for (const c of clients) {
    const registrations = c.tap.sent.items
      .filter((d) =>
        hasRecord(d.data, RecordType.SYMMETRIC_KEY) ||
        hasRecord(d.data, RecordType.CLIENT_PUBLIC_KEY)
      )
      .map((d) => d.data.join());
    repeated += registrations.length - new Set(registrations).size;
  }
  return repeated === 0 ? {} : { registration_repeated: repeated };
}

/** The value of the first record of `type` in a datagram. */
export function recordValue(
  data: Uint8Array,
  type: number,
): Uint8Array | undefined {
  return recordsOf(data).find((r) => r.type === type)?.value;
}

/** A KEY_REQUEST datagram padded with zeros to exactly `size` bytes. */
export function keyRequest(size: number): Uint8Array {
  return encodeRecords([{
    type: RecordType.KEY_REQUEST,
    value: new Uint8Array(size - 4),
  }]);
}

/**
 * Sends a full-size key request from `peer` and returns the cookie of the
 * answer (checking the answer's PEM when `expectedPem` is given), waiting
 * `timeoutMs` at most (the harness default otherwise).
 */
export async function fetchCookie(
  peer: TapTransport,
  server: PeerAddress,
  expectedPem?: string,
  timeoutMs?: number,
): Promise<Uint8Array> {
  const from = peer.received.mark();
  await peer.sendRaw(keyRequest(1200), server);
  const answer = await peer.received.waitFor(
    (d) => recordValue(d.data, RecordType.SERVER_PUBLIC_KEY) !== undefined,
    "the key answer",
    { from, ...(timeoutMs === undefined ? {} : { timeoutMs }) },
  );
  if (expectedPem !== undefined) {
    const pem = recordValue(answer.data, RecordType.SERVER_PUBLIC_KEY)!;
    assert.equal(new TextDecoder().decode(pem), expectedPem);
  }
  const cookie = recordValue(answer.data, RecordType.COOKIE);
  assert.ok(cookie, "no COOKIE in the key answer");
  assert.equal(cookie.length, 20);
  return cookie.slice();
}

/** A text of exactly `size` ASCII bytes starting with `label`. */
export function sizedText(label: string, size: number): string {
  if (label.length >= size) return label.slice(0, size);
  const filler = "abcdefghijklmnopqrstuvwxyz0123456789";
  let text = `${label}|`;
  while (text.length < size) text += filler;
  return text.slice(0, size);
}

/** A started server with its tap, log and address. */
export interface ServerHandle {
  readonly server: RelayServer;
  /** The server's transport, wrapped. */
  readonly tap: TapTransport;
  /** Every log record the server emitted. */
  readonly log: Recorder<LogRecord>;
  readonly address: PeerAddress;
  readonly port: number;
  /** Waits for the first `drop` log record with `reason` (first per source and reason in 10 s). */
  waitDrop(reason: string, from?: number): Promise<LogRecord>;
}

/** A connected client with its recorded events and tap. */
export interface ClientHandle {
  readonly name: string;
  readonly client: RelayClient;
  readonly tap: TapTransport;
  readonly events: Recorder<ClientEvent>;
  /** Every log record the client emitted. */
  readonly log: Recorder<LogRecord>;
  /** The client's address as the server sees it. */
  readonly address: string;
  /** Waits for a message with exactly `text` (from `from`, when given). */
  waitMessage(
    text: string,
    options?: { sender?: string; from?: number },
  ): Promise<ClientEvent>;
  /** Waits for a join or leave of `address`. */
  waitPresence(
    type: "join" | "leave",
    address: string,
    from?: number,
  ): Promise<ClientEvent>;
  /** Waits for an event of `type`. */
  waitEvent(type: ClientEvent["type"], from?: number): Promise<ClientEvent>;
  /** Received messages (from index `from` of the events). */
  messages(from?: number): Extract<ClientEvent, { type: "message" }>[];
}

/** Options of {@linkcode Harness.startServer}. */
export type StartServerOptions =
  & Omit<RelayServerOptions, "transport" | "privateKey">
  & Partial<Pick<RelayServerOptions, "privateKey">>
  & {
    /** Port to bind on 127.0.0.1 (0: a free one). */
    readonly port?: number;
    /** A transport to use instead of a fresh UDP socket (wrapped in a tap). */
    readonly transport?: DatagramTransport;
  };

/** Options of {@linkcode Harness.connect}. */
export type ConnectOptions =
  & Omit<RelayClientOptions, "transport" | "target">
  & {
    /** The server to talk to (default: the last one started). */
    readonly server?: ServerHandle;
    /** Where to send, instead of `server.address`. */
    readonly target?: PeerAddress;
    /** A transport to use instead of a fresh UDP socket (wrapped in a tap). */
    readonly transport?: DatagramTransport;
  };

/**
 * Starts servers and clients for one test and closes all of them (clients
 * first, then servers, then raw sockets) on dispose: `await using h = new
 * Harness(key)`.
 */
export class Harness implements AsyncDisposable {
  readonly servers: ServerHandle[] = [];
  readonly clients: ClientHandle[] = [];
  readonly #sockets: TapTransport[] = [];

  /** @param privateKey the default server key (generate once per file) */
  constructor(readonly privateKey?: RelayServerOptions["privateKey"]) {}

  /** Starts a relay server on 127.0.0.1 (generous handshake limits unless given). */
  async startServer(options: StartServerOptions = {}): Promise<ServerHandle> {
    const { port = 0, transport, ...rest } = options;
    const privateKey = rest.privateKey ?? this.privateKey;
    if (!privateKey) throw new Error("Harness.startServer needs a privateKey");
    const tap = new TapTransport(
      transport ?? await UdpTransport.bind({ hostname: LOOPBACK, port }),
      `server ${this.servers.length}`,
    );
    const log = new Recorder<LogRecord>(`server ${this.servers.length} log`);
    // Resolves once the server can serve: its RSA threads run (their first
    // start, a cold module cache compiling the worker, can outlast a
    // client's retries).
    const server = await RelayServer.start({
      handshakesPerSecond: 1000,
      handshakeBurst: 1000,
      ...rest,
      privateKey,
      transport: tap,
      log: (record) => {
        log.push(record);
        rest.log?.(record);
      },
    });
    const handle: ServerHandle = {
      server,
      tap,
      log,
      address: server.localAddress,
      port: server.localAddress.port,
      waitDrop: (reason, from = 0) =>
        log.waitFor(
          (r) => r.event === "drop" && r.reason === reason,
          `a "${reason}" drop`,
          { from },
        ),
    };
    this.servers.push(handle);
    return handle;
  }

  /**
   * Connects a client (fresh UDP socket on 127.0.0.1 unless given) with
   * {@linkcode PATIENT_RETRIES} unless given; its events are recorded from
   * the first one on.
   */
  async connect(
    name: string,
    options: ConnectOptions = {},
  ): Promise<ClientHandle> {
    const { server, target, transport, ...rest } = options;
    const to = target ?? (server ?? this.servers.at(-1))?.address;
    if (!to) throw new Error("Harness.connect needs a server or a target");
    const tap = new TapTransport(
      transport ?? await UdpTransport.bind({ hostname: LOOPBACK, port: 0 }),
      name,
    );
    const events = new Recorder<ClientEvent>(`${name} events`);
    const log = new Recorder<LogRecord>(`${name} log`);
    const client = await RelayClient.connect({
      ...PATIENT_RETRIES,
      ...rest,
      transport: tap,
      target: to,
      onEvent: (event) => {
        events.push(event);
        rest.onEvent?.(event);
      },
      log: (record) => {
        log.push(record);
        rest.log?.(record);
      },
    });
    const isMessage = (
      e: ClientEvent,
    ): e is Extract<ClientEvent, { type: "message" }> => e.type === "message";
    const handle: ClientHandle = {
      name,
      client,
      tap,
      events,
      log,
      address: client.address,
      waitMessage: (text, { sender, from = 0 } = {}) =>
        events.waitFor(
          (e) =>
            isMessage(e) && e.text === text &&
            (sender === undefined || e.from === sender),
          `message "${text.slice(0, 30)}" (${text.length} B)${
            sender ? ` from ${sender}` : ""
          }`,
          { from },
        ),
      waitPresence: (type, address, from = 0) =>
        events.waitFor(
          (e) => e.type === type && e.address === address,
          `${type} of ${address}`,
          { from },
        ),
      waitEvent: (type, from = 0) =>
        events.waitFor((e) => e.type === type, `a "${type}" event`, { from }),
      messages: (from = 0) =>
        events.filter(isMessage, from) as Extract<
          ClientEvent,
          { type: "message" }
        >[],
    };
    this.clients.push(handle);
    return handle;
  }

  /**
   * A raw peer that records what it receives (a fresh UDP socket on
   * 127.0.0.1 unless `transport` is given); closed on dispose.
   */
  async socket(
    name = "raw",
    transport?: DatagramTransport,
  ): Promise<TapTransport> {
    const tap =
      (transport
        ? new TapTransport(transport, name)
        : await TapTransport.bind(name)).listen();
    this.#sockets.push(tap);
    return tap;
  }

  /** Closes every client, then every server, then raw sockets (each close is idempotent). */
  async [Symbol.asyncDispose](): Promise<void> {
    const errors: unknown[] = [];
    const settle = async (p: Promise<unknown>) => {
      try {
        await p;
      } catch (error) {
        errors.push(error);
      }
    };
    await Promise.all(this.clients.map((c) => settle(c.client.close())));
    await Promise.all(this.servers.map((s) => settle(s.server.close())));
    await Promise.all(
      this.#sockets.map((s) => settle(s[Symbol.asyncDispose]())),
    );
    if (errors.length > 0) {
      throw new AggregateError(errors, "Harness cleanup failed");
    }
  }
}
