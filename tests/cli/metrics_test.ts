/**
 * The server's HTTP endpoint (`--metrics`): `/healthz`, and `/metrics`
 * scraped after two clients exchanged a message, its Prometheus text format
 * (0.0.4) checked line by line and its figures against the control port's
 * `stats`; the endpoint closes with the server.
 *
 * Safety: the server runs with the loopback flags, the endpoint on
 * 127.0.0.1, the clients with a loopback `--server`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  CAN_RUN,
  closeAll,
  ControlClient,
  killAll,
  LOOPBACK_SERVER,
  NO_RUN_REASON,
  SAFETY_MS,
  startClient,
  startServer,
  withTimeout,
} from "./_process.ts";

if (!CAN_RUN) console.log(`metrics_test.ts: ignored: ${NO_RUN_REASON}`);

/** One family of the exposition: its type, help and samples. */
interface Family {
  type: string;
  help: string;
  samples: { labels: Record<string, string>; value: number }[];
}

const NAME = "[a-zA-Z_:][a-zA-Z0-9_:]*";
const HELP_LINE = new RegExp(`^# HELP (${NAME}) (.*)$`);
const TYPE_LINE = new RegExp(`^# TYPE (${NAME}) (counter|gauge)$`);
const SAMPLE_LINE = new RegExp(
  `^(${NAME})(\\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\\\\n]|\\\\[\\\\"n])*",?)*\\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$`,
);

/**
 * Parses Prometheus text format 0.0.4 strictly, line by line: every family
 * opens with `# HELP` then `# TYPE`, is declared once, and its samples
 * follow it and carry its name; counters are named `_total`.
 */
function parseExposition(text: string): Map<string, Family> {
  assert.ok(text.endsWith("\n"), "the text ends with a line feed");
  const families = new Map<string, Family>();
  let current: string | undefined;
  let help: string | undefined;
  for (const [i, line] of text.slice(0, -1).split("\n").entries()) {
    const where = `line ${i + 1}: ${JSON.stringify(line)}`;
    const helpMatch = HELP_LINE.exec(line);
    if (helpMatch) {
      assert.ok(!families.has(helpMatch[1]), `declared twice: ${where}`);
      assert.equal(help, undefined, `HELP without TYPE before ${where}`);
      assert.ok(helpMatch[2].length > 0, `empty HELP: ${where}`);
      current = helpMatch[1];
      help = helpMatch[2];
      continue;
    }
    const typeMatch = TYPE_LINE.exec(line);
    if (typeMatch) {
      assert.equal(typeMatch[1], current, `TYPE of another family: ${where}`);
      assert.ok(help !== undefined, `TYPE without HELP: ${where}`);
      if (typeMatch[2] === "counter") {
        assert.match(typeMatch[1], /_total$/, `a counter: ${where}`);
      } else {
        assert.doesNotMatch(typeMatch[1], /_total$/, `a gauge: ${where}`);
      }
      families.set(typeMatch[1], { type: typeMatch[2], help, samples: [] });
      help = undefined;
      continue;
    }
    const sample = SAMPLE_LINE.exec(line);
    assert.ok(sample, `neither HELP, TYPE nor a sample: ${where}`);
    assert.equal(sample[1], current, `a sample outside its family: ${where}`);
    assert.equal(help, undefined, `a sample before TYPE: ${where}`);
    const labels: Record<string, string> = {};
    for (
      const [, key, value] of (sample[2] ?? "").matchAll(
        /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g,
      )
    ) labels[key] = value;
    const value = Number(sample[3]);
    assert.ok(!Number.isNaN(value), `a number: ${where}`);
    families.get(current!)!.samples.push({ labels, value });
  }
  assert.equal(help, undefined, "the last HELP has its TYPE");
  return families;
}

/** The one unlabelled value of a family. */
function value(families: Map<string, Family>, name: string): number {
  const family = families.get(name);
  assert.ok(family, `no family ${name}`);
  assert.equal(family.samples.length, 1, name);
  assert.deepEqual(family.samples[0].labels, {}, name);
  return family.samples[0].value;
}

