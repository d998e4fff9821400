/**
 * The server's parts and their wiring: every module made once from the
 * resolved config, each given the small context it needs (the members, the
 * output, the drop counter, the clock, ...), never the whole server.
 *
 * @module
 */
import { IvMarker } from "../../crypto/iv_mark.ts";
import { BanList } from "../../core/bans.ts";
import { DropCounter } from "../../core/drops.ts";
import { LoadMeter, type LoadProbe } from "../../core/load.ts";
import { Reassembler } from "../../core/reassembler.ts";
import { PresenceJudge } from "../../core/silence.ts";
import { RsaDecryptPool } from "../../runtime/rsa_pool.ts";
import type { PeerAddress } from "../../wire/address.ts";
import { RecordType } from "../../wire/tlv.ts";
import { Dispatch } from "./dispatch.ts";
import { Fanout } from "./fanout.ts";
import type { FederationPeer } from "./federation.ts";
import { GroupFanout } from "./group_fanout.ts";
import { Handshake } from "./handshake.ts";
import { type Member, MemberTable } from "./member.ts";
import {
  DROP_LOG_INTERVAL_MS,
  type ServerConfig,
  STRANGER_REASSEMBLY,
} from "./options.ts";
import { Output } from "./output.ts";
import { Presence } from "./presence.ts";
import { SourceQueues } from "./queue.ts";
import { Receiver } from "./receive.ts";
import { newCounters, type ServerCounters } from "./stats.ts";
import { StatusChannel } from "./status.ts";

/** The server's modules and shared state, wired together. */
export interface ServerParts {
  /** Counts and rate-logs drops. */
  readonly drops: DropCounter;
  /** The members. */
  readonly members: MemberTable;
  /** Tallies. */
  readonly counters: ServerCounters;
  /** Server events for embedders. */
  readonly status: StatusChannel;
  /** Sends. */
  readonly output: Output;
  /** Per-source order and backlog. */
  readonly queues: SourceQueues;
  /** Judges silence. */
  readonly judge: PresenceJudge;
  /** Joins, leaves, silence, liveness. */
  readonly presence: Presence;
  /** The relay. */
  readonly fanout: Fanout;
  /** The receive loop. */
  readonly receiver: Receiver;
  /** Group fan-out, if on. */
  readonly group: GroupFanout<Member> | undefined;
  /** Members' reassembly. */
  readonly memberReassembly: Reassembler;
  /** Unregistered sources' reassembly. */
  readonly strangerReassembly: Reassembler;
  /** The bans in force. */
  readonly bans: BanList;
  /** RSA decryption threads. */
  readonly rsa: RsaDecryptPool;
  /** How busy the event loop is. */
  readonly load: LoadProbe;
}

/**
 * Makes the server's parts from its config.
 * @param config the resolved options
 * @param closing whether the server is stopping
 */
export function assembleParts(
  config: ServerConfig,
  closing: () => boolean,
): ServerParts {
  const { log, now, limits } = config;
  const drops = new DropCounter(log, now, DROP_LOG_INTERVAL_MS);
  const members = new MemberTable({
    now,
    // A released key stays refused while its tokens can pass the age and
    // skew checks (PROTOCOL.md section 4, "one key, one member"); not under
    // --compat, whose version-1 clients may register one key again.
    retireKeysMs: config.compat
      ? 0
      : (2 * limits.tokenMaxAgeSeconds + 1) * 1000,
  });
  const counters = newCounters();
  const status = new StatusChannel();
  const output = new Output({
    transport: config.transport,
    mtu: config.mtu,
    coalesceSends: config.coalesceSends,
    drops,
    now,
  });
  const rsa = new RsaDecryptPool(config.privateKey, config.rsa);
  const load = config.load ?? new LoadMeter();
  const memberReassembly = new Reassembler(config.reassembly, now);
  const strangerReassembly = new Reassembler(STRANGER_REASSEMBLY, now);
  const bans = new BanList(limits.maxBans);
  const judge = new PresenceJudge({
    timeoutMs: config.clientTimeoutMs,
    sweepMs: config.sweepMs,
    startMs: now(),
  });
  const queues = new SourceQueues({
    maxQueuedPerSource: limits.maxQueuedPerSource,
    maxQueuedTotal: limits.maxQueuedTotal,
    // The server's own loss: the presence judge extends members' windows.
    selfDrop: (reason, source) => {
      drops.drop(reason, source);
      judge.selfDrop(now());
    },
    log,
  });
  const marker = new IvMarker();
  const group = config.group && new GroupFanout<Member>({
    marker,
    mtu: config.mtu,
    tokenMaxAgeSeconds: limits.tokenMaxAgeSeconds,
    downstream: config.group.downstream,
    batchMs: config.group.batchMs,
    newcomerUnicastMs: config.group.newcomerMs,
    send: (datagram, to) => output.send(datagram, to),
    drops,
    log,
    now,
  });
  /** Whether `from` is banned; its datagram is then dropped and counted (`banned`). */
  const isBanned = (from: PeerAddress, source: string): boolean => {
    if (bans.size === 0) return false;
    if (!bans.match(from, now(), source)) return false;
    drops.drop("banned", source);
    return true;
  };
  const shared = {
    members,
    output,
    drops,
    log,
    now,
    group,
    federation: config.federation,
    counters,
    status,
    closing,
  };
  const presence = new Presence({
    ...shared,
    mtu: config.mtu,
    presenceBatchMs: config.presenceBatchMs,
    compat: config.compat,
    judge,
    kernelDrops: config.kernelDrops,
    memberReassembly,
  });
  const handshake = new Handshake({
    ...shared,
    config,
    presence,
    rsa,
    marker,
    strangerReassembly,
    isBanned,
  });
  const fanout = new Fanout({ ...shared, config, presence, rsa });
  const dispatch = new Dispatch({
    ...shared,
    overloaded: () => load.overloaded,
    handshake,
    fanout,
    presence,
    memberReassembly,
    strangerReassembly,
    isBanned,
  });
  const receiver = new Receiver({
    ...shared,
    transport: config.transport,
    load,
    queues,
    dispatch,
    isBanned,
  });
  return {
    drops,
    members,
    counters,
    status,
    output,
    queues,
    judge,
    presence,
    fanout,
    receiver,
    group,
    memberReassembly,
    strangerReassembly,
    bans,
    rsa,
    load,
  };
}

/** What the federation may ask of the server. */
export function federationPeer(parts: ServerParts): FederationPeer {
  const { members, presence, fanout, drops } = parts;
  return {
    localMembers: () => [...members.values()].map((m) => m.addressValue),
    deliverRemote: (sender, message) => fanout.relayRemote(sender, message),
    remoteJoined: (address, key) => {
      if (!members.has(key)) {
        presence.notify(RecordType.NOTIFY_CONNECT, address);
      }
    },
    remoteLeft: (address, key) => {
      if (!members.has(key)) {
        presence.notify(RecordType.NOTIFY_DISCONNECT, address);
      }
    },
    drop: (reason, count) => drops.drop(reason, "federation", {}, count),
  };
}
