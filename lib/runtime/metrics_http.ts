/**
 * The server's HTTP health and metrics endpoint (`--metrics`): `GET
 * /healthz` answers 200 `ok` while the server serves, `GET /metrics` the
 * counters as Prometheus text. Nothing else: other paths get 404, other
 * methods 405. It has no authentication, so it belongs on loopback or a
 * trusted network.
 *
 * @module
 */
import { formatAddress } from "../wire/address.ts";

/** Options of {@linkcode MetricsServer.listen}. */
export interface MetricsServerOptions {
  /** Address to listen on. */
  readonly hostname: string;
  /** Port (0 picks a free one). */
  readonly port: number;
  /** The `/metrics` body, rendered for each request. */
  readonly render: () => string;
  /**
   * Whether the service can answer yet. While it says false (e.g. the
   * relay is still starting its RSA threads), both paths answer 503
   * "starting". Default: always ready.
   */
  readonly ready?: () => boolean;
  /** The `/metrics` content type. */
  readonly contentType: string;
}

/** An HTTP listener for `/healthz` and `/metrics`. */
export class MetricsServer implements AsyncDisposable {
  readonly #server: Deno.HttpServer<Deno.NetAddr>;
  #closing: Promise<void> | undefined;

  private constructor(server: Deno.HttpServer<Deno.NetAddr>) {
    this.#server = server;
  }

  /**
   * Listens and serves until {@linkcode close}.
   * @throws {Deno.errors.AddrInUse} when the port is taken
   */
  static listen(options: MetricsServerOptions): MetricsServer {
    const server = Deno.serve({
      hostname: options.hostname,
      port: options.port,
      onListen: () => {}, // no "Listening on" line: the server logs its own
    }, (request) => respond(request, options));
    return new MetricsServer(server);
  }

  /** The bound address, `HOST:PORT`. */
  get address(): string {
    const addr = this.#server.addr;
    return formatAddress({ hostname: addr.hostname, port: addr.port });
  }

  /** Stops listening and waits for requests in flight. Safe to call twice. */
  close(): Promise<void> {
    this.#closing ??= this.#server.shutdown();
    return this.#closing;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

function respond(request: Request, options: MetricsServerOptions): Response {
  const path = new URL(request.url).pathname;
  if (path !== "/metrics" && path !== "/healthz") {
    return new Response("not found: try /metrics or /healthz\n", {
      status: 404,
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  }
  if (request.method !== "GET" && request.method !== "HEAD") {
    return new Response("method not allowed: use GET\n", {
      status: 405,
      headers: { allow: "GET, HEAD", "content-type": "text/plain" },
    });
  }
  if (options.ready && !options.ready()) {
    return new Response("starting\n", {
      status: 503,
      headers: { "content-type": "text/plain; charset=utf-8" },
    });
  }
  return path === "/healthz"
    ? new Response("ok\n", {
      headers: { "content-type": "text/plain; charset=utf-8" },
    })
    : new Response(options.render(), {
      headers: { "content-type": options.contentType },
    });
}
