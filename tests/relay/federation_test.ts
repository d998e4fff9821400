/**
 * Relays federated over a real nats-server on 127.0.0.1: every message
 * delivered exactly once to every member of every relay with the right
 * sender, presence across relays, a relay that vanishes taking its members,
 * NATS restarted with losses counted, a foreign cluster key refused.
 */
import assert from "node:assert/strict";
import { FernetKey } from "../../lib/crypto/fernet.ts";
import { RsaPrivateKey } from "../../lib/crypto/rsa.ts";
import { NatsLink } from "../../lib/runtime/nats_link.ts";
import { formatAddress } from "../../lib/wire/address.ts";
import { RecordType } from "../../lib/wire/tlv.ts";
import { Federation } from "../../lib/relay/server/federation.ts";
import {
  type ClientHandle,
  Harness,
  hasRecord,
  type ServerHandle,
  WAIT_TIMEOUT_MS,
} from "./_harness.ts";
import { NatsServer, natsUnavailable } from "../_support/nats.ts";

const serverKey = await RsaPrivateKey.generate(2048);
const clusterKey = await FernetKey.generate();
const HEARTBEAT_MS = 100;
const ignore = natsUnavailable !== undefined;

let clusterCount = 0;

/** A relay federated over `nats` in a cluster of its own test. */
async function federatedRelay(
  h: Harness,
  nats: NatsServer,
  cluster: string,
  key = clusterKey,
): Promise<ServerHandle> {
  const federation = new Federation({
    link: await NatsLink.connect({ servers: [nats.url], cluster }),
    clusterKey: key,
    heartbeatMs: HEARTBEAT_MS,
  });
  return await h.startServer({ federation });
}

/** Waits until every client has seen a join of every other client. */
async function meshed(clients: readonly ClientHandle[]): Promise<void> {
  await Promise.all(
    clients.flatMap((c) =>
      clients.filter((o) => o !== c).map((o) =>
        c.waitPresence("join", o.address)
      )
    ),
  );
}

function textsFrom(c: ClientHandle, sender: string): string[] {
  return c.messages().filter((m) => m.from === sender).map((m) => m.text);
}

/** Waits until `c` holds `count` messages from `sender` (from event mark `from`). */
function waitMessages(
  c: ClientHandle,
  sender: string,
  count: number,
  from = 0,
) {
  return c.events.waitForCount(
    (e) => e.type === "message" && e.from === sender,
    count,
    `${count} messages from ${sender} at ${c.name}`,
    { from },
  );
}

Deno.test({
  name:
    "federation: three relays, two members each: every message exactly once at every other member, with its sender, in order",
  ignore,
}, async () => {
  await using nats = await NatsServer.start();
  await using h = new Harness(serverKey);
  const cluster = `t${clusterCount++}`;
  const relays = [
    await federatedRelay(h, nats, cluster),
    await federatedRelay(h, nats, cluster),
    await federatedRelay(h, nats, cluster),
  ];
  const clients: ClientHandle[] = [];
  for (const [i, relay] of relays.entries()) {
    clients.push(await h.connect(`r${i}a`, { server: relay }));
    clients.push(await h.connect(`r${i}b`, { server: relay }));
  }
  await meshed(clients);

  const perSender = 5;
  for (const c of clients) {
    for (let n = 0; n < perSender; n++) await c.client.send(`${c.name} ${n}`);
  }
  const expected = (c: ClientHandle) =>
    Array.from({ length: perSender }, (_, n) => `${c.name} ${n}`);
  for (const receiver of clients) {
    for (const sender of clients) {
      if (sender === receiver) continue;
      await waitMessages(receiver, sender.address, perSender);
    }
  }
  for (const receiver of clients) {
    for (const sender of clients) {
      assert.deepEqual(
        textsFrom(receiver, sender.address),
        sender === receiver ? [] : expected(sender),
        `${receiver.name} from ${sender.name}`,
      );
    }
  }
  // `clients` of one relay lists the four members of the others.
  const remote = relays[0].server.remoteMembers().map((m) => m.address).sort();
  assert.deepEqual(
    remote,
    clients.slice(2).map((c) => c.address).sort(),
  );
  const stats = relays[0].server.stats().federation!;
  assert.equal(stats.connected, true);
  assert.equal(stats.relays, 2);
  assert.equal(stats.remoteMembers, 4);
});

Deno.test({
  name:
    "federation: a member leaving one relay is announced at the others; a relay that vanishes takes its members",
  ignore,
}, async () => {
  await using nats = await NatsServer.start();
  await using h = new Harness(serverKey);
  const cluster = `t${clusterCount++}`;
  const a = await federatedRelay(h, nats, cluster);
  const b = await federatedRelay(h, nats, cluster);
  const c = await federatedRelay(h, nats, cluster);
  const atA = await h.connect("atA", { server: a });
  const atB = await h.connect("atB", { server: b });
  const atC1 = await h.connect("atC1", { server: c });
  const atC2 = await h.connect("atC2", { server: c });
  await meshed([atA, atB, atC1, atC2]);

  const mark = atA.events.mark();
  await atB.client.close(); // DISCONNECT: relay b announces the leave
  await atA.waitPresence("leave", atB.address, mark);

  // Relay c stops without a word (its members are not told to leave
  // anybody): its heartbeats end, and the others drop its members.
  await c.server.close();
  await atA.waitPresence("leave", atC1.address, mark);
  await atA.waitPresence("leave", atC2.address, mark);
  assert.deepEqual(a.server.remoteMembers(), []);
  assert.equal(a.server.stats().federation!.relays, 1, "b, without members");
});

