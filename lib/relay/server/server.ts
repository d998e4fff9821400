/**
 * The relay server (protocol.md sections 3-7) over a
 * {@linkcode DatagramTransport}: {@linkcode RelayServer} holds the lifecycle
 * (start, receive loop, timers, close, failure), the wiring of its modules
 * and the public API (members, kick, ban, stats, status). The protocol
 * logic lives in the modules: handshake.ts (key exchange, registration),
 * fanout.ts (relaying), presence.ts (joins, leaves, silence, liveness),
 * dispatch.ts (the switch over a stream's records), queue.ts (per-source
 * order and backlog), output.ts (packing, fragments, sends).
 *
 * @module
 */
import { ServerClosedError } from "../../errors.ts";
import { IvMarker } from "../../crypto/iv_mark.ts";
import { type BanEntry, BanList, parseBanTarget } from "../../core/bans.ts";
import { DropCounter } from "../../core/drops.ts";
import { LoadMeter, type LoadProbe } from "../../core/load.ts";
import {
  Reassembler,
  type ReassemblerCounters,
  type ReassemblerLimits,
} from "../../core/reassembler.ts";
import { PresenceJudge } from "../../core/silence.ts";
import { OncePerInterval } from "../../core/limits.ts";
import { RsaDecryptPool } from "../../runtime/rsa_pool.ts";
import type { Datagram, DatagramTransport } from "../../runtime/transport.ts";
import {
  formatAddress,
  parseAddress,
  type PeerAddress,
} from "../../wire/address.ts";
import {
  encodeRemoval,
  NOTICE_TEXT,
  NoticeCode,
  noticeRecord,
} from "../../wire/notice.ts";
import { decodeRecords, encodeRecords, RecordType } from "../../wire/tlv.ts";
import { type LogSink, startRsaPool } from "../log.ts";
import type { MemberProfile } from "../types.ts";
import type { RemoteMemberInfo } from "./cluster_view.ts";
import { Dispatch } from "./dispatch.ts";
import { Fanout } from "./fanout.ts";
import type { FederationPeer } from "./federation.ts";
import { GroupFanout } from "./group_fanout.ts";
import { Handshake } from "./handshake.ts";
import { type Member, type MemberInfo, MemberTable } from "./member.ts";
import {
  DROP_LOG_INTERVAL_MS,
  type RelayServerOptions,
  resolveOptions,
  type ServerConfig,
} from "./options.ts";
import { Output } from "./output.ts";
import { Presence } from "./presence.ts";
import { SourceQueues } from "./queue.ts";
import { newCounters, type ServerStats } from "./stats.ts";
import { type ServerStatus, StatusChannel } from "./status.ts";

export type { MemberInfo, MemberProfile, RelayServerOptions, ServerStats };
export type { LeaveReason, ServerStatus } from "./status.ts";
export { keyAnswerSize, MAX_RECORDS_PER_STREAM } from "./options.ts";

/** Reassembly bounds for sources that are not registered: a key exchange never needs more. */
const STRANGER_REASSEMBLY: Partial<ReassemblerLimits> = {
  maxPartialsPerSource: 2,
  maxPartialsTotal: 1024,
  maxBytesPerSource: 16 * 1024,
  maxBytesTotal: 4 * 1024 * 1024,
  maxCount: 32,
};
/** The kernel's drop counter is read at most this often. */
const KERNEL_DROPS_POLL_MS = 1000;

/**
 * The relay: one instance serves one bound transport. Start it with
 * {@linkcode RelayServer.start}; stop it with {@linkcode RelayServer.close}
 * (or `await using`), which sends NOTICE 5 to every member first;
 * {@linkcode RelayServer.closed} tells when it stopped, and why.
 */
