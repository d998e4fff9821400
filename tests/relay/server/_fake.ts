/**
 * A fake context for the server's decision modules: members made without a
 * socket, an output that records what it would send, and a stopped clock.
 */
import { RsaPrivateKey } from "../../../lib/crypto/rsa.ts";
import { DropCounter } from "../../../lib/core/drops.ts";
import { PresenceJudge } from "../../../lib/core/silence.ts";
import {
  encodeAddress,
  formatAddress,
  type PeerAddress,
} from "../../../lib/wire/address.ts";
import { decodeRecords, type TlvRecord } from "../../../lib/wire/tlv.ts";
import { silentLog } from "../../../lib/log.ts";
import {
  createMember,
  type Member,
  MemberTable,
} from "../../../lib/relay/server/member.ts";
import {
  resolveOptions,
  type ServerConfig,
} from "../../../lib/relay/server/options.ts";
import { Output } from "../../../lib/relay/server/output.ts";
import { newCounters } from "../../../lib/relay/server/stats.ts";
import { StatusChannel } from "../../../lib/relay/server/status.ts";

export const serverKey = await RsaPrivateKey.generate(2048);
/** The RSA key of the members {@linkcode fakeContext} adds. */
export const memberKey = await RsaPrivateKey.generate(2048);

/** One datagram the fake output would have sent. */
export interface Sent {
  readonly to: string;
  readonly records: TlvRecord[];
}

/** The shared parts of a decision module's context, with what they did. */
export function fakeContext(options: { presenceBatchMs?: number } = {}) {
  let clock = 1_000_000;
  const now = () => clock;
  const sent: Sent[] = [];
  const config: ServerConfig = resolveOptions({
    transport: {
      localAddress: { hostname: "127.0.0.1", port: 7000 },
      send: () => Promise.resolve(),
      close: () => {},
      [Symbol.asyncIterator]: () => ({
        next: () => Promise.resolve({ done: true, value: undefined }),
      }),
    },
    privateKey: serverKey,
    presenceBatchMs: options.presenceBatchMs,
    now,
  });
  const drops = new DropCounter(silentLog, now);
  const output = new Output({
    transport: {
      send: (data: Uint8Array, to: PeerAddress) => {
        sent.push({ to: formatAddress(to), records: decodeRecords(data) });
        return Promise.resolve();
      },
    },
    mtu: config.mtu,
    coalesceSends: false,
    drops,
    now,
  });
  const members = new MemberTable();
  const status = new StatusChannel();
  let port = 50000;
  /** Adds an RSA-profile member (no Fernet key needed) at a fresh port. */
  const addMember = (): Member => {
    const address = { hostname: "127.0.0.1", port: port++ };
    const member = createMember(
      {
        address,
        key: formatAddress(address),
        addressValue: encodeAddress(address),
        keyId: `member ${port}`,
        registrationHash: new Uint8Array(32),
      },
      { profile: "rsa", rsaKey: memberKey.publicKey },
      config.limits,
      now(),
    );
    members.add(member);
    return member;
  };
  return {
    config,
    now,
    advance: (ms: number) => clock += ms,
    sent,
    drops,
    output,
    members,
    status,
    addMember,
    counters: newCounters(),
    log: silentLog,
    judge: new PresenceJudge({
      timeoutMs: config.clientTimeoutMs,
      sweepMs: config.sweepMs,
      startMs: now(),
    }),
    group: undefined,
    federation: undefined,
    closing: () => false,
  };
}
