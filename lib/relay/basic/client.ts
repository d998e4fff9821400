/**
 * The basic profile's client (protocol.md section 8): fetches the server's
 * PEM with a padded key request, registers its own key, sends each message
 * as one RSA-OAEP ciphertext (whole, or in fragments when the MTU or the
 * caller asks) and reports the server's ACK. It receives nothing else: each
 * ACK is what {@linkcode BasicClient.send} returns.
 *
 * @module
 */
import { HandshakeError } from "../../errors.ts";
import { RsaPrivateKey, RsaPublicKey } from "../../crypto/rsa.ts";
import { formatAddress, type PeerAddress } from "../../wire/address.ts";
import {
  BASIC_FRAGMENT_HEADER_SIZE,
  BASIC_MAX_FRAGMENT_PAYLOAD,
  basicKeyRequest,
  fragmentBasicCiphertext,
  parseBasicAck,
} from "../../wire/basic.ts";
import type { DatagramTransport } from "../../runtime/transport.ts";
import { type LogSink, silentLog } from "../../log.ts";
import { randomMsgId } from "../../crypto/msg_id.ts";
import { DropCounter, guardedSink } from "../../core/drops.ts";

/** Options of {@linkcode BasicClient.connect}. */
export interface BasicClientOptions {
  /** The client's own bound transport. */
  readonly transport: DatagramTransport;
  /** The basic server's unicast address. */
  readonly server: PeerAddress;
  /** The client's key; generated when absent. */
  readonly rsaKey?: RsaPrivateKey;
  /** Size of a generated key. Default 2048. */
  readonly keyBits?: number;
  /** Pinned server key fingerprint. */
  readonly fingerprint?: string;
  /** Largest datagram sent; a ciphertext larger than this goes in fragments. Default 1200. */
  readonly mtu?: number;
  /** "auto" (fragment only when the MTU requires), "always" or "never". Default "auto". */
  readonly fragment?: "auto" | "always" | "never";
  /** How long {@linkcode BasicClient.send} waits for the ACK. Default 5000 ms. */
  readonly ackTimeoutMs?: number;
  /** First key request retry delay, doubling. Default 1000 ms. */
  readonly retryInitialMs?: number;
  /** Key request tries. Default 5. */
  readonly retryAttempts?: number;
  /** Receives log records. */
  readonly log?: LogSink;
  /** Clock in milliseconds (spacing of drop log records). Default Date.now. */
  readonly now?: () => number;
}

/** Counters of a {@linkcode BasicClient}. */
export interface BasicClientStats {
  /** Messages handed to the transport (whole or in fragments). */
  readonly messagesSent: number;
  /** ACKs received for them. */
  readonly acks: number;
  /** Of those, ACKs that came unencrypted (the server did not know this client's key). */
  readonly unencryptedAcks: number;
  /** Sends that got no ACK within `ackTimeoutMs`. */
  readonly ackTimeouts: number;
  /** Datagrams sent (key requests, the client's key, messages). */
  readonly datagramsOut: number;
  /** Datagrams received. */
  readonly datagramsIn: number;
  /** Datagrams dropped, by reason. */
  readonly dropped: Readonly<Record<string, number>>;
}

/** The server's answer to one message. */
export interface BasicAck {
  /** The ACK text: `ACK` or `<msg_id>: ACK`. */
  readonly text: string;
  /** The msg_id for a fragmented message. */
  readonly msgId: number | undefined;
  /** Whether the ACK came encrypted under this client's key. */
  readonly encrypted: boolean;
}

interface PendingAck {
  readonly resolve: (ack: BasicAck) => void;
  readonly reject: (error: Error) => void;
  readonly timer: ReturnType<typeof setTimeout>;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A client of the basic profile's server. */
export class BasicClient implements AsyncDisposable {
  readonly #transport: DatagramTransport;
  readonly #server: PeerAddress;
  readonly #rsaKey: RsaPrivateKey;
  readonly #pinned: string | undefined;
  readonly #retryInitialMs: number;
  readonly #retryAttempts: number;
  #serverKey!: RsaPublicKey;
  #keyWaiter: ((key: RsaPublicKey | undefined) => void) | undefined;
  #keyMismatch: string | undefined;
  readonly #mtu: number;
  readonly #fragment: "auto" | "always" | "never";
  readonly #ackTimeoutMs: number;
  readonly #drops: DropCounter;
  readonly #wholeAcks: PendingAck[] = [];
  readonly #fragmentAcks = new Map<number, PendingAck>();
  #receiving: Promise<void> = Promise.resolve();
  #closing: Promise<void> | undefined;
  #messagesSent = 0;
  #acks = 0;
  #unencryptedAcks = 0;
  #ackTimeouts = 0;
  #datagramsOut = 0;
  #datagramsIn = 0;

