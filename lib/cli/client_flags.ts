/**
 * The client's flags: the flag table, with defaults as `--help` shows them,
 * and the `--help` text. Resolving them into settings is client_config.ts.
 *
 * @module
 */
import { type FlagSpecs, formatFlagHelp } from "./flags.ts";
import { CONFIG_FLAG } from "./config.ts";
import {
  BANNED_EXIT_STATUS,
  EXIT_BAD_CONFIG,
  EXIT_FAILED,
  EXIT_INTERRUPTED,
  VERSION,
} from "./output.ts";

/** The client's flags, with defaults as shown in --help. */
export const CLIENT_FLAGS: FlagSpecs = {
  group: {
    type: "string",
    default: "224.1.1.1",
    value: "IP",
    help: "multicast group the server listens on",
  },
  port: {
    type: "string",
    default: "5007",
    value: "PORT",
    help: "UDP port of the group",
  },
  server: {
    type: "string",
    value: "HOST:PORT[,HOST:PORT...]",
    help:
      "send to this unicast address instead of the group; several: relays of one federated group, tried in turn when one stops answering",
  },
  fingerprint: {
    type: "string",
    value: "SHA256:...",
    help:
      "pin the server key: refuse any other (the known-servers file is then not used)",
  },
  "known-servers": {
    type: "string",
    value: "PATH",
    help:
      "server keys met so far, one 'HOST:PORT SHA256:...' a line: a new server's key is recorded, a changed one refused (default: $XDG_CONFIG_HOME/mcrelay/known_servers, else ~/.config/mcrelay/known_servers)",
  },
  "no-known-servers": {
    type: "boolean",
    help:
      "neither read nor write a known-servers file (a key that changes while the client runs is only warned about)",
  },
  "connect-timeout": {
    type: "string",
    value: "SECONDS",
    help:
      "give up joining after this long, 5 key requests spread over it (default: 31 s per --server relay: waits of 1, 2, 4, 8, 16 s); also bounds the wait for the server to confirm piped lines and --file",
  },
  profile: {
    type: "string",
    default: "hybrid",
    value: "NAME",
    help:
      "hybrid (RSA-OAEP + Fernet), rsa (RSA only, weaker: see SECURITY.md) or basic (the unicast RSA-4096 endpoint; needs --server)",
  },
  "no-group": {
    type: "boolean",
    help:
      "do not ask for group fan-out (no GROUP_CAPABLE, no downstream socket): every message per recipient",
  },
  "key-bits": {
    type: "string",
    default: "2048",
    value: "BITS",
    help: "size of the rsa profile's own key: 2048, 3072 or 4096",
  },
  "tcp-host": {
    type: "string",
    default: "127.0.0.1",
    value: "IP",
    help: "control port address",
  },
  "control-token": {
    type: "string",
    value: "TOKEN",
    help:
      "require 'auth TOKEN' on the control port (or MCRELAY_CONTROL_TOKEN); needed off loopback",
  },
  "tcp-port": {
    type: "string",
    value: "PORT",
    help:
      "control port (default: 9000), 0 picks a free one; with piped input, --file or --count there is none unless given",
  },
  keepalive: {
    type: "string",
    default: "10",
    value: "SECONDS",
    help: "keep-alive interval",
  },
  mtu: {
    type: "string",
    default: "1200",
    value: "BYTES",
    help: "largest datagram sent; the key request is padded to it",
  },
  json: { type: "boolean", help: "JSON lines on stdout and the control port" },
  "log-level": {
    type: "string",
    default: "warn",
    value: "LEVEL",
    help:
      "stderr log level: debug, info, warn or error (error also hides the progress lines)",
  },
  config: CONFIG_FLAG,
  help: { type: "boolean", help: "show this help" },
  stdio: {
    type: "boolean",
    help:
      "interactive: read lines from stdin, print what arrives (the default when stdin is a terminal)",
  },
  count: {
    type: "string",
    value: "N",
    help: "exit after receiving N messages",
  },
  file: {
    type: "string",
    value: "PATH",
    help:
      "send this file as one message (at most 32 KiB, fragmented on the wire), wait for the server to confirm, exit",
  },
  version: { type: "boolean", help: "show the version" },
};

/** The `--help` text before the interactive commands. */
export const CLIENT_USAGE =
  `mcrelay client ${VERSION}: join a relay group, send lines, print what arrives.

Usage: deno task client [flags]

Where the lines to send come from:
  a terminal       interactive: type a line, Enter sends it (/help)
  a pipe or file   each line is sent, then the client waits for the server to
                   confirm and exits ("echo hi | deno task client --server ...")
  --file PATH      the whole file, as one message, then the same
  otherwise        (stdin /dev/null) lines written to the control port

Flags:
${formatFlagHelp(CLIENT_FLAGS)}

Exit status: 0 done (end of input confirmed, --count reached, 'exit' on the
control port, SIGTERM); ${EXIT_FAILED} the server did not answer, refused the key or did not
confirm what was sent; ${EXIT_BAD_CONFIG} a bad flag or file; ${BANNED_EXIT_STATUS} banned by the server (it
prints "banned by the server ..." and does not rejoin; kicked, it prints
"kicked by the server: ..." and registers again at once); ${EXIT_INTERRUPTED} interrupted
(SIGINT).

Examples:
  deno task client --tcp-port 9000                          # via the group 224.1.1.1:5007
  deno task client --server 127.0.0.1:5007 --tcp-port 9001  # unicast to a server
  echo hello | deno task client --server 127.0.0.1:5007     # send a line, exit
  deno task client --server 127.0.0.1:5007 --count 1        # print one message, exit
  deno task client --server 127.0.0.1:5007 --fingerprint SHA256:... --json
`;