Deno.test({
  name:
    "--metrics: /healthz answers ok, /metrics is Prometheus text 0.0.4 with members, deliveries, drops by reason, loop utilisation and RSS; the endpoint closes with the server",
  ignore: !CAN_RUN,
  async fn() {
    const server = await startServer([
      ...LOOPBACK_SERVER,
      "--metrics",
      "127.0.0.1:0",
    ]);
    let a, b, control;
    try {
      const endpoint = String(server.first.metrics);
      assert.match(endpoint, /^127\.0\.0\.1:\d+$/);
      const base = `http://${endpoint}`;

      const health = await fetch(`${base}/healthz`);
      assert.equal(health.status, 200);
      assert.equal(await health.text(), "ok\n");

      a = await startClient(["--server", server.udp]);
      b = await startClient(["--server", server.udp]);
      await a.proc.stdout.waitJson({ event: "join", address: b.address });
      const toA = await ControlClient.connect(a.control);
      await toA.send("hello metrics");
      await toA.close();
      await b.proc.stdout.waitJson({
        event: "message",
        from: a.address,
        text: "hello metrics",
      });
      control = await ControlClient.connectServer(server.control);
      const stats = (await control.command("stats", "stats"))
        .stats as Record<string, unknown>;

      const response = await fetch(`${base}/metrics`);
      assert.equal(response.status, 200);
      assert.equal(
        response.headers.get("content-type"),
        "text/plain; version=0.0.4; charset=utf-8",
      );
      const families = parseExposition(await response.text());

      assert.equal(value(families, "mcrelay_members"), 2);
      assert.equal(value(families, "mcrelay_members"), stats.members);
      assert.equal(value(families, "mcrelay_messages_relayed_total"), 1);
      assert.equal(value(families, "mcrelay_deliveries_total"), 1);
      assert.equal(value(families, "mcrelay_registrations_total"), 2);
      assert.ok(value(families, "mcrelay_datagrams_received_total") >= 5);
      assert.ok(value(families, "mcrelay_datagrams_sent_total") >= 5);
      const loop = value(families, "mcrelay_loop_utilization_ratio");
      assert.ok(loop >= 0 && loop <= 1, `loop utilisation ${loop}`);
      assert.ok(
        value(families, "process_resident_memory_bytes") > 10 * 1024 * 1024,
      );
      assert.equal(families.get("mcrelay_members")!.type, "gauge");
      assert.equal(families.get("mcrelay_deliveries_total")!.type, "counter");
      // Drops by reason: one sample per reason stats shows, same numbers.
      const dropped = families.get("mcrelay_dropped_total");
      assert.ok(dropped, "the drops family is always there");
      assert.equal(dropped.type, "counter");
      const droppedStats = stats.dropped as Record<string, number>;
      assert.deepEqual(
        Object.fromEntries(
          dropped.samples.map((s) => [s.labels.reason, s.value]),
        ),
        Object.fromEntries(
          Object.entries(droppedStats).map((
            [k, v],
          ) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), v]),
        ),
      );
      const reassembly = families.get("mcrelay_reassembly_total")!;
      assert.ok(reassembly.samples.some((s) => s.labels.event === "completed"));
      // Without --allow-ffi the kernel's drops are not measurable: no series.
      assert.equal(families.has("mcrelay_kernel_dropped_total"), false);

      const missing = await fetch(`${base}/nothing`);
      assert.equal(missing.status, 404);
      await missing.body?.cancel();
      const post = await fetch(`${base}/metrics`, { method: "POST" });
      assert.equal(post.status, 405);
      await post.body?.cancel();

      server.proc.signal("SIGTERM");
      assert.equal((await server.proc.exited()).code, 0, server.proc.stderr);
      await assert.rejects(
        withTimeout(
          fetch(`${base}/healthz`),
          "a refused connection",
          SAFETY_MS,
        ),
        TypeError,
      );
    } finally {
      await closeAll(control);
      await killAll(server.proc, a?.proc, b?.proc);
    }
  },
});
