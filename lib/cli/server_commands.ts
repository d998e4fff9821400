/**
 * The server's control-port commands (`help`, `clients`, `stats`, `kick`,
 * `ban`, `unban`, `bans`, `quit`, `exit`): one line in, one reply out, as
 * text or a JSON object. The control port itself is opened in
 * server_main.ts.
 *
 * @module
 */
import type { ControlConnection, ControlStats } from "../runtime/control.ts";
import { ServerClosedError } from "../errors.ts";
import { RelayServer } from "../relay/server/server.ts";
import type { BasicServer } from "../relay/basic/server.ts";
import { roundNumbers } from "./log_format.ts";

/** The `help` command's text (its first line, "commands:", is left out of --help). */
export const CONTROL_HELP: readonly string[] = [
  "commands:",
  "  help             this list",
  "  clients          members: address, profile, last seen, messages in/out (and those of other relays)",
  "  stats            counters: datagrams, bytes, relayed, dropped by reason",
  "  kick IP:PORT [REASON]",
  "                   remove a member, tell it why and tell the others; it may rejoin",
  "  ban IP[:PORT] [SECONDS] [REASON]",
  "                   drop everything from an IP (every port) or one address, for",
  "                   SECONDS or until unban; members it covers are removed and told",
  "  unban IP[:PORT]  lift the ban of exactly that IP or address (bans lists them)",
  "  bans             the bans in force, with the time each has left",
  "  quit             close this connection",
  "  exit             stop the server",
];

/** Sends one reply: `text` as lines, or `{ event, ...data }` as one JSON object. */
type Reply = (
  event: string,
  text: readonly string[],
  data: Record<string, unknown>,
) => void;

/** What a control-port command acts on. */
export interface CommandContext {
  /** The server. */
  readonly server: RelayServer | BasicServer;
  /** The control port's own counters, for `stats`. */
  readonly control: ControlStats;
  /** JSON replies instead of text. */
  readonly json: boolean;
  /** Stops the server (`exit`). */
  readonly stop: () => void;
}

/** Runs one line received on the control port and writes the reply. */
export function handleControlCommand(
  connection: ControlConnection,
  line: string,
  context: CommandContext,
): void {
  const { server, control, json, stop } = context;
  const [command = "", ...rest] = line.trim().split(/\s+/);
  const reply: Reply = (event, text, data) => {
    // One queue entry per reply, so a long `clients` list is never cut.
    connection.write(
      json ? JSON.stringify({ event, ...data }) : text.join("\n"),
    );
  };
  switch (command) {
    case "":
      return;
    case "help":
      return reply("help", CONTROL_HELP, {
        commands: [
          "help",
          "clients",
          "stats",
          "kick",
          "ban",
          "unban",
          "bans",
          "quit",
          "exit",
        ],
      });
    case "clients": {
      const now = Date.now();
      const members = server.members();
      const remote = server instanceof RelayServer
        ? server.remoteMembers()
        : [];
      const ago = (lastSeen: number) =>
        `last_seen=${((now - lastSeen) / 1000).toFixed(1)}s_ago`;
      const lines = [
        ...members.map((m) =>
          `${m.address} ${m.profile} ${ago(m.lastSeen)} in=${m.messagesIn}${
            "messagesOut" in m ? ` out=${m.messagesOut}` : ""
          }`
        ),
        ...remote.map((m) =>
          `${m.address} remote relay=${m.relay} ${ago(m.lastSeen)}`
        ),
      ];
      const heading = remote.length > 0
        ? `${members.length} member(s) here, ${remote.length} at other relays`
        : `${members.length} member(s)`;
      return reply("clients", [heading, ...lines], {
        clients: members,
        ...(remote.length > 0 ? { remote } : {}),
      });
    }
    case "stats": {
      const stats = roundNumbers({ ...server.stats(), control });
      // What the server does not have (kernelDropped without /proc) is left
      // out, as JSON leaves it out.
      const lines = Object.entries(stats).filter(([, v]) => v !== undefined)
        .map(([k, v]) =>
          `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`
        );
      return reply("stats", lines, { stats });
    }
    case "kick": {
      const target = rest[0];
      if (!target) {
        return reply("error", ["error: usage: kick IP:PORT"], {
          error: "usage: kick IP:PORT",
        });
      }
      const reason = rest.slice(1).join(" ");
      let kicked: boolean;
      try {
        kicked = server instanceof RelayServer && reason !== ""
          ? server.kick(target, reason)
          : server.kick(target);
      } catch (error) {
        const message =
          error instanceof RangeError || error instanceof ServerClosedError
            ? error.message
            : `"${target}" is not an IP:PORT address`;
        return reply("error", [`error: ${message}`], { error: message });
      }
      return kicked
        ? reply("kicked", [`ok: kicked ${target}`], { address: target })
        : reply("error", [`error: no member ${target}`], {
          error: `no member ${target}`,
        });
    }
    case "ban":
    case "unban":
    case "bans":
      if (!(server instanceof RelayServer)) {
        return reply("error", [
          "error: bans are for the hybrid and rsa profiles",
        ], { error: "bans are for the hybrid and rsa profiles" });
      }
      return handleBanCommand(command, rest, server, reply);
    case "quit":
      connection.close();
      return;
    case "exit":
      reply("stopping", ["ok: stopping"], {});
      stop();
      return;
    default:
      reply("error", [`error: unknown command "${command}": try help`], {
        error: `unknown command "${command}"`,
      });
  }
}

/** `ban`, `unban` and `bans` on the control port. */
function handleBanCommand(
  command: string,
  args: readonly string[],
  server: RelayServer,
  reply: Reply,
): void {
  const fail = (error: string) =>
    reply("error", [`error: ${error}`], { error });
  if (command === "bans") {
    const bans = server.bans();
    const left = (seconds: number | undefined) =>
      seconds === undefined ? "until_unban" : `${seconds}s_left`;
    return reply("bans", [
      `${bans.length} ban(s)`,
      ...bans.map((b) =>
        `${b.target} ${left(b.secondsLeft)} reason=${JSON.stringify(b.reason)}`
      ),
    ], {
      bans: bans.map((b) => ({
        target: b.target,
        secondsLeft: b.secondsLeft ?? null,
        reason: b.reason,
      })),
    });
  }
  const [target, ...more] = args;
  if (!target) {
    return fail(
      `usage: ${command} IP[:PORT]${
        command === "ban" ? " [SECONDS] [REASON]" : ""
      }`,
    );
  }
  try {
    if (command === "unban") {
      return server.unban(target)
        ? reply("unbanned", [`ok: unbanned ${target}`], { target })
        : fail(`no ban of ${target} (bans lists them)`);
    }
    const seconds = /^[0-9]+$/.test(more[0] ?? "")
      ? Number(more.shift())
      : undefined;
    const reason = more.join(" ");
    const banned = server.ban(target, {
      seconds,
      ...(reason === "" ? {} : { reason }),
    });
    const how = seconds === undefined ? "until unban" : `for ${seconds} s`;
    return reply(
      "banned",
      [
        `ok: banned ${banned.target} ${how}; removed ${banned.removed.length} member(s)${
          banned.removed.map((a) => ` ${a}`).join("")
        }`,
      ],
      {
        target: banned.target,
        seconds: seconds ?? null,
        removed: banned.removed,
      },
    );
  } catch (error) {
    return fail((error as Error).message);
  }
}
