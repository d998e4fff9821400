/**
 * mcrelay's wire format and cryptography, for programs that speak the
 * protocol themselves (PROTOCOL.md): the pure TLV, address, fragment,
 * notice, group and basic-profile codecs, reassembly, and the Fernet, RSA,
 * replay-window and cookie primitives. No sockets and no timers: everything
 * here is tested byte for byte. The relay server and client are in the main
 * export (`mod.ts`).
 *
 * @example Encode a stream of records and read it back
 * ```ts
 * import { decodeRecords, encodeRecords, RecordType } from "./wire.ts";
 *
 * const stream = encodeRecords([
 *   { type: RecordType.KEEPALIVE, value: new Uint8Array([1, 2, 3]) },
 * ]);
 * console.log(decodeRecords(stream)[0].type === RecordType.KEEPALIVE); // true
 * ```
 *
 * @module
 */

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
  type ClientProblemReason,
  type DecodedStream,
  inStreamOrder,
  MAX_RECORDS_PER_STREAM,
  ONE_RECORD_TO_CLIENT,
  ONE_RECORD_TO_SERVER,
  type OneRecordMessage,
  type OneRecordToClientKind,
  type OneRecordToServerKind,
  type Presence,
  type Registration,
  type RelayedMessage,
  type RsaRelayed,
  type ServerKey,
  type ServerProblemReason,
  type StreamProblem,
  type ToClientMessage,
  type ToServerMessage,
} from "./lib/wire/messages.ts";
export {
  decodeToClient,
  decodeToServer,
  encodeToClient,
  encodeToServer,
} from "./lib/wire/message_codec.ts";
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
// RSA keys (RsaPrivateKey, RsaPublicKey, PEM) are exported by mod.ts.
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
