/**
 * Joining: binds the client's UDP socket and connects the relay client (or
 * the basic profile's), and wraps its send into the one the modes use; the
 * error for a `--connect-timeout` that ran out.
 *
 * @module
 */
import { HandshakeError, UndeliveredError } from "../errors.ts";
import { formatAddress, isIPv6 } from "../wire/address.ts";
import { UdpTransport } from "../runtime/udp.ts";
import {
  type ClientEvent,
  type HandshakeProgress,
  RelayClient,
} from "../relay/client/client.ts";
import { BasicClient } from "../relay/basic/client.ts";
import type { LogSink } from "../log.ts";
import type { ClientConfig } from "./client_config.ts";
import type { KnownServers } from "./known_servers.ts";
import { formatAck, formatQueued } from "./client_format.ts";

/** Sends one message; resolves with a line to show (an ACK, "queued") or nothing. */
export type SendMessage = (
  message: string | Uint8Array,
) => Promise<string | undefined>;

/** What {@linkcode connectClient} needs besides the settings. */
export interface ConnectHooks {
  /** The log. */
  readonly log: LogSink;
  /** The known-servers file to check keys against, if one is used. */
  readonly known: KnownServers | undefined;
  /** Every event of the relay client. */
  readonly onEvent: (event: ClientEvent) => void;
  /** Every try of the key exchange. */
  readonly onProgress: (progress: HandshakeProgress) => void;
  /** Aborts joining. */
  readonly signal: AbortSignal;
  /** Called with the socket once bound (to close it when joining is abandoned). */
  readonly onTransport: (transport: UdpTransport) => void;
}

/** A joined client and how to send through it. */
export interface Connected {
  /** The client. */
  readonly client: RelayClient | BasicClient;
  /** Sends one message. */
  readonly send: SendMessage;
}

/**
 * Binds an ephemeral UDP socket and joins the server the settings name.
 * @throws {HandshakeError} when joining fails
 */
export async function connectClient(
  config: ClientConfig,
  hooks: ConnectHooks,
): Promise<Connected> {
  const { target, profile, json } = config;
  const log = hooks.log;
  const transport = await UdpTransport.bind({
    hostname: isIPv6(target.hostname) ? "::" : "0.0.0.0",
    port: 0,
  });
  hooks.onTransport(transport);
  if (profile === "basic") {
    const basic = await BasicClient.connect({
      transport,
      server: target,
      keyBits: config.rsaKeyBits,
      fingerprint: config.fingerprint,
      mtu: config.mtu,
      log,
      retryInitialMs: config.retryInitialMs,
      retryAttempts: config.retryAttempts,
    });
    return {
      client: basic,
      send: async (line) => formatAck(await basic.send(line), json),
    };
  }
  const known = hooks.known;
  const relay = await RelayClient.connect({
    transport,
    target,
    fallbackTargets: config.fallbackTargets,
    profile,
    rsaKeyBits: config.rsaKeyBits,
    fingerprint: config.fingerprint,
    verifyKey: known && ((server, key) => known.check(server, key)),
    onProgress: hooks.onProgress,
    mtu: config.mtu,
    keepaliveMs: config.keepaliveMs,
    retryInitialMs: config.retryInitialMs,
    retryAttempts: config.retryAttempts,
    log,
    onEvent: hooks.onEvent,
    signal: hooks.signal,
    group: config.groupFanout,
    // The downstream group a GROUP_KEY names: bound to its port with
    // address reuse so several clients of one host can join it.
    bindDownstream: (group) =>
      UdpTransport.bind({
        hostname: "0.0.0.0",
        port: group.port,
        reuseAddress: true,
        multicast: { group: group.hostname },
      }),
  });
  const send: SendMessage = async (message) => {
    try {
      if (await relay.send(message) === "sent") return undefined;
      return formatQueued(
        typeof message === "string"
          ? message
          : `(${message.length} bytes of --file)`,
        json,
      );
    } catch (error) {
      // Already shown by the client's "undelivered" event.
      if (error instanceof UndeliveredError) return undefined;
      throw error;
    }
  };
  return { client: relay, send };
}

/**
 * The error for a `--connect-timeout` that ran out: the server kept silent,
 * or sent its key but never confirmed the registration.
 */
export function connectTimeoutError(
  config: ClientConfig,
  lastProgress: HandshakeProgress | undefined,
): HandshakeError {
  const seconds = config.connectTimeoutMs! / 1000;
  return new HandshakeError(
    lastProgress?.step === "register"
      ? `The server at ${lastProgress.server} sent its key but did not confirm the registration within --connect-timeout ${seconds} s: check that client and server clocks agree within 60 s and that the server is not full or rate-limiting this address`
      : `No answer from ${
        lastProgress?.server ?? formatAddress(config.target)
      } within --connect-timeout ${seconds} s (${
        lastProgress?.attempt ?? 0
      } key requests sent): check that the server runs, and --server/--group/--port (use --server HOST:PORT where multicast does not route)`,
  );
}
