/**
 * Attacks with genuinely spoofed source addresses, run by spoof_test.ts
 * INSIDE a private network namespace (see _namespace.ts). Not a test file
 * itself: it refuses to run when the namespace has any interface other than
 * `lo`, and so does its raw-socket helper `_raw_udp.py`, which sniffs the
 * server's port on `lo` (a packet socket) and sends IPv4/UDP datagrams with
 * any 127.0.0.0/8 source (IP_HDRINCL): what an attacker on the members'
 * network can do.
 *
 * The server and the clients are the real programs (server.ts, client.ts)
 * on 127.0.0.1. The attacker is this script: it builds its datagrams with
 * the library's codecs and has the helper put them on the wire. One JSON
 * result line, `{"ok":true,...}` or `{"ok":false,"error":"..."}`:
 *
 * - `takeover` (protocol.md section 10, identity takeover): member A's
 *   COOKIE, sniffed from its registration, reused with the attacker's own key
 *   from A's spoofed address; then a fresh cookie for A's address (a spoofed
 *   key request, the answer sniffed) with the attacker's key and no
 *   KEY_PROOF; then a message and a DISCONNECT under the attacker's key from
 *   A's address. Afterwards A and B talk both ways.
 * - `key-requests` (section 10, handshake limits by address): padded
 *   KEY_REQUESTs spoofed from the victim's IP (127.0.0.1, a new port each)
 *   at 10 per second, on the wire before the victim's client starts and
 *   while it registers; at most {@linkcode FLOOD_LIMIT} of them.
 *
 * @module
 */
import { FernetKey } from "../../lib/crypto/fernet.ts";
import { decodeBase64, encodeBase64 } from "../../lib/crypto/base64.ts";
import { RsaPublicKey } from "../../lib/crypto/rsa.ts";
import { encodeRecords, RecordType } from "../../lib/wire/tlv.ts";
import { hasRecord, keyRequest, recordValue } from "../relay/_harness.ts";
import { assertPrivateNamespace, scenarioMain } from "./_namespace.ts";
import {
  type ClientInfo,
  closeAll,
  ControlClient,
  type JsonLine,
  jsonWith,
  killAll,
  type LineLog,
  LOOPBACK_SERVER,
  parseJson,
  Proc,
  type ServerInfo,
  splitHostPort,
  startClient,
  startServer,
  withTempDir,
  writeFixtureKey,
} from "./_process.ts";

/** Most spoofed key requests the `key-requests` scenario sends (60 s at 10/s). */
const FLOOD_LIMIT = 600;

/** Spoofed key requests per second in the `key-requests` scenario. */
const FLOOD_PER_SECOND = 10;

const encoder = new TextEncoder();

/** A datagram seen on `lo` by the sniffer. */
interface Sniffed {
  readonly src: string;
  readonly dst: string;
  readonly data: Uint8Array;
}

/** The raw-socket helper: sniffs one UDP port on `lo`, sends with forged sources. */
class RawUdp implements AsyncDisposable {
  readonly #proc: Proc;

  private constructor(proc: Proc) {
    this.#proc = proc;
  }

  /** Starts `_raw_udp.py port` and waits until its sniffer listens. */
  static async start(port: number): Promise<RawUdp> {
    const proc = Proc.spawn(
      "python3",
      ["tests/cli/_raw_udp.py", String(port)],
      { name: "raw udp", stdin: "piped" },
    );
    try {
      await proc.stdout.waitJson({ event: "ready" });
    } catch (error) {
      await proc.kill();
      throw new Error(`${(error as Error).message}\nstderr: ${proc.stderr}`);
    }
    return new RawUdp(proc);
  }

  /** The sniffed lines (pass `log.mark()` to later waits). */
  get log(): LineLog {
    return this.#proc.stdout;
  }

