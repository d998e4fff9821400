/**
 * The server's counters in the Prometheus text exposition format 0.0.4, as
 * `/metrics` serves them (`--metrics`): one `# HELP` and one `# TYPE` line
 * per family, counters named `..._total`, drops and reassembly events as
 * labelled series. Metric names are the README's ("Operate it").
 *
 * Pure: the caller passes the counters and the process's resident memory.
 *
 * @module
 */
import type { GroupStats } from "../relay/server/group_fanout.ts";
import type { FederationStats } from "../relay/server/federation.ts";
import type { ReassemblerCounters } from "../core/reassembler.ts";

/** The content type of {@linkcode renderMetrics}'s text. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * The counters {@linkcode renderMetrics} reads: those of the relay's
 * `stats()` (the basic profile's have fewer and `messages`); what is absent
 * is left out.
 */
export interface MetricsStats {
  /** Datagrams received. */
  readonly datagramsIn: number;
  /** Bytes received. */
  readonly bytesIn: number;
  /** Datagrams sent. */
  readonly datagramsOut: number;
  /** Bytes sent. */
  readonly bytesOut: number;
  /** Members now. */
  readonly members: number;
  /** RSA-OAEP blocks decrypted. */
  readonly rsaDecryptions: number;
  /** Drops by reason. */
  readonly dropped: Readonly<Record<string, number>>;
  /** Reassembly counters by event. */
  readonly reassembly: Readonly<ReassemblerCounters>;
  /** Messages relayed. */
  readonly messagesRelayed?: number;
  /** Messages received and acknowledged (basic profile). */
  readonly messages?: number;
  /** Copies delivered (messages x recipients). */
  readonly deliveries?: number;
  /** First registrations. */
  readonly registrations?: number;
  /** Rekeys of registered members. */
  readonly rekeys?: number;
  /** Share of the last load window the event loop worked (0-1). */
  readonly loopUtilization?: number;
  /** Datagrams queued or in work, and their sources. */
  readonly queued?: { readonly datagrams: number; readonly sources: number };
  /** Datagrams the kernel dropped on the socket (undefined: not measurable). */
  readonly kernelDropped?: number | undefined;
  /** Presence stalls and extended timeouts. */
  readonly presence?: {
    readonly stalls: number;
    readonly timeoutsExtended: number;
  };
  /** Datagrams sent per relayed message. */
  readonly datagramsPerMessage?: number;
  /** Group fan-out state. */
  readonly group?: GroupStats;
  /** Federation counters. */
  readonly federation?: FederationStats;
}

/** What the process adds to the counters. */
export interface ProcessFigures {
  /** Resident set size in bytes. */
  readonly residentBytes: number;
}

type Sample = readonly [
  labels: Readonly<Record<string, string>>,
  value: number,
];

interface Family {
  readonly name: string;
  readonly type: "counter" | "gauge";
  readonly help: string;
  readonly samples: readonly Sample[];
}

/**
 * Renders the counters as Prometheus text (format 0.0.4).
 * @returns the text, ending in a newline
 * @example
 * ```ts
 * import { renderMetrics } from "./prometheus.ts";
 *
 * const text = renderMetrics({
 *   datagramsIn: 3, bytesIn: 300, datagramsOut: 2, bytesOut: 200, members: 1,
 *   rsaDecryptions: 1, dropped: { replay: 1 },
 *   reassembly: {
 *     completed: 0, duplicate: 0, countMismatch: 0, countTooLarge: 0,
 *     timedOut: 0, tooManyPartials: 0, sourceBytesExceeded: 0,
 *     totalBytesExceeded: 0,
 *   },
 * }, { residentBytes: 50e6 });
 * if (!text.includes('mcrelay_dropped_total{reason="replay"} 1\n')) throw new Error(text);
 * ```
 */
