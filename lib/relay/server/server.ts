/**
 * The relay server's protocol logic (protocol.md sections 3-7) over a
 * {@linkcode DatagramTransport}: key exchange with stateless cookies,
 * registration, relay with re-encryption per member (hybrid and RSA members
 * in one group), presence, fragmentation, replay and reflection rules, and
 * the bounds that keep it up under hostile traffic.
 *
 * @module
 */
import { InvalidKeyError } from "../../errors.ts";
import { COOKIE_SIZE, CookieAuthority } from "../../crypto/cookie.ts";
import { type FernetBackend, FernetKey } from "../../crypto/fernet.ts";
import { IvMarker } from "../../crypto/iv_mark.ts";
import { REMOVAL_NOTICE_LABEL } from "../../crypto/derive_key.ts";
import {
  RsaDecryptError,
  type RsaPrivateKey,
  RsaPublicKey,
} from "../../crypto/rsa.ts";
import { RsaDecryptPool } from "../../runtime/rsa_pool.ts";
import {
  decodeAddress,
  encodeAddress,
  formatAddress,
  parseAddress,
  type PeerAddress,
} from "../../wire/address.ts";
import { fragmentStream } from "../../wire/fragment.ts";
import {
  encodeRemoval,
  formatRemovalText,
  NOTICE_TEXT,
  NoticeCode,
  noticeRecord,
  type RemovalNotice,
} from "../../wire/notice.ts";
import {
  Reassembler,
  type ReassemblerCounters,
  type ReassemblerLimits,
} from "../../core/reassembler.ts";
import {
  decodeRecords,
  encodedSize,
  encodeRecords,
  encodeRecordsInto,
  isKnownRecordType,
  MAX_TLV_VALUE_SIZE,
  RecordType,
  TLV_HEADER_SIZE,
  type TlvRecord,
  writeRecordHeader,
} from "../../wire/tlv.ts";
import type { Datagram, DatagramTransport } from "../../runtime/transport.ts";
import {
  ExpiringMap,
  OncePerInterval,
  SourceRateLimiter,
  TokenBucket,
} from "../../core/limits.ts";
import { hmacSha256 } from "../../crypto/hmac.ts";
import { sha256 } from "../../crypto/sha256.ts";
import { encodeBase64 } from "../../crypto/base64.ts";
import {
  DEFAULT_REPLAY_ENTRIES,
  replayWindowEntries,
} from "../../crypto/replay.ts";
import { type LogSink, silentLog, startRsaPool } from "../log.ts";
import { DropCounter, guardedSink } from "../../core/drops.ts";
import { randomMsgId } from "../../crypto/msg_id.ts";
import { TokenGuard } from "../../crypto/token_guard.ts";
import { SendCoalescer } from "../../core/coalescer.ts";
import {
  type BanEntry,
  BanList,
  DEFAULT_MAX_BANS,
  parseBanTarget,
} from "../../core/bans.ts";
import { LoadMeter, type LoadProbe } from "../../core/load.ts";
import {
  type PresenceCounters,
  PresenceJudge,
  type SilenceRecord,
} from "../../core/silence.ts";
import { GroupFanout, type GroupStats } from "./group_fanout.ts";
import type {
  Federation,
  FederationPeer,
  FederationStats,
} from "./federation.ts";
import type { RemoteMemberInfo } from "./cluster_view.ts";

import type { MemberProfile } from "../types.ts";
export type { MemberProfile };

/** Options of {@linkcode RelayServer.start}. */
export interface RelayServerOptions {
  /** The bound datagram transport (UDP socket, or in-memory for tests). */
  readonly transport: DatagramTransport;
  /** The server's RSA key. */
  readonly privateKey: RsaPrivateKey;
  /** Largest datagram sent. Default 1200. */
  readonly mtu?: number;
  /**
   * Send the relay streams one turn of the receive loop holds for one
   * recipient as one datagram, up to the MTU (PROTOCOL.md 5.1). Default
   * true.
   */
  readonly coalesceSends?: boolean;
  /** A member silent this long is removed. Default 30_000 ms. */
  readonly clientTimeoutMs?: number;
  /** Accept clients of the original design (protocol.md 6.1). Default false. */
  readonly compat?: boolean;
  /** Members at most; registrations past it get NOTICE 4. Default 1024. */
  readonly maxClients?: number;
  /** Largest message plaintext relayed; larger ones get NOTICE 2. Default 32 KiB. */
  readonly maxMessageBytes?: number;
  /** Maximum Fernet token age and future skew. Default 60 s. */
  readonly tokenMaxAgeSeconds?: number;
  /** Messages a member may have relayed per second (token bucket). Default 200. */
  readonly messagesPerSecond?: number;
  /** Burst of the per-member message bucket. Default 400. */
  readonly messageBurst?: number;
  /**
   * RSA blocks an RSA-profile member may have decrypted per second (token
   * bucket; burst: enough for one message of the maximum size, at least 200).
   * Default 50.
   */
  readonly rsaBlocksPerSecond?: number;
  /**
   * Key exchanges (key requests and registrations) per second per source
   * address (IP and port: protocol.md section 10, so clients behind one NAT,
   * or a spoofer of their IP, do not lock each other out). Default 5.
   */
  readonly handshakesPerSecond?: number;
  /** Burst of the per-address handshake bucket. Default 10. */
  readonly handshakeBurst?: number;
  /**
   * Key exchanges per second for all sources together. Key requests may
   * spend only the upper half of the burst; registrations with a valid
   * cookie may spend all of it (validated cookies first). Default 500.
   */
  readonly globalHandshakesPerSecond?: number;
  /** Burst of the global handshake budget. Default 1000. */
  readonly globalHandshakeBurst?: number;
  /** Bans kept at most ({@linkcode RelayServer.ban}); more are refused. Default 4096. */
  readonly maxBans?: number;
  /** Members registered from one IP at most; more get NOTICE 4. Default 32. */
  readonly maxClientsPerIp?: number;
  /** RSA decryptions waiting or running at most; registrations past it are dropped (the client retries). Default 64. */
  readonly maxPendingHandshakes?: number;
  /** Datagrams of one source queued or in work at most; more are dropped (`backlog`). Default 256. */
  readonly maxQueuedPerSource?: number;
  /** Datagrams of all sources queued or in work at most; more are dropped (`overload`). Default 16384. */
  readonly maxQueuedTotal?: number;
  /**
   * Worker threads for RSA decryption (see {@linkcode RsaDecryptPool}).
   * Default: every core at low priority when the process may lower it
   * (`--allow-sys=setPriority`), else the cores less one. 0: WebCrypto in
   * this runtime, one block at a time.
   */
  readonly rsaThreads?: number;
  /**
   * Also run the RSA threads under Linux's SCHED_IDLE, so that they never
   * delay the relay's event loop by a time slice (needs `--allow-ffi`; see
   * {@linkcode RsaDecryptPool}). Default false.
   */
  readonly rsaSchedIdle?: boolean;
  /**
   * How busy the event loop is (fed by the receive loop's waits). While it
   * says `overloaded`, key requests and registrations are dropped
   * (`handshake_shed`; clients retry with backoff) so that relaying for
   * registered members keeps up. Default: a {@linkcode LoadMeter} (100 ms
   * windows, overloaded at 90%).
   */
  readonly load?: LoadProbe;
  /**
   * Keep-alives a hybrid member's address may have checked per second
   * (token bucket, spent before any crypto: forged keep-alives cost a MAC
   * check each). Default 10.
   */
  readonly keepalivesPerSecond?: number;
  /** Burst of the per-member keep-alive bucket. Default 20. */
  readonly keepaliveBurst?: number;
  /**
   * Datagrams the kernel dropped on the server's socket so far (e.g.
   * {@linkcode KernelDropMeter}), or undefined when unknown. Polled by the
   * presence timer; shown as `kernelDropped`, and a rise counts as the
   * server's own loss (members' windows are extended, not judged).
   */
  readonly kernelDrops?: () => number | undefined;
  /** Reassembly bounds for registered members (protocol.md section 3 defaults). */
  readonly reassembly?: Partial<ReassemblerLimits>;
  /** Fernet implementation. Default: the library default. */
  readonly fernetBackend?: FernetBackend;
  /**
   * `group`: group fan-out of protocol.md section 9 for members that send
   * GROUP_CAPABLE (one token per message under an epoch key); others keep
   * per-recipient streams. Default `unicast` (per recipient for everyone).
   */
  readonly fanout?: "unicast" | "group";
  /**
   * With `fanout: "group"`: the multicast address and port GROUP_MESSAGE
   * datagrams are sent to, once per message. Absent: the same bytes by
   * unicast to each group-capable member.
   */
  readonly downstream?: PeerAddress;
  /** Membership changes within this interval share one epoch. Default 1000 ms. */
  readonly groupBatchMs?: number;
  /**
   * With a downstream address: for this long after its first GROUP_KEY a
   * member also gets the group datagrams by unicast, while it joins the
   * group (its replay check drops the second copy). Default 2000 ms.
   */
  readonly groupNewcomerMs?: number;
  /**
   * Presence changes (NOTIFY_CONNECT, NOTIFY_DISCONNECT) past the first 8
   * within this interval go to the members together when it ends (or before
   * the next relayed message), packed into as few datagrams as the MTU
   * allows: a burst of N joins costs each member about N / 100 datagrams
   * instead of N. Default 250 ms; 0 sends every change at once.
   */
  readonly presenceBatchMs?: number;
  /** Receives log records. */
  readonly log?: LogSink;
  /** Clock in milliseconds. Default Date.now. */
  readonly now?: () => number;
  /** Aborting it stops the server, as {@linkcode RelayServer.close} does. */
  readonly signal?: AbortSignal;
  /**
   * Serve the group together with other relays (a {@linkcode Federation}
   * over NATS): local members' messages are published once, other relays'
   * messages delivered to local members. The server closes it when it stops.
   */
  readonly federation?: Federation;
}

