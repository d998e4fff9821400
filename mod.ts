/**
 * mcrelay: a secure group-messaging relay over UDP multicast.
 *
 * The library behind `server.ts` and `client.ts`, for programs that embed
 * them: the relay server and client (protocol logic over a datagram
 * transport), the basic profile's endpoint and client, the UDP and in-memory
 * transports, the control port, and the pure codecs of the wire format
 * (`PROTOCOL.md`).
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
  ConfigError,
  HandshakeError,
  InvalidKeyError,
  InvalidTokenError,
  type InvalidTokenReason,
  MalformedDatagramError,
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
  type ClientStats,
  type HandshakeProgress,
  RelayClient,
  type RelayClientOptions,
  type SendOutcome,
} from "./lib/relay/client/client.ts";
// Group fan-out (PROTOCOL.md section 9): options `fanout`, `downstream`,
// `groupBatchMs` (server) and `group`, `bindDownstream` (client).
export { type GroupStats } from "./lib/relay/server/group_fanout.ts";
export { type GroupReceiverStats } from "./lib/relay/client/group_receiver.ts";
export {
  type BasicClientInfo,
  type BasicMessage,
  BasicServer,
  type BasicServerOptions,
} from "./lib/relay/basic/server.ts";
export {
  type BasicAck,
  BasicClient,
  type BasicClientOptions,
} from "./lib/relay/basic/client.ts";
export {
  LOG_LEVELS,
  type LogLevel,
  type LogRecord,
  type LogSink,
} from "./lib/relay/log.ts";

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

// Pure codecs of the wire format.
export {
  decodeRecord,
  decodeRecords,
  encodedSize,
  encodeRecords,
  encodeRecordsInto,
  isKnownRecordType,
  RecordType,
  type RecordTypeNumber,
  TLV_HEADER_SIZE,
  type TlvRecord,
} from "./lib/wire/tlv.ts";
export {
  decodeAddress,
  encodeAddress,
  formatAddress,
  isIPv4,
  isIPv6,
  isLoopbackAddress,
  isMulticastIPv4,
  parseAddress,
  type PeerAddress,
} from "./lib/wire/address.ts";
export {
  decodeFragment,
  encodeFragment,
  type Fragment,
  FRAGMENT_HEADER_SIZE,
  fragmentChunkSize,
  fragmentStream,
} from "./lib/wire/fragment.ts";
export {
  DEFAULT_REASSEMBLER_LIMITS,
  type FragmentOutcome,
  Reassembler,
  type ReassemblerCounters,
  type ReassemblerLimits,
} from "./lib/core/reassembler.ts";
export {
  decodeNotice,
  decodeRemoval,
  encodeRemoval,
  type Notice,
  NoticeCode,
  noticeRecord,
  type RemovalNotice,
} from "./lib/wire/notice.ts";
export {
  decodeGroupKeyPlaintext,
  decodeGroupMessageValue,
  decodeGroupPlaintext,
  encodeGroupKeyPlaintext,
  encodeGroupPlaintext,
  type GroupKeyGrant,
  type GroupPlaintext,
} from "./lib/wire/group.ts";
export {
  basicAckText,
  type BasicDatagram,
  basicKeyRequest,
  classifyBasicDatagram,
  fragmentBasicCiphertext,
  parseBasicAck,
} from "./lib/wire/basic.ts";

// Cryptography.
export {
  type DecryptedToken,
  type FernetBackend,
  type FernetDecryptOptions,
  type FernetEncryptOptions,
  FernetKey,
  type IvSource,
  parseToken,
  type TokenFields,
} from "./lib/crypto/fernet.ts";
export {
  deriveKeyBytes,
  deriveKeyText,
  REMOVAL_NOTICE_LABEL,
} from "./lib/crypto/derive_key.ts";
export {
  decodePem,
  encodePem,
  RsaDecryptError,
  RsaPrivateKey,
  RsaPublicKey,
  spkiFingerprint,
} from "./lib/crypto/rsa.ts";
export {
  DEFAULT_REPLAY_ENTRIES,
  type ReplayVerdict,
  ReplayWindow,
  replayWindowEntries,
  type ReplayWindowOptions,
} from "./lib/crypto/replay.ts";
export {
  computeCookie,
  CookieAuthority,
  type CookieVerdict,
} from "./lib/crypto/cookie.ts";
export { IvMarker } from "./lib/crypto/iv_mark.ts";
