/**
 * The relay server's options ({@linkcode RelayServerOptions}, flat: tests,
 * the CLI and embedders name them), their defaults and validation, resolved
 * once into the {@linkcode ServerConfig} the server's modules read, and the
 * protocol bounds they share.
 *
 * @module
 */
import { COOKIE_SIZE } from "../../crypto/cookie.ts";
import type { FernetBackend } from "../../crypto/fernet.ts";
import type { RsaPrivateKey } from "../../crypto/rsa.ts";
import {
  DEFAULT_REPLAY_ENTRIES,
  replayWindowEntries,
} from "../../crypto/replay.ts";
import type { PeerAddress } from "../../wire/address.ts";
import { TLV_HEADER_SIZE } from "../../wire/tlv.ts";
import type { ReassemblerLimits } from "../../core/reassembler.ts";
import { DEFAULT_MAX_BANS } from "../../core/bans.ts";
import { guardedSink } from "../../core/drops.ts";
import type { LoadProbe } from "../../core/load.ts";
import type { DatagramTransport } from "../../runtime/transport.ts";
import { type LogSink, silentLog } from "../../log.ts";
import type { Federation } from "./federation.ts";

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

/** The limits of {@linkcode ServerConfig}, defaults applied. */
export interface ServerLimits {
  /** Members at most. */
  readonly maxClients: number;
  /** Members from one IP at most. */
  readonly maxClientsPerIp: number;
  /** Largest message plaintext relayed. */
  readonly maxMessageBytes: number;
  /** Maximum Fernet token age and future skew (s). */
  readonly tokenMaxAgeSeconds: number;
  /** Per-member message bucket: rate. */
  readonly messagesPerSecond: number;
  /** Per-member message bucket: burst. */
  readonly messageBurst: number;
  /** Per-member RSA block bucket: rate. */
  readonly rsaBlocksPerSecond: number;
  /** Per-member RSA block bucket: burst (one message of the maximum size, at least 200). */
  readonly rsaBlockBurst: number;
  /** RSA blocks one RSA-profile message may have at most. */
  readonly maxRsaBlocksPerMessage: number;
  /** Per-member keep-alive bucket: rate. */
  readonly keepalivesPerSecond: number;
  /** Per-member keep-alive bucket: burst. */
  readonly keepaliveBurst: number;
  /**
   * IVs each hybrid member's replay window holds: every token its message and
   * keep-alive budgets let it send in a token's life (13,230 by default), at
   * most a receiver's default (65,536) however high the budgets are raised.
   */
  readonly replayEntries: number;
  /** Per-address handshake bucket: rate. */
  readonly handshakesPerSecond: number;
  /** Per-address handshake bucket: burst. */
  readonly handshakeBurst: number;
  /** Global handshake bucket: rate. */
  readonly globalHandshakesPerSecond: number;
  /** Global handshake bucket: burst. */
  readonly globalHandshakeBurst: number;
  /** RSA decryptions waiting or running at most (registrations; RSA messages have as many again). */
  readonly maxPendingHandshakes: number;
  /** Datagrams of one source queued or in work at most. */
  readonly maxQueuedPerSource: number;
  /** Datagrams of all sources queued or in work at most. */
  readonly maxQueuedTotal: number;
  /** Bans kept at most. */
  readonly maxBans: number;
}

/** Group fan-out settings of {@linkcode ServerConfig} (`fanout: "group"` only). */
export interface GroupConfig {
  /** Where GROUP_MESSAGE datagrams go (absent: by unicast to each member). */
  readonly downstream: PeerAddress | undefined;
  /** Membership changes within this interval share one epoch (ms). */
  readonly batchMs: number | undefined;
  /** Newcomers' unicast copies last this long (ms). */
  readonly newcomerMs: number | undefined;
}

/** {@linkcode RelayServerOptions} resolved once: defaults applied, checked. */
export interface ServerConfig {
  /** The bound transport. */
  readonly transport: DatagramTransport;
  /** The server's RSA key. */
  readonly privateKey: RsaPrivateKey;
  /** The public key's PEM, as sent in SERVER_PUBLIC_KEY. */
  readonly publicPem: Uint8Array;
  /** Bytes of the answer to a key request. */
  readonly keyAnswerSize: number;
  /** Largest datagram sent. */
  readonly mtu: number;
  /** Whether relay streams of one turn are coalesced per recipient. */
  readonly coalesceSends: boolean;
  /** A member silent this long is removed (ms). */
  readonly clientTimeoutMs: number;
  /** Interval of the presence sweep (ms). */
  readonly sweepMs: number;
  /** Presence batch interval (ms; 0: every change at once). */
  readonly presenceBatchMs: number;
  /** Clients of the original design accepted. */
  readonly compat: boolean;
  /** The limits, defaults applied. */
  readonly limits: ServerLimits;
  /** RSA worker pool settings. */
  readonly rsa: { readonly threads?: number; readonly schedIdle?: boolean };
  /** Group fan-out settings, undefined for unicast fan-out. */
  readonly group: GroupConfig | undefined;
  /** Fernet implementation (undefined: the library default). */
  readonly fernetBackend: FernetBackend | undefined;
  /** The load probe given, if any. */
  readonly load: LoadProbe | undefined;
  /** The kernel drop counter, if any. */
  readonly kernelDrops: (() => number | undefined) | undefined;
  /** Reassembly bounds for members. */
  readonly reassembly: Partial<ReassemblerLimits> | undefined;
  /** The log sink, guarded (never throws). */
  readonly log: LogSink;
  /** The clock (ms). */
  readonly now: () => number;
  /** Stops the server when aborted. */
  readonly signal: AbortSignal | undefined;
  /** The federation, if any. */
  readonly federation: Federation | undefined;
}

