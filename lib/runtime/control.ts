/**
 * The TCP control port shared by server and client: a line protocol where
 * every connection receives broadcast lines (the live log, received messages)
 * and sends command lines. Each connection has a bounded output queue, so a
 * slow or stuck reader loses lines (counted) and never stalls the caller.
 * Optional token authentication (`auth <token>` first, 5 s to send it).
 * Admission follows {@linkcode ControlAdmission}: nobody is refused at
 * connect; the connection silent longest, or the oldest one still waiting to
 * authenticate, makes room, and wrong tokens are throttled per IP.
 *
 * @module
 */
import { formatAddress } from "../wire/address.ts";
import {
  ControlAdmission,
  type ControlAdmissionOptions,
  ControlToken,
} from "./control_admission.ts";
import { LineSplitter } from "./lines.ts";

/** One control connection, as handed to command handlers. */
export interface ControlConnection {
  /** The peer's `IP:PORT`. */
  readonly remote: string;
  /**
   * Queues text (one line, or several joined by newlines: one reply) for this
   * connection; a newline is appended. Never blocks.
   */
  write(line: string): void;
  /** Closes this connection after the queued lines are written. */
  close(): void;
}

/**
 * Options of {@linkcode ControlServer.listen}; the admission limits
 * (`maxConnections`, `maxPending`, ...) are those of
 * {@linkcode ControlAdmissionOptions}.
 */
export interface ControlServerOptions extends ControlAdmissionOptions {
  /** Address to bind, 127.0.0.1 by default. */
  readonly hostname: string;
  /** Port to bind; 0 picks a free one. */
  readonly port: number;
  /** Called for every complete line a (authenticated) connection sends. */
  readonly onLine: (connection: ControlConnection, line: string) => void;
  /** Called when a connection is ready (after authentication). */
  readonly onConnect?: (connection: ControlConnection) => void;
  /** When set, a connection must first send `auth <token>`. */
  readonly token?: string;
  /** A line written to every connection as soon as it is accepted (before `auth`), saying what the port is. */
  readonly greeting?: string;
  /** Time allowed to authenticate. Default 5000 ms. */
  readonly authTimeoutMs?: number;
  /** Lines queued per connection before further ones are dropped. Default 1000. */
  readonly maxQueuedLines?: number;
  /** Longest accepted input line; a longer one closes the connection. Default 64 KiB. */
  readonly maxLineBytes?: number;
  /** The clock of the admission rules, in milliseconds. Default `performance.now`. */
  readonly now?: () => number;
}

/** The counters of a control port, as the `stats` command shows them. */
export interface ControlStats {
  /** Connections closed to make room for a newer one. */
  readonly evicted: number;
  /** Wrong tokens (or other first lines) compared and refused. */
  readonly authFailures: number;
  /** Token attempts refused uncompared (their IP had used up its wrong tokens). */
  readonly authThrottled: number;
  /** Lines not delivered because a connection's queue was full. */
  readonly droppedLines: number;
}

/** How long a connection closed to make room may take to be told so. */
const EVICTION_GRACE_MS = 1000;

const encoder = new TextEncoder();

class Connection implements ControlConnection {
  readonly remote: string;
  readonly #conn: Deno.TcpConn;
  readonly #server: ControlServer;
  readonly #queue: string[] = [];
  readonly #maxQueued: number;
  #wake: (() => void) | undefined;
  #closing = false;
  #closed = false;
  authenticated: boolean;
  readonly done: Promise<void>;

  constructor(
    conn: Deno.TcpConn,
    server: ControlServer,
    maxQueued: number,
    authenticated: boolean,
  ) {
    this.#conn = conn;
    this.#server = server;
    this.#maxQueued = maxQueued;
    this.authenticated = authenticated;
    const addr = conn.remoteAddr;
    this.remote = formatAddress({ hostname: addr.hostname, port: addr.port });
    this.done = this.#writeLoop();
  }