/** One member as shown by the `clients` command. */
export interface MemberInfo {
  /** `IP:PORT` as the server sees it. */
  readonly address: string;
  /** Its profile. */
  readonly profile: MemberProfile;
  /** When it registered (ms since the epoch). */
  readonly joinedAt: number;
  /** When it was last seen authenticated (ms since the epoch). */
  readonly lastSeen: number;
  /** Messages it sent that were relayed. */
  readonly messagesIn: number;
  /** Messages delivered to it. */
  readonly messagesOut: number;
}

/** Counters shown by the `stats` command. */
export interface ServerStats {
  /** Datagrams received. */
  readonly datagramsIn: number;
  /** Bytes received. */
  readonly bytesIn: number;
  /** Datagrams sent. */
  readonly datagramsOut: number;
  /** Bytes sent. */
  readonly bytesOut: number;
  /** Messages accepted from members and relayed. */
  readonly messagesRelayed: number;
  /** Copies delivered (messages x recipients). */
  readonly deliveries: number;
  /** First registrations. */
  readonly registrations: number;
  /** Rekeys of registered members. */
  readonly rekeys: number;
  /** RSA-OAEP blocks given to decryption (registrations, RSA-profile messages). */
  readonly rsaDecryptions: number;
  /** Members now. */
  readonly members: number;
  /** Share of the last load window the event loop spent working (0-1). */
  readonly loopUtilization: number;
  /** Datagrams queued or in work, and the sources they came from. */
  readonly queued: { readonly datagrams: number; readonly sources: number };
  /** Datagrams, records or streams dropped, by reason. */
  readonly dropped: Readonly<Record<string, number>>;
  /** Datagrams the kernel dropped on the server's socket (undefined: not measurable here). */
  readonly kernelDropped: number | undefined;
  /** Presence sweeps after a stall, and timeouts extended for the server's own loss. */
  readonly presence: Readonly<PresenceCounters>;
  /** Reassembly counters (members and unregistered sources together). */
  readonly reassembly: Readonly<ReassemblerCounters>;
  /** Datagrams sent per relayed message (group and per-recipient together). */
  readonly datagramsPerMessage: number;
  /** Relay streams that shared a datagram with an earlier one to the same member (datagrams saved by coalescing). */
  readonly coalesced: number;
  /** Group fan-out state (`fanout: "group"` only). */
  readonly group?: GroupStats;
  /** Federation counters, when the server is federated. */
  readonly federation?: FederationStats;
}

interface Member extends SilenceRecord {
  readonly address: PeerAddress;
  readonly key: string;
  readonly addressValue: Uint8Array;
  profile: MemberProfile;
  guard: TokenGuard | undefined;
  rsaKey: RsaPublicKey | undefined;
  /** Identifies the key it registered with (never the key itself). */
  keyId: string;
  /** SHA-256 of the key record value it registered with (section 10 retransmissions). */
  registrationHash: Uint8Array;
  readonly joinedAt: number;
  lastSeen: number;
  messagesIn: number;
  messagesOut: number;
  readonly messageRate: TokenBucket;
  readonly rsaBlockRate: TokenBucket;
  readonly keepaliveRate: TokenBucket;
}

/** Bytes of key answers one received datagram may still cause (section 10). */
interface AnswerBudget {
  bytes: number;
}

interface SourceQueue {
  tail: Promise<void>;
  pending: number;
}

/** Presence changes sent at once per batch interval; more wait for its end (`presenceBatchMs`). */
const PRESENCE_AT_ONCE = 8;

/** Reassembly bounds for sources that are not registered: a key exchange never needs more. */
const STRANGER_REASSEMBLY: Partial<ReassemblerLimits> = {
  maxPartialsPerSource: 2,
  maxPartialsTotal: 1024,
  maxBytesPerSource: 16 * 1024,
  maxBytesTotal: 4 * 1024 * 1024,
  maxCount: 32,
};
/**
 * How long an accepted cookie is remembered with the key record it covered
 * (protocol.md section 10, one cookie one key): as long as the cookie could
 * still be valid (60 s + 5 s of skew), so any other key under it is refused.
 */
const COOKIE_MEMORY_MS = 66_000;
/**
 * Accepted cookies remembered at most. Bounded by the handshake rate: the
 * global budget's default (500/s) over the memory's 66 s is 33,000.
 */
const MAX_REMEMBERED_COOKIES = 65_536;
/** Bytes of SHA-256 that a KEY_PROOF's plaintext carries (section 10). */
const KEY_PROOF_SIZE = 16;
/**
 * Records acted on per stream at most (RSA_BLOCK records, which make one
 * message together, aside): the rest of the stream is dropped and counted
 * once (`records_over_limit`), so one datagram cannot buy hundreds of MAC
 * checks (issue 17 item 9).
 */
export const MAX_RECORDS_PER_STREAM = 16;
/** The kernel's drop counter is read at most this often. */
const KERNEL_DROPS_POLL_MS = 1000;
/** Drop reasons that are the server's own loss (its queues were full). */
const SELF_DROPS: ReadonlySet<string> = new Set(["overload", "backlog"]);
/** A drop of one kind is logged at most once per source per this interval. */
const DROP_LOG_INTERVAL_MS = 10_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const DISCONNECT_TEXT = encoder.encode("DISCONNECT");
const EMPTY = new Uint8Array(0);

/** Record types only a server sends: receiving one is unexpected. */
const SERVER_ONLY_TYPES: ReadonlySet<number> = new Set([
  RecordType.SERVER_PUBLIC_KEY,
  RecordType.RSA_RELAY_BLOCK,
  RecordType.SENDER,
  RecordType.NOTIFY_CONNECT,
  RecordType.NOTIFY_DISCONNECT,
  RecordType.WELCOME,
  RecordType.NOTICE,
  RecordType.GROUP_KEY,
  RecordType.GROUP_MESSAGE,
]);

/**
 * The relay: one instance serves one bound transport. Start it with
 * {@linkcode RelayServer.start}; stop it with {@linkcode RelayServer.close}
 * (or `await using`), which sends NOTICE 5 to every member first.
 */
export class RelayServer implements AsyncDisposable {
  readonly #transport: DatagramTransport;
  readonly #privateKey: RsaPrivateKey;
  readonly #publicPem: Uint8Array;
  readonly #mtu: number;
  readonly #clientTimeoutMs: number;
  readonly #presenceBatchMs: number;
  /** Presence records waiting for the end of the batch interval, each with the member it is about (who does not get it). */
  readonly #presenceQueue: { record: TlvRecord; about?: Member }[] = [];
  #presenceTimer: ReturnType<typeof setTimeout> | undefined;
  /** Presence changes sent at once in the current batch interval. */
  #presenceAtOnce = 0;
  readonly #compat: boolean;
  readonly #maxClients: number;
  readonly #maxMessageBytes: number;
  readonly #tokenMaxAge: number;
  readonly #messagesPerSecond: number;
  readonly #messageBurst: number;
  readonly #maxPendingHandshakes: number;
  readonly #maxQueuedPerSource: number;
  readonly #maxQueuedTotal: number;
  readonly #rsaBlocksPerSecond: number;
  readonly #rsaBlockBurst: number;
  readonly #fernetBackend: FernetBackend | undefined;
  readonly #log: LogSink;
  readonly #drops: DropCounter;
  readonly #now: () => number;
  readonly #federation: Federation | undefined;

