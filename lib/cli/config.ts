/**
 * Config files (`--config PATH`): TOML (mcrelay's subset, see
 * {@linkcode parseToml}) or JSON when the name ends in `.json`. Every flag of
 * a program but `--config`, `--help` and `--version` is a key, spelt as the
 * flag without `--` (`tcp-port = 9999`, `no-multicast = true`). The command
 * line overrides the file; the file overrides the environment
 * (`MCRELAY_CONTROL_TOKEN`, the NATS credentials) and the defaults.
 *
 * @module
 */
import { ConfigError } from "../errors.ts";
import { type FlagSpecs, type FlagValues, parseFlags } from "./flags.ts";
import { parseToml, type TomlEntries, type TomlValue } from "./toml.ts";

/** Flags that act on the command line only, never keys of a config file. */
const COMMAND_LINE_ONLY: ReadonlySet<string> = new Set([
  "config",
  "help",
  "version",
]);

/** Keys whose value is a secret: a file holding one must not be readable by others. */
const SECRET_KEYS: readonly string[] = ["control-token"];

/**
 * Parses a config file's text: JSON when `source` ends in `.json` (one
 * object of keys), mcrelay's TOML subset otherwise.
 * @throws {ConfigError} naming the file (and line, for TOML) of a syntax error or a value of no supported kind
 * @example
 * ```ts
 * import { parseConfigText } from "./config.ts";
 *
 * const json = parseConfigText('{"tcp-port": 9000}', "client.json");
 * const toml = parseConfigText("tcp-port = 9000", "client.toml");
 * if (json.get("tcp-port")?.value !== toml.get("tcp-port")?.value) throw new Error();
 * ```
 */
export function parseConfigText(text: string, source: string): TomlEntries {
  if (!source.toLowerCase().endsWith(".json")) return parseToml(text, source);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(
      `${source}: not valid JSON (${
        (error as Error).message
      }): fix it, or write the file as TOML (a name not ending in .json)`,
    );
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    throw new ConfigError(
      `${source}: expected one JSON object of keys, e.g. {"tcp-port": 9999}`,
    );
  }
  const entries: TomlEntries = new Map();
  for (const [key, value] of Object.entries(parsed)) {
    if (!isConfigValue(value)) {
      throw new ConfigError(
        `${source}: ${key} must be a string, a number, true/false or an array of strings and numbers`,
      );
    }
    entries.set(key, { value, line: 0 });
  }
  return entries;
}

function isConfigValue(value: unknown): value is TomlValue {
  if (Array.isArray(value)) {
    return value.every((item) =>
      typeof item === "string" || typeof item === "number"
    );
  }
  return typeof value === "string" || typeof value === "boolean" ||
    (typeof value === "number" && Number.isFinite(value));
}

/**
 * Turns a config file's entries into flag values as the command line would
 * give them: strings for flags that take a value (numbers in decimal, arrays
 * joined with ","), booleans for switches.
 * @throws {ConfigError} for a key that is no flag of `specs`, or a value of the wrong kind
 * @example
 * ```ts
 * import { configFlagValues, parseConfigText } from "./config.ts";
 *
 * const values = configFlagValues(
 *   parseConfigText('port = 6000\nnats = ["nats://a:4222", "nats://b:4222"]', "s.toml"),
 *   { port: { type: "string", help: "" }, nats: { type: "string", help: "" } },
 *   "s.toml",
 * );
 * if (values.port !== "6000" || values.nats !== "nats://a:4222,nats://b:4222") throw new Error();
 * ```
 */
export function configFlagValues(
  entries: TomlEntries,
  specs: FlagSpecs,
  source: string,
): FlagValues {
  const values: FlagValues = {};
  for (const [key, { value, line }] of entries) {
    const where = line > 0 ? `${source}:${line}` : source;
    const spec = Object.hasOwn(specs, key) && !COMMAND_LINE_ONLY.has(key)
      ? specs[key]
      : undefined;
    if (spec === undefined) {
      throw new ConfigError(
        `${where}: unknown key ${key}: the keys are the flags of --help without "--" (--config, --help and --version excepted)`,
      );
    }
    if (spec.type === "boolean") {
      if (typeof value !== "boolean") {
        throw new ConfigError(
          `${where}: ${key} is a switch: write ${key} = true or ${key} = false`,
        );
      }
      values[key] = value;
    } else if (typeof value === "boolean") {
      throw new ConfigError(
        `${where}: ${key} takes a value, e.g. ${key} = "${
          spec.default ?? spec.value ?? "VALUE"
        }"`,
      );
    } else {
      values[key] = Array.isArray(value) ? value.join(",") : String(value);
    }
  }
  return values;
}

/**
 * Reads and checks the config file at `path` for a program with `specs`.
 * @throws {ConfigError} when it cannot be read, is malformed, has a key that is no flag, or holds a secret while others can read it
 */
export async function loadConfigFile(
  path: string,
  specs: FlagSpecs,
): Promise<FlagValues> {
  let text: string;
  let mode: number | null;
  try {
    mode = (await Deno.stat(path)).mode;
    text = await Deno.readTextFile(path);
  } catch (error) {
    throw new ConfigError(
      `Cannot read config file ${path}: ${
        (error as Error).message
      }: give --config the path of a TOML or JSON file`,
    );
  }
  const entries = parseConfigText(text, path);
  const secret = SECRET_KEYS.find((key) => entries.has(key));
  if (secret !== undefined && mode !== null && (mode & 0o077) !== 0) {
    throw new ConfigError(
      `Config file ${path} holds ${secret} and is readable by others (mode ${
        (mode & 0o777).toString(8).padStart(3, "0")
      }): run "chmod 600 ${path}", or remove the key and set MCRELAY_CONTROL_TOKEN in the environment instead`,
    );
  }
  return configFlagValues(entries, specs, path);
}

/**
 * Parses the command line and, when it gives `--config PATH`, that file
 * under it: a flag on the command line wins over the file, the file over the
 * defaults.
 * @throws {ConfigError} for a bad flag or config file
 */
export async function parseCommandLine(
  args: readonly string[],
  specs: FlagSpecs,
): Promise<FlagValues> {
  const flags = parseFlags(args, specs);
  if (typeof flags.config !== "string" || flags.help || flags.version) {
    return flags;
  }
  return parseFlags(args, specs, await loadConfigFile(flags.config, specs));
}

/** The `--config` flag, as both programs list it. */
export const CONFIG_FLAG = {
  type: "string",
  value: "PATH",
  help:
    'read flags from this TOML or JSON (*.json) file: keys are the flag names without "--"; flags given here win',
} as const;
