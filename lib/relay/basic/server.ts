/**
 * The basic profile's unicast endpoint (protocol.md section 8) over a
 * {@linkcode DatagramTransport}: answers padded key requests with its PEM,
 * registers client keys, decrypts whole and fragmented RSA-OAEP messages,
 * and replies with ACKs encrypted for the client when its key is known.
 * Decrypted messages are delivered as {@linkcode BasicServerEvent}s
 * (`onEvent`, `events()`, as the relay client's); the log shows their size
 * and sender at info, their text only at debug.
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
import { Reassembler } from "../../core/reassembler.ts";
import type { DatagramTransport } from "../../runtime/transport.ts";
import { type LogSink, silentLog } from "../../log.ts";
import { SourceRateLimiter, TokenBucket } from "../../core/limits.ts";
import { RsaDecryptPool, startRsaPool } from "../../runtime/rsa_pool.ts";
import { DropCounter, guardedSink } from "../../core/drops.ts";
import { DEFAULT_EVENT_BUFFER, EventStream } from "../event_stream.ts";
import type {
  BasicClientInfo,
  BasicServerEvent,
  BasicServerOptions,
  BasicServerStats,
} from "./server_types.ts";

export type {
  BasicClientInfo,
  BasicServerEvent,
  BasicServerOptions,
  BasicServerStats,
};

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
  /** Aborted once the server has stopped: `events()` readers then end. */
  readonly #stopped = new AbortController();
  readonly #events: EventStream<BasicServerEvent>;
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
    this.#events = new EventStream({
      bufferSize: options.eventBufferSize ?? DEFAULT_EVENT_BUFFER,
      stopped: this.#stopped.signal,
    });
    if (options.onEvent) this.#events.onEvent(options.onEvent);
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

  /**
   * Calls `listener` for every event until the returned function is called.
   * The listener must not throw or block.
   */
  onEvent(listener: (event: BasicServerEvent) => void): () => void {
    return this.#events.onEvent(listener);
  }

  /**
   * Events as an async iterable, ending when the server has closed or
   * `signal` aborts. It subscribes when called, so no event is missed
   * between this call and the first read. A reader that falls more than
   * `eventBufferSize` events behind loses the oldest ones (counted in
   * `stats().eventsDropped`).
   */
  events(signal?: AbortSignal): AsyncGenerator<BasicServerEvent> {
    return this.#events.events(signal);
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
  stats(): BasicServerStats {
    return {
      datagramsIn: this.#datagramsIn,
      bytesIn: this.#bytesIn,
      datagramsOut: this.#datagramsOut,
      bytesOut: this.#bytesOut,
      messages: this.#messages,
      rsaDecryptions: this.#rsa.decryptions,
      members: this.#keys.size,
      eventsDropped: this.#events.dropped,
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
      this.#stopped.abort();
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
    const text = decoder.decode(data);
    const fragmented = msgId === undefined ? {} : { msgId };
    // The plaintext is the sender's secret: its size at info, its text only
    // for an operator who asks for debug.
    this.#log({
      level: "info",
      event: "message",
      from: source,
      bytes: data.length,
      ...fragmented,
    });
    this.#log({
      level: "debug",
      event: "message_text",
      from: source,
      text,
      ...fragmented,
    });
    this.#events.emit({
      type: "message",
      from: source,
      text,
      data,
      ...fragmented,
    });
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