  write(line: string): void {
    if (this.#closing) return;
    if (this.#queue.length >= this.#maxQueued) {
      this.#server.droppedLines++;
      return;
    }
    this.#queue.push(line);
    this.#wake?.();
  }

  close(): void {
    this.#closing = true;
    this.#wake?.();
  }

  /**
   * Closes this connection with `line` as its last line, dropping what was
   * still queued; a peer that does not read it within a second is cut off.
   */
  evict(line: string): void {
    if (this.#closing) return;
    this.#queue.length = 0;
    this.#queue.push(line);
    this.close();
    const timer = setTimeout(() => this.destroy(), EVICTION_GRACE_MS);
    this.done.finally(() => clearTimeout(timer));
  }

  /** Whether it is closing (its further lines are not read). */
  get closing(): boolean {
    return this.#closing;
  }

  /** Closes the socket now (ends the reader too). */
  destroy(): void {
    this.#closing = true;
    this.#queue.length = 0;
    this.#closeSocket();
    this.#wake?.();
  }

  #closeSocket(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed by the peer.
    }
  }

  async #writeLoop(): Promise<void> {
    try {
      while (true) {
        if (this.#queue.length === 0) {
          if (this.#closing) break;
          await new Promise<void>((resolve) => this.#wake = resolve);
          this.#wake = undefined;
          continue;
        }
        const batch = this.#queue.splice(0).join("\n") + "\n";
        const bytes = encoder.encode(batch);
        let written = 0;
        while (written < bytes.length && !this.#closed) {
          written += await this.#conn.write(bytes.subarray(written));
        }
        if (this.#closed) break;
      }
    } catch {
      // The peer went away; the reader notices too.
    } finally {
      this.#closeSocket();
    }
  }

  /** Reads lines until EOF, error, or an over-long line. */
  async *lines(maxLineBytes: number): AsyncGenerator<string> {
    const splitter = new LineSplitter();
    const buffer = new Uint8Array(16 * 1024);
    try {
      while (!this.#closed) {
        const n = await this.#conn.read(buffer);
        if (n === null) break;
        yield* splitter.push(buffer.subarray(0, n));
        if (splitter.pendingLength > maxLineBytes) {
          this.write("error: line too long");
          break;
        }
      }
    } catch {
      // Reset by the peer or closed locally.
    }
  }
}

/** A TCP line server for control commands and live output. */
export class ControlServer implements AsyncDisposable {
  /** Lines not delivered because a connection's queue was full. */
  droppedLines = 0;
  /** Connections closed to make room for a newer one (admission caps). */
  evictedConnections = 0;
  /** Wrong tokens (or other first lines) compared and refused. */
  authFailures = 0;
  /** Token attempts refused uncompared because their IP had used up its wrong tokens. */
  authThrottled = 0;
  readonly #listener: Deno.TcpListener;
  readonly #options: ControlServerOptions;
  readonly #admission: ControlAdmission<Connection>;
  readonly #token: ControlToken | undefined;
  readonly #now: () => number;
  readonly #connections = new Set<Connection>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #accepting: Promise<void>;
  #closing: Promise<void> | undefined;
  #wakeAccept: (() => void) | undefined;

  private constructor(
    listener: Deno.TcpListener,
    options: ControlServerOptions,
    admission: ControlAdmission<Connection>,
  ) {
    this.#listener = listener;
    this.#options = options;
    this.#admission = admission;
    this.#token = options.token === undefined
      ? undefined
      : new ControlToken(options.token);
    this.#now = options.now ?? (() => performance.now());
    this.#accepting = this.#acceptLoop();
  }

  /**
   * Binds the control port and starts accepting.
   * @throws {Deno.errors.AddrInUse} when the port is taken
   * @throws {RangeError} when an admission limit is out of range
   */
  static listen(options: ControlServerOptions): ControlServer {
    const admission = new ControlAdmission<Connection>(options);
    const listener = Deno.listen({
      hostname: options.hostname,
      port: options.port,
      transport: "tcp",
    });
    return new ControlServer(listener, options, admission);
  }

  /** The bound address, `HOST:PORT`. */
  get address(): string {
    const addr = this.#listener.addr;
    return formatAddress({ hostname: addr.hostname, port: addr.port });
  }

  /** The bound port. */
  get port(): number {
    return this.#listener.addr.port;
  }

  /** The counters, for `stats`. */
  stats(): ControlStats {
    return {
      evicted: this.evictedConnections,
      authFailures: this.authFailures,
      authThrottled: this.authThrottled,
      droppedLines: this.droppedLines,
    };
  }

  /** Connections now open and authenticated. */
  get connectionCount(): number {
    let count = 0;
    for (const c of this.#connections) if (c.authenticated) count++;
    return count;
  }

  /** Queues `line` for every authenticated connection. Never blocks. */
  broadcast(line: string): void {
    for (const connection of this.#connections) {
      if (connection.authenticated) connection.write(line);
    }
  }

  /** Stops accepting and closes every connection. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        this.#listener.close();
      } catch {
        // Already closed.
      }
      this.#wakeAccept?.();
      await this.#accepting;
      for (const connection of this.#connections) connection.destroy();
      await Promise.all(this.#tasks);
    })();
    return this.#closing;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** Waits `ms`, or less when woken (by close, or a pending connection gone). */
  async #pause(ms: number): Promise<void> {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.#wakeAccept = () => {
        clearTimeout(timer);
        resolve();
      };
    });
    this.#wakeAccept = undefined;
  }

  async #acceptLoop(): Promise<void> {
    while (!this.#closing) {
      if (this.#token !== undefined) {
        // Every pending slot taken by a connection still in its grace: the
        // next connections wait in the kernel's queue, in order.
        const delay = this.#admission.acceptDelayMs(this.#now());
        if (delay > 0) {
          await this.#pause(delay);
          continue;
        }
      }
      let conn: Deno.TcpConn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (
          this.#closing || error instanceof Deno.errors.BadResource ||
          error instanceof Deno.errors.Interrupted
        ) {
          return; // listener closed
        }
        // A passing failure (e.g. out of file descriptors): pause, go on.
        await this.#pause(100);
        continue;
      }
      if (this.#closing) {
        conn.close();
        return;
      }
      const task = this.#serve(conn);
      this.#tasks.add(task);
      task.finally(() => this.#tasks.delete(task));
    }
  }

  /** Closes `victim` (chosen by the admission rules) with a line saying why. */
  #evict(victim: Connection | undefined): void {
    if (victim === undefined) return;
    this.evictedConnections++;
    const { maxConnections, maxPending, maxPendingPerIp } = this.#admission;
    victim.evict(
      victim.authenticated
        ? `error: closed to make room for a new control connection (${maxConnections} at most; the one silent longest goes first): reconnect, and close connections you no longer use`
        : `error: closed: too many connections waiting to authenticate (${maxPending} in all, ${maxPendingPerIp} per IP); reconnect and send auth TOKEN at once`,
    );
  }

  async #serve(conn: Deno.TcpConn): Promise<void> {
    const token = this.#token;
    const ip = conn.remoteAddr.hostname;
    const connection = new Connection(
      conn,
      this,
      this.#options.maxQueuedLines ?? 1000,
      token === undefined,
    );
    this.#connections.add(connection);
    this.#evict(
      this.#admission.admit(connection, ip, token === undefined, this.#now()),
    );
    if (this.#options.greeting !== undefined) {
      connection.write(this.#options.greeting);
    }
    let authTimer: ReturnType<typeof setTimeout> | undefined;
    if (token !== undefined) {
      authTimer = setTimeout(() => {
        connection.write("error: authentication timed out");
        connection.close();
      }, this.#options.authTimeoutMs ?? 5000);
    } else {
      this.#options.onConnect?.(connection);
    }
    try {
      for await (
        const line of connection.lines(this.#options.maxLineBytes ?? 65536)
      ) {
        if (connection.closing) break; // e.g. closed to make room
        const now = this.#now();
        if (!connection.authenticated) {
          clearTimeout(authTimer);
          if (!this.#admission.mayTryToken(ip, now)) {
            this.authThrottled++;
            connection.write(
              `error: too many failed authentications from ${ip}: wait ${
                Math.ceil(1 / this.#admission.authFailuresPerSecond)
              } s before the next try`,
            );
            break;
          }
          const match = /^auth (.*)$/.exec(line);
          if (match && token!.matches(match[1]!)) {
            connection.authenticated = true;
            connection.write("ok: authenticated");
            this.#evict(this.#admission.authenticated(connection, now));
            this.#options.onConnect?.(connection);
            continue;
          }
          this.authFailures++;
          this.#admission.authFailed(ip, now);
          connection.write("error: authentication failed");
          break;
        }
        this.#admission.lineFrom(connection, now);
        try {
          this.#options.onLine(connection, line);
        } catch (error) {
          connection.write(`error: ${(error as Error).message}`);
        }
      }
    } finally {
      clearTimeout(authTimer);
      this.#admission.release(connection);
      this.#wakeAccept?.(); // a pending slot may be free
      connection.close();
      await connection.done;
      this.#connections.delete(connection);
    }
  }
}