  private constructor(options: BasicClientOptions, rsaKey: RsaPrivateKey) {
    this.#transport = options.transport;
    this.#server = options.server;
    this.#rsaKey = rsaKey;
    this.#pinned = options.fingerprint;
    this.#retryInitialMs = options.retryInitialMs ?? 1000;
    this.#retryAttempts = options.retryAttempts ?? 5;
    this.#mtu = options.mtu ?? 1200;
    this.#fragment = options.fragment ?? "auto";
    this.#ackTimeoutMs = options.ackTimeoutMs ?? 5000;
    this.#drops = new DropCounter(
      guardedSink(options.log ?? silentLog),
      options.now ?? Date.now,
    );
  }

  /**
   * Fetches the server key (padded request, retries with backoff) and registers this client's key.
   * On failure the transport is closed.
   * @throws {HandshakeError} when the server does not answer or its key does not match the pin
   */
  static async connect(options: BasicClientOptions): Promise<BasicClient> {
    let rsaKey: RsaPrivateKey;
    try {
      rsaKey = options.rsaKey ??
        await RsaPrivateKey.generate(options.keyBits ?? 2048);
    } catch (error) {
      options.transport.close();
      throw error;
    }
    const client = new BasicClient(options, rsaKey);
    client.#receiving = client.#receiveLoop();
    try {
      client.#serverKey = await client.#fetchServerKey();
      await client.#send(encoder.encode(rsaKey.publicKey.pem));
    } catch (error) {
      await client.close();
      throw error;
    }
    return client;
  }

  /** The server key's fingerprint. */
  get serverFingerprint(): string {
    return this.#serverKey.fingerprint;
  }

  /** A snapshot of the counters. */
  stats(): BasicClientStats {
    return {
      messagesSent: this.#messagesSent,
      acks: this.#acks,
      unencryptedAcks: this.#unencryptedAcks,
      ackTimeouts: this.#ackTimeouts,
      datagramsOut: this.#datagramsOut,
      datagramsIn: this.#datagramsIn,
      dropped: this.#drops.snapshot(),
    };
  }

  /** Largest message: one RSA-OAEP block under the server key. */
  get maxMessageBytes(): number {
    return this.#serverKey.maxChunkSize;
  }

  /**
   * Sends one message and waits for its ACK.
   * @throws {RangeError} when the message does not fit one RSA-OAEP block
   * @throws {Error} when no ACK arrives in time
   */
  async send(message: string | Uint8Array): Promise<BasicAck> {
    const data = typeof message === "string"
      ? encoder.encode(message)
      : message;
    if (data.length > this.maxMessageBytes) {
      throw new RangeError(
        `Cannot send a message of ${data.length} bytes: the basic profile carries at most ${this.maxMessageBytes} bytes (one RSA block)`,
      );
    }
    if (this.#closing) throw new Error("The client is closed");
    const ciphertext = await this.#serverKey.encrypt(data);
    if (this.#closing) throw new Error("The client is closed");
    const fragmented = this.#fragment === "always" ||
      (this.#fragment === "auto" && ciphertext.length > this.#mtu);
    const msgId = fragmented ? randomMsgId() : undefined;
    // Cut first: a bad MTU fails here, before an ACK is expected.
    const datagrams = msgId === undefined
      ? [ciphertext]
      : fragmentBasicCiphertext(
        ciphertext,
        msgId,
        Math.min(
          BASIC_MAX_FRAGMENT_PAYLOAD,
          this.#mtu - BASIC_FRAGMENT_HEADER_SIZE,
        ),
      );
    const expected = msgId === undefined
      ? this.#expectAck((p) => this.#wholeAcks.push(p), (p) => {
        const at = this.#wholeAcks.indexOf(p);
        if (at >= 0) this.#wholeAcks.splice(at, 1);
      })
      : this.#expectAck(
        (p) => this.#fragmentAcks.set(msgId, p),
        () => this.#fragmentAcks.delete(msgId),
      );
    try {
      for (const datagram of datagrams) await this.#send(datagram);
    } catch (error) {
      // Nothing went out: stop waiting for an ACK (and its timer).
      expected.pending.reject(error as Error);
      throw error;
    }
    this.#messagesSent++;
    return await expected.acked;
  }