  /** Sends `data` to `dst` with the source address `src`, whoever owns it. */
  async send(src: string, dst: string, data: Uint8Array): Promise<void> {
    await this.#proc.write(
      JSON.stringify({ src, dst, data: encodeBase64(data) }) + "\n",
    );
  }

  /** The first datagram (from line `since` on) that `match` accepts. */
  async sniffed(
    match: (d: Sniffed) => boolean,
    what: string,
    since = 0,
  ): Promise<Sniffed> {
    const line = await this.log.waitLine(
      (l) => {
        const d = sniffedOf(l);
        return d !== undefined && match(d);
      },
      what,
      since,
    );
    return sniffedOf(line)!;
  }

  /** Every datagram sniffed so far that `match` accepts. */
  all(match: (d: Sniffed) => boolean): Sniffed[] {
    return this.log.lines.map(sniffedOf).filter((d): d is Sniffed =>
      d !== undefined && match(d)
    );
  }

  /** Ends the helper. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.#proc.kill();
  }
}

function sniffedOf(line: string): Sniffed | undefined {
  const json = parseJson(line);
  if (typeof json?.src !== "string" || typeof json.data !== "string") {
    return undefined;
  }
  return {
    src: json.src,
    dst: String(json.dst),
    data: decodeBase64(json.data),
  };
}

/** Starts the server with the fixture key on 127.0.0.1 and its control connection. */
async function startLoopbackServer(
  dir: string,
): Promise<{ server: ServerInfo; port: number }> {
  const server = await startServer([
    ...LOOPBACK_SERVER,
    "--key-file",
    await writeFixtureKey(dir),
    "--client-timeout",
    "600", // nobody times out during the scenario, whatever its speed
  ]);
  return { server, port: splitHostPort(server.udp).port };
}

/** The COOKIE + SYMMETRIC_KEY stream of a registration with `key`. */
async function registration(
  cookie: Uint8Array,
  serverKey: RsaPublicKey,
  key: FernetKey,
): Promise<Uint8Array> {
  return encodeRecords([
    { type: RecordType.COOKIE, value: cookie },
    {
      type: RecordType.SYMMETRIC_KEY,
      value: await serverKey.encrypt(encoder.encode(key.text)),
    },
  ]);
}

/** Lines of a process's stdout with the given event. */
function events(proc: Proc, event: string): JsonLine[] {
  return proc.stdout.lines.map(parseJson).filter((l): l is JsonLine =>
    l?.event === event
  );
}

async function takeover(): Promise<Record<string, unknown>> {
  const seen = await assertPrivateNamespace();
  return await withTempDir(async (dir) => {
    let server: ServerInfo | undefined;
    let a: ClientInfo | undefined;
    let b: ClientInfo | undefined;
    const controls: (ControlClient | undefined)[] = [];
    try {
      const started = await startLoopbackServer(dir);
      server = started.server;
      const udp = server.udp;
      await using raw = await RawUdp.start(started.port);
      const clientArgs = ["--server", udp, "--fingerprint", server.fingerprint];
      a = await startClient(clientArgs);
      b = await startClient(clientArgs);
      const victim = a.address;
      const dropLogged = (reason: string, source: string) =>
        server!.proc.stdout.waitJson({ event: "drop", reason, source });
      /** Waits for the refusal `reason` for A, and fails at once when A's key was replaced instead. */
      const refused = async (reason: string) => {
        const line = parseJson(
          await server!.proc.stdout.waitLine(
            (l) =>
              jsonWith({ event: "drop", reason, source: victim })(l) ||
              jsonWith({ event: "rekey", client: victim })(l),
            `the refusal ${reason} (or a rekey) for A`,
          ),
        )!;
        if (line.event === "rekey") {
          throw new Error(
            `identity taken over: the server took the attacker's key for A (${reason} expected)`,
          );
        }
      };
      await a.proc.stdout.waitJson({ event: "join", address: b.address });

      // Sniffed: A's registration and the server's key.
      const aRegistration = await raw.sniffed(
        (d) =>
          d.src === victim && d.dst === udp &&
          hasRecord(d.data, RecordType.SYMMETRIC_KEY),
        "A's registration",
      );
      const keyAnswer = await raw.sniffed(
        (d) => d.src === udp && hasRecord(d.data, RecordType.SERVER_PUBLIC_KEY),
        "a key answer",
      );
      const serverKey = await RsaPublicKey.fromPem(
        new TextDecoder().decode(
          recordValue(keyAnswer.data, RecordType.SERVER_PUBLIC_KEY)!,
        ),
      );
      const attackerKey = await FernetKey.generate();
      /** Sends `data` with A's address as its source. */
      const asA = (data: Uint8Array) => raw.send(victim, udp, data);
      /** Registers the attacker's key as A with the cookie found in `carrier`. */
      const registerAsA = async (carrier: Sniffed) =>
        asA(
          await registration(
            recordValue(carrier.data, RecordType.COOKIE)!,
            serverKey,
            attackerKey,
          ),
        );
      /** Sends a record of `type` holding a token of `text` under the attacker's key, as A. */
      const sayAsA = async (type: number, text: string) =>
        asA(encodeRecords([{
          type,
          value: await attackerKey.encrypt(encoder.encode(text)),
        }]));

      // 1. A's own cookie with the attacker's key, from A's address.
      await registerAsA(aRegistration);
      await refused("cookie_reused");

      // 2. A fresh cookie for A's address: a key request spoofed as A, the
      //    answer read on the wire on its way to A.
      const since = raw.log.mark();
      await asA(keyRequest(1200));
      await registerAsA(
        await raw.sniffed(
          (d) =>
            d.src === udp && d.dst === victim &&
            hasRecord(d.data, RecordType.SERVER_PUBLIC_KEY),
          "the answer to the key request spoofed as A",
          since,
        ),
      );
      await refused("rekey_without_proof");

      // 3. What the attacker would say as A, had it got A's identity.
      await sayAsA(RecordType.FERNET_MESSAGE, "forged line");
      await dropLogged("token_signature", victim);
      await sayAsA(RecordType.DISCONNECT, "DISCONNECT");
      await dropLogged("forged_disconnect", victim);

      // A and B still talk, both ways, under their own keys.
      const control = await ControlClient.connectServer(server.control);
      controls.push(control);
      const controlA = await ControlClient.connect(a.control);
      controls.push(controlA);
      await controlA.send("still mine");
      await b.proc.stdout.waitJson({
        event: "message",
        from: victim,
        text: "still mine",
      });
      const controlB = await ControlClient.connect(b.control);
      controls.push(controlB);
      await controlB.send("heard you");
      await a.proc.stdout.waitJson({
        event: "message",
        from: b.address,
        text: "heard you",
      });
      const stats = (await control.command("stats", "stats")).stats;
      const clients = (await control.command("clients", "clients")).clients;
      return {
        ok: true,
        interfaces: seen,
        a: victim,
        b: b.address,
        atA: events(a.proc, "message"),
        atB: events(b.proc, "message"),
        aAgain: [
          ...events(a.proc, "registered"),
          ...events(a.proc, "reconnecting"),
        ],
        leaves: events(b.proc, "leave"),
        stats,
        clients,
      };
    } finally {
      await closeAll(...controls);
      await killAll(server?.proc, a?.proc, b?.proc);
    }
  });
}

