/**
 * The basic profile's unicast endpoint (protocol.md section 8) over a
 * {@linkcode DatagramTransport}: answers padded key requests with its PEM,
 * registers client keys, decrypts whole and fragmented RSA-OAEP messages,
 * and replies with ACKs encrypted for the client when its key is known.
 *
 * @module
 */
import { InvalidKeyError } from "../../errors.ts";
import {
  RsaDecryptError,
  type RsaPrivateKey,
  RsaPublicKey,
} from "../../crypto/rsa.ts";
import {
  formatAddress,
  parseAddress,
  type PeerAddress,
} from "../../wire/address.ts";
import { basicAckText, classifyBasicDatagram } from "../../wire/basic.ts";
import {
  Reassembler,
  type ReassemblerCounters,
} from "../../core/reassembler.ts";
import type { DatagramTransport } from "../../runtime/transport.ts";
import { type LogSink, silentLog, startRsaPool } from "../log.ts";
import { SourceRateLimiter, TokenBucket } from "../../core/limits.ts";
import { RsaDecryptPool } from "../../runtime/rsa_pool.ts";
import { DropCounter, guardedSink } from "../../core/drops.ts";

/** A message the basic server decrypted. */
export interface BasicMessage {
  /** Sender `IP:PORT`. */
  readonly from: string;
  /** The plaintext as UTF-8. */
  readonly text: string;
  /** The plaintext bytes. */
  readonly data: Uint8Array;
  /** msg_id when it came fragmented. */
  readonly msgId?: number;
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
  /** Called for every decrypted message. */
  readonly onMessage?: (message: BasicMessage) => void;
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

interface ClientRecord {
  key: RsaPublicKey;
  lastSeen: number;
  messagesIn: number;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** The basic profile's server. */
export class BasicServer implements AsyncDisposable {
  readonly #transport: DatagramTransport;
  readonly #privateKey: RsaPrivateKey;
  readonly #publicPem: Uint8Array;
  readonly #compat: boolean;
  readonly #onMessage: ((message: BasicMessage) => void) | undefined;
  readonly #log: LogSink;
  readonly #drops: DropCounter;
  readonly #now: () => number;
  readonly #maxClients: number;
  readonly #rate: SourceRateLimiter;
  readonly #globalRate: TokenBucket;
  readonly #rsa: RsaDecryptPool;
  readonly #maxPendingDecryptions: number;
  #pendingDecryptions = 0;
  readonly #keys = new Map<string, ClientRecord>();
  readonly #reassembler: Reassembler;
  readonly #tasks = new Set<Promise<void>>();
  readonly #pendingSends = new Set<Promise<void>>();
  readonly #messageListeners = new Set<(message: BasicMessage) => void>();
  #datagramsIn = 0;
  #bytesIn = 0;
  #datagramsOut = 0;
  #bytesOut = 0;
  #messages = 0;
  #receiving: Promise<void> = Promise.resolve();
  #ticker: ReturnType<typeof setInterval> | undefined;
  #closing: Promise<void> | undefined;

