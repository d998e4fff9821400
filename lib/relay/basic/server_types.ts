/**
 * The public types of the basic profile's {@linkcode BasicServer}: its
 * options, the events it delivers, its counters and the client keys it
 * shows. Re-exported by server.ts, the module's public face.
 *
 * @module
 */
import type { RsaPrivateKey } from "../../crypto/rsa.ts";
import type { ReassemblerCounters } from "../../core/reassembler.ts";
import type { DatagramTransport } from "../../runtime/transport.ts";
import type { LogSink } from "../../log.ts";

/** Something the basic server observed, delivered to {@linkcode BasicServer.events} and listeners. */
export type BasicServerEvent = {
  /** A message the server decrypted (and acknowledged). */
  readonly type: "message";
  /** Sender `IP:PORT`. */
  readonly from: string;
  /** The plaintext as UTF-8. */
  readonly text: string;
  /** The plaintext bytes. */
  readonly data: Uint8Array;
  /** msg_id when it came fragmented. */
  readonly msgId?: number;
};

/** Counters of a {@linkcode BasicServer}, shown by the `stats` command. */
export interface BasicServerStats {
  /** Datagrams received. */
  readonly datagramsIn: number;
  /** Bytes received. */
  readonly bytesIn: number;
  /** Datagrams sent (key answers and ACKs). */
  readonly datagramsOut: number;
  /** Bytes sent. */
  readonly bytesOut: number;
  /** Messages decrypted and acknowledged. */
  readonly messages: number;
  /** RSA-OAEP blocks given to decryption. */
  readonly rsaDecryptions: number;
  /** Client keys registered now. */
  readonly members: number;
  /** Events dropped because an `events()` reader was too slow. */
  readonly eventsDropped: number;
  /** Datagrams dropped, by reason. */
  readonly dropped: Readonly<Record<string, number>>;
  /** Reassembly counters of fragmented messages. */
  readonly reassembly: Readonly<ReassemblerCounters>;
}

/** Options of {@linkcode BasicServer.start}. */
export interface BasicServerOptions {
  /** The bound transport. */
  readonly transport: DatagramTransport;
  /** The server key (RSA-4096 per protocol.md; any size works). */
  readonly privateKey: RsaPrivateKey;
  /** Answer unpadded key requests (amplification). Default false. */
  readonly compat?: boolean;
  /** Incomplete fragment buffers expire after this. Default 10_000 ms. */
  readonly fragmentTimeoutMs?: number;
  /** Messages (RSA decryptions) per second per source IP. Default 20. */
  readonly messagesPerSecond?: number;
  /** Burst of the per-IP decryption bucket. Default twice `messagesPerSecond`. */
  readonly messageBurst?: number;
  /**
   * RSA decryptions per second for all sources together, taken after the
   * source's own bucket (so one source spends at most its own budget of
   * it). Sources are spoofable: this is what bounds the CPU a junk flood
   * from many addresses costs. Default 50 (about one core at RSA-4096).
   */
  readonly globalDecryptionsPerSecond?: number;
  /** Burst of the global decryption budget. Default 100. */
  readonly globalDecryptionBurst?: number;
  /** RSA decryptions waiting or running at most; more are dropped. Default 64. */
  readonly maxPendingDecryptions?: number;
  /** Worker threads for RSA decryption: as {@linkcode RelayServerOptions.rsaThreads}. */
  readonly rsaThreads?: number;
  /** SCHED_IDLE for the RSA threads: as {@linkcode RelayServerOptions.rsaSchedIdle}. */
  readonly rsaSchedIdle?: boolean;
  /** Client keys remembered at most (least recently registered forgotten). Default 4096. */
  readonly maxClients?: number;
  /** Events kept for a slow `events()` reader before the oldest are dropped. Default 10_000. */
  readonly eventBufferSize?: number;
  /** Called for every event from the start, as a listener of {@linkcode BasicServer.onEvent}. */
  readonly onEvent?: (event: BasicServerEvent) => void;
  /** Receives log records. */
  readonly log?: LogSink;
  /** Clock in milliseconds. Default Date.now. */
  readonly now?: () => number;
}

/** One registered client key, as shown by `clients`. */
export interface BasicClientInfo {
  /** `IP:PORT`. */
  readonly address: string;
  /** Always "basic". */
  readonly profile: "basic";
  /** Key size in bits. */
  readonly bits: number;
  /** Last datagram (ms since the epoch). */
  readonly lastSeen: number;
  /** Messages decrypted from it. */
  readonly messagesIn: number;
}
