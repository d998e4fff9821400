/**
 * The control port's TCP server (lib/runtime/control.ts) on 127.0.0.1: past
 * maxConnections it makes room by closing the connection silent longest
 * (which is told why), and a reply longer than the output queue reaches a
 * reading connection whole.
 */
import assert from "node:assert/strict";
import { ControlServer } from "../../lib/runtime/control.ts";

const encoder = new TextEncoder();

Deno.test("the control port makes room past maxConnections (the one silent longest is told and closed) and keeps a long reply whole", async () => {
  const control = ControlServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    maxConnections: 2,
    maxQueuedLines: 3,
    onLine: (connection) =>
      connection.write(
        Array.from({ length: 50 }, (_, i) => `line ${i}`).join("\n"),
      ),
  });
  const conns: Deno.TcpConn[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      conns.push(
        await Deno.connect({ hostname: "127.0.0.1", port: control.port }),
      );
    }
    const closing = await readUntilClosed(conns[0]!);
    assert.match(
      closing,
      /^error: closed to make room for a new control connection \(2 at most; .*\n$/,
    );
    assert.equal(control.evictedConnections, 1);
    await conns[1]!.write(encoder.encode("clients\n"));
    const reply = await readLines(conns[1]!, 50);
    assert.deepEqual(reply, Array.from({ length: 50 }, (_, i) => `line ${i}`));
  } finally {
    for (const c of conns) {
      try {
        c.close();
      } catch {
        // closed by the server
      }
    }
    await control.close();
  }
});

async function readUntilClosed(conn: Deno.TcpConn): Promise<string> {
  const chunks: Uint8Array[] = [];
  const buffer = new Uint8Array(1024);
  while (true) {
    const n = await conn.read(buffer).catch(() => null);
    if (n === null) break;
    chunks.push(buffer.slice(0, n));
  }
  return new TextDecoder().decode(
    chunks.reduce((all, c) => new Uint8Array([...all, ...c]), new Uint8Array()),
  );
}

async function readLines(conn: Deno.TcpConn, count: number): Promise<string[]> {
  let text = "";
  const buffer = new Uint8Array(4096);
  while (text.split("\n").length <= count) {
    const n = await conn.read(buffer);
    if (n === null) break;
    text += new TextDecoder().decode(buffer.subarray(0, n));
  }
  return text.split("\n").slice(0, count);
}
