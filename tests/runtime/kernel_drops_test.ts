/**
 * parseProcNetUdp() and socketInodes() on /proc/net/udp and /proc/net/udp6
 * as captured on Linux (tests/fixtures/proc_net_udp*.txt: a socket on
 * 127.0.0.1:60322 sent 5,000 datagrams it never read, 4,908 dropped).
 */
import assert from "node:assert/strict";
import {
  parseProcNetUdp,
  socketInodes,
} from "../../lib/runtime/kernel_drops.ts";

const fixtures = new URL("../fixtures/", import.meta.url);
const udp4 = await Deno.readTextFile(new URL("proc_net_udp.txt", fixtures));
const udp6 = await Deno.readTextFile(new URL("proc_net_udp6.txt", fixtures));

Deno.test({
  name:
    "parseProcNetUdp() reads port, inode, receive queue and drops of each IPv4 row",
  permissions: "none",
  fn() {
    assert.deepEqual(parseProcNetUdp(udp4), [
      { localPort: 60322, inode: 82892, rxQueueBytes: 0x33c00, drops: 4908 },
      { localPort: 0x9a08, inode: 82894, rxQueueBytes: 0, drops: 0 },
    ]);
  },
});

Deno.test({
  name: "parseProcNetUdp() reads IPv6 rows (32 hex digits of address)",
  permissions: "none",
  fn() {
    assert.deepEqual(parseProcNetUdp(udp6), [
      { localPort: 0x86ce, inode: 82893, rxQueueBytes: 0, drops: 0 },
    ]);
  },
});

Deno.test({
  name:
    "parseProcNetUdp() skips the header, blank lines, short and malformed rows",
  permissions: "none",
  fn() {
    const header = udp4.split("\n")[0];
    assert.deepEqual(parseProcNetUdp(`${header}\n\n`), []);
    assert.deepEqual(parseProcNetUdp(""), []);
    const row = udp4.split("\n")[1];
    // Cut before the drops column.
    assert.deepEqual(
      parseProcNetUdp(row.trim().split(/\s+/).slice(0, 12).join(" ")),
      [],
    );
    // A port that is not hexadecimal, queues without a colon, a bad inode.
    for (
      const bad of [
        row.replace("0100007F:EBA2", "0100007F:EBAZ"),
        row.replace("00000000:00033C00", "0000000000033C00"),
        row.replace(" 82892 ", " 8289x "),
        row.replace(" 4908", " -1"),
      ]
    ) assert.deepEqual(parseProcNetUdp(bad), [], bad);
  },
});

Deno.test({
  name: "socketInodes() keeps only socket:[N] link targets",
  permissions: "none",
  fn() {
    assert.deepEqual(
      [
        ...socketInodes([
          "/dev/null",
          "socket:[82544]",
          "pipe:[83845]",
          "anon_inode:[eventpoll]",
          "socket:[82548]",
          "socket:[x]",
        ]),
      ],
      [82544, 82548],
    );
  },
});
