/**
 * The client's known-servers file, like SSH's known_hosts: one
 * `HOST:PORT SHA256:...` line per server key met, recorded the first time a
 * server answers (trust on first use) and checked every time after, so a
 * changed key is refused with one line that names the file and the fix.
 * Parsing and checking are pure; {@linkcode KnownServers.load} and
 * {@linkcode KnownServers.record} are the only file I/O.
 *
 * @module
 */
import { ConfigError } from "../errors.ts";

/** One recorded server key. */
export interface KnownServer {
  /** `IP:PORT` (`[IPv6]:PORT`) as the server answered from. */
  readonly server: string;
  /** `SHA256:...` of its key. */
  readonly fingerprint: string;
  /** Line number in the file, from 1. */
  readonly line: number;
}

const LINE = /^(\S+:\d+)\s+(SHA256:[A-Za-z0-9+/]{43})$/;

/**
 * Parses the file's text: blank lines and `#` comments are skipped.
 * @param path the file's path, for the error message
 * @throws {ConfigError} naming the line that is not `HOST:PORT SHA256:...`
 */
export function parseKnownServers(text: string, path: string): KnownServer[] {
  const entries: KnownServer[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (line === "" || line.startsWith("#")) continue;
    const match = LINE.exec(line);
    if (!match) {
      throw new ConfigError(
        `Line ${
          i + 1
        } of the known-servers file ${path} is not "HOST:PORT SHA256:...": fix or delete it (sed -i '${
          i + 1
        }d' ${path})`,
      );
    }
    entries.push({ server: match[1], fingerprint: match[2], line: i + 1 });
  }
  return entries;
}

/** A line of the file for one server key, with its newline. */
export function formatKnownServer(server: string, fingerprint: string): string {
  return `${server} ${fingerprint}\n`;
}

/**
 * The default path: `$XDG_CONFIG_HOME/mcrelay/known_servers`, else
 * `$HOME/.config/mcrelay/known_servers`; undefined when neither is set.
 */
export function defaultKnownServersPath(
  env: (name: string) => string | undefined,
): string | undefined {
  const config = env("XDG_CONFIG_HOME") ||
    (env("HOME") ? `${env("HOME")}/.config` : undefined);
  return config ? `${config}/mcrelay/known_servers` : undefined;
}

/** The known-servers file of one client run. */
export class KnownServers {
  /** The file's path. */
  readonly path: string;
  readonly #entries: KnownServer[];
  /** The file's text as read or written here (to number appended lines). */
  #text: string;

  /**
   * @param path the file's path
   * @param text what it holds
   * @throws {ConfigError} when a line is malformed
   */
  constructor(path: string, text = "") {
    this.path = path;
    this.#entries = parseKnownServers(text, path);
    this.#text = text;
  }

  /**
   * Reads the file; a missing one is empty (it is made at the first record).
   * @throws {ConfigError} when a line is malformed or the file cannot be read
   */
  static async load(path: string): Promise<KnownServers> {
    let text = "";
    try {
      text = await Deno.readTextFile(path);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) {
        throw new ConfigError(
          `Cannot read the known-servers file ${path} (${
            (error as Error).message
          }): fix its permissions, give another with --known-servers PATH, or turn it off with --no-known-servers`,
        );
      }
    }
    return new KnownServers(path, text);
  }

  /** Whether the file records a key for `server`. */
  has(server: string): boolean {
    return this.#entries.some((entry) => entry.server === server);
  }

  /**
   * Checks a key: undefined when `server` is unknown or recorded with this
   * key, otherwise the one-line refusal naming the recorded key, the file
   * and the fix.
   */
  check(server: string, fingerprint: string): string | undefined {
    const recorded = this.#entries.filter((entry) => entry.server === server);
    if (
      recorded.length === 0 ||
      recorded.some((entry) => entry.fingerprint === fingerprint)
    ) {
      return undefined;
    }
    const { line } = recorded[0];
    return `The server at ${server} answered with key ${fingerprint}, but ${this.path} records ${
      recorded[0].fingerprint
    } for it (line ${line}): something else may be answering there. If the server's key was changed on purpose (e.g. it restarted without --key-file), delete that line (sed -i '${line}d' ${this.path}) and connect again`;
  }

  /**
   * Records a key met for the first time: appends its line, making the file
   * (mode 0600) and its directory when missing. Nothing is written for a
   * server already recorded.
   * @returns whether a line was written
   */
  async record(server: string, fingerprint: string): Promise<boolean> {
    if (this.has(server)) return false;
    const dir = this.path.slice(0, this.path.lastIndexOf("/"));
    if (dir !== "") await Deno.mkdir(dir, { recursive: true, mode: 0o700 });
    // A last line without its newline is ended first.
    const line = (this.#text === "" || this.#text.endsWith("\n") ? "" : "\n") +
      formatKnownServer(server, fingerprint);
    await Deno.writeTextFile(this.path, line, { append: true, mode: 0o600 });
    this.#text += line;
    this.#entries.push({
      server,
      fingerprint,
      line: this.#text.split("\n").length - 1,
    });
    return true;
  }
}
