/**
 * The relay server (protocol.md sections 3-7) over a
 * {@linkcode DatagramTransport}: {@linkcode RelayServer} holds the lifecycle
 * (start, timers, close, failure) and the public API (members, kick, ban,
 * stats, status). Its parts are wired in parts.ts; the protocol logic lives
 * in the modules: receive.ts (the receive loop), queue.ts (per-source order
 * and backlog), dispatch.ts (the switch over a stream's records),
 * handshake.ts and cookies.ts (key exchange, registration), fanout.ts
 * (relaying), presence.ts (joins, leaves, silence, liveness), output.ts
 * (packing, fragments, sends); options.ts resolves the options.
 *
 * @module
 */
import { ServerClosedError } from "../../errors.ts";
import { type BanEntry, BanList, parseBanTarget } from "../../core/bans.ts";
import type { ReassemblerCounters } from "../../core/reassembler.ts";
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
import { encodeRecords } from "../../wire/tlv.ts";
import { startRsaPool } from "../../runtime/rsa_pool.ts";
import type { MemberProfile } from "../types.ts";
import type { RemoteMemberInfo } from "./cluster_view.ts";
import type { MemberInfo } from "./member.ts";
import {
  type RelayServerOptions,
  resolveOptions,
  type ServerConfig,
} from "./options.ts";
import { assembleParts, federationPeer, type ServerParts } from "./parts.ts";
import type { ServerStats } from "./stats.ts";
import type { ServerStatus } from "./status.ts";

export type { MemberInfo, MemberProfile, RelayServerOptions, ServerStats };
export type { LeaveReason, ServerStatus } from "./status.ts";
export { keyAnswerSize } from "./options.ts";

/**
 * The relay: one instance serves one bound transport. Start it with
 * {@linkcode RelayServer.start}; stop it with {@linkcode RelayServer.close}
 * (or `await using`), which sends NOTICE 5 to every member first;
 * {@linkcode RelayServer.closed} tells when it stopped, and why.
 */
export class RelayServer implements AsyncDisposable {
  readonly #config: ServerConfig;
  readonly #parts: ServerParts;
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
    this.#parts = assembleParts(config, () => this.#closing !== undefined);
    this.#closed = new Promise((resolve) => this.#resolveClosed = resolve);
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
    try {
      server.#ticker = setInterval(() => server.tick(), config.sweepMs);
      config.federation?.attach(federationPeer(server.#parts), config.log);
      const signal = config.signal;
      if (signal) {
        const stop = () => void server.close();
        if (signal.aborted) stop();
        else signal.addEventListener("abort", stop, { once: true });
        server.#unlinkSignal = () => signal.removeEventListener("abort", stop);
      }
      // Last: a loop that fails at once stops a server whose timers are set.
      if (!server.#closing) server.#receiving = server.#receive();
      await startRsaPool(server.#parts.rsa, config.log);
    } catch (error) {
      await server.close().catch(() => {});
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
    return this.#parts.status.listen();
  }

  /** The current members. */
  members(): MemberInfo[] {
    return this.#parts.members.info();
  }

  /** Members of the other relays of a federation (none when not federated). */
  remoteMembers(): RemoteMemberInfo[] {
    return this.#config.federation?.remoteMembers() ?? [];
  }

  /** A snapshot of the counters. */
  stats(): ServerStats {
    const counters = this.#parts.counters;
    const output = this.#parts.output;
    const reassembly = { ...this.#parts.memberReassembly.counters };
    for (
      const [name, value] of Object.entries(
        this.#parts.strangerReassembly.counters,
      )
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
      rsaDecryptions: this.#parts.rsa.decryptions,
      rekeys: counters.rekeys,
      members: this.#parts.members.size,
      loopUtilization: this.#parts.load.utilization,
      queued: {
        datagrams: this.#parts.queues.pending,
        sources: this.#parts.queues.sources,
      },
      dropped: this.#parts.drops.snapshot(),
      kernelDropped: this.#parts.presence.kernelDropped,
      presence: { ...this.#parts.judge.counters },
      reassembly,
      datagramsPerMessage: counters.messagesFannedOut === 0
        ? 0
        : (output.relayDatagrams +
          (this.#parts.group?.stats().datagrams ?? 0)) /
          counters.messagesFannedOut,
      coalesced: output.coalescer?.joined ?? 0,
      ...(this.#parts.group ? { group: this.#parts.group.stats() } : {}),
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
    const member = this.#parts.members.get(key);
    if (!member) return false;
    this.#parts.presence.tellRemoved(member, notice);
    this.#parts.presence.remove(member, "kick");
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
    const key = this.#parts.bans.add(
      target,
      this.#config.now(),
      seconds,
      reason,
    );
    const removed: string[] = [];
    for (const member of [...this.#parts.members.values()]) {
      if (!BanList.covers(key, member.address)) continue;
      this.#parts.presence.tellRemoved(member, notice);
      this.#parts.presence.remove(member, "ban");
      removed.push(member.key);
    }
    this.#config.log({
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
    const lifted = this.#parts.bans.remove(key);
    if (lifted) {
      this.#config.log({ level: "info", event: "unban", target: key });
    }
    return lifted;
  }

  /** The bans in force, with the seconds each has left (undefined: until unbanned). */
  bans(): BanEntry[] {
    return this.#parts.bans.list(this.#config.now());
  }

  /**
   * Removes members silent past the timeout and expires reassembly buffers.
   * Called by the timer. After a stall (this sweep ran late) nobody is
   * judged until a whole timeout has passed, and a member whose window saw
   * the server drop datagrams itself gets its window extended instead
   * ({@linkcode PresenceJudge}).
   */
  tick(): void {
    this.#parts.presence.sweep(this.#config.now(), this.#parts.load.overloaded);
    this.#parts.memberReassembly.expire();
    this.#parts.strangerReassembly.expire();
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

  /** Runs the receive loop; a failure to receive stops the server, visibly. */
  async #receive(): Promise<void> {
    const failure = await this.#parts.receiver.run();
    if (failure === undefined || this.#closing) return;
    this.#failure = failure;
    this.#config.log({
      level: "error",
      event: "receive_failed",
      error: String(failure),
      message: "the transport failed to receive: the server stops",
    });
    void this.close();
  }

  async #shutdown(): Promise<void> {
    clearInterval(this.#ticker);
    this.#parts.presence.close();
    this.#parts.group?.close();
    this.#unlinkSignal?.();
    // Let every datagram in work finish (tasks may queue more meanwhile).
    await this.#parts.queues.drain();
    this.#parts.output.flush();
    this.#parts.presence.flush();
    const notice = noticeRecord(NoticeCode.SERVER_SHUTDOWN, this.#config.mtu);
    if (notice) {
      const datagram = encodeRecords([notice]);
      for (const member of this.#parts.members.values()) {
        this.#parts.output.send(datagram, member.address);
      }
    }
    try {
      await this.#parts.rsa.close();
      await this.#config.federation?.close();
    } finally {
      this.#config.log({
        level: "info",
        event: "shutdown",
        members: this.#parts.members.size,
        ...(this.#failure ? { error: this.#failure.message } : {}),
      });
      this.#parts.members.clear();
      await this.#parts.output.drained();
      this.#config.transport.close();
      await this.#receiving;
      this.#parts.status.end();
      this.#resolveClosed(this.#failure);
    }
  }
}