export function renderMetrics(
  stats: MetricsStats,
  process: ProcessFigures,
): string {
  const families: Family[] = [];
  const add = (
    name: string,
    type: Family["type"],
    help: string,
    value: number | undefined,
  ) => {
    if (value !== undefined) {
      families.push({ name, type, help, samples: [[{}, value]] });
    }
  };
  const labelled = (
    name: string,
    help: string,
    label: string,
    values: object,
  ) =>
    families.push({
      name,
      type: "counter",
      help,
      samples: (Object.entries(values) as [string, number][]).sort(([a], [b]) =>
        a < b ? -1 : 1
      )
        .map(([key, value]) => [{ [label]: snakeCase(key) }, value]),
    });

  add("mcrelay_members", "gauge", "Members registered now.", stats.members);
  add(
    "mcrelay_datagrams_received_total",
    "counter",
    "Datagrams received on the UDP socket.",
    stats.datagramsIn,
  );
  add(
    "mcrelay_received_bytes_total",
    "counter",
    "Bytes received on the UDP socket.",
    stats.bytesIn,
  );
  add(
    "mcrelay_datagrams_sent_total",
    "counter",
    "Datagrams sent.",
    stats.datagramsOut,
  );
  add("mcrelay_sent_bytes_total", "counter", "Bytes sent.", stats.bytesOut);
  add(
    "mcrelay_messages_relayed_total",
    "counter",
    "Messages accepted from members and relayed (basic profile: received and acknowledged).",
    stats.messagesRelayed ?? stats.messages,
  );
  add(
    "mcrelay_deliveries_total",
    "counter",
    "Copies delivered: messages times recipients.",
    stats.deliveries,
  );
  add(
    "mcrelay_registrations_total",
    "counter",
    "First registrations of members.",
    stats.registrations,
  );
  add(
    "mcrelay_rekeys_total",
    "counter",
    "Rekeys of registered members.",
    stats.rekeys,
  );
  add(
    "mcrelay_rsa_decryptions_total",
    "counter",
    "RSA-OAEP blocks given to decryption.",
    stats.rsaDecryptions,
  );
  labelled(
    "mcrelay_dropped_total",
    "Datagrams, records or streams dropped, by reason.",
    "reason",
    stats.dropped,
  );
  add(
    "mcrelay_kernel_dropped_total",
    "counter",
    "Datagrams the kernel dropped on the server's socket (receive queue full).",
    stats.kernelDropped,
  );
  labelled(
    "mcrelay_reassembly_total",
    "Reassembly of fragmented streams, by event.",
    "event",
    stats.reassembly,
  );
  add(
    "mcrelay_loop_utilization_ratio",
    "gauge",
    "Share of the last load window the event loop spent working (0-1).",
    stats.loopUtilization,
  );
  add(
    "mcrelay_queued_datagrams",
    "gauge",
    "Datagrams queued or in work.",
    stats.queued?.datagrams,
  );
  add(
    "mcrelay_queued_sources",
    "gauge",
    "Sources with datagrams queued or in work.",
    stats.queued?.sources,
  );
  add(
    "mcrelay_presence_stalls_total",
    "counter",
    "Presence sweeps that ran late enough to count as a stall.",
    stats.presence?.stalls,
  );
  add(
    "mcrelay_presence_timeouts_extended_total",
    "counter",
    "Member timeouts extended because the server itself had dropped datagrams.",
    stats.presence?.timeoutsExtended,
  );
  add(
    "mcrelay_datagrams_per_message",
    "gauge",
    "Datagrams sent per relayed message, group and per-recipient together.",
    stats.datagramsPerMessage,
  );
  const group = stats.group;
  if (group) {
    add("mcrelay_group_epoch", "gauge", "Current group epoch.", group.epoch);
    add(
      "mcrelay_group_capable_members",
      "gauge",
      "Members that asked for group fan-out.",
      group.capable,
    );
    add(
      "mcrelay_group_key_holders",
      "gauge",
      "Members holding the current epoch's key.",
      group.holders,
    );
    add(
      "mcrelay_group_rekeys_total",
      "counter",
      "Group epochs started.",
      group.rekeys,
    );
    add(
      "mcrelay_group_keys_sent_total",
      "counter",
      "GROUP_KEY grants sent.",
      group.keysSent,
    );
    add(
      "mcrelay_group_messages_total",
      "counter",
      "Messages relayed as one group token.",
      group.messages,
    );
    add(
      "mcrelay_group_datagrams_total",
      "counter",
      "Datagrams the group messages took.",
      group.datagrams,
    );
    add(
      "mcrelay_group_last_rekey_seconds",
      "gauge",
      "Time the last group rekey took.",
      group.lastRekeyMs / 1000,
    );
  }
  const federation = stats.federation;
  if (federation) {
    add(
      "mcrelay_federation_connected",
      "gauge",
      "Whether the NATS link is up (1) or not (0).",
      federation.connected ? 1 : 0,
    );
    add(
      "mcrelay_federation_relays",
      "gauge",
      "Other relays of the cluster heard from and alive.",
      federation.relays,
    );
    add(
      "mcrelay_federation_remote_members",
      "gauge",
      "Members of the other relays.",
      federation.remoteMembers,
    );
    add(
      "mcrelay_federation_published_total",
      "counter",
      "Envelopes published to the cluster.",
      federation.published,
    );
    add(
      "mcrelay_federation_received_total",
      "counter",
      "Envelopes of other relays accepted.",
      federation.received,
    );
    add(
      "mcrelay_federation_buffered_envelopes",
      "gauge",
      "Envelopes waiting for the NATS link to come back.",
      federation.buffered,
    );
  }
  add(
    "process_resident_memory_bytes",
    "gauge",
    "Resident memory size in bytes.",
    process.residentBytes,
  );

  const lines: string[] = [];
  for (const family of families) {
    lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
    lines.push(`# TYPE ${family.name} ${family.type}`);
    for (const [labels, value] of family.samples) {
      const pairs = Object.entries(labels).map(([k, v]) =>
        `${k}="${escapeLabel(v)}"`
      );
      const suffix = pairs.length > 0 ? `{${pairs.join(",")}}` : "";
      lines.push(`${family.name}${suffix} ${formatValue(value)}`);
    }
  }
  return lines.join("\n") + "\n";
}

/** `countMismatch` -> `count_mismatch`, as Prometheus label values usually are. */
function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

/** HELP text escapes: backslash and line feed. */
function escapeHelp(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

/** Label value escapes: backslash, double quote and line feed. */
function escapeLabel(text: string): string {
  return escapeHelp(text).replaceAll('"', '\\"');
}

/** A sample value as Prometheus reads it (Go's float syntax). */
function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (!Number.isFinite(value)) return value > 0 ? "+Inf" : "-Inf";
  return String(value);
}
