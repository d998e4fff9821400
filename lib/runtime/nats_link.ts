/**
 * The federation link over NATS (`npm:@nats-io/transport-node`): one
 * connection, one subject per cluster, reconnecting forever once it has
 * connected. The NATS client is imported only when a link is made, so a
 * relay without `--nats` never loads it.
 *
 * @module
 */
import { ConfigError } from "../errors.ts";
import type {
  FederationLink,
  FederationLinkHandlers,
} from "../relay/server/federation.ts";

/** How to reach and authenticate to NATS. */
export interface NatsLinkOptions {
  /** Server URLs (`nats://host:port`, `tls://host:port`, or `host:port`). */
  readonly servers: readonly string[];
  /** Cluster name: the subject is `mcrelay.<cluster>`. */
  readonly cluster: string;
  /** Connection name shown by NATS monitoring. */
  readonly name?: string;
  /** A NATS credentials file (JWT and nkey seed). */
  readonly credentialsFile?: string;
  /** A NATS token. */
  readonly token?: string;
  /** User and password. */
  readonly user?: string;
  /** Password of `user`. */
  readonly password?: string;
  /** TLS files: CA, client certificate and key. Any of them turns TLS on. */
  readonly tls?: {
    readonly caFile?: string;
    readonly certFile?: string;
    readonly keyFile?: string;
  };
  /** How long the first connection may take. Default 5,000 ms. */
  readonly connectTimeoutMs?: number;
}

/** Cluster names: a NATS subject token of letters, digits, `_` and `-`. */
const CLUSTER_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** The subject the relays of `cluster` share. */
export function clusterSubject(cluster: string): string {
  if (!CLUSTER_NAME.test(cluster)) {
    throw new ConfigError(
      `Cannot use cluster name "${cluster}": use 1-64 letters, digits, "_" or "-"`,
    );
  }
  return `mcrelay.${cluster}`;
}

type NatsModule = typeof import("@nats-io/transport-node");

/**
 * The NATS client's specifier, deliberately not a literal in `import()`: a
 * literal puts the npm package in the module graph of every server start, and
 * Deno then caches every npm package of the lock file first, so a server
 * without `--nats` could not start offline from an empty DENO_DIR.
 */
const NATS_MODULE = "@nats-io/transport-node";
type NatsConnection = Awaited<ReturnType<NatsModule["connect"]>>;

/** A {@linkcode FederationLink} over one NATS connection. */
export class NatsLink implements FederationLink {
  readonly #nc: NatsConnection;
  readonly #subject: string;
  #connected = true;
  #tasks: Promise<unknown>[] = [];

  private constructor(nc: NatsConnection, subject: string) {
    this.#nc = nc;
    this.#subject = subject;
  }

  /**
   * Connects (the first connection must succeed within the timeout; later
   * losses are retried forever).
   * @throws {ConfigError} when NATS cannot be reached or refuses the credentials
   */
  static async connect(options: NatsLinkOptions): Promise<NatsLink> {
    const subject = clusterSubject(options.cluster);
    const nats: NatsModule = await import(NATS_MODULE);
    let credentials: Uint8Array | undefined;
    if (options.credentialsFile !== undefined) {
      try {
        credentials = await Deno.readFile(options.credentialsFile);
      } catch (error) {
        throw new ConfigError(
          `Cannot read NATS credentials file ${options.credentialsFile}: ${
            (error as Error).message
          }`,
        );
      }
    }
    const tls = options.tls &&
        (options.tls.caFile || options.tls.certFile || options.tls.keyFile)
      ? { ...options.tls }
      : undefined;
    try {
      const nc = await nats.connect({
        servers: [...options.servers],
        name: options.name ?? "mcrelay",
        noEcho: true,
        maxReconnectAttempts: -1,
        reconnectTimeWait: 250,
        pingInterval: 2_000,
        maxPingOut: 2,
        timeout: options.connectTimeoutMs ?? 5_000,
        ...(tls ? { tls } : {}),
        ...(credentials
          ? { authenticator: nats.credsAuthenticator(credentials) }
          : {}),
        ...(options.token ? { token: options.token } : {}),
        ...(options.user ? { user: options.user, pass: options.password } : {}),
      });
      return new NatsLink(nc, subject);
    } catch (error) {
      throw new ConfigError(
        `Cannot reach NATS at ${options.servers.join(", ")}: ${
          (error as Error).message
        }; start nats-server there or fix --nats`,
      );
    }
  }

  /** Whether the connection is up. */
  get connected(): boolean {
    return this.#connected;
  }

  /** Subscribes and watches the connection's status. */
  start(handlers: FederationLinkHandlers): void {
    const subscription = this.#nc.subscribe(this.#subject);
    this.#tasks.push(
      (async () => {
        for await (const message of subscription) {
          handlers.message(message.data);
        }
      })(),
      (async () => {
        for await (const status of this.#nc.status()) {
          if (status.type === "disconnect" && this.#connected) {
            this.#connected = false;
            handlers.status(false);
          } else if (status.type === "reconnect" && !this.#connected) {
            this.#connected = true;
            handlers.status(true);
          }
        }
      })(),
    );
  }

  /** Publishes one payload on the cluster's subject. */
  publish(payload: Uint8Array): void {
    this.#nc.publish(this.#subject, payload);
  }

  /** Flushes, closes the connection and waits for the watchers to end. */
  async close(): Promise<void> {
    if (!this.#nc.isClosed()) {
      if (this.#connected) {
        await this.#nc.drain().catch(() => this.#nc.close());
      } else {
        await this.#nc.close();
      }
    }
    const tasks = this.#tasks;
    this.#tasks = [];
    await Promise.allSettled(tasks);
  }
}