Deno.test({
  name:
    "federation: NATS restarted: relays reconnect, traffic resumes, and what crossed no link is counted as lost",
  ignore,
}, async () => {
  await using nats = await NatsServer.start();
  await using h = new Harness(serverKey);
  const cluster = `t${clusterCount++}`;
  const a = await federatedRelay(h, nats, cluster);
  const b = await federatedRelay(h, nats, cluster);
  const sender = await h.connect("sender", { server: a });
  const receiver = await h.connect("receiver", { server: b });
  await meshed([sender, receiver]);

  const federationEvent = (relay: ServerHandle, event: string) =>
    relay.log.waitFor((r) => r.event === event, event, {
      from: relay.log.mark(),
    });
  const aDown = federationEvent(a, "federation_down");
  const bDown = federationEvent(b, "federation_down");
  await nats.stop();
  await Promise.all([aDown, bDown]);
  const aUp = federationEvent(a, "federation_up");
  const bUp = federationEvent(b, "federation_up");
  const during = 20;
  const relayed = a.log.mark();
  for (let n = 0; n < during; n++) await sender.client.send(`during ${n}`);
  await a.log.waitForCount(
    (r) => r.event === "relay",
    during,
    "the messages relayed at a",
    { from: relayed },
  );
  assert.ok(a.server.stats().federation!.buffered >= during);

  await nats.restart();
  await Promise.all([aUp, bUp]);
  // Traffic resumes once both have reconnected (and so subscribed again).
  const mark = receiver.events.mark();
  await sender.client.send("after");
  await receiver.waitMessage("after", { sender: sender.address, from: mark });

  // Every message sent while NATS was down either arrived or is counted
  // lost by the receiving relay (envelopes published before it re-subscribed).
  const arrived = receiver.messages().filter((m) =>
    m.text.startsWith("during ")
  )
    .length;
  const lost = b.server.stats().dropped["federation_lost"] ?? 0;
  console.log(`during the outage: ${arrived} arrived, ${lost} counted lost`);
  assert.ok(
    arrived + lost >= during,
    `${arrived} arrived + ${lost} counted lost < ${during} sent`,
  );
  const texts = receiver.messages().map((m) => m.text);
  assert.equal(new Set(texts).size, texts.length, "no message twice");
});

Deno.test({
  name:
    "federation: a relay with another cluster key is heard as noise: nothing of it delivered, its envelopes counted",
  ignore,
}, async () => {
  await using nats = await NatsServer.start();
  await using h = new Harness(serverKey);
  const cluster = `t${clusterCount++}`;
  const a = await federatedRelay(h, nats, cluster);
  const rogue = await federatedRelay(
    h,
    nats,
    cluster,
    await FernetKey.generate(),
  );
  const atA = await h.connect("atA", { server: a });
  const atRogue = await h.connect("atRogue", { server: rogue });
  await a.waitDrop("federation_signature");
  await atRogue.client.send("forged?");
  await waitFor(
    () => (a.server.stats().dropped["federation_signature"] ?? 0) >= 3,
    "three refused envelopes",
  );
  assert.deepEqual(a.server.remoteMembers(), []);
  assert.equal(atA.messages().length, 0);
  assert.ok(!atA.events.items.some((e) => e.type === "join"));
});

/** Polls `condition` every 20 ms until it holds (fails after the harness timeout x 3). */
async function waitFor(
  condition: () => boolean | Promise<boolean>,
  what: string,
): Promise<void> {
  const deadline = Date.now() + 3 * WAIT_TIMEOUT_MS;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`Gave up waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

Deno.test({
  name:
    "federation: a client given two relays moves to the second when its relay stops (the stopped one is not asked again first), and the group sees it again",
  ignore,
}, async () => {
  await using nats = await NatsServer.start();
  await using h = new Harness(serverKey);
  const cluster = `t${clusterCount++}`;
  const a = await federatedRelay(h, nats, cluster);
  const b = await federatedRelay(h, nats, cluster);
  const mover = await h.connect("mover", {
    server: a,
    fallbackTargets: [b.address],
  });
  const stayer = await h.connect("stayer", { server: b });
  await meshed([mover, stayer]);

  const mark = mover.events.mark();
  const stayerMark = stayer.events.mark();
  const sentMark = mover.tap.sent.mark();
  await a.server.close(); // NOTICE 5: the mover runs the key exchange again
  const ready = await mover.waitEvent("ready", mark);
  assert.equal(
    ready.type === "ready" && ready.server,
    formatAddress(b.address),
  );
  // The relay that left the probe unanswered is the last to be tried: no
  // round of key requests to it (5 tries over 31 s by default) first.
  assert.equal(
    mover.tap.sent.count(
      (d) =>
        formatAddress(d.to) === formatAddress(a.address) &&
        hasRecord(d.data, RecordType.KEY_REQUEST),
      sentMark,
    ),
    0,
    "key requests to the relay that shut down",
  );
  assert.equal(
    mover.client.address,
    mover.address,
    "same socket, same address",
  );
  await mover.log.waitFor((r) => r.event === "failover", "a failover log");

  await mover.client.send("moved");
  await stayer.waitMessage("moved", {
    sender: mover.address,
    from: stayerMark,
  });
  await mover.waitPresence("join", stayer.address, mark);
  await stayer.client.send("welcome back");
  await mover.waitMessage("welcome back", {
    sender: stayer.address,
    from: mark,
  });
});
