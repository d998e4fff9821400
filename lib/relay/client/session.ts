/**
 * The state a relay client's parts share (internal): its one explicit
 * {@linkcode ClientState} with the transitions allowed between states, what
 * the last key exchange settled (server, keys, own address), the targets it
 * fails over between, the counters, and the send path (unicast to the server
 * that answered, fragmented past the MTU, every send tracked so that close
 * can wait for it).
 *
 * @module
 */
import type { RsaPrivateKey, RsaPublicKey } from "../../crypto/rsa.ts";
import { IvMarker } from "../../crypto/iv_mark.ts";
import { randomMsgId } from "../../crypto/msg_id.ts";
import type { TokenGuard } from "../../crypto/token_guard.ts";
import { DropCounter, guardedSink } from "../../core/drops.ts";
import type { FernetBackend } from "../../crypto/fernet.ts";
import { formatAddress, type PeerAddress } from "../../wire/address.ts";
import { fragmentStream } from "../../wire/fragment.ts";
import { encodeToServer } from "../../wire/message_codec.ts";
import type { ToServerMessage } from "../../wire/messages.ts";
import { encodeRecords } from "../../wire/tlv.ts";
import type { DatagramTransport } from "../../runtime/transport.ts";
import { type LogSink, silentLog } from "../../log.ts";
import type { MemberProfile } from "../types.ts";
import { DEFAULT_EVENT_BUFFER } from "../event_stream.ts";
import type { ClientState, RelayClientOptions } from "./types.ts";

const DISCONNECT_TEXT = new TextEncoder().encode("DISCONNECT");

/** The transitions a client may make; `closed` is final. */
const TRANSITIONS: Readonly<Record<ClientState, readonly ClientState[]>> = {
  connecting: ["ready", "closed"],
  ready: ["reconnecting", "closed"],
  reconnecting: ["ready", "closed"],
  closed: [],
};

/** Counters of a client, written by its parts. */
export interface SessionCounters {
  messagesSent: number;
  messagesReceived: number;
  registrations: number;
  keepaliveAnswers: number;
  undelivered: number;
}

/** A client's options with their defaults filled in. */
export interface ClientConfig {
  readonly mtu: number;
  readonly keepaliveMs: number;
  readonly probeTimeoutMs: number;
  readonly retryInitialMs: number;
  readonly retryAttempts: number;
  readonly retryMaxMs: number;
  readonly rsaKeyBits: number;
  readonly maxMessageBytes: number;
  readonly maxOutboxMessages: number;
  readonly maxOutboxBytes: number;
  readonly tokenMaxAgeSeconds: number;
  readonly eventBufferSize: number;
  readonly fernetBackend: FernetBackend | undefined;
  /** Pinned server key fingerprint. */
  readonly pinned: string | undefined;
  /** Checks a key the pin did not decide (only without a pin). */
  readonly verifyKey:
    | ((server: string, fingerprint: string) => string | undefined)
    | undefined;
  /** Whether the client asks for group fan-out. */
  readonly group: boolean;
}

/** The defaults of a client's options (documented on {@linkcode RelayClientOptions}). */
function clientConfig(options: RelayClientOptions): ClientConfig {
  const profile = options.profile ?? "hybrid";
  return {
    mtu: options.mtu ?? 1200,
    keepaliveMs: options.keepaliveMs ?? 10_000,
    probeTimeoutMs: options.probeTimeoutMs ?? 2000,
    retryInitialMs: options.retryInitialMs ?? 1000,
    retryAttempts: options.retryAttempts ?? 5,
    retryMaxMs: options.retryMaxMs ?? 30_000,
    rsaKeyBits: options.rsaKeyBits ?? 2048,
    maxMessageBytes: options.maxMessageBytes ?? 32 * 1024,
    maxOutboxMessages: options.maxOutboxMessages ?? 256,
    maxOutboxBytes: options.maxOutboxBytes ?? 1024 * 1024,
    tokenMaxAgeSeconds: options.tokenMaxAgeSeconds ?? 60,
    eventBufferSize: options.eventBufferSize ?? DEFAULT_EVENT_BUFFER,
    fernetBackend: options.fernetBackend,
    pinned: options.fingerprint,
    verifyKey: options.fingerprint ? undefined : options.verifyKey,
    group: profile === "hybrid" && (options.group ?? true),
  };
}

/** The shared state of one client; see the module comment. */
export class Session {
  /** The options, defaults filled in. */
  readonly config: ClientConfig;
  readonly transport: DatagramTransport;
  /** `target`, then the fallback targets: where the client registers, in turn. */
  readonly targets: readonly PeerAddress[];
  readonly profile: MemberProfile;
  readonly log: LogSink;
  readonly drops: DropCounter;
  readonly now: () => number;
  readonly marker = new IvMarker();
  readonly members = new Set<string>();
  readonly counters: SessionCounters = {
    messagesSent: 0,
    messagesReceived: 0,
    registrations: 0,
    keepaliveAnswers: 0,
    undelivered: 0,
  };
  /** Aborted when the client closes: every wait ends with it. */
  readonly #closedController = new AbortController();
  readonly #pendingSends = new Set<Promise<void>>();
  #state: ClientState = "connecting";

  /** Where the client registers now (one of {@linkcode targets}). */
  target: PeerAddress;
  /** The server that answered the key request. */
  server: PeerAddress | undefined;
  serverKey: RsaPublicKey | undefined;
  /** The key of the current registration (hybrid). */
  guard: TokenGuard | undefined;
  /** This client's address as the server sees it. */
  address: PeerAddress | undefined;
  /** The RSA profile's own key. */
  rsaKey: RsaPrivateKey | undefined;

