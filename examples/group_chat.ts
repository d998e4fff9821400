/**
 * Embedding mcrelay: a relay server and three members in one process, on
 * loopback. Run it with
 *
 *     deno run --allow-net examples/group_chat.ts
 *
 * It prints what each member receives and exits.
 *
 * @module
 */
import {
  type ClientEvent,
  RelayClient,
  RelayServer,
  RsaPrivateKey,
  UdpTransport,
} from "../mod.ts";

/** Runs the example; returns the lines it printed. */
export async function runGroupChat(
  print: (line: string) => void = console.log,
): Promise<string[]> {
  const lines: string[] = [];
  const say = (line: string) => {
    lines.push(line);
    print(line);
  };

  // The server: unicast on 127.0.0.1, a free port, a fresh key.
  await using server = await RelayServer.start({
    transport: await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 }),
    privateKey: await RsaPrivateKey.generate(2048),
  });
  say(`server on port ${server.localAddress.port}, key ${server.fingerprint}`);

  // Three members, each pinning the server's key.
  const names = ["alice", "bob", "carol"] as const;
  const members = new Map<string, RelayClient>();
  const inboxes = new Map<string, ClientEvent[]>();
  for (const name of names) {
    const inbox: ClientEvent[] = [];
    inboxes.set(name, inbox);
    members.set(
      name,
      await RelayClient.connect({
        transport: await UdpTransport.bind({ hostname: "127.0.0.1", port: 0 }),
        target: server.localAddress,
        fingerprint: server.fingerprint,
        onEvent: (event) => inbox.push(event),
      }),
    );
  }
  const nameOf = new Map(
    [...members].map(([name, client]) => [client.address, name]),
  );

  // Each member says hello; every other member receives it exactly once.
  const delivered = Promise.all(
    names.map((name) =>
      new Promise<void>((resolve) => {
        const client = members.get(name)!;
        let count = 0;
        const done = () => {
          if (++count === names.length - 1) resolve();
        };
        for (const event of inboxes.get(name)!) {
          if (event.type === "message") done();
        }
        client.onEvent((event) => {
          if (event.type === "message") done();
        });
      })
    ),
  );
  for (const [name, client] of members) await client.send(`hello from ${name}`);
  await delivered;

  for (const name of names) {
    for (const event of inboxes.get(name)!) {
      if (event.type === "message") {
        say(`${name} got "${event.text}" from ${nameOf.get(event.from)}`);
      }
    }
  }
  for (const client of members.values()) await client.close();
  return lines;
}

if (import.meta.main) {
  await runGroupChat();
}