  private constructor(options: BasicServerOptions) {
    this.#transport = options.transport;
    this.#privateKey = options.privateKey;
    this.#publicPem = encoder.encode(options.privateKey.publicKey.pem);
    this.#compat = options.compat ?? false;
    this.#onMessage = options.onMessage;
    this.#log = guardedSink(options.log ?? silentLog);
    this.#now = options.now ?? Date.now;
    this.#drops = new DropCounter(this.#log, this.#now);
    this.#maxClients = options.maxClients ?? 4096;
    const perSecond = options.messagesPerSecond ?? 20;
    this.#rate = new SourceRateLimiter(
      perSecond,
      options.messageBurst ?? 2 * perSecond,
    );
    this.#globalRate = new TokenBucket(
      options.globalDecryptionsPerSecond ?? 50,
      options.globalDecryptionBurst ?? 100,
      this.#now(),
    );
    this.#rsa = new RsaDecryptPool(options.privateKey, {
      threads: options.rsaThreads,
      schedIdle: options.rsaSchedIdle,
    });
    this.#maxPendingDecryptions = options.maxPendingDecryptions ?? 64;
    this.#reassembler = new Reassembler({
      timeoutMs: options.fragmentTimeoutMs ?? 10_000,
      maxCount: 255,
      maxPartialsPerSource: 16,
      maxBytesPerSource: 64 * 1024,
      maxBytesTotal: 16 * 1024 * 1024,
    }, this.#now);
  }

  /** Starts serving `options.transport`. */
  static start(options: BasicServerOptions): BasicServer {
    const server = new BasicServer(options);
    server.#receiving = server.#receiveLoop();
    server.#ticker = setInterval(() => server.#reassembler.expire(), 1000);
    void startRsaPool(server.#rsa, server.#log);
    return server;
  }

  /** The bound address. */
  get localAddress(): PeerAddress {
    return this.#transport.localAddress;
  }

  /** The server key's fingerprint. */
  get fingerprint(): string {
    return this.#privateKey.publicKey.fingerprint;
  }

  /** Calls `listener` for every decrypted message until the returned function is called. */
  onMessage(listener: (message: BasicMessage) => void): () => void {
    this.#messageListeners.add(listener);
    return () => this.#messageListeners.delete(listener);
  }

  /** Registered client keys. */
  members(): BasicClientInfo[] {
    return [...this.#keys.entries()].map(([address, c]) => ({
      address,
      profile: "basic",
      bits: c.key.modulusBits,
      lastSeen: c.lastSeen,
      messagesIn: c.messagesIn,
    }));
  }

  /** A snapshot of the counters. */
  stats(): {
    datagramsIn: number;
    bytesIn: number;
    datagramsOut: number;
    bytesOut: number;
    messages: number;
    rsaDecryptions: number;
    members: number;
    dropped: Record<string, number>;
    reassembly: ReassemblerCounters;
  } {
    return {
      datagramsIn: this.#datagramsIn,
      bytesIn: this.#bytesIn,
      datagramsOut: this.#datagramsOut,
      bytesOut: this.#bytesOut,
      messages: this.#messages,
      rsaDecryptions: this.#rsa.decryptions,
      members: this.#keys.size,
      dropped: this.#drops.snapshot(),
      reassembly: { ...this.#reassembler.counters },
    };
  }

  /** Forgets a client's key. @returns whether it was registered */
  kick(address: string): boolean {
    const key = formatAddress(parseAddress(address));
    if (!this.#keys.has(key)) return false;
    this.#keys.delete(key);
    this.#log({ level: "info", event: "leave", client: key, reason: "kick" });
    return true;
  }

  /** Stops: waits for work under way, closes the transport. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      clearInterval(this.#ticker);
      this.#transport.close();
      await this.#receiving;
      await Promise.all(this.#tasks);
      await Promise.all(this.#pendingSends);
      await this.#rsa.close();
      this.#log({ level: "info", event: "shutdown" });
    })();
    return this.#closing;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #receiveLoop(): Promise<void> {
    try {
      for await (const { data, from } of this.#transport) {
        this.#datagramsIn++;
        this.#bytesIn += data.length;
        const task = this.#onDatagram(data, from).catch((error) => {
          this.#log({
            level: "error",
            event: "internal_error",
            error: String(error?.stack ?? error),
          });
        });
        this.#tasks.add(task);
        task.finally(() => this.#tasks.delete(task));
      }
    } catch (error) {
      if (!this.#closing) {
        this.#log({
          level: "error",
          event: "receive_failed",
          error: String(error),
        });
      }
    }
  }

  async #onDatagram(data: Uint8Array, from: PeerAddress): Promise<void> {
    const source = formatAddress(from);
    const modulusBytes = this.#privateKey.publicKey.blockSize;
    const datagram = classifyBasicDatagram(data, modulusBytes);
    const client = this.#keys.get(source);
    if (client) client.lastSeen = this.#now();
    switch (datagram.kind) {
      case "key_request":
        if (!this.#compat && data.length < this.#publicPem.length) {
          this.#drops.drop("short_key_request", source, {
            size: data.length,
            needed: this.#publicPem.length,
          });
          return;
        }
        this.#send(this.#publicPem, from);
        return;
      case "public_key":
        return await this.#register(datagram.pem, source);
      case "ciphertext":
        return await this.#decrypt(
          datagram.ciphertext,
          from,
          source,
          undefined,
        );
      case "fragment": {
        const before = this.#reassembler.counters.countMismatch;
        const ciphertext = this.#reassembler.add(source, datagram.fragment);
        if (this.#reassembler.counters.countMismatch !== before) {
          this.#drops.drop("inconsistent_fragment", source, {
            msgId: datagram.fragment.msgId,
          });
        }
        if (!ciphertext) return;
        return await this.#decrypt(
          ciphertext,
          from,
          source,
          datagram.fragment.msgId,
        );
      }
      case "invalid":
        this.#drops.drop("malformed", source, { detail: datagram.reason });
    }
  }

  async #register(pem: string, source: string): Promise<void> {
    let key: RsaPublicKey;
    try {
      key = await RsaPublicKey.fromPem(pem);
    } catch (error) {
      if (error instanceof InvalidKeyError) {
        this.#drops.drop("bad_client_key", source, { error: error.message });
        return;
      }
      throw error;
    }
    if (key.modulusBits < 2048 || key.modulusBits > 4096) {
      this.#drops.drop("client_key_size", source, { bits: key.modulusBits });
      return;
    }
    const record = { key, lastSeen: this.#now(), messagesIn: 0 };
    const existed = this.#keys.delete(source);
    this.#keys.set(source, record);
    if (this.#keys.size > this.#maxClients) {
      // Forget the least recently registered key.
      this.#keys.delete(this.#keys.keys().next().value!);
    }
    this.#log({
      level: "info",
      event: existed ? "rekey" : "join",
      client: source,
      profile: "basic",
      bits: key.modulusBits,
    });
  }

  async #decrypt(
    ciphertext: Uint8Array,
    from: PeerAddress,
    source: string,
    msgId: number | undefined,
  ): Promise<void> {
    // RSA-4096 costs milliseconds: rate-limit per IP, then all sources
    // together, and bound the queue before any of it (sources are
    // spoofable). The source's own bucket comes first, so a flood from one
    // source spends at most its own budget of the global one.
    const now = this.#now();
    if (!this.#rate.allow(from.hostname, now)) {
      this.#drops.drop("rate_limited", source);
      return;
    }
    if (!this.#globalRate.take(now)) {
      this.#drops.drop("rsa_global_rate", source);
      return;
    }
    if (this.#pendingDecryptions >= this.#maxPendingDecryptions) {
      this.#drops.drop("busy", source);
      return;
    }
    let data: Uint8Array;
    this.#pendingDecryptions++;
    try {
      data = await this.#rsa.decrypt(ciphertext);
    } catch (error) {
      if (error instanceof RsaDecryptError || error instanceof RangeError) {
        this.#drops.drop("undecryptable", source, {
          size: ciphertext.length,
          error: error.message,
        });
        return;
      }
      throw error;
    } finally {
      this.#pendingDecryptions--;
    }
    this.#messages++;
    const client = this.#keys.get(source);
    if (client) client.messagesIn++;
    const message: BasicMessage = {
      from: source,
      text: decoder.decode(data),
      data,
      ...(msgId === undefined ? {} : { msgId }),
    };
    this.#log({
      level: "info",
      event: "message",
      from: source,
      text: message.text,
      ...(msgId === undefined ? {} : { msgId }),
    });
    this.#onMessage?.(message);
    for (const listener of this.#messageListeners) listener(message);
    const ack = encoder.encode(basicAckText(msgId));
    this.#send(client ? await client.key.encrypt(ack) : ack, from);
  }

  #send(data: Uint8Array, to: PeerAddress): void {
    this.#datagramsOut++;
    this.#bytesOut += data.length;
    const sending = this.#transport.send(data, to).catch((error) => {
      this.#drops.drop("send_failed", formatAddress(to), {
        error: String(error),
      });
    });
    this.#pendingSends.add(sending);
    sending.finally(() => this.#pendingSends.delete(sending));
  }
}