  /** Stops: fails pending sends, closes the transport. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#keyWaiter?.(undefined);
      for (
        const pending of [...this.#wholeAcks, ...this.#fragmentAcks.values()]
      ) {
        pending.reject(new Error("The client was closed before the ACK came"));
      }
      this.#transport.close();
      await this.#receiving;
    })();
    return this.#closing;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Registers a waiter for the next ACK; it fails after the ACK timeout. */
  #expectAck(
    register: (pending: PendingAck) => void,
    unregister: (pending: PendingAck) => void,
  ): { acked: Promise<BasicAck>; pending: PendingAck } {
    let pending!: PendingAck;
    const acked = new Promise<BasicAck>((resolve, reject) => {
      pending = {
        resolve: (ack) => {
          clearTimeout(pending.timer);
          unregister(pending);
          resolve(ack);
        },
        reject: (error) => {
          clearTimeout(pending.timer);
          unregister(pending);
          reject(error);
        },
        timer: setTimeout(() => {
          unregister(pending);
          this.#ackTimeouts++;
          reject(
            new Error(
              `No ACK from ${
                formatAddress(this.#server)
              } within ${this.#ackTimeoutMs} ms`,
            ),
          );
        }, this.#ackTimeoutMs),
      };
    });
    register(pending);
    // Marked handled at once: close() or a failed send may reject it before
    // send() awaits it, and an unhandled rejection would end the process.
    acked.catch(() => {});
    return { acked, pending };
  }

  /** Sends padded key requests with backoff until the server's (pinned) PEM arrives. */
  async #fetchServerKey(): Promise<RsaPublicKey> {
    let delay = this.#retryInitialMs;
    for (let attempt = 0; attempt < this.#retryAttempts; attempt++) {
      if (this.#closing) break;
      await this.#send(basicKeyRequest());
      let timer: ReturnType<typeof setTimeout> | undefined;
      const key = await new Promise<RsaPublicKey | undefined>((resolve) => {
        this.#keyWaiter = resolve;
        timer = setTimeout(() => resolve(undefined), delay);
      });
      clearTimeout(timer);
      this.#keyWaiter = undefined;
      if (key) return key;
      delay *= 2;
    }
    const server = formatAddress(this.#server);
    throw new HandshakeError(
      this.#keyMismatch
        ? `The basic server at ${server} answered with key ${this.#keyMismatch}, which does not match the pinned fingerprint ${this.#pinned}`
        : `No answer to the key request sent to ${server} after ${this.#retryAttempts} tries: check that a basic server (--profile basic) runs there`,
    );
  }

  async #onKeyAnswer(data: Uint8Array): Promise<void> {
    let key: RsaPublicKey;
    try {
      key = await RsaPublicKey.fromPem(decoder.decode(data));
    } catch {
      this.#drops.drop("bad_server_key", formatAddress(this.#server));
      return;
    }
    if (this.#pinned && key.fingerprint !== this.#pinned) {
      this.#keyMismatch = key.fingerprint;
      return;
    }
    this.#keyWaiter?.(key);
  }

  async #receiveLoop(): Promise<void> {
    const server = formatAddress(this.#server);
    for await (const { data, from } of this.#transport) {
      this.#datagramsIn++;
      if (formatAddress(from) !== server) {
        this.#drops.drop("not_from_server", formatAddress(from));
        continue;
      }
      if (this.#keyWaiter) {
        await this.#onKeyAnswer(data);
        continue;
      }
      let text: string;
      let encrypted = false;
      if (data.length === this.#rsaKey.publicKey.blockSize) {
        try {
          text = decoder.decode(await this.#rsaKey.decrypt(data));
          encrypted = true;
        } catch {
          text = decoder.decode(data);
        }
      } else {
        text = decoder.decode(data);
      }
      let msgId: number | undefined;
      try {
        msgId = parseBasicAck(text).msgId;
      } catch {
        this.#drops.drop("not_an_ack", server);
        continue;
      }
      const pending = msgId === undefined
        ? this.#wholeAcks[0]
        : this.#fragmentAcks.get(msgId);
      if (!pending) {
        this.#drops.drop("unexpected_ack", server, { text });
        continue;
      }
      this.#acks++;
      if (!encrypted) this.#unencryptedAcks++;
      pending.resolve({ text, msgId, encrypted });
    }
  }

  /** Sends one datagram to the server, counted. */
  async #send(data: Uint8Array): Promise<void> {
    await this.#transport.send(data, this.#server);
    this.#datagramsOut++;
  }
}
