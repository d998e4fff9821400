/**
 * The server's flags: the flag table, with defaults as `--help` shows them,
 * and the `--help` text. Resolving them into settings is server_config.ts.
 *
 * @module
 */
import { type FlagSpecs, formatFlagHelp } from "./flags.ts";
import { CONFIG_FLAG } from "./config.ts";
import { VERSION } from "./output.ts";

/** The server's flags, with defaults as shown in --help. */
export const SERVER_FLAGS: FlagSpecs = {
  profile: {
    type: "string",
    default: "hybrid",
    value: "NAME",
    help:
      "hybrid or rsa: the relay (serves hybrid and rsa members in one group); basic: the unicast RSA-4096 endpoint with ACKs",
  },
  group: {
    type: "string",
    default: "224.1.1.1",
    value: "IP",
    help: "multicast group to join",
  },
  port: {
    type: "string",
    default: "5007",
    value: "PORT",
    help: "UDP port (0 picks a free one)",
  },
  bind: {
    type: "string",
    default: "0.0.0.0",
    value: "IP",
    help: "UDP address to bind",
  },
  "no-multicast": {
    type: "boolean",
    help:
      "unicast only: do not join the group (hosts without a multicast route, tests)",
  },
  fanout: {
    type: "string",
    default: "unicast",
    value: "MODE",
    help:
      "unicast: one token per recipient; group: one token per message under an epoch key for group-capable members (PROTOCOL.md section 9)",
  },
  downstream: {
    type: "string",
    value: "GROUP:PORT",
    help:
      "with --fanout group: where group messages are multicast (default: the group, port + 1; none with --no-multicast: by unicast)",
  },
  "multicast-interface": {
    type: "string",
    default: "0.0.0.0",
    value: "IP",
    help: "local interface address to join the group on (0.0.0.0: as routed)",
  },
  "tcp-host": {
    type: "string",
    default: "127.0.0.1",
    value: "IP",
    help: "control port address",
  },
  "tcp-port": {
    type: "string",
    default: "9999",
    value: "PORT",
    help: "control port (0 picks a free one)",
  },
  "control-token": {
    type: "string",
    value: "TOKEN",
    help:
      "require 'auth TOKEN' on the control port (or MCRELAY_CONTROL_TOKEN); needed off loopback",
  },
  "key-file": {
    type: "string",
    value: "PATH",
    help:
      "RSA key (PKCS#8 PEM): loaded, or generated and saved with mode 0600; without it a new key every start",
  },
  "key-bits": {
    type: "string",
    value: "BITS",
    help:
      "size of a generated key: 2048, 3072 or 4096 (default: 2048; 4096 with --profile basic)",
  },
  "client-timeout": {
    type: "string",
    default: "30",
    value: "SECONDS",
    help: "remove members silent this long",
  },
  mtu: {
    type: "string",
    default: "1200",
    value: "BYTES",
    help: "largest datagram sent (576-65507)",
  },
  "max-clients": {
    type: "string",
    default: "1024",
    value: "N",
    help: "members at most; more get NOTICE 4",
  },
  "max-message": {
    type: "string",
    default: "32768",
    value: "BYTES",
    help: "largest message plaintext relayed; larger get NOTICE 2",
  },
  "message-rate": {
    type: "string",
    default: "200",
    value: "N",
    help:
      "messages per second relayed per member (burst: twice that); more get NOTICE 3",
  },
  "handshake-rate": {
    type: "string",
    default: "5",
    value: "N",
    help:
      "key exchanges per second per source IP (burst: twice that); more are dropped",
  },
  "rsa-sched-idle": {
    type: "boolean",
    help:
      "run RSA key exchanges under Linux's SCHED_IDLE so they never delay relaying (needs deno run --allow-ffi)",
  },
  "udp-batch-syscalls": {
    type: "boolean",
    help:
      "receive and send through Linux's recvmmsg/sendmmsg (libc via FFI; IPv4, with --no-multicast): less CPU per delivery under load (needs deno run --allow-ffi: deno task server:mmsg)",
  },
  compat: {
    type: "boolean",
    help:
      "accept clients of the original design (short key requests, cookieless registration, empty keep-alives): reopens amplification and spoofing",
  },
  nats: {
    type: "string",
    value: "URL[,URL...]",
    help:
      "federate with the other relays of --cluster over these NATS servers (needs --cluster-key-file)",
  },
  cluster: {
    type: "string",
    default: "mcrelay",
    value: "NAME",
    help: "cluster of relays that serve one group together (with --nats)",
  },
  "cluster-key-file": {
    type: "string",
    value: "PATH",
    help:
      "the cluster's Fernet key, the same file on every relay: loaded, or generated and saved with mode 0600",
  },
  "nats-creds": {
    type: "string",
    value: "PATH",
    help:
      "NATS credentials file (also: MCRELAY_NATS_TOKEN, or MCRELAY_NATS_USER with MCRELAY_NATS_PASSWORD)",
  },
  "nats-tls-ca": {
    type: "string",
    value: "PATH",
    help: "CA certificate to verify the NATS servers with (turns TLS on)",
  },
  "nats-tls-cert": {
    type: "string",
    value: "PATH",
    help: "client certificate for NATS TLS (with --nats-tls-key)",
  },
  "nats-tls-key": {
    type: "string",
    value: "PATH",
    help: "client key for NATS TLS",
  },
  metrics: {
    type: "string",
    value: "[HOST:]PORT",
    help:
      "serve GET /healthz and /metrics (Prometheus text) over HTTP here (HOST: 127.0.0.1 when left out; no authentication)",
  },
  json: { type: "boolean", help: "log JSON lines (ts, level, event, ...)" },
  "log-level": {
    type: "string",
    default: "info",
    value: "LEVEL",
    help: "debug, info, warn or error",
  },
  config: CONFIG_FLAG,
  help: { type: "boolean", help: "show this help" },
  version: { type: "boolean", help: "show the version" },
};

/** The `--help` text before the control port commands. */
export const SERVER_USAGE =
  `mcrelay server ${VERSION}: a secure group-messaging relay over UDP multicast.

Usage: deno task server [flags]

Flags:
${formatFlagHelp(SERVER_FLAGS)}

Examples:
  deno task server                                   # join 224.1.1.1:5007, control on 127.0.0.1:9999
  deno task server --no-multicast --bind 127.0.0.1   # unicast on loopback only
  deno task server --key-file ~/.config/mcrelay/server.pem --json
                                                     # stable key clients can pin, JSON logs
  deno task server:mmsg --no-multicast --bind 127.0.0.1
                                                     # batch syscalls (recvmmsg/sendmmsg through FFI)
  deno task server --nats nats://10.0.0.5:4222 --cluster-key-file cluster.key
                                                     # one of several relays of one group
`;