  /** @param options the client's options */
  constructor(options: RelayClientOptions) {
    this.config = clientConfig(options);
    this.transport = options.transport;
    this.targets = [options.target, ...options.fallbackTargets ?? []];
    this.target = this.targets[0];
    this.profile = options.profile ?? "hybrid";
    this.log = guardedSink(options.log ?? silentLog);
    this.now = options.now ?? Date.now;
    this.drops = new DropCounter(this.log, this.now);
    this.rsaKey = options.rsaKey;
  }

  /** The client's state. */
  get state(): ClientState {
    return this.#state;
  }

  /** Whether the client is registered now. */
  get ready(): boolean {
    return this.#state === "ready";
  }

  /** Whether the client has closed (or is closing). */
  get closed(): boolean {
    return this.#state === "closed";
  }

  /** Aborted when the client closes. */
  get closedSignal(): AbortSignal {
    return this.#closedController.signal;
  }

  /**
   * Moves to `next`: the one place a client's state changes. Returns false
   * (and changes nothing) when the move is not allowed from the current
   * state, e.g. anything after `closed`.
   */
  transition(next: ClientState): boolean {
    if (!TRANSITIONS[this.#state].includes(next)) return false;
    this.#state = next;
    if (next === "closed") this.#closedController.abort();
    return true;
  }

  /** The server's address, `IP:PORT`, or "" before a key answer. */
  get serverAddress(): string {
    return this.server ? formatAddress(this.server) : "";
  }

  /** This client's address, `IP:PORT`, or "" before a WELCOME. */
  get ownAddress(): string {
    return this.address ? formatAddress(this.address) : "";
  }

  /** Whether `source` (`IP:PORT`) is the server that answered the key request. */
  isServer(source: string): boolean {
    return this.server !== undefined && this.serverAddress === source;
  }

  /** Moves on to the next target (after a failed key exchange with this one). */
  nextTarget(why: string): void {
    if (this.targets.length < 2) return;
    const from = this.target;
    this.target = this.targets[
      (this.targets.indexOf(from) + 1) % this.targets.length
    ];
    this.server = undefined;
    this.log({
      level: "warn",
      event: "failover",
      from: formatAddress(from),
      to: formatAddress(this.target),
      reason: why,
    });
  }

  /** One message as the stream that carries it: sealed under the current key (hybrid) or RSA-encrypted to the server. */
  async messageStream(data: Uint8Array): Promise<Uint8Array> {
    const messages: ToServerMessage[] = [];
    if (this.profile === "hybrid") {
      messages.push({
        kind: "fernet_message",
        value: await this.guard!.seal(data, this.now()),
      });
    } else {
      for (const block of await this.serverKey!.encryptChunks(data)) {
        messages.push({ kind: "rsa_block", value: block });
      }
    }
    return encodeRecords(encodeToServer(messages));
  }

  /** Sends the DISCONNECT that leaves the group (authenticated under the current key, hybrid). */
  async sendDisconnect(): Promise<void> {
    const value = this.profile === "hybrid"
      ? await this.guard!.seal(DISCONNECT_TEXT, this.now())
      : new Uint8Array(0);
    await this.sendStream(
      encodeRecords(encodeToServer([{ kind: "disconnect", value }])),
    );
  }

  /**
   * Sends a stream (fragmented past the MTU) by unicast to the server that
   * answered the key request: once a client has that answer, nothing it sends
   * goes to the group, where other hosts would see its cookies and tokens
   * (protocol.md section 10).
   */
  async sendStream(stream: Uint8Array): Promise<void> {
    const to = this.server ?? this.target;
    const datagrams = stream.length <= this.config.mtu
      ? [stream]
      : fragmentStream(stream, this.config.mtu, randomMsgId());
    await Promise.all(datagrams.map((d) => this.sendDatagram(d, to)));
  }

  /** Sends one datagram; the send is kept until it settles, and its error counted. */
  sendDatagram(data: Uint8Array, to: PeerAddress): Promise<void> {
    const tracked = this.transport.send(data, to).catch((error) => {
      this.drops.drop("send_failed", formatAddress(this.target), {
        error: String(error),
      });
    });
    this.#pendingSends.add(tracked);
    tracked.finally(() => this.#pendingSends.delete(tracked));
    return tracked;
  }

  /** Resolves when every send under way has settled. */
  sendsSettled(): Promise<unknown> {
    return Promise.all(this.#pendingSends);
  }

  /** Resolves after `ms`, or at once when the client closes. */
  async sleep(ms: number): Promise<void> {
    await new Awaited<never>(ms, this.closedSignal).promise;
  }
}

/**
 * One value awaited with a time limit: `settle` hands it over, and
 * {@linkcode promise} resolves with it, or with undefined after `ms` or when
 * the client closes.
 */
export class Awaited<T> {
  /** The value, or undefined on timeout or close. */
  readonly promise: Promise<T | undefined>;
  #resolve: (value: T | undefined) => void = () => {};
  #done = false;

  /**
   * @param ms how long to wait
   * @param closed ends the wait when aborted
   */
  constructor(ms: number, closed: AbortSignal) {
    this.promise = new Promise<T | undefined>((resolve) => {
      const timer = setTimeout(() => this.settle(undefined), ms);
      const onAbort = () => this.settle(undefined);
      this.#resolve = (value) => {
        clearTimeout(timer);
        closed.removeEventListener("abort", onAbort);
        resolve(value);
      };
      if (closed.aborted) return onAbort();
      closed.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** Whether the wait is over. */
  get done(): boolean {
    return this.#done;
  }

  /** Ends the wait with `value` (undefined: no value); later calls do nothing. */
  settle(value: T | undefined): void {
    if (this.#done) return;
    this.#done = true;
    this.#resolve(value);
  }
}
