/**
 * The server's counters: {@linkcode ServerStats} (what the `stats` command
 * and the metrics endpoint show) and {@linkcode ServerCounters}, the mutable
 * tallies the server's modules share.
 *
 * @module
 */
import type { ReassemblerCounters } from "../../core/reassembler.ts";
import type { PresenceCounters } from "../../core/silence.ts";
import type { GroupStats } from "./group_fanout.ts";
import type { FederationStats } from "./federation.ts";

/** Tallies the server's modules add to (one object, made once). */
export interface ServerCounters {
  /** Datagrams received. */
  datagramsIn: number;
  /** Bytes received. */
  bytesIn: number;
  /** Messages accepted from members and relayed. */
  messagesRelayed: number;
  /** Messages fanned out here: local members' and other relays' (federation). */
  messagesFannedOut: number;
  /** Copies delivered (messages x recipients). */
  deliveries: number;
  /** First registrations. */
  registrations: number;
  /** Rekeys of registered members. */
  rekeys: number;
}

/** Fresh counters, all zero. */
export function newCounters(): ServerCounters {
  return {
    datagramsIn: 0,
    bytesIn: 0,
    messagesRelayed: 0,
    messagesFannedOut: 0,
    deliveries: 0,
    registrations: 0,
    rekeys: 0,
  };
}

/** Counters shown by the `stats` command. */
export interface ServerStats {
  /** Datagrams received. */
  readonly datagramsIn: number;
  /** Bytes received. */
  readonly bytesIn: number;
  /** Datagrams sent. */
  readonly datagramsOut: number;
  /** Bytes sent. */
  readonly bytesOut: number;
  /** Messages accepted from members and relayed. */
  readonly messagesRelayed: number;
  /** Copies delivered (messages x recipients). */
  readonly deliveries: number;
  /** First registrations. */
  readonly registrations: number;
  /** Rekeys of registered members. */
  readonly rekeys: number;
  /** RSA-OAEP blocks given to decryption (registrations, RSA-profile messages). */
  readonly rsaDecryptions: number;
  /** Members now. */
  readonly members: number;
  /** Share of the last load window the event loop spent working (0-1). */
  readonly loopUtilization: number;
  /** Datagrams queued or in work, and the sources they came from. */
  readonly queued: { readonly datagrams: number; readonly sources: number };
  /** Datagrams, records or streams dropped, by reason. */
  readonly dropped: Readonly<Record<string, number>>;
  /** Datagrams the kernel dropped on the server's socket (undefined: not measurable here). */
  readonly kernelDropped: number | undefined;
  /** Presence sweeps after a stall, and timeouts extended for the server's own loss. */
  readonly presence: Readonly<PresenceCounters>;
  /** Reassembly counters (members and unregistered sources together). */
  readonly reassembly: Readonly<ReassemblerCounters>;
  /** Datagrams sent per relayed message (group and per-recipient together). */
  readonly datagramsPerMessage: number;
  /** Relay streams that shared a datagram with an earlier one to the same member (datagrams saved by coalescing). */
  readonly coalesced: number;
  /** Group fan-out state (`fanout: "group"` only). */
  readonly group?: GroupStats;
  /** Federation counters, when the server is federated. */
  readonly federation?: FederationStats;
}
