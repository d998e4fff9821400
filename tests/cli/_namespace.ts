/**
 * Private network namespaces for the CLI tests: `unshare -n` (plus a private
 * PID namespace, so every process in it dies with it) with only a loopback
 * interface, set up by a shell command before the program runs. Whatever
 * runs there cannot reach any network of this machine: multicast stays on
 * that loopback, and a package registry is unreachable.
 *
 * @module
 */
import { CAN_RUN, NO_RUN_REASON } from "./_process.ts";

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