  readonly #members = new Map<string, Member>();
  readonly #cookies: CookieAuthority;
  readonly #marker = new IvMarker();
  readonly #keyIdSecret = crypto.getRandomValues(new Uint8Array(32));
  /** Accepted cookie (base64) → SHA-256 of the key record it covered. */
  readonly #acceptedCookies = new ExpiringMap<Uint8Array>(
    MAX_REMEMBERED_COOKIES,
  );
  readonly #handshakeBudget: TokenBucket;
  readonly #maxClientsPerIp: number;
  readonly #membersPerIp = new Map<string, number>();
  readonly #memberReassembly: Reassembler;
  readonly #strangerReassembly: Reassembler;
  readonly #handshakeLimiter: SourceRateLimiter;
  readonly #noticeGate = new OncePerInterval(1000);
  readonly #bans: BanList;
  readonly #queues = new Map<string, SourceQueue>();
  #sendsInFlight = 0;
  #sendsDrained: (() => void) | undefined;
  #pendingTotal = 0;
  #pendingHandshakes = 0;
  #pendingRsaMessages = 0;
  readonly #rsa: RsaDecryptPool;
  readonly #load: LoadProbe;
  #overloaded = false;
  readonly #overloadLog = new OncePerInterval(10_000);
  readonly #presence: PresenceJudge;
  readonly #keepalivesPerSecond: number;
  readonly #keepaliveBurst: number;
  /**
   * IVs each hybrid member's replay window holds: every token its message and
   * keep-alive budgets let it send in a token's life (13,230 by default), at
   * most a receiver's default (65,536) however high the budgets are raised.
   */
  readonly #replayEntries: number;
  readonly #kernelDrops: (() => number | undefined) | undefined;
  #kernelDropped: number | undefined;
  #kernelPolledAt = -Infinity;
  readonly #group: GroupFanout<Member> | undefined;
  #relayDatagrams = 0;
  /** Joins one turn's relay streams per recipient (undefined: coalescing off). */
  readonly #coalescer: SendCoalescer | undefined;
  /** Messages fanned out here: local members' and other relays' (federation). */
  #messagesFannedOut = 0;

  #datagramsIn = 0;
  #bytesIn = 0;
  #datagramsOut = 0;
  #bytesOut = 0;
  #messagesRelayed = 0;
  #deliveries = 0;
  #registrations = 0;
  #rekeys = 0;

  #ticker: ReturnType<typeof setInterval> | undefined;
  #unlinkSignal: (() => void) | undefined;
  #receiving: Promise<void> = Promise.resolve();
  #closing: Promise<void> | undefined;

  private constructor(options: RelayServerOptions) {
    this.#transport = options.transport;
    this.#privateKey = options.privateKey;
    this.#publicPem = encoder.encode(options.privateKey.publicKey.pem);
    this.#mtu = options.mtu ?? 1200;
    this.#coalescer = options.coalesceSends === false
      ? undefined
      : new SendCoalescer(this.#mtu, (datagram, to) => {
        this.#relayDatagrams++;
        this.#sendNow(datagram, to);
      });
    const answer = keyAnswerSize(options.privateKey);
    if (this.#mtu < answer) {
      throw new RangeError(
        `An MTU of ${this.#mtu} bytes cannot carry the key answer (${answer} bytes for a ${options.privateKey.publicKey.modulusBits}-bit key), which must be one datagram: use an MTU of at least ${answer}`,
      );
    }
    this.#clientTimeoutMs = options.clientTimeoutMs ?? 30_000;
    this.#presenceBatchMs = options.presenceBatchMs ?? 250;
    this.#compat = options.compat ?? false;
    this.#maxClients = options.maxClients ?? 1024;
    this.#maxMessageBytes = options.maxMessageBytes ?? 32 * 1024;
    this.#tokenMaxAge = options.tokenMaxAgeSeconds ?? 60;
    this.#messagesPerSecond = options.messagesPerSecond ?? 200;
    this.#messageBurst = options.messageBurst ?? 400;
    this.#maxPendingHandshakes = options.maxPendingHandshakes ?? 64;
    this.#maxQueuedPerSource = options.maxQueuedPerSource ?? 256;
    this.#maxQueuedTotal = options.maxQueuedTotal ?? 16_384;
    this.#rsaBlocksPerSecond = options.rsaBlocksPerSecond ?? 50;
    this.#rsaBlockBurst = Math.max(
      200,
      Math.ceil(
        this.#maxMessageBytes / options.privateKey.publicKey.maxChunkSize,
      ),
    );
    this.#rsa = new RsaDecryptPool(options.privateKey, {
      threads: options.rsaThreads,
      schedIdle: options.rsaSchedIdle,
    });
    this.#load = options.load ?? new LoadMeter();
    this.#fernetBackend = options.fernetBackend;
    this.#log = guardedSink(options.log ?? silentLog);
    this.#now = options.now ?? Date.now;
    this.#drops = new DropCounter(this.#log, this.#now, DROP_LOG_INTERVAL_MS);
    this.#cookies = new CookieAuthority({ now: this.#now });
    this.#memberReassembly = new Reassembler(options.reassembly, this.#now);
    this.#strangerReassembly = new Reassembler(STRANGER_REASSEMBLY, this.#now);
    this.#handshakeLimiter = new SourceRateLimiter(
      options.handshakesPerSecond ?? 5,
      options.handshakeBurst ?? 10,
    );
    this.#handshakeBudget = new TokenBucket(
      options.globalHandshakesPerSecond ?? 500,
      options.globalHandshakeBurst ?? 1000,
      this.#now(),
    );
    this.#maxClientsPerIp = options.maxClientsPerIp ?? 32;
    this.#bans = new BanList(options.maxBans ?? DEFAULT_MAX_BANS);
    this.#presence = new PresenceJudge({
      timeoutMs: this.#clientTimeoutMs,
      sweepMs: sweepInterval(this.#clientTimeoutMs),
      startMs: this.#now(),
    });
    this.#keepalivesPerSecond = options.keepalivesPerSecond ?? 10;
    this.#keepaliveBurst = options.keepaliveBurst ?? 20;
    this.#replayEntries = Math.min(
      DEFAULT_REPLAY_ENTRIES,
      // A token is remembered while its second is within the age: for the
      // age's seconds and the one it was sealed in.
      replayWindowEntries(
        this.#messagesPerSecond + this.#keepalivesPerSecond,
        this.#tokenMaxAge + 1,
        this.#messageBurst + this.#keepaliveBurst,
      ),
    );
    this.#kernelDrops = options.kernelDrops;
    if (options.fanout === "group") {
      const local = options.transport.localAddress;
      if (options.downstream?.port === local.port) {
        throw new RangeError(
          `The downstream port ${local.port} is the server's own port: group messages never go to the upstream port (protocol.md section 9); use another port, by default the server's port + 1`,
        );
      }
      this.#group = new GroupFanout<Member>({
        marker: this.#marker,
        mtu: this.#mtu,
        tokenMaxAgeSeconds: this.#tokenMaxAge,
        downstream: options.downstream,
        batchMs: options.groupBatchMs,
        newcomerUnicastMs: options.groupNewcomerMs,
        send: (datagram, to) => this.#send(datagram, to),
        drops: this.#drops,
        log: this.#log,
        now: this.#now,
      });
    }
    this.#federation = options.federation;
  }

  /** Starts serving `options.transport`: receive loop and presence timer. */
  static start(options: RelayServerOptions): RelayServer {
    const server = new RelayServer(options);
    server.#receiving = server.#receiveLoop();
    server.#ticker = setInterval(
      () => server.tick(),
      sweepInterval(server.#clientTimeoutMs),
    );
    startRsaPool(server.#rsa, server.#log);
    server.#federation?.attach(server.#federationPeer(), server.#log);
    const signal = options.signal;
    if (signal) {
      const stop = () => void server.close();
      if (signal.aborted) stop();
      else signal.addEventListener("abort", stop, { once: true });
      server.#unlinkSignal = () => signal.removeEventListener("abort", stop);
    }
    return server;
  }

  /** The address the transport is bound to. */
  get localAddress(): PeerAddress {
    return this.#transport.localAddress;
  }

  /** The server key's fingerprint, `SHA256:...`, for clients to pin. */
  get fingerprint(): string {
    return this.#privateKey.publicKey.fingerprint;
  }

  /** Whether the server runs with `--compat`. */
  get compat(): boolean {
    return this.#compat;
  }

  /** The current members. */
  members(): MemberInfo[] {
    return [...this.#members.values()].map((m) => ({
      address: m.key,
      profile: m.profile,
      joinedAt: m.joinedAt,
      lastSeen: m.lastSeen,
      messagesIn: m.messagesIn,
      messagesOut: m.messagesOut,
    }));
  }

  /** Members of the other relays of a federation (none when not federated). */
  remoteMembers(): RemoteMemberInfo[] {
    return this.#federation?.remoteMembers() ?? [];
  }

  /** A snapshot of the counters. */
  stats(): ServerStats {
    const reassembly = { ...this.#memberReassembly.counters };
    for (
      const [name, value] of Object.entries(this.#strangerReassembly.counters)
    ) {
      reassembly[name as keyof ReassemblerCounters] += value;
    }
    return {
      datagramsIn: this.#datagramsIn,
      bytesIn: this.#bytesIn,
      datagramsOut: this.#datagramsOut,
      bytesOut: this.#bytesOut,
      messagesRelayed: this.#messagesRelayed,
      deliveries: this.#deliveries,
      registrations: this.#registrations,
      rsaDecryptions: this.#rsa.decryptions,
      rekeys: this.#rekeys,
      members: this.#members.size,
      loopUtilization: this.#load.utilization,
      queued: { datagrams: this.#pendingTotal, sources: this.#queues.size },
      dropped: this.#drops.snapshot(),
      kernelDropped: this.#kernelDropped,
      presence: { ...this.#presence.counters },
      reassembly,
      datagramsPerMessage: this.#messagesFannedOut === 0
        ? 0
        : (this.#relayDatagrams +
          (this.#group?.stats().datagrams ?? 0)) / this.#messagesFannedOut,
      coalesced: this.#coalescer?.joined ?? 0,
      ...(this.#group ? { group: this.#group.stats() } : {}),
      ...(this.#federation ? { federation: this.#federation.stats() } : {}),
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
   */
  kick(
    address: string,
    reason: string = NOTICE_TEXT[NoticeCode.KICKED],
  ): boolean {
    const key = formatAddress(parseAddress(address));
    const notice = { code: NoticeCode.KICKED, seconds: 0, reason };
    encodeRemoval(notice); // checks the reason before anything changes
    const member = this.#members.get(key);
    if (!member) return false;
    this.#tellRemoved(member, notice);
    this.#remove(member, "kick");
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
   */
  ban(
    target: string,
    options: { readonly seconds?: number; readonly reason?: string } = {},
  ): { target: string; seconds: number | undefined; removed: string[] } {
    const { seconds, reason = NOTICE_TEXT[NoticeCode.BANNED] } = options;
    const notice = { code: NoticeCode.BANNED, seconds: seconds ?? 0, reason };
    encodeRemoval(notice); // checks the reason before anything changes
    const key = this.#bans.add(target, this.#now(), seconds, reason);
    const removed: string[] = [];
    for (const member of [...this.#members.values()]) {
      if (!BanList.covers(key, member.address)) continue;
      this.#tellRemoved(member, notice);
      this.#remove(member, "ban");
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
   */
  unban(target: string): boolean {
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
    if (this.#presence.sweep(now)) {
      this.#log({
        level: "warn",
        event: "stall",
        message:
          "the presence sweep ran late (the process was stopped or its event loop blocked): silence counts from now, so queued datagrams are read before anyone is judged",
      });
    }
    this.#pollKernelDrops(now);
    if (this.#load.overloaded) this.#presence.selfDrop(now);
    for (const member of [...this.#members.values()]) {
      const verdict = this.#presence.judge(member, now);
      if (verdict === "silent") this.#remove(member, "timeout");
      else if (verdict === "extended") {
        this.#log({
          level: "warn",
          event: "timeout_extended",
          client: member.key,
          extensions: member.extensions,
          message:
            "silent past the timeout, but the server itself dropped datagrams meanwhile: its window is extended",
        });
      }
    }
    this.#memberReassembly.expire();
    this.#strangerReassembly.expire();
  }

  /** Reads the kernel's drop counter (at most once a second); a rise is the server's own loss. */
  #pollKernelDrops(now: number): void {
    if (
      !this.#kernelDrops || now - this.#kernelPolledAt < KERNEL_DROPS_POLL_MS
    ) {
      return;
    }
    this.#kernelPolledAt = now;
    const total = this.#kernelDrops();
    const before = this.#kernelDropped ?? 0;
    this.#kernelDropped = total;
    if (total === undefined || total <= before) return;
    this.#presence.selfDrop(now);
    this.#log({
      level: "warn",
      event: "kernel_drops",
      kernel_dropped: total,
      new: total - before,
      message:
        "the kernel dropped datagrams on the server's socket (its receive queue was full): the server does not keep up",
    });
  }

  /**
   * Stops the server: finishes queued work, sends NOTICE 5 to every member,
   * closes the transport. Safe to call twice.
   */
  close(): Promise<void> {
    this.#closing ??= this.#shutdown();
    return this.#closing;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #shutdown(): Promise<void> {
    clearInterval(this.#ticker);
    clearTimeout(this.#presenceTimer);
    this.#presenceTimer = undefined;
    this.#group?.close();
    this.#unlinkSignal?.();
    // Let every datagram in work finish (tasks may queue more meanwhile).
    const busy = () => [...this.#queues.values()].filter((q) => q.pending > 0);
    for (let queues = busy(); queues.length > 0; queues = busy()) {
      await Promise.all(queues.map((q) => q.tail));
    }
    this.#coalescer?.flush();
    this.#flushPresence();
    const notice = noticeRecord(NoticeCode.SERVER_SHUTDOWN, this.#mtu);
    if (notice) {
      const datagram = encodeRecords([notice]);
      for (const member of this.#members.values()) {
        this.#send(datagram, member.address);
      }
    }
    await this.#rsa.close();
    await this.#federation?.close();
    this.#log({
      level: "info",
      event: "shutdown",
      members: this.#members.size,
    });
    for (const member of this.#members.values()) {
      member.guard?.[Symbol.dispose]();
    }
    this.#members.clear();
    if (this.#sendsInFlight > 0) {
      await new Promise<void>((resolve) => this.#sendsDrained = resolve);
    }
    this.#transport.close();
    await this.#receiving;
  }

  async #receiveLoop(): Promise<void> {
    // A drain per wake-up when the transport offers batches: every datagram
    // already received is handled in one turn, and the relay streams that
    // turn makes for one member leave together at its end.
    const batches = this.#transport.receiveBatches?.()[Symbol.asyncIterator]();
    const datagrams = batches ??
      this.#transport[Symbol.asyncIterator]();
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
          if (batch.length > 1 && this.#coalescer) this.#onBatch(batch);
          else for (const datagram of batch) this.#onDatagram(datagram);
        }
      }
    } catch (error) {
      if (!this.#closing) {
        this.#log({
          level: "error",
          event: "receive_failed",
          error: String(error),
        });
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
    const release = this.#coalescer!.hold();
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
    this.#datagramsIn++;
    this.#bytesIn += datagram.data.length;
    const source = formatAddress(datagram.from);
    if (this.#isBanned(datagram.from, source)) return undefined;
    let records: TlvRecord[];
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
    return this.#enqueue(
      source,
      () =>
        this.#processStream(
          records,
          datagram.from,
          source,
          datagram.data.length,
          answerBudget,
        ),
    );
  }

  /**
   * Runs `task` after every earlier task of `source`, so one source's
   * datagrams keep their order: at once when it has none pending. Returns
   * when the task has ended (never rejects), or undefined when it was dropped.
   */
  #enqueue(
    source: string,
    task: () => Promise<void>,
  ): Promise<void> | undefined {
    // Limits first: a queue is only made for a task that will run (an empty
    // queue left in the map would keep shutdown waiting).
    if (this.#pendingTotal >= this.#maxQueuedTotal) {
      this.#selfDrop("overload", source);
      return;
    }
    let queue = this.#queues.get(source);
    if (queue && queue.pending >= this.#maxQueuedPerSource) {
      this.#selfDrop("backlog", source);
      return;
    }
    if (!queue) {
      queue = { tail: Promise.resolve(), pending: 0 };
      this.#queues.set(source, queue);
    }
    const first = queue.pending === 0;
    queue.pending++;
    this.#pendingTotal++;
    let started: Promise<void>;
    if (first) {
      try {
        started = task();
      } catch (error) {
        started = Promise.reject(error);
      }
    } else started = queue.tail.then(task);
    const q = queue;
    q.tail = started.catch((error) => {
      this.#log({
        level: "error",
        event: "internal_error",
        source,
        error: String(error?.stack ?? error),
      });
    }).finally(() => {
      q.pending--;
      this.#pendingTotal--;
      if (q.pending === 0 && this.#queues.get(source) === q) {
        this.#queues.delete(source);
      }
    });
    return q.tail;
  }

  /** A datagram the server dropped for want of capacity: counted, and the presence judge told. */
  #selfDrop(reason: string, source: string): void {
    this.#drops.drop(reason, source);
    if (SELF_DROPS.has(reason)) this.#presence.selfDrop(this.#now());
  }

  async #processStream(
    records: readonly TlvRecord[],
    from: PeerAddress,
    source: string,
    requestSize: number,
    answerBudget: AnswerBudget,
  ): Promise<void> {
    // Queued before a ban, or completed by reassembly: still nothing done.
    if (this.#isBanned(from, source)) return;
    let member = this.#members.get(source);
    if (member?.profile === "rsa") member.lastSeen = this.#now();
    let cookie: Uint8Array | undefined;
    let keyRequestAnswered = false;
    /** An earlier record of this stream proved the member's key (GROUP_CAPABLE). */
    let authenticated = false;
    const rsaBlocks: Uint8Array[] = [];
    let acted = 0;
    for (let i = 0; i < records.length; i++) {
      const record = records[i];
      if (this.#closing) return;
      if (
        record.type !== RecordType.RSA_BLOCK && ++acted > MAX_RECORDS_PER_STREAM
      ) {
        this.#drops.drop("records_over_limit", source, {
          records: records.length,
        });
        return;
      }
      member = this.#members.get(source);
      switch (record.type) {
        case RecordType.FRAGMENT:
          await this.#onFragment(
            record.value,
            from,
            source,
            member,
            requestSize,
            answerBudget,
          );
          break;
        case RecordType.KEY_REQUEST:
          // One answer per stream: the answer is already as large as the
          // request may be, so a second one would amplify.
          if (keyRequestAnswered) this.#drops.count("extra_key_request");
          else if (this.#load.overloaded) this.#drops.count("handshake_shed");
          else {
            this.#answerKeyRequest(from, source, requestSize, answerBudget);
          }
          keyRequestAnswered = true;
          break;
        case RecordType.COOKIE:
          cookie = record.value;
          break;
        case RecordType.SYMMETRIC_KEY:
        case RecordType.CLIENT_PUBLIC_KEY: {
          // A KEY_PROOF belongs to the key record right before it.
          const next = records[i + 1];
          const proof = next?.type === RecordType.KEY_PROOF
            ? next.value
            : undefined;
          if (this.#load.overloaded) this.#drops.count("handshake_shed");
          else {
            await this.#register(
              from,
              source,
              record,
              { cookie, proof },
              requestSize,
            );
            authenticated ||= this.#group !== undefined &&
              this.#registeredWith(source, record);
          }
          cookie = undefined;
          break;
        }
        case RecordType.KEY_PROOF:
          // Read with the key record it follows; anywhere else it is inert.
          break;
        case RecordType.FERNET_MESSAGE:
          if (!member) return this.#unknownSource(from, source, requestSize);
          await this.#onFernetMessage(member, record.value, requestSize);
          break;
        case RecordType.RSA_BLOCK:
          if (!member) return this.#unknownSource(from, source, requestSize);
          if (member.profile !== "rsa") {
            this.#drops.drop("profile_mismatch", source);
          } else rsaBlocks.push(record.value);
          break;
        case RecordType.KEEPALIVE:
          if (!member) return this.#unknownSource(from, source, requestSize);
          authenticated ||= await this.#onKeepalive(member, record.value);
          break;
        case RecordType.GROUP_CAPABLE:
          if (!member) this.#drops.drop("group_capable_unknown", source);
          else this.#group?.onCapable(member, authenticated); // off: ignored

          break;
        case RecordType.DISCONNECT:
          if (!member) this.#drops.drop("disconnect_unknown", source);
          else await this.#onDisconnect(member, record.value);
          break;
        default:
          if (SERVER_ONLY_TYPES.has(record.type)) {
            this.#drops.drop("unexpected_type", source);
          } else if (!isKnownRecordType(record.type)) {
            this.#drops.count("unknown_type");
          }
      }
    }
    member = this.#members.get(source);
    if (rsaBlocks.length > 0 && member?.profile === "rsa") {
      await this.#onRsaMessage(member, rsaBlocks, requestSize);
    }
  }

  async #onFragment(
    value: Uint8Array,
    from: PeerAddress,
    source: string,
    member: Member | undefined,
    requestSize: number,
    answerBudget: AnswerBudget,
  ): Promise<void> {
    const reassembler = member
      ? this.#memberReassembly
      : this.#strangerReassembly;
    const outcome = reassembler.addRecord(source, value);
    if (outcome.kind === "dropped") this.#drops.drop(outcome.reason, source);
    if (outcome.kind !== "stream") return;
    // Answers stay bounded by the datagram that completed the stream.
    await this.#processStream(
      outcome.records,
      from,
      source,
      requestSize,
      answerBudget,
    );
  }

  #answerKeyRequest(
    from: PeerAddress,
    source: string,
    requestSize: number,
    answerBudget: AnswerBudget,
  ): void {
    const answerSize = keyAnswerSize(this.#privateKey);
    if (!this.#compat && requestSize < answerSize) {
      this.#drops.drop("short_key_request", source);
      return;
    }
    if (!this.#compat && answerBudget.bytes < answerSize) {
      // Earlier answers to this datagram used up what it may cause.
      this.#drops.drop("answer_budget", source);
      return;
    }
    const now = this.#now();
    if (!this.#handshakeLimiter.allow(source, now)) {
      this.#drops.drop("handshake_rate", source);
      return;
    }
    // Key requests leave half of the global budget to validated cookies.
    const reserve = this.#handshakeBudget.burst / 2;
    if (!this.#handshakeBudget.take(now, 1, reserve)) {
      this.#drops.drop("handshake_global_rate", source);
      return;
    }
    answerBudget.bytes -= answerSize;
    const cookie = this.#cookies.issue(encodeAddress(from));
    this.#sendStream(
      encodeRecords([
        { type: RecordType.COOKIE, value: cookie },
        { type: RecordType.SERVER_PUBLIC_KEY, value: this.#publicPem },
      ]),
      from,
    );
  }

  /**
   * A key record (SYMMETRIC_KEY or CLIENT_PUBLIC_KEY) with the COOKIE before
   * it and the KEY_PROOF after it: protocol.md sections 4 and 10. The cookie
   * is checked, and one cookie is taken for one key record only, before any
   * RSA work; a hybrid member's key is replaced only with a proof made under
   * its current key.
   */
  async #register(
    from: PeerAddress,
    source: string,
    record: TlvRecord,
    bundle: { cookie: Uint8Array | undefined; proof: Uint8Array | undefined },
    requestSize: number,
  ): Promise<void> {
    const { cookie, proof } = bundle;
    const addressValue = encodeAddress(from);
    const recordHash = sha256(record.value);
    /** The cookie as the key of the accepted-cookie memory. */
    let cookieId: string | undefined;
    if (cookie === undefined) {
      if (!this.#compat) {
        this.#drops.drop("cookie_missing", source);
        return;
      }
    } else {
      const verdict = this.#cookies.verify(cookie, addressValue);
      if (verdict !== "valid") {
        this.#drops.drop(`cookie_${verdict}`, source);
        return;
      }
      cookieId = encodeBase64(cookie);
      const use = this.#cookieUse(cookieId, recordHash, source);
      if (use === "refused") return;
      if (use === "same_key") {
        // The same cookie with the same key record: a retransmission (its
        // WELCOME was lost), answered again without RSA work while that
        // registration is still in force; a replay of one that is not (the
        // member left or changed key since) is refused.
        const existing = this.#members.get(source);
        if (
          existing !== undefined &&
          bytesEqual(existing.registrationHash, recordHash)
        ) {
          await this.#welcomeAgain(existing);
        } else this.#drops.drop("registration_replayed", source);
        return;
      }
    }
    const now = this.#now();
    if (!this.#handshakeLimiter.allow(source, now)) {
      this.#drops.drop("handshake_rate", source);
      return;
    }
    if (!this.#handshakeBudget.take(now)) {
      this.#drops.drop("handshake_global_rate", source);
      return;
    }
    if (this.#pendingHandshakes >= this.#maxPendingHandshakes) {
      this.#drops.drop("handshake_busy", source);
      return;
    }
    const profile: MemberProfile = record.type === RecordType.SYMMETRIC_KEY
      ? "hybrid"
      : "rsa";
    // A hybrid member's identity is its key: nothing but a rekey proven
    // under that key replaces it (an RSA registration would not carry one).
    const current = this.#members.get(source);
    if (current?.profile === "hybrid" && profile === "rsa") {
      this.#drops.drop("rekey_without_proof", source);
      return;
    }
    let fernetKey: FernetKey | undefined;
    let rsaKey: RsaPublicKey | undefined;
    let keyId: string;
    this.#pendingHandshakes++;
    try {
      if (profile === "hybrid") {
        const keyText = await this.#rsa.decrypt(record.value);
        keyId = encodeBase64(
          hmacSha256(this.#keyIdSecret, keyText).subarray(0, 16),
        );
        if (this.#members.get(source)?.keyId !== keyId) {
          // One long-lived AES cipher per member key (PERFORMANCE.md),
          // released when the key is replaced or the member leaves.
          fernetKey = await FernetKey.fromText(keyText, this.#fernetBackend, {
            persistentCiphers: true,
          });
        }
      } else {
        rsaKey = await RsaPublicKey.fromPem(decoder.decode(record.value));
        keyId = rsaKey.fingerprint;
        if (rsaKey.modulusBits < 2048 || rsaKey.modulusBits > 4096) {
          this.#drops.drop("client_key_size", source, {
            bits: rsaKey.modulusBits,
          });
          return;
        }
      }
    } catch (error) {
      if (
        error instanceof RsaDecryptError || error instanceof RangeError ||
        error instanceof InvalidKeyError
      ) {
        this.#drops.drop(
          profile === "hybrid" ? "bad_symmetric_key" : "bad_client_key",
          source,
          { error: error.message },
        );
        return;
      }
      throw error;
    } finally {
      this.#pendingHandshakes--;
    }
    const refuse = () => fernetKey?.[Symbol.dispose]();
    if (this.#closing) return refuse();
    // Banned while the RSA work ran: not let in.
    if (this.#isBanned(from, source)) return refuse();
    // Another stream may have spent this cookie while the RSA work ran.
    if (
      cookieId !== undefined &&
      this.#cookieUse(cookieId, recordHash, source) === "refused"
    ) return refuse();
    const remember = () => {
      if (cookieId === undefined) return;
      const at = this.#now();
      this.#acceptedCookies.set(
        cookieId,
        recordHash,
        at + COOKIE_MEMORY_MS,
        at,
      );
    };

    const existing = this.#members.get(source);
    if (existing?.keyId === keyId) {
      // Its current key again (its WELCOME was lost): answer again, change
      // nothing, so the member's replay window survives. (No Fernet key was
      // made for it above.)
      remember();
      await this.#welcomeAgain(existing);
      return;
    }
    if (existing?.profile === "hybrid") {
      const verdict = await this.#checkKeyProof(existing, proof, recordHash);
      if (verdict !== undefined) {
        this.#drops.drop(verdict, source);
        return refuse();
      }
    }
    const guard = fernetKey
      ? new TokenGuard(
        fernetKey,
        this.#marker,
        this.#tokenMaxAge,
        this.#replayEntries,
      )
      : undefined;
    if (existing) {
      remember();
      existing.profile = profile;
      existing.guard?.[Symbol.dispose]();
      existing.guard = guard;
      existing.rsaKey = rsaKey;
      existing.keyId = keyId;
      existing.registrationHash = recordHash;
      existing.lastSeen = now;
      this.#rekeys++;
      this.#log({ level: "info", event: "rekey", client: source, profile });
      this.#sendStream(
        encodeRecords([await this.#welcome(existing)]),
        existing.address,
      );
      return;
    }
    if (this.#members.size >= this.#maxClients) {
      guard?.[Symbol.dispose]();
      this.#drops.drop("server_full", source);
      this.#sendNotice(from, NoticeCode.SERVER_FULL, requestSize);
      return;
    }
    const fromIp = this.#membersPerIp.get(from.hostname) ?? 0;
    if (fromIp >= this.#maxClientsPerIp) {
      guard?.[Symbol.dispose]();
      this.#drops.drop("ip_full", source, { limit: this.#maxClientsPerIp });
      this.#sendNotice(from, NoticeCode.SERVER_FULL, requestSize);
      return;
    }
    remember();
    const member: Member = {
      address: from,
      key: source,
      addressValue,
      profile,
      guard,
      rsaKey,
      keyId,
      registrationHash: recordHash,
      joinedAt: now,
      lastSeen: now,
      messagesIn: 0,
      messagesOut: 0,
      messageRate: new TokenBucket(
        this.#messagesPerSecond,
        this.#messageBurst,
        now,
      ),
      rsaBlockRate: new TokenBucket(
        this.#rsaBlocksPerSecond,
        this.#rsaBlockBurst,
        now,
      ),
      keepaliveRate: new TokenBucket(
        this.#keepalivesPerSecond,
        this.#keepaliveBurst,
        now,
      ),
      extendedAt: -Infinity,
      extensions: 0,
    };
    this.#members.set(source, member);
    this.#membersPerIp.set(from.hostname, fromIp + 1);
    this.#strangerReassembly.forgetSource(source);
    this.#registrations++;
    this.#log({ level: "info", event: "join", client: source, profile });
    this.#federation?.announceJoin(addressValue);
    if (this.#federation?.hasRemote(source)) {
      // It moved here from another relay, where the members here saw it:
      // they see it leave and come back, as at the other relays.
      this.#notifyMembers(RecordType.NOTIFY_DISCONNECT, addressValue, member);
    }
    this.#notifyMembers(RecordType.NOTIFY_CONNECT, addressValue, member);
    this.#sendPacked(
      [await this.#welcome(member), ...this.#presentRecords(member)],
      from,
    );
  }

  /**
   * One cookie, one key (protocol.md section 10): whether a cookie is
   * unused, was accepted for this same key record, or was accepted for
   * another one (then refused and counted, `cookie_reused`).
   */
  #cookieUse(
    cookieId: string,
    recordHash: Uint8Array,
    source: string,
  ): "fresh" | "same_key" | "refused" {
    const covered = this.#acceptedCookies.get(cookieId, this.#now());
    if (covered === undefined) return "fresh";
    if (bytesEqual(covered, recordHash)) return "same_key";
    this.#drops.drop("cookie_reused", source);
    return "refused";
  }

  /** Answers a repeated registration again: WELCOME and the present members, nothing changed. */
  async #welcomeAgain(member: Member): Promise<void> {
    this.#drops.count("registration_repeated");
    this.#sendPacked(
      [await this.#welcome(member), ...this.#presentRecords(member)],
      member.address,
    );
  }

  /**
   * Checks a rekey's KEY_PROOF under the member's current key (MAC, age,
   * replay, reflection): its plaintext must be the first 16 bytes of the
   * SHA-256 of the new key record's value. Returns the drop reason, or
   * undefined when the proof holds.
   */
  async #checkKeyProof(
    member: Member,
    proof: Uint8Array | undefined,
    recordHash: Uint8Array,
  ): Promise<string | undefined> {
    if (proof === undefined || member.guard === undefined) {
      return "rekey_without_proof";
    }
    const opened = await member.guard.open(proof, this.#now());
    if (!opened.ok) return `rekey_proof_${opened.reason}`;
    return bytesEqual(
        opened.plaintext,
        recordHash.subarray(0, KEY_PROOF_SIZE),
      )
      ? undefined
      : "rekey_proof_mismatch";
  }

  /** Whether the member at `source` now holds the key of this registration record. */
  #registeredWith(source: string, record: TlvRecord): boolean {
    const member = this.#members.get(source);
    return member?.profile === "hybrid" &&
      bytesEqual(member.registrationHash, sha256(record.value));
  }

  /** One NOTIFY_CONNECT per member other than `member`, here or at the other relays of a federation. */
  #presentRecords(member: Member): TlvRecord[] {
    const present: TlvRecord[] = [];
    for (const other of this.#members.values()) {
      if (other !== member) {
        present.push({
          type: RecordType.NOTIFY_CONNECT,
          value: other.addressValue,
        });
      }
    }
    for (const remote of this.#federation?.remoteAddresses() ?? []) {
      const key = formatAddress(decodeAddress(remote));
      if (!this.#members.has(key)) {
        present.push({ type: RecordType.NOTIFY_CONNECT, value: remote });
      }
    }
    return present;
  }

  /**
   * Sends one NOTIFY_CONNECT or NOTIFY_DISCONNECT record to every member but
   * `except`: at once when no other change went out within the batch
   * interval, else with the changes of the interval when it ends.
   */
  #notifyMembers(
    type:
      | typeof RecordType.NOTIFY_CONNECT
      | typeof RecordType.NOTIFY_DISCONNECT,
    addressValue: Uint8Array,
    except?: Member,
  ): void {
    this.#presenceQueue.push({
      record: { type, value: addressValue },
      about: except,
    });
    if (this.#closing) return; // the shutdown sends what is queued
    if (this.#presenceBatchMs <= 0) return this.#flushPresence();
    if (this.#presenceAtOnce < PRESENCE_AT_ONCE) {
      this.#presenceAtOnce++;
      this.#flushPresence();
    }
    this.#presenceTimer ??= setTimeout(
      this.#endPresenceInterval,
      this.#presenceBatchMs,
    );
  }

  /** The batch interval is over: what it queued goes out, and a new one starts if there was any. */
  readonly #endPresenceInterval = (): void => {
    this.#presenceTimer = undefined;
    this.#presenceAtOnce = 0;
    if (this.#presenceQueue.length === 0) return;
    this.#flushPresence();
    this.#presenceTimer = setTimeout(
      this.#endPresenceInterval,
      this.#presenceBatchMs,
    );
  };

  /**
   * Sends the queued presence records, in order, to every member: one
   * packing shared by all, except for the members a record is about (they
   * do not get their own).
   */
  #flushPresence(): void {
    if (this.#presenceQueue.length === 0) return;
    const queued = this.#presenceQueue.splice(0);
    const shared = this.#pack(queued.map((q) => q.record));
    const subjects = new Set(queued.map((q) => q.about));
    for (const member of this.#members.values()) {
      const datagrams = subjects.has(member)
        ? this.#pack(
          queued.filter((q) => q.about !== member).map((q) => q.record),
        )
        : shared;
      for (const datagram of datagrams) this.#send(datagram, member.address);
    }
  }

  /** What the federation may ask of this server. */
  #federationPeer(): FederationPeer {
    return {
      localMembers: () =>
        [...this.#members.values()].map((m) => m.addressValue),
      deliverRemote: (sender, message) => this.#relayRemote(sender, message),
      remoteJoined: (address, key) => {
        if (!this.#members.has(key)) {
          this.#notifyMembers(RecordType.NOTIFY_CONNECT, address);
        }
      },
      remoteLeft: (address, key) => {
        if (!this.#members.has(key)) {
          this.#notifyMembers(RecordType.NOTIFY_DISCONNECT, address);
        }
      },
      drop: (reason, count) =>
        this.#drops.drop(reason, "federation", {}, count),
    };
  }

  /** Delivers a message of another relay's member to every local member. */
  #relayRemote(sender: Uint8Array, message: Uint8Array): void {
    if (this.#closing) return;
    if (message.length > this.#maxMessageBytes) {
      this.#drops.drop("federation_too_large", "federation");
      return;
    }
    // A member that moved here from another relay must not get its own
    // messages back.
    const local = this.#members.get(formatAddress(decodeAddress(sender)));
    Promise.resolve(this.#fanOut(sender, message, local, this.#now())).catch(
      (error) =>
        this.#log({
          level: "error",
          event: "relay_failed",
          error: String(error),
        }),
    );
  }

  /** The WELCOME record for `member`: its address under its own key. */
  async #welcome(member: Member): Promise<TlvRecord> {
    const value = member.guard
      ? await member.guard.seal(member.addressValue, this.#now())
      : await member.rsaKey!.encrypt(member.addressValue);
    return { type: RecordType.WELCOME, value };
  }

  async #onFernetMessage(
    member: Member,
    token: Uint8Array,
    requestSize: number,
  ): Promise<void> {
    if (!member.guard) {
      this.#drops.drop("profile_mismatch", member.key);
      return;
    }
    const now = this.#now();
    // Synchronously when the key allows: then the whole relay runs in the
    // receive loop's turn (no promise in between), which is also what the
    // load meter's measure of waiting needs.
    const guard = member.guard;
    const opened = guard.canSealSync
      ? guard.openSync(token, now)
      : await guard.open(token, now);
    if (!opened.ok) {
      this.#drops.drop(opened.reason, member.key);
      return;
    }
    member.lastSeen = now;
    await this.#relayChecked(member, opened.plaintext, requestSize);
  }

  async #onRsaMessage(
    member: Member,
    blocks: readonly Uint8Array[],
    requestSize: number,
  ): Promise<void> {
    const perBlock = this.#privateKey.publicKey.maxChunkSize;
    if (
      blocks.length > Math.max(1, Math.ceil(this.#maxMessageBytes / perBlock))
    ) {
      this.#drops.drop("message_too_large", member.key);
      this.#sendNotice(
        member.address,
        NoticeCode.MESSAGE_TOO_LARGE,
        requestSize,
      );
      return;
    }
    // Spend the member's budgets before any RSA work: one message, and one
    // RSA block per block.
    const now = this.#now();
    if (
      !member.rsaBlockRate.take(now, blocks.length) ||
      !member.messageRate.take(now)
    ) {
      this.#drops.drop("rate_limited", member.key);
      this.#sendNotice(member.address, NoticeCode.RATE_LIMITED, requestSize);
      return;
    }
    if (this.#pendingRsaMessages >= this.#maxPendingHandshakes) {
      this.#drops.drop("rsa_busy", member.key);
      return;
    }
    const parts: Uint8Array[] = [];
    this.#pendingRsaMessages++;
    try {
      // Block by block, each in an RSA slot, so a long message shares the
      // crypto threads fairly with registrations and keeps the core cap.
      for (const block of blocks) {
        parts.push(
          await this.#rsa.decrypt(block),
        );
      }
    } catch (error) {
      if (error instanceof RsaDecryptError || error instanceof RangeError) {
        this.#drops.drop("bad_rsa_block", member.key);
        return;
      }
      throw error;
    } finally {
      this.#pendingRsaMessages--;
    }
    const plaintext = new Uint8Array(
      parts.reduce((total, part) => total + part.length, 0),
    );
    let offset = 0;
    for (const part of parts) {
      plaintext.set(part, offset);
      offset += part.length;
    }
    await this.#relayChecked(member, plaintext, requestSize, true);
  }

  async #relayChecked(
    sender: Member,
    plaintext: Uint8Array,
    requestSize: number,
    rateAlreadyTaken = false,
  ): Promise<void> {
    const now = this.#now();
    if (plaintext.length > this.#maxMessageBytes) {
      this.#drops.drop("message_too_large", sender.key);
      this.#sendNotice(
        sender.address,
        NoticeCode.MESSAGE_TOO_LARGE,
        requestSize,
      );
      return;
    }
    if (!rateAlreadyTaken && !sender.messageRate.take(now)) {
      this.#drops.drop("rate_limited", sender.key);
      this.#sendNotice(sender.address, NoticeCode.RATE_LIMITED, requestSize);
      return;
    }
    sender.messagesIn++;
    this.#messagesRelayed++;
    this.#federation?.publishMessage(sender.addressValue, plaintext);
    const fanned = this.#fanOut(sender.addressValue, plaintext, sender, now);
    // Awaited only when some member's key seals asynchronously: the hot path
    // stays inside the receive loop's turn (the load meter relies on it).
    const recipients = typeof fanned === "number" ? fanned : await fanned;
    this.#log({
      level: "debug",
      event: "relay",
      from: sender.key,
      bytes: plaintext.length,
      recipients,
    });
  }

  /**
   * Encrypts `plaintext` for every member but `except` and sends it with
   * the sender's address. Returns the number of recipients, as a promise
   * only when some member's key seals asynchronously.
   */
  #fanOut(
    senderAddress: Uint8Array,
    plaintext: Uint8Array,
    except: Member | undefined,
    now: number,
  ): number | Promise<number> {
    // Members hear of a join before the newcomer's messages.
    this.#flushPresence();
    this.#messagesFannedOut++;
    // Group fan-out first: one token for every member holding the epoch key.
    const grouped = this.#group?.relay(senderAddress, except, plaintext, now);
    const senderRecord: TlvRecord = {
      type: RecordType.SENDER,
      value: senderAddress,
    };
    // Members whose key seals synchronously (the hot path) are served in
    // this loop, each with one datagram written in place when the relay
    // stream fits one; the others (RSA, or a WebCrypto Fernet backend) after.
    const tokenLength = FernetKey.tokenLength(plaintext.length);
    const tokenAt = 2 * TLV_HEADER_SIZE + senderAddress.length;
    const inPlace = tokenLength <= MAX_TLV_VALUE_SIZE &&
      tokenAt + tokenLength <= this.#mtu;
    let prefix: Uint8Array | undefined;
    if (inPlace) {
      prefix = new Uint8Array(tokenAt);
      writeRecordHeader(
        prefix,
        encodeRecordsInto([senderRecord], prefix, 0),
        RecordType.FERNET_MESSAGE,
        tokenLength,
      );
    }
    const later: Promise<void>[] = [];
    let recipients = 0;
    for (const member of this.#members.values()) {
      if (member === except) continue;
      recipients++;
      if (grouped?.has(member)) {
        this.#countDelivery(member);
        continue;
      }
      const guard = member.guard;
      if (!guard?.canSealSync) {
        later.push(this.#deliverAsync(member, senderRecord, plaintext, now));
      } else if (prefix) {
        const datagram = new Uint8Array(tokenAt + tokenLength);
        datagram.set(prefix);
        guard.sealInto(plaintext, now, datagram, tokenAt);
        this.#countDelivery(member);
        if (this.#coalescer?.holding) {
          this.#coalescer.add(member.address, datagram);
        } else {
          this.#relayDatagrams++;
          this.#send(datagram, member.address);
        }
      } else {
        this.#deliver(member, [senderRecord, {
          type: RecordType.FERNET_MESSAGE,
          value: guard.sealSync(plaintext, now),
        }]);
      }
    }
    return later.length === 0
      ? recipients
      : Promise.all(later).then(() => recipients);
  }

  /** Encrypts for `member` asynchronously (RSA members, WebCrypto keys) and sends. */
  async #deliverAsync(
    member: Member,
    senderRecord: TlvRecord,
    plaintext: Uint8Array,
    now: number,
  ): Promise<void> {
    const records: TlvRecord[] = [senderRecord];
    if (member.guard) {
      records.push({
        type: RecordType.FERNET_MESSAGE,
        value: await member.guard.seal(plaintext, now),
      });
    } else {
      for (const block of await member.rsaKey!.encryptChunks(plaintext)) {
        records.push({ type: RecordType.RSA_RELAY_BLOCK, value: block });
      }
    }
    this.#deliver(member, records);
  }

  /** Sends one relay stream (SENDER + the message for `member`). */
  #deliver(member: Member, records: readonly TlvRecord[]): void {
    this.#countDelivery(member);
    this.#relayDatagrams += this.#sendStream(
      encodeRecords(records),
      member.address,
    );
  }

  #countDelivery(member: Member): void {
    member.messagesOut++;
    this.#deliveries++;
  }

  /**
   * A hybrid member's keep-alive: rate-limited before any crypto, checked
   * (MAC, age, replay, reflection, empty plaintext), and answered with a
   * KEEPALIVE token of the empty plaintext under the member's key
   * (protocol.md section 10), so the client can tell that the server still
   * holds it. Returns whether the keep-alive proved the member's key.
   */
  async #onKeepalive(member: Member, value: Uint8Array): Promise<boolean> {
    if (member.profile === "rsa") return false; // refreshed at stream start
    const now = this.#now();
    if (!member.keepaliveRate.take(now)) {
      this.#drops.drop("keepalive_rate", member.key);
      return false;
    }
    if (value.length === 0 || value.every((b) => b === 0)) {
      if (this.#compat) member.lastSeen = now;
      else this.#drops.drop("keepalive_unauthenticated", member.key);
      return false;
    }
    const guard = member.guard!;
    const opened = await guard.open(value, now);
    if (!opened.ok) {
      this.#drops.drop(opened.reason, member.key);
      return false;
    }
    if (opened.plaintext.length !== 0) {
      this.#drops.drop("keepalive_not_empty", member.key);
      return false;
    }
    member.lastSeen = now;
    if (this.#members.get(member.key) !== member) return true; // left meanwhile
    this.#send(
      encodeRecords([{
        type: RecordType.KEEPALIVE,
        value: await guard.seal(EMPTY, now),
      }]),
      member.address,
    );
    return true;
  }

  async #onDisconnect(member: Member, value: Uint8Array): Promise<void> {
    if (member.profile === "rsa") {
      if (value.length === 0) this.#remove(member, "disconnect");
      else this.#drops.drop("forged_disconnect", member.key);
      return;
    }
    const opened = await member.guard!.open(value, this.#now());
    if (!opened.ok) {
      this.#drops.drop(
        opened.reason === "token_signature"
          ? "forged_disconnect"
          : opened.reason,
        member.key,
      );
    } else if (!bytesEqual(opened.plaintext, DISCONNECT_TEXT)) {
      this.#drops.drop("forged_disconnect", member.key);
    } else if (this.#members.get(member.key) === member) {
      this.#remove(member, "disconnect");
    }
  }

  #unknownSource(from: PeerAddress, source: string, requestSize: number): void {
    this.#drops.drop("unknown_source", source);
    this.#sendNotice(from, NoticeCode.UNKNOWN_CLIENT, requestSize);
  }

  #remove(member: Member, reason: string): void {
    if (this.#members.get(member.key) !== member) return;
    this.#members.delete(member.key);
    const fromIp = (this.#membersPerIp.get(member.address.hostname) ?? 1) - 1;
    if (fromIp > 0) this.#membersPerIp.set(member.address.hostname, fromIp);
    else this.#membersPerIp.delete(member.address.hostname);
    this.#group?.onLeave(member);
    member.guard?.[Symbol.dispose]();
    this.#memberReassembly.forgetSource(member.key);
    this.#log({ level: "info", event: "leave", client: member.key, reason });
    this.#federation?.announceLeave(member.addressValue);
    if (!this.#federation?.hasRemote(member.key)) {
      this.#notifyMembers(RecordType.NOTIFY_DISCONNECT, member.addressValue);
    }
  }

  /** Whether `from` is banned; its datagram is then dropped and counted (`banned`). */
  #isBanned(from: PeerAddress, source: string): boolean {
    if (this.#bans.size === 0) return false;
    if (!this.#bans.match(from, this.#now(), source)) return false;
    this.#drops.drop("banned", source);
    return true;
  }

  /**
   * Tells a member it is removed (NOTICE 6 or 7, PROTOCOL.md section 7):
   * for a hybrid member the value after the code is a token of the removal
   * body under the key derived from its key for removal notices only (no
   * relayed message can pass for one), so nobody else can make it give up;
   * an RSA member gets the body as plain text. Sent before the member is
   * removed, at most the MTU; the operator caused it, so no datagram bounds
   * it.
   */
  #tellRemoved(member: Member, notice: RemovalNotice): void {
    const send = (text: string) => {
      const record = noticeRecord(notice.code, this.#mtu, text);
      if (record) this.#send(encodeRecords([record]), member.address);
    };
    const guard = member.guard;
    if (!guard) return send(formatRemovalText(notice));
    const body = encodeRemoval(notice);
    if (guard.canSealSync) {
      const removal = guard.deriveSync(REMOVAL_NOTICE_LABEL);
      send(decoder.decode(removal.sealSync(body, this.#now())));
    } else {
      guard.derive(REMOVAL_NOTICE_LABEL).then((removal) =>
        removal.seal(body, this.#now())
      ).then(
        (token) => send(decoder.decode(token)),
        (error) =>
          this.#drops.drop("notice_unsealed", member.key, {
            error: String(error),
          }),
      );
    }
  }

  /** Sends a NOTICE no larger than the datagram that caused it, at most once a second per source. */
  #sendNotice(to: PeerAddress, code: number, maxSize: number): void {
    const record = noticeRecord(code, Math.min(maxSize, this.#mtu));
    if (!record) return;
    if (!this.#noticeGate.allow(formatAddress(to), this.#now())) return;
    this.#send(encodeRecords([record]), to);
  }

  /** Packs records into as few datagrams of at most the MTU as their order allows. */
  #sendPacked(records: readonly TlvRecord[], to: PeerAddress): void {
    for (const stream of this.#pack(records)) this.#sendStream(stream, to);
  }

  /** Records in order, cut into streams of at most the MTU (a record larger than the MTU alone in its stream, to be fragmented). */
  #pack(records: readonly TlvRecord[]): Uint8Array[] {
    const streams: Uint8Array[] = [];
    let batch: TlvRecord[] = [];
    let size = 0;
    for (const record of records) {
      const recordSize = encodedSize([record]);
      if (batch.length > 0 && size + recordSize > this.#mtu) {
        streams.push(encodeRecords(batch));
        batch = [];
        size = 0;
      }
      batch.push(record);
      size += recordSize;
    }
    if (batch.length > 0) streams.push(encodeRecords(batch));
    return streams;
  }

  /** Sends a stream, fragmented past the MTU; returns the datagrams it took. */
  #sendStream(stream: Uint8Array, to: PeerAddress): number {
    if (stream.length <= this.#mtu) {
      this.#send(stream, to);
      return 1;
    }
    const datagrams = fragmentStream(stream, this.#mtu, randomMsgId());
    for (const datagram of datagrams) this.#send(datagram, to);
    return datagrams.length;
  }

  /** Sends a datagram after any relay streams still pending for `to`, so it cannot overtake them. */
  #send(datagram: Uint8Array, to: PeerAddress): void {
    this.#coalescer?.flushTo(to);
    this.#sendNow(datagram, to);
  }

  #sendNow(datagram: Uint8Array, to: PeerAddress): void {
    this.#datagramsOut++;
    this.#bytesOut += datagram.length;
    this.#sendsInFlight++;
    this.#transport.send(datagram, to).then(this.#sendDone, (error) => {
      this.#drops.drop("send_failed", formatAddress(to), {
        error: String(error),
      });
      this.#sendDone();
    });
  }

  /** Counts a finished send; wakes a shutdown waiting for the last one. */
  readonly #sendDone = (): void => {
    if (--this.#sendsInFlight === 0) this.#sendsDrained?.();
  };
}

/** Interval of the presence sweep for a member timeout: a quarter of it, 10 ms to 1 s. */
function sweepInterval(clientTimeoutMs: number): number {
  return Math.max(10, Math.min(1000, clientTimeoutMs / 4));
}

/** Whether two byte arrays are equal (not constant time: for public data). */
function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Size of the answer to a key request (protocol.md section 4 step 2): COOKIE
 * and SERVER_PUBLIC_KEY records in one datagram.
 */
export function keyAnswerSize(privateKey: RsaPrivateKey): number {
  return 2 * TLV_HEADER_SIZE + COOKIE_SIZE +
    encoder.encode(privateKey.publicKey.pem).length;
}
