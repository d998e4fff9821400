/**
 * The benches' guard for multicast: sending to or joining a multicast group
 * emits traffic (and IGMP reports) through every interface that routes it, so
 * the benches do it only inside a private network namespace whose one link is
 * `lo`, as `unshare -n` makes:
 *
 *     unshare -n sh -c 'ip link set lo up; ip link set lo multicast on;
 *       ip route add 224.0.0.0/4 dev lo src 127.0.0.1; CMD'
 *
 * The links come from `ip -o link show` (every link, with or without an
 * address), so the bench needs `--allow-run`; the check fails closed.
 *
 * @module
 */

/** The link names in `ip -o link show` output ("1: lo: <...>", "3: eth0@if4: <...>"). */
export function linkNames(ipLinkOutput: string): string[] {
  return ipLinkOutput.split("\n")
    .map((line) => /^\d+: ([^:@]+)[:@]/.exec(line)?.[1])
    .filter((name): name is string => name !== undefined);
}

let checked: Promise<void> | undefined;

/**
 * Resolves when this process's network namespace has no link but `lo`;
 * otherwise rejects with an error naming the links and the `unshare` command.
 * Checked once per process.
 * @param what the flag or action that needs it, for the message
 */
export function assertPrivateNetns(what: string): Promise<void> {
  checked ??= (async () => {
    const out = await new Deno.Command("ip", {
      args: ["-o", "link", "show"],
      stdout: "piped",
      stderr: "null",
    }).output();
    const names = out.success
      ? linkNames(new TextDecoder().decode(out.stdout))
      : [];
    if (names.length !== 1 || names[0] !== "lo") {
      throw new Error(
        `${what} sends and joins multicast, which must not leave this machine: run it in a private network namespace whose only link is lo (links here: ${
          names.join(", ") || "unknown: `ip -o link show` failed"
        }), e.g. unshare -n sh -c 'ip link set lo up; ip link set lo multicast on; ip route add 224.0.0.0/4 dev lo src 127.0.0.1; CMD'`,
      );
    }
  })();
  return checked;
}