/** Reassembly bounds for sources that are not registered: a key exchange never needs more. */
export const STRANGER_REASSEMBLY: Partial<ReassemblerLimits> = {
  maxPartialsPerSource: 2,
  maxPartialsTotal: 1024,
  maxBytesPerSource: 16 * 1024,
  maxBytesTotal: 4 * 1024 * 1024,
  maxCount: 32,
};

/** A drop of one kind is logged at most once per source per this interval. */
export const DROP_LOG_INTERVAL_MS = 10_000;

const encoder = new TextEncoder();

/**
 * Size of the answer to a key request (protocol.md section 4 step 2): COOKIE
 * and SERVER_PUBLIC_KEY records in one datagram.
 */
export function keyAnswerSize(privateKey: RsaPrivateKey): number {
  return 2 * TLV_HEADER_SIZE + COOKIE_SIZE +
    encoder.encode(privateKey.publicKey.pem).length;
}

/** Interval of the presence sweep for a member timeout: a quarter of it, 10 ms to 1 s. */
function sweepInterval(clientTimeoutMs: number): number {
  return Math.max(10, Math.min(1000, clientTimeoutMs / 4));
}

/**
 * Applies the defaults and checks the options, once.
 * @throws {RangeError} when the MTU cannot carry the key answer, or the
 * downstream port is the server's own
 */
export function resolveOptions(options: RelayServerOptions): ServerConfig {
  const { privateKey, transport } = options;
  const mtu = options.mtu ?? 1200;
  const answer = keyAnswerSize(privateKey);
  if (mtu < answer) {
    throw new RangeError(
      `An MTU of ${mtu} bytes cannot carry the key answer (${answer} bytes for a ${privateKey.publicKey.modulusBits}-bit key), which must be one datagram: use an MTU of at least ${answer}`,
    );
  }
  if (
    options.fanout === "group" &&
    options.downstream?.port === transport.localAddress.port
  ) {
    throw new RangeError(
      `The downstream port ${transport.localAddress.port} is the server's own port: group messages never go to the upstream port (protocol.md section 9); use another port, by default the server's port + 1`,
    );
  }
  const clientTimeoutMs = options.clientTimeoutMs ?? 30_000;
  const maxMessageBytes = options.maxMessageBytes ?? 32 * 1024;
  const tokenMaxAgeSeconds = options.tokenMaxAgeSeconds ?? 60;
  const messagesPerSecond = options.messagesPerSecond ?? 200;
  const messageBurst = options.messageBurst ?? 400;
  const keepalivesPerSecond = options.keepalivesPerSecond ?? 10;
  const keepaliveBurst = options.keepaliveBurst ?? 20;
  const perBlock = privateKey.publicKey.maxChunkSize;
  return {
    transport,
    privateKey,
    publicPem: encoder.encode(privateKey.publicKey.pem),
    keyAnswerSize: answer,
    mtu,
    coalesceSends: options.coalesceSends !== false,
    clientTimeoutMs,
    sweepMs: sweepInterval(clientTimeoutMs),
    presenceBatchMs: options.presenceBatchMs ?? 250,
    compat: options.compat ?? false,
    limits: {
      maxClients: options.maxClients ?? 1024,
      maxClientsPerIp: options.maxClientsPerIp ?? 32,
      maxMessageBytes,
      tokenMaxAgeSeconds,
      messagesPerSecond,
      messageBurst,
      rsaBlocksPerSecond: options.rsaBlocksPerSecond ?? 50,
      rsaBlockBurst: Math.max(200, Math.ceil(maxMessageBytes / perBlock)),
      maxRsaBlocksPerMessage: Math.max(
        1,
        Math.ceil(maxMessageBytes / perBlock),
      ),
      keepalivesPerSecond,
      keepaliveBurst,
      replayEntries: Math.min(
        DEFAULT_REPLAY_ENTRIES,
        // A token is remembered while its second is within the age: for the
        // age's seconds and the one it was sealed in.
        replayWindowEntries(
          messagesPerSecond + keepalivesPerSecond,
          tokenMaxAgeSeconds + 1,
          messageBurst + keepaliveBurst,
        ),
      ),
      handshakesPerSecond: options.handshakesPerSecond ?? 5,
      handshakeBurst: options.handshakeBurst ?? 10,
      globalHandshakesPerSecond: options.globalHandshakesPerSecond ?? 500,
      globalHandshakeBurst: options.globalHandshakeBurst ?? 1000,
      maxPendingHandshakes: options.maxPendingHandshakes ?? 64,
      maxQueuedPerSource: options.maxQueuedPerSource ?? 256,
      maxQueuedTotal: options.maxQueuedTotal ?? 16_384,
      maxBans: options.maxBans ?? DEFAULT_MAX_BANS,
    },
    rsa: { threads: options.rsaThreads, schedIdle: options.rsaSchedIdle },
    group: options.fanout === "group"
      ? {
        downstream: options.downstream,
        batchMs: options.groupBatchMs,
        newcomerMs: options.groupNewcomerMs,
      }
      : undefined,
    fernetBackend: options.fernetBackend,
    load: options.load,
    kernelDrops: options.kernelDrops,
    reassembly: options.reassembly,
    log: guardedSink(options.log ?? silentLog),
    now: options.now ?? Date.now,
    signal: options.signal,
    federation: options.federation,
  };
}