async function keyRequests(): Promise<Record<string, unknown>> {
  const seen = await assertPrivateNamespace();
  return await withTempDir(async (dir) => {
    let server: ServerInfo | undefined;
    let victim: ClientInfo | undefined;
    let control: ControlClient | undefined;
    let flood: ReturnType<typeof setInterval> | undefined;
    try {
      const started = await startLoopbackServer(dir);
      server = started.server;
      const udp = server.udp;
      await using raw = await RawUdp.start(started.port);
      const victimIp = "127.0.0.1";
      const spoofed = (i: number) => `${victimIp}:${20_000 + i}`;
      const spoofedSources = new Set<string>();
      let sent = 0;
      let sending = Promise.resolve();
      // A rate, not a wait: one spoofed request every 100 ms, bounded.
      flood = setInterval(() => {
        if (sent >= FLOOD_LIMIT) return clearInterval(flood);
        const source = spoofed(sent++);
        spoofedSources.add(source);
        sending = sending.then(() => raw.send(source, udp, keyRequest(1200)));
      }, 1000 / FLOOD_PER_SECOND);
      // Two seconds' worth on the wire (sniffed as they reach the server's
      // port) before the victim's client starts: past any per-IP burst.
      await raw.sniffed(
        (d) => d.src === spoofed(2 * FLOOD_PER_SECOND) && d.dst === udp,
        "the spoofed key requests on the wire",
      );
      victim = await startClient([
        "--server",
        udp,
        "--fingerprint",
        server.fingerprint,
      ]);
      const sentWhenRegistered = sent;
      clearInterval(flood);
      await sending;
      control = await ControlClient.connectServer(server.control);
      const stats = (await control.command("stats", "stats")).stats;
      const clients = (await control.command("clients", "clients")).clients;
      const answered = raw.all((d) =>
        d.src === udp && spoofedSources.has(d.dst) &&
        hasRecord(d.data, RecordType.SERVER_PUBLIC_KEY)
      ).length;
      return {
        ok: true,
        interfaces: seen,
        victim: victim.address,
        sentWhenRegistered,
        sent,
        answered,
        stats,
        clients,
      };
    } finally {
      clearInterval(flood);
      await control?.close();
      await killAll(server?.proc, victim?.proc);
    }
  });
}

if (import.meta.main) {
  await scenarioMain(Deno.args[0] === "takeover" ? takeover : keyRequests);
}
