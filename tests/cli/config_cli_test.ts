/**
 * Config files as the programs read them (`--config`): a server from a TOML
 * file and a client from a JSON file talk to each other, and a flag on the
 * command line wins over the file.
 *
 * Safety: the server's file keeps it on loopback (`no-multicast`, `bind =
 * "127.0.0.1"`) and the client's names a loopback `server`.
 *
 * @module
 */
import assert from "node:assert/strict";
import {
  CAN_RUN,
  FIXTURE_FINGERPRINT,
  killAll,
  NO_RUN_REASON,
  splitHostPort,
  startClient,
  startServer,
  withTempDir,
  writeFixtureKey,
} from "./_process.ts";

if (!CAN_RUN) console.log(`config_cli_test.ts: ignored: ${NO_RUN_REASON}`);

Deno.test({
  name:
    "--config: a server from a TOML file and a client from a JSON file register with each other; a flag on the command line wins over the file",
  ignore: !CAN_RUN,
  async fn() {
    await withTempDir(async (dir) => {
      const keyFile = await writeFixtureKey(dir);
      // The file's port is taken: the server starts only because --port 0
      // on the command line wins.
      const busy = Deno.listenDatagram({
        transport: "udp",
        hostname: "127.0.0.1",
        port: 0,
      });
      const busyPort = (busy.addr as Deno.NetAddr).port;
      const serverFile = `${dir}/mcrelay.toml`;
      await Deno.writeTextFile(
        serverFile,
        [
          "# a relay on loopback",
          "no-multicast = true",
          'bind = "127.0.0.1"',
          `port = ${busyPort} # taken`,
          "tcp-port = 0",
          `key-file = ${JSON.stringify(keyFile)}`,
          "client-timeout = 30",
          "",
        ].join("\n"),
      );
      let server, client;
      try {
        server = await startServer(["--config", serverFile, "--port", "0"]);
        assert.equal(server.fingerprint, FIXTURE_FINGERPRINT, "key-file");
        const udp = splitHostPort(server.udp);
        assert.equal(udp.host, "127.0.0.1");
        assert.notEqual(udp.port, busyPort);
        assert.equal(server.first.multicast, undefined, "no-multicast");

        const clientFile = `${dir}/client.json`;
        await Deno.writeTextFile(
          clientFile,
          JSON.stringify({
            server: [server.udp],
            fingerprint: FIXTURE_FINGERPRINT,
            keepalive: 5,
          }),
        );
        client = await startClient(["--config", clientFile]);
        assert.equal(client.server, server.udp);
      } finally {
        busy.close();
        await killAll(server?.proc, client?.proc);
      }
    });
  },
});
