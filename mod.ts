/**
 * mcrelay: a secure group-messaging relay over UDP multicast.
 *
 * The library behind `server.ts` and `client.ts`, for programs that embed
 * them: the relay server and client (protocol logic over a datagram
 * transport), the basic profile's endpoint and client, the UDP and in-memory
 * transports, the control port, and the server's RSA key. The pure codecs of the wire format
 * (`PROTOCOL.md`) and the cryptographic primitives are the second export,
 * `wire.ts` (`@mcrelay/mcrelay/wire`).
 *
 * @example Run a relay on loopback and exchange a message between two members
 * ```ts
 * import { RelayClient, RelayServer, RsaPrivateKey, UdpTransport } from "./mod.ts";
 *
 * const server = await RelayServer.start({
 *   transport: await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 }),
 *   privateKey: await RsaPrivateKey.generate(2048),
 * });
 * const join = async () =>
 *   await RelayClient.connect({
 *     transport: await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 }),
 *     target: server.localAddress,
 *     fingerprint: server.fingerprint,
 *   });
 * const alice = await join();
 * const bob = await join();
 * const received = new Promise<string>((resolve) =>
 *   bob.onEvent((event) => {
 *     if (event.type === "message") resolve(`${event.from}: ${event.text}`);
 *   })
 * );
 * await alice.send("hello");
 * console.log(await received); // 127.0.0.1:PORT: hello
 * await alice.close();
 * await bob.close();
 * await server.close();
 * ```
 *
 * @module
 */

export {
  ClientClosedError,
  ConfigError,
  HandshakeError,
  InvalidKeyError,
  InvalidTokenError,
  type InvalidTokenReason,
  MalformedDatagramError,
  SendCancelledError,
  type SendCancelReason,
  ServerClosedError,
  ServerKeyError,
  UndeliveredError,
  type UndeliveredReason,
} from "./lib/errors.ts";

// The relay (hybrid and RSA profiles) and the basic profile.
export {
  type LeaveReason,
  type MemberInfo,
  type MemberProfile,
  RelayServer,
  type RelayServerOptions,
  type ServerStats,
  type ServerStatus,
} from "./lib/relay/server/server.ts";
// Bans (`RelayServer.ban`, `unban`, `bans`).
export { type BanEntry, MAX_BAN_SECONDS } from "./lib/core/bans.ts";
// Relays federated over NATS (one group served by several relays).
export {
  Federation,
  type FederationLink,
  type FederationLinkHandlers,
  type FederationOptions,
  type FederationPeer,
  type FederationStats,
} from "./lib/relay/server/federation.ts";
export type { RemoteMemberInfo } from "./lib/relay/server/cluster_view.ts";
export {
  clusterSubject,
  NatsLink,
  type NatsLinkOptions,
} from "./lib/runtime/nats_link.ts";
export {
  LoadMeter,
  type LoadMeterOptions,
  type LoadProbe,
} from "./lib/core/load.ts";
export {
  type ClientEvent,
  type ClientState,
  type ClientStats,
  type HandshakeProgress,
  type MessageEvent,
  RelayClient,
  type RelayClientOptions,
  type SendOptions,
  type SendOutcome,
  type StatusEvent,
} from "./lib/relay/client/client.ts";
// Group fan-out (PROTOCOL.md section 9): options `fanout`, `downstream`,
// `groupBatchMs` (server) and `group`, `bindDownstream` (client).
export { type GroupStats } from "./lib/relay/server/group_fanout.ts";
export { type GroupReceiverStats } from "./lib/relay/client/types.ts";
export {
  type BasicClientInfo,
  BasicServer,
  type BasicServerEvent,
  type BasicServerOptions,
  type BasicServerStats,
} from "./lib/relay/basic/server.ts";
export {
  type BasicAck,
  BasicClient,
  type BasicClientOptions,
  type BasicClientStats,
} from "./lib/relay/basic/client.ts";
export {
  LOG_LEVELS,
  type LogLevel,
  type LogRecord,
  type LogSink,
} from "./lib/log.ts";

// Transports and the control port.
export type { Datagram, DatagramTransport } from "./lib/runtime/transport.ts";
export {
  type MulticastOptions,
  type UdpBindOptions,
  UdpTransport,
} from "./lib/runtime/udp.ts";
export { MemoryNetwork, MemoryTransport } from "./lib/runtime/memory.ts";
export {
  KernelDropMeter,
  kernelDropsUnavailable,
  parseProcNetUdp,
  socketInodes,
  type UdpSocketRow,
} from "./lib/runtime/kernel_drops.ts";
export {
  type PresenceCounters,
  PresenceJudge,
  type PresenceJudgeOptions,
  type SilenceRecord,
  type SilenceVerdict,
} from "./lib/core/silence.ts";
export { type HintAction, KeepaliveWatch } from "./lib/core/keepalive_watch.ts";
export {
  type ControlConnection,
  ControlServer,
  type ControlServerOptions,
  type ControlStats,
} from "./lib/runtime/control.ts";
export {
  ControlAdmission,
  type ControlAdmissionOptions,
  ControlToken,
} from "./lib/runtime/control_admission.ts";

// The server's key (see `wire.ts` for the codecs and the other primitives).
export { decodePem, encodePem } from "./lib/crypto/pem.ts";
export {
  RsaDecryptError,
  RsaPrivateKey,
  RsaPublicKey,
  spkiFingerprint,
} from "./lib/crypto/rsa.ts";
export { VERSION } from "./lib/version.ts";