export class RelayServer implements AsyncDisposable {
  readonly #config: ServerConfig;
  readonly #log: LogSink;
  readonly #now: () => number;
  readonly #drops: DropCounter;
  readonly #members = new MemberTable();
  readonly #counters = newCounters();
  readonly #status = new StatusChannel();
  readonly #output: Output;
  readonly #queues: SourceQueues;
  readonly #judge: PresenceJudge;
  readonly #presence: Presence;
  readonly #handshake: Handshake;
  readonly #fanout: Fanout;
  readonly #dispatch: Dispatch;
  readonly #group: GroupFanout<Member> | undefined;
  readonly #memberReassembly: Reassembler;
  readonly #strangerReassembly: Reassembler;
  readonly #bans: BanList;
  readonly #rsa: RsaDecryptPool;
  readonly #load: LoadProbe;
  #overloaded = false;
  readonly #overloadLog = new OncePerInterval(10_000);
  #kernelDropped: number | undefined;
  #kernelPolledAt = -Infinity;

  #ticker: ReturnType<typeof setInterval> | undefined;
  #unlinkSignal: (() => void) | undefined;
  #receiving: Promise<void> = Promise.resolve();
  #closing: Promise<void> | undefined;
  /** Why the server stopped on its own (a receive failure). */
  #failure: Error | undefined;
  readonly #closed: Promise<void | Error>;
  #resolveClosed!: (outcome: void | Error) => void;

