/**
 * Private network namespaces for the CLI tests that need multicast, forged
 * source addresses or no network at all: a scenario script runs under `unshare -n` (plus a private
 * PID namespace, so every process in it dies with it), with loopback up,
 * multicast on and a route for 224.0.0.0/4 on it. Nothing such a scenario
 * sends can leave the namespace: the command is checked to start with
 * `unshare -n` before it is spawned, and the scenario itself calls
 * {@linkcode assertPrivateNamespace} and refuses to run when it sees any
 * interface other than `lo`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  CAN_RUN,
  NO_RUN_REASON,
  parseJson,
  Proc,
  PROGRAM_PERMISSIONS,
} from "./_process.ts";

/** Sets up the namespace's loopback for multicast. */
export const MULTICAST_SETUP: string = [
  "ip link set lo up",
  "ip link set lo multicast on",
  "ip route add 224.0.0.0/4 dev lo src 127.0.0.1",
].join(" && ");

/** Brings the namespace's loopback up and adds no route: nothing off it is reachable. */
export const LOOPBACK_SETUP = "ip link set lo up";

/**
 * `unshare` arguments that run `command` in a new network and PID namespace
 * after `setup`; the PID namespace ends (killing all in it) when unshare
 * dies.
 */
export function namespaced(
  command: readonly string[],
  setup: string = MULTICAST_SETUP,
): string[] {
  return [
    "-n",
    "-p",
    "-f",
    "--kill-child",
    "sh",
    "-c",
    `${setup} && exec "$@"`,
    "sh",
    ...command,
  ];
}

/** Throws unless `unshare args` really makes a new network namespace first. */
export function assertNamespaced(
  command: string,
  args: readonly string[],
): void {
  const shell = args.indexOf("sh");
  if (
    command !== "unshare" || args[0] !== "-n" || shell < 0 ||
    args.slice(0, shell).some((a) => !a.startsWith("-"))
  ) {
    throw new Error(
      `refusing to run outside a private network namespace: ${command} ${
        args.join(" ")
      }`,
    );
  }
}

/** Whether the namespace (after `setup`) can be made here; the reason when not. */
export async function probeNamespace(
  setup: string = MULTICAST_SETUP,
): Promise<string | undefined> {
  if (!CAN_RUN) return NO_RUN_REASON;
  const args = namespaced(["true"], setup);
  assertNamespaced("unshare", args);
  try {
    const result = await new Deno.Command("unshare", {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).output();
    if (result.success) return undefined;
    return `unshare -n (with ${setup}) failed with status ${result.code}: ${
      new TextDecoder().decode(result.stderr).trim()
    }`;
  } catch (error) {
    return `cannot run unshare: ${(error as Error).message}`;
  }
}

/**
 * Runs `deno run <program permissions> --allow-run script args` in a private
 * namespace and returns its result line (the stdout JSON line with `ok`),
 * checked `ok` with exit status 0; `kill` ends it.
 */
export async function runScenario(
  script: string,
  args: readonly string[],
  timeoutMs: number,
): Promise<{ result: Record<string, unknown>; kill: () => Promise<void> }> {
  const command = namespaced([
    Deno.execPath(),
    "run",
    ...PROGRAM_PERMISSIONS,
    "--allow-run",
    script,
    ...args,
  ]);
  assertNamespaced("unshare", command);
  const name = `${script} ${args.join(" ")} (in a namespace)`;
  const proc = Proc.spawn("unshare", command, { name });
  try {
    const status = await proc.exited(name, timeoutMs);
    const line = proc.stdout.lines.find((l) => parseJson(l)?.ok !== undefined);
    assert.ok(
      line,
      `no result line; status ${status.code}\nstdout:\n${
        proc.stdout.lines.join("\n")
      }\nstderr:\n${proc.stderr}`,
    );
    const result = parseJson(line)!;
    assert.equal(result.ok, true, `${result.error}\nstderr:\n${proc.stderr}`);
    assert.equal(status.code, 0, proc.stderr);
    return { result, kill: () => proc.kill() };
  } catch (error) {
    await proc.kill();
    throw error;
  }
}

/** Runs a command and returns its stdout. */
export async function output(command: string, args: string[]): Promise<string> {
  const result = await new Deno.Command(command, {
    args,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!result.success) {
    throw new Error(
      `${command} ${args.join(" ")} failed: ${
        new TextDecoder().decode(result.stderr)
      }`,
    );
  }
  return new TextDecoder().decode(result.stdout);
}

/** The network interfaces this process sees (its namespace's), from `ip -o link show`. */
async function interfaces(): Promise<string[]> {
  const text = await output("ip", ["-o", "link", "show"]);
  return text.split("\n").map((l) => /^\d+: ([^:@]+)[:@]/.exec(l)?.[1])
    .filter((name): name is string => name !== undefined);
}

/**
 * Refuses to go on unless this namespace has only `lo`; returns the
 * interfaces. Every scenario calls it first.
 */
export async function assertPrivateNamespace(): Promise<string[]> {
  const seen = await interfaces();
  if (seen.length !== 1 || seen[0] !== "lo") {
    throw new Error(
      `refusing to run: this is not a private network namespace (interfaces: ${
        seen.join(", ")
      })`,
    );
  }
  return seen;
}

/**
 * Runs a scenario's main function and prints its result as the one JSON
 * line {@linkcode runScenario} reads (`{"ok":false,"error":...}` when it
 * throws); exits 0 when ok.
 */
export async function scenarioMain(
  run: () => Promise<Record<string, unknown>>,
): Promise<never> {
  let result: Record<string, unknown>;
  try {
    result = await run();
  } catch (error) {
    result = { ok: false, error: String((error as Error)?.message ?? error) };
  }
  console.log(JSON.stringify(result));
  Deno.exit(result.ok ? 0 : 1);
}
