/**
 * Summarises V8 CPU profiles (as written by `deno run --cpu-prof`, e.g. via
 * `deno task bench --server-cpu-prof DIR`): the functions with the most self
 * time and the most inclusive time, in percent of all samples.
 *
 *     deno run --allow-read bench/_cpuprofile_top.ts DIR/*.cpuprofile [--top 30]
 *
 * @module
 */
import { parseArgs } from "node:util";

interface ProfileNode {
  readonly id: number;
  readonly callFrame: {
    readonly functionName: string;
    readonly url: string;
    readonly lineNumber: number;
  };
  readonly children?: readonly number[];
}

interface Profile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

const { values, positionals } = parseArgs({
  args: Deno.args,
  options: { top: { type: "string", default: "30" } },
  allowPositionals: true,
});
const top = Number(values.top);

for (const file of positionals) {
  const profile = JSON.parse(Deno.readTextFileSync(file)) as Profile;
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of profile.nodes) {
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const selfTime = new Map<number, number>();
  profile.samples.forEach((id, i) => {
    selfTime.set(id, (selfTime.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  const name = (n: ProfileNode) =>
    `${n.callFrame.functionName || "(anonymous)"} ${
      n.callFrame.url.replace(/^.*\/(lib|bench)\//, "$1/")
    }:${n.callFrame.lineNumber + 1}`;
  const bySelf = new Map<string, number>();
  const byTotal = new Map<string, number>();
  let total = 0;
  for (const [id, t] of selfTime) {
    total += t;
    const own = name(nodes.get(id)!);
    bySelf.set(own, (bySelf.get(own) ?? 0) + t);
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined;) {
      const key = name(nodes.get(cur)!);
      if (!seen.has(key)) {
        seen.add(key);
        byTotal.set(key, (byTotal.get(key) ?? 0) + t);
      }
      cur = parent.get(cur);
    }
  }
  const list = (m: Map<string, number>) =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, v]) =>
      `${(100 * v / total).toFixed(1).padStart(6)}%  ${k}`
    ).join("\n");
  console.log(`${file}: ${(total / 1e6).toFixed(2)} s sampled`);
  console.log(`-- self time\n${list(bySelf)}`);
  console.log(`-- inclusive time\n${list(byTotal)}\n`);
}