  private constructor(config: ServerConfig) {
    this.#config = config;
    const { log, now, limits } = config;
    this.#log = log;
    this.#now = now;
    this.#closed = new Promise((resolve) => this.#resolveClosed = resolve);
    this.#drops = new DropCounter(log, now, DROP_LOG_INTERVAL_MS);
    this.#output = new Output({
      transport: config.transport,
      mtu: config.mtu,
      coalesceSends: config.coalesceSends,
      drops: this.#drops,
      now,
    });
    this.#rsa = new RsaDecryptPool(config.privateKey, config.rsa);
    this.#load = config.load ?? new LoadMeter();
    this.#memberReassembly = new Reassembler(config.reassembly, now);
    this.#strangerReassembly = new Reassembler(STRANGER_REASSEMBLY, now);
    this.#bans = new BanList(limits.maxBans);
    this.#judge = new PresenceJudge({
      timeoutMs: config.clientTimeoutMs,
      sweepMs: config.sweepMs,
      startMs: now(),
    });
    this.#queues = new SourceQueues({
      maxQueuedPerSource: limits.maxQueuedPerSource,
      maxQueuedTotal: limits.maxQueuedTotal,
      // The server's own loss: the presence judge extends members' windows.
      selfDrop: (reason, source) => {
        this.#drops.drop(reason, source);
        this.#judge.selfDrop(this.#now());
      },
      log,
    });
    const marker = new IvMarker();
    this.#group = config.group && new GroupFanout<Member>({
      marker,
      mtu: config.mtu,
      tokenMaxAgeSeconds: limits.tokenMaxAgeSeconds,
      downstream: config.group.downstream,
      batchMs: config.group.batchMs,
      newcomerUnicastMs: config.group.newcomerMs,
      send: (datagram, to) => this.#output.send(datagram, to),
      drops: this.#drops,
      log,
      now,
    });
    const closing = () => this.#closing !== undefined;
    const isBanned = (from: PeerAddress, source: string) =>
      this.#isBanned(from, source);
    const shared = {
      members: this.#members,
      output: this.#output,
      drops: this.#drops,
      log,
      now,
      group: this.#group,
      federation: config.federation,
      counters: this.#counters,
      status: this.#status,
      closing,
    };
    this.#presence = new Presence({
      ...shared,
      mtu: config.mtu,
      presenceBatchMs: config.presenceBatchMs,
      compat: config.compat,
      judge: this.#judge,
      memberReassembly: this.#memberReassembly,
    });
    this.#handshake = new Handshake({
      ...shared,
      config,
      presence: this.#presence,
      rsa: this.#rsa,
      marker,
      strangerReassembly: this.#strangerReassembly,
      isBanned,
    });
    this.#fanout = new Fanout({
      ...shared,
      config,
      presence: this.#presence,
      rsa: this.#rsa,
    });
    this.#dispatch = new Dispatch({
      ...shared,
      overloaded: () => this.#load.overloaded,
      handshake: this.#handshake,
      fanout: this.#fanout,
      presence: this.#presence,
      memberReassembly: this.#memberReassembly,
      strangerReassembly: this.#strangerReassembly,
      isBanned,
    });
  }

  /**
   * Starts serving `options.transport` (receive loop, presence timer) and
   * resolves once the server can serve: its RSA threads started (logged as
   * `rsa_threads`), so key exchanges are answered at once.
   * @throws {RangeError} when the MTU cannot carry the key answer, or the
   * downstream port is the server's own
   */
  static async start(options: RelayServerOptions): Promise<RelayServer> {
    const server = new RelayServer(resolveOptions(options));
    const config = server.#config;
    server.#ticker = setInterval(() => server.tick(), config.sweepMs);
    config.federation?.attach(server.#federationPeer(), server.#log);
    const signal = config.signal;
    if (signal) {
      const stop = () => void server.close();
      if (signal.aborted) stop();
      else signal.addEventListener("abort", stop, { once: true });
      server.#unlinkSignal = () => signal.removeEventListener("abort", stop);
    }
    // Last: a loop that fails at once stops a server whose timers are set.
    if (!server.#closing) server.#receiving = server.#receiveLoop();
    try {
      await startRsaPool(server.#rsa, server.#log);
    } catch (error) {
      await server.close();
      throw error;
    }
    return server;
  }

  /** The address the transport is bound to. */
  get localAddress(): PeerAddress {
    return this.#config.transport.localAddress;
  }

  /** The server key's fingerprint, `SHA256:...`, for clients to pin. */
  get fingerprint(): string {
    return this.#config.privateKey.publicKey.fingerprint;
  }

  /** Whether the server runs with `--compat`. */
  get compat(): boolean {
    return this.#config.compat;
  }

  /**
   * Resolves when the server has stopped: with undefined after
   * {@linkcode close} (or the abort signal), with the error when it stopped
   * because of a failure (its transport failed to receive). Never rejects.
   */
  closed(): Promise<void | Error> {
    return this.#closed;
  }

  /**
   * Server events from now on (members joining, rekeying, leaving), until
   * the server stops; each iterator has its own bounded buffer (the oldest
   * events are dropped past {@linkcode STATUS_BUFFER}). Members still here
   * at shutdown get NOTICE 5 and no `leave` event.
   */
  status(): AsyncIterableIterator<ServerStatus> {
    return this.#status.listen();
  }

  /** The current members. */
  members(): MemberInfo[] {
    return this.#members.info();
  }

  /** Members of the other relays of a federation (none when not federated). */
  remoteMembers(): RemoteMemberInfo[] {
    return this.#config.federation?.remoteMembers() ?? [];
  }

  /** A snapshot of the counters. */
  stats(): ServerStats {
    const counters = this.#counters;
    const output = this.#output;
    const reassembly = { ...this.#memberReassembly.counters };
    for (
      const [name, value] of Object.entries(this.#strangerReassembly.counters)
    ) {
      reassembly[name as keyof ReassemblerCounters] += value;
    }
    const federation = this.#config.federation;
    return {
      datagramsIn: counters.datagramsIn,
      bytesIn: counters.bytesIn,
      datagramsOut: output.datagramsOut,
      bytesOut: output.bytesOut,
      messagesRelayed: counters.messagesRelayed,
      deliveries: counters.deliveries,
      registrations: counters.registrations,
      rsaDecryptions: this.#rsa.decryptions,
      rekeys: counters.rekeys,
      members: this.#members.size,
      loopUtilization: this.#load.utilization,
      queued: {
        datagrams: this.#queues.pending,
        sources: this.#queues.sources,
      },
      dropped: this.#drops.snapshot(),
      kernelDropped: this.#kernelDropped,
      presence: { ...this.#judge.counters },
      reassembly,
      datagramsPerMessage: counters.messagesFannedOut === 0
        ? 0
        : (output.relayDatagrams + (this.#group?.stats().datagrams ?? 0)) /
          counters.messagesFannedOut,
      coalesced: output.coalescer?.joined ?? 0,
      ...(this.#group ? { group: this.#group.stats() } : {}),
      ...(federation ? { federation: federation.stats() } : {}),
    };
  }

  /**
   * Removes a member, tells it why (NOTICE 6 KICKED, under its key for a
   * hybrid member) and tells the others (NOTIFY_DISCONNECT). It may register
   * again at once: a kick is not a ban.
   * @param address `IP:PORT` or `[IPv6]:PORT`
   * @param reason told to the member (at most 200 UTF-8 bytes)
   * @returns whether such a member existed
   * @throws {TypeError} when `address` is not an address
   * @throws {RangeError} when `reason` is too long
   * @throws {ServerClosedError} when the server is stopping or stopped
   */
  kick(
    address: string,
    reason: string = NOTICE_TEXT[NoticeCode.KICKED],
  ): boolean {
    this.#assertOpen("kick");
    const key = formatAddress(parseAddress(address));
    const notice = { code: NoticeCode.KICKED, seconds: 0, reason };
    encodeRemoval(notice); // checks the reason before anything changes
    const member = this.#members.get(key);
    if (!member) return false;
    this.#presence.tellRemoved(member, notice);
    this.#presence.remove(member, "kick");
    return true;
  }

  /**
   * Bans a source: from now on every datagram from it is dropped before any
   * work (counted `banned`: no key answer, no RSA work, no NOTICE), until the
   * ban expires or {@linkcode unban}. Members it covers are removed, told
   * why (NOTICE 7 BANNED, under their key for hybrid members) and the others
   * see them leave. Bans live in memory: a restart forgets them.
   * @param target `IP` (every port) or `IP:PORT` (`[IPv6]:PORT`)
   * @param options `seconds` (1 to a year; absent: until unbanned) and the `reason` told to the members removed
   * @returns the canonical target, the seconds, and the members removed
   * @throws {TypeError} when `target` is not an IP or IP:PORT
   * @throws {RangeError} for bad seconds, a reason over 200 bytes, or a full ban list
   * @throws {ServerClosedError} when the server is stopping or stopped
   */
  ban(
    target: string,
    options: { readonly seconds?: number; readonly reason?: string } = {},
  ): { target: string; seconds: number | undefined; removed: string[] } {
    this.#assertOpen("ban");
    const { seconds, reason = NOTICE_TEXT[NoticeCode.BANNED] } = options;
    const notice = { code: NoticeCode.BANNED, seconds: seconds ?? 0, reason };
    encodeRemoval(notice); // checks the reason before anything changes
    const key = this.#bans.add(target, this.#now(), seconds, reason);
    const removed: string[] = [];
    for (const member of [...this.#members.values()]) {
      if (!BanList.covers(key, member.address)) continue;
      this.#presence.tellRemoved(member, notice);
      this.#presence.remove(member, "ban");
      removed.push(member.key);
    }
    this.#log({
      level: "info",
      event: "ban",
      target: key,
      seconds: seconds ?? null,
      removed,
    });
    return { target: key, seconds, removed };
  }

  /**
   * Lifts the ban of exactly `target` (as given to {@linkcode ban}).
   * @returns whether there was one
   * @throws {TypeError} when `target` is not an IP or IP:PORT
   * @throws {ServerClosedError} when the server is stopping or stopped
   */
  unban(target: string): boolean {
    this.#assertOpen("unban");
    const key = parseBanTarget(target);
    const lifted = this.#bans.remove(key);
    if (lifted) this.#log({ level: "info", event: "unban", target: key });
    return lifted;
  }

  /** The bans in force, with the seconds each has left (undefined: until unbanned). */
  bans(): BanEntry[] {
    return this.#bans.list(this.#now());
  }

  /**
   * Removes members silent past the timeout and expires reassembly buffers.
   * Called by the timer. After a stall (this sweep ran late) nobody is
   * judged until a whole timeout has passed, and a member whose window saw
   * the server drop datagrams itself gets its window extended instead
   * ({@linkcode PresenceJudge}).
   */
  tick(): void {
    const now = this.#now();
    this.#pollKernelDrops(now);
    this.#presence.sweep(now, this.#load.overloaded);
    this.#memberReassembly.expire();
    this.#strangerReassembly.expire();
  }

  /**
   * Stops the server: finishes queued work, sends NOTICE 5 to every member,
   * closes the transport. Safe to call twice; {@linkcode closed} resolves
   * when it is done.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Throws when the server is stopping or stopped. */
  #assertOpen(call: string): void {
    if (this.#closing === undefined) return;
    throw new ServerClosedError(
      `Cannot ${call}: the relay server is ${
        this.#failure ? `stopped (${this.#failure.message})` : "closed"
      }`,
    );
  }

  /** Reads the kernel's drop counter (at most once a second); a rise is the server's own loss. */
  #pollKernelDrops(now: number): void {
    const kernelDrops = this.#config.kernelDrops;
    if (!kernelDrops || now - this.#kernelPolledAt < KERNEL_DROPS_POLL_MS) {
      return;
    }
    this.#kernelPolledAt = now;
    const total = kernelDrops();
    const before = this.#kernelDropped ?? 0;
    this.#kernelDropped = total;
    if (total === undefined || total <= before) return;
    this.#judge.selfDrop(now);
    this.#log({
      level: "warn",
      event: "kernel_drops",
      kernel_dropped: total,
      new: total - before,
      message:
        "the kernel dropped datagrams on the server's socket (its receive queue was full): the server does not keep up",
    });
  }

  async #shutdown(): Promise<void> {
    clearInterval(this.#ticker);
    this.#presence.close();
    this.#group?.close();
    this.#unlinkSignal?.();
    // Let every datagram in work finish (tasks may queue more meanwhile).
    await this.#queues.drain();
    this.#output.flush();
    this.#presence.flush();
    const notice = noticeRecord(NoticeCode.SERVER_SHUTDOWN, this.#config.mtu);
    if (notice) {
      const datagram = encodeRecords([notice]);
      for (const member of this.#members.values()) {
        this.#output.send(datagram, member.address);
      }
    }
    await this.#rsa.close();
    await this.#config.federation?.close();
    this.#log({
      level: "info",
      event: "shutdown",
      members: this.#members.size,
      ...(this.#failure ? { error: this.#failure.message } : {}),
    });
    this.#members.clear();
    await this.#output.drained();
    this.#config.transport.close();
    await this.#receiving;
    this.#status.end();
    this.#resolveClosed(this.#failure);
  }

  async #receiveLoop(): Promise<void> {
    const transport: DatagramTransport = this.#config.transport;
    // A drain per wake-up when the transport offers batches: every datagram
    // already received is handled in one turn, and the relay streams that
    // turn makes for one member leave together at its end.
    const batches = transport.receiveBatches?.()[Symbol.asyncIterator]();
    const datagrams = batches ?? transport[Symbol.asyncIterator]();
    const coalescing = this.#output.coalescer !== undefined;
    try {
      while (true) {
        // The load meter needs the time spent waiting: a datagram's work
        // runs inside #onDatagram when its source has nothing queued and its
        // key opens synchronously (hybrid members: the relay's hot path).
        const waitStart = performance.now();
        const next = await datagrams.next();
        this.#load.waited(waitStart, performance.now());
        if (next.done || this.#closing) break;
        if (this.#load.overloaded !== this.#overloaded) this.#onLoadChange();
        if (!batches) this.#onDatagram(next.value as Datagram);
        else {
          const batch = next.value as readonly Datagram[];
          // A batch of one (a quiet socket) is handled without a hold, so
          // its streams are sent as they are made, as without coalescing.
          if (batch.length > 1 && coalescing) this.#onBatch(batch);
          else for (const datagram of batch) this.#onDatagram(datagram);
        }
      }
    } catch (error) {
      if (!this.#closing) {
        // The server cannot go on without its socket: it stops, visibly.
        this.#failure = error instanceof Error
          ? error
          : new Error(String(error));
        this.#log({
          level: "error",
          event: "receive_failed",
          error: String(error),
          message: "the transport failed to receive: the server stops",
        });
        void this.close();
      }
    } finally {
      void datagrams.return?.().catch(() => {});
    }
  }

  /** Logs (at most every 10 s) that the loop became too busy for key exchanges. */
  #onLoadChange(): void {
    this.#overloaded = this.#load.overloaded;
    if (this.#overloaded && this.#overloadLog.allow("", this.#now())) {
      this.#log({
        level: "warn",
        event: "overloaded",
        utilization: Math.round(this.#load.utilization * 100) / 100,
        shed: this.#drops.snapshot().handshake_shed ?? 0,
        message:
          "relaying keeps the event loop busy: key requests and registrations are dropped until it keeps up (clients retry)",
      });
    }
  }

  /**
   * Handles a drained batch with coalesced sends. A member's later datagrams
   * wait in its queue for its earlier ones, which settle a few microtasks
   * after the loop: the batch is released when all its work has settled, or
   * at the next turn of the event loop when some of it waits longer (RSA
   * work, a WebCrypto seal), so nothing waits for slow work or for company.
   */
  #onBatch(batch: readonly Datagram[]): void {
    const release = this.#output.coalescer?.hold() ?? (() => {});
    const tasks: Promise<void>[] = [];
    try {
      for (const datagram of batch) {
        const task = this.#onDatagram(datagram);
        if (task) tasks.push(task);
      }
    } finally {
      if (tasks.length === 0) release();
      else {
        const timer = setTimeout(release, 0);
        Promise.all(tasks).then(() => {
          clearTimeout(timer);
          release();
        });
      }
    }
  }

  /** Handles one datagram; returns its task's end (never rejects) when it was queued. */
  #onDatagram(datagram: Datagram): Promise<void> | undefined {
    this.#counters.datagramsIn++;
    this.#counters.bytesIn += datagram.data.length;
    const source = formatAddress(datagram.from);
    if (this.#isBanned(datagram.from, source)) return undefined;
    let records;
    try {
      records = decodeRecords(datagram.data);
    } catch {
      this.#drops.drop("malformed", source);
      return undefined;
    }
    // All key answers this datagram causes, in its own stream and in the
    // streams it completes by reassembly, together are no larger than it
    // (protocol.md section 10).
    const answerBudget = { bytes: datagram.data.length };
    return this.#queues.enqueue(
      source,
      () =>
        this.#dispatch.processStream(
          records,
          datagram.from,
          source,
          datagram.data.length,
          answerBudget,
        ),
    );
  }

  /** What the federation may ask of this server. */
  #federationPeer(): FederationPeer {
    return {
      localMembers: () =>
        [...this.#members.values()].map((m) => m.addressValue),
      deliverRemote: (sender, message) =>
        this.#fanout.relayRemote(sender, message),
      remoteJoined: (address, key) => {
        if (!this.#members.has(key)) {
          this.#presence.notify(RecordType.NOTIFY_CONNECT, address);
        }
      },
      remoteLeft: (address, key) => {
        if (!this.#members.has(key)) {
          this.#presence.notify(RecordType.NOTIFY_DISCONNECT, address);
        }
      },
      drop: (reason, count) =>
        this.#drops.drop(reason, "federation", {}, count),
    };
  }

  /** Whether `from` is banned; its datagram is then dropped and counted (`banned`). */
  #isBanned(from: PeerAddress, source: string): boolean {
    if (this.#bans.size === 0) return false;
    if (!this.#bans.match(from, this.#now(), source)) return false;
    this.#drops.drop("banned", source);
    return true;
  }
}
