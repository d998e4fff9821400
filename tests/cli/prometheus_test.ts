import assert from "node:assert/strict";
import { type MetricsStats, renderMetrics } from "../../lib/cli/prometheus.ts";

function test(name: string, fn: () => void): void {
  Deno.test({ name, permissions: "none", fn });
}

const REASSEMBLY = {
  completed: 4,
  duplicate: 0,
  countMismatch: 1,
  countTooLarge: 0,
  timedOut: 0,
  tooManyPartials: 0,
  sourceBytesExceeded: 0,
  totalBytesExceeded: 0,
};

const BASIC: MetricsStats = {
  datagramsIn: 10,
  bytesIn: 1000,
  datagramsOut: 8,
  bytesOut: 900,
  members: 2,
  rsaDecryptions: 3,
  messages: 5,
  dropped: {},
  reassembly: REASSEMBLY,
};

test("renderMetrics() writes HELP, TYPE and the sample of each family, in order", () => {
  const text = renderMetrics(BASIC, { residentBytes: 123456 });
  const lines = text.split("\n");
  assert.deepEqual(lines.slice(0, 6), [
    "# HELP mcrelay_members Members registered now.",
    "# TYPE mcrelay_members gauge",
    "mcrelay_members 2",
    "# HELP mcrelay_datagrams_received_total Datagrams received on the UDP socket.",
    "# TYPE mcrelay_datagrams_received_total counter",
    "mcrelay_datagrams_received_total 10",
  ]);
  assert.ok(text.endsWith("process_resident_memory_bytes 123456\n"));
  // The basic profile's messages count as relayed; what it lacks is absent.
  assert.ok(text.includes("\nmcrelay_messages_relayed_total 5\n"));
  assert.ok(!text.includes("mcrelay_deliveries_total"));
  assert.ok(!text.includes("mcrelay_loop_utilization_ratio"));
  // An empty labelled family keeps its HELP and TYPE lines.
  assert.ok(
    text.includes(
      "# TYPE mcrelay_dropped_total counter\n# HELP mcrelay_reassembly_total",
    ),
  );
  assert.ok(
    text.includes('mcrelay_reassembly_total{event="count_mismatch"} 1\n'),
  );
});

test("renderMetrics() labels drops by reason in order, escaping backslash, quote and line feed", () => {
  const text = renderMetrics(
    { ...BASIC, dropped: { replay: 2, 'odd"\\\nreason': 1, age: 3 } },
    { residentBytes: 1 },
  );
  const samples = text.split("\n").filter((l) =>
    l.startsWith("mcrelay_dropped_total{")
  );
  assert.deepEqual(samples, [
    'mcrelay_dropped_total{reason="age"} 3',
    'mcrelay_dropped_total{reason="odd\\"\\\\\\nreason"} 1',
    'mcrelay_dropped_total{reason="replay"} 2',
  ]);
});

test("renderMetrics() adds the relay's, group fan-out's and federation's figures when there", () => {
  const text = renderMetrics({
    ...BASIC,
    messagesRelayed: 7,
    deliveries: 14,
    loopUtilization: 0.25,
    queued: { datagrams: 1, sources: 1 },
    kernelDropped: 9,
    presence: { stalls: 1, timeoutsExtended: 0 },
    datagramsPerMessage: 1.5,
    group: {
      epoch: 3,
      capable: 2,
      holders: 2,
      rekeys: 3,
      keysSent: 6,
      messages: 4,
      datagrams: 4,
      lastRekeyMs: 7,
    },
    federation: {
      connected: true,
      relays: 2,
      remoteMembers: 5,
      published: 11,
      received: 12,
      buffered: 0,
    },
  }, { residentBytes: 1 });
  for (
    const line of [
      "mcrelay_messages_relayed_total 7",
      "mcrelay_deliveries_total 14",
      "mcrelay_loop_utilization_ratio 0.25",
      "mcrelay_kernel_dropped_total 9",
      "mcrelay_presence_stalls_total 1",
      "mcrelay_datagrams_per_message 1.5",
      "mcrelay_group_epoch 3",
      "mcrelay_group_key_holders 2",
      "mcrelay_group_last_rekey_seconds 0.007",
      "mcrelay_federation_connected 1",
      "mcrelay_federation_remote_members 5",
      "mcrelay_federation_published_total 11",
    ]
  ) assert.ok(text.includes(`\n${line}\n`), line);
  // Every counter family is named _total, every gauge not.
  for (const [, name, type] of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) {
    assert.equal(name.endsWith("_total"), type === "counter", name);
  }
});

test("renderMetrics() writes non-finite values as Prometheus reads them", () => {
  const text = renderMetrics(
    { ...BASIC, loopUtilization: NaN, datagramsPerMessage: Infinity },
    { residentBytes: 1 },
  );
  assert.ok(text.includes("\nmcrelay_loop_utilization_ratio NaN\n"));
  assert.ok(text.includes("\nmcrelay_datagrams_per_message +Inf\n"));
});
