/**
 * The small subset of TOML that mcrelay's config files use, parsed without
 * any package so that the programs still start offline: one `key = value`
 * per line at the top level, `#` comments and blank lines. Values are basic
 * strings (`"..."` with TOML's escapes), literal strings (`'...'`), decimal
 * integers and floats (`_` between digits allowed), `true`/`false`, and
 * one-line arrays of those. Tables, dotted keys, inline tables, multi-line
 * strings and dates are refused with the line they are on.
 *
 * Pure: no I/O.
 *
 * @module
 */
import { ConfigError } from "../errors.ts";

/** A value of the subset: a string, a number, a boolean or an array of those. */
export type TomlValue = string | number | boolean | readonly TomlValue[];

/** A parsed file: each key with its value and the line it was on (1-based). */
export type TomlEntries = Map<string, { value: TomlValue; line: number }>;

const BARE_KEY = /^[A-Za-z0-9_-]+$/;
const INTEGER = /^[+-]?(0|[1-9](_?[0-9])*)$/;
const FLOAT =
  /^[+-]?(0|[1-9](_?[0-9])*)(\.[0-9](_?[0-9])*)?([eE][+-]?[0-9](_?[0-9])*)?$/;
const ESCAPES: Readonly<Record<string, string>> = {
  b: "\b",
  t: "\t",
  n: "\n",
  f: "\f",
  r: "\r",
  '"': '"',
  "\\": "\\",
};

/**
 * Parses `text` as mcrelay's TOML subset.
 * @param text the file's content
 * @param source how to name the file in errors, e.g. its path
 * @returns the keys in file order, each with its value and line
 * @throws {ConfigError} naming the file and line of the first thing outside the subset, a duplicate key or a malformed value
 * @example
 * ```ts
 * import { parseToml } from "./toml.ts";
 *
 * const entries = parseToml('port = 5007\nbind = "127.0.0.1" # loopback\n', "mcrelay.toml");
 * if (entries.get("port")?.value !== 5007) throw new Error("port");
 * if (entries.get("bind")?.value !== "127.0.0.1") throw new Error("bind");
 * ```
 */
export function parseToml(text: string, source: string): TomlEntries {
  const entries: TomlEntries = new Map();
  const lines = text.replace(/^\uFEFF/, "").split(/\r?\n/);
  for (const [index, raw] of lines.entries()) {
    const line = index + 1;
    const fail = (what: string): never => {
      throw new ConfigError(`${source}:${line}: ${what}`);
    };
    const cursor = new Cursor(raw, fail);
    cursor.skipSpace();
    if (cursor.atEndOrComment()) continue;
    if (cursor.peek() === "[") {
      fail(
        "tables are not used: put every key at the top level, before any [section]",
      );
    }
    const key = cursor.key();
    cursor.skipSpace();
    if (cursor.peek() === ".") {
      fail(`dotted keys are not used: write ${key} = VALUE`);
    }
    if (cursor.next() !== "=") fail(`expected "=" after the key ${key}`);
    cursor.skipSpace();
    const value = cursor.value();
    cursor.skipSpace();
    if (!cursor.atEndOrComment()) {
      fail(`unexpected text after the value of ${key}: ${cursor.rest()}`);
    }
    if (entries.has(key)) {
      fail(
        `${key} is given twice (first on line ${
          entries.get(key)!.line
        }): keep one`,
      );
    }
    entries.set(key, { value, line });
  }
  return entries;
}

/** Reads one line of the subset, left to right. */
class Cursor {
  #pos = 0;
  readonly #text: string;
  readonly #fail: (what: string) => never;

  constructor(text: string, fail: (what: string) => never) {
    this.#text = text;
    this.#fail = fail;
  }

  peek(): string | undefined {
    return this.#text[this.#pos];
  }

  next(): string | undefined {
    return this.#text[this.#pos++];
  }

  rest(): string {
    return this.#text.slice(this.#pos);
  }

  skipSpace(): void {
    while (this.peek() === " " || this.peek() === "\t") this.#pos++;
  }

  atEndOrComment(): boolean {
    return this.#pos >= this.#text.length || this.peek() === "#";
  }

  key(): string {
    if (this.peek() === '"' || this.peek() === "'") {
      const key = this.peek() === '"' ? this.basicString() : this.literal();
      if (key.length === 0) this.#fail("a key cannot be empty");
      return key;
    }
    const start = this.#pos;
    while (this.peek() !== undefined && /[A-Za-z0-9_-]/.test(this.peek()!)) {
      this.#pos++;
    }
    const key = this.#text.slice(start, this.#pos);
    if (!BARE_KEY.test(key)) {
      this.#fail(
        `expected a key (letters, digits, "-" or "_") at: ${this.rest()}`,
      );
    }
    return key;
  }

  value(): TomlValue {
    const c = this.peek();
    if (c === '"') {
      if (this.#text.startsWith('"""', this.#pos)) {
        this.#fail('multi-line strings are not used: write "one line"');
      }
      return this.basicString();
    }
    if (c === "'") {
      if (this.#text.startsWith("'''", this.#pos)) {
        this.#fail("multi-line strings are not used: write 'one line'");
      }
      return this.literal();
    }
    if (c === "[") return this.array();
    if (c === "{") {
      this.#fail("inline tables are not used: give each key on its own line");
    }
    const start = this.#pos;
    while (
      this.peek() !== undefined && !/[\s,\]#]/.test(this.peek()!)
    ) this.#pos++;
    const word = this.#text.slice(start, this.#pos);
    if (word === "true") return true;
    if (word === "false") return false;
    if (INTEGER.test(word)) {
      const value = Number(word.replaceAll("_", ""));
      if (!Number.isSafeInteger(value)) {
        this.#fail(`${word} is too large: give at most 9007199254740991`);
      }
      return value;
    }
    if (FLOAT.test(word)) return Number(word.replaceAll("_", ""));
    if (word.length === 0) this.#fail("a value is missing after =");
    return this.#fail(
      `${word} is not a value: quote strings ("..."), write numbers in decimal, or true/false`,
    );
  }

  array(): TomlValue[] {
    this.next(); // [
    const items: TomlValue[] = [];
    for (;;) {
      this.skipSpace();
      if (this.peek() === "]") break;
      if (this.peek() === undefined || this.peek() === "#") {
        this.#fail(
          "an array must close on its line: write [a, b] on one line",
        );
      }
      items.push(this.value());
      this.skipSpace();
      if (this.peek() === ",") {
        this.next();
        continue;
      }
      if (this.peek() !== "]") this.#fail('expected "," or "]" in the array');
    }
    this.next(); // ]
    return items;
  }

  literal(): string {
    this.next(); // '
    const end = this.#text.indexOf("'", this.#pos);
    if (end < 0) this.#fail("a string is not closed: end it with '");
    const value = this.#text.slice(this.#pos, end);
    this.#pos = end + 1;
    return value;
  }

  basicString(): string {
    this.next(); // "
    let value = "";
    for (;;) {
      const c = this.next();
      if (c === undefined) this.#fail('a string is not closed: end it with "');
      if (c === '"') return value;
      if (c !== "\\") {
        const code = c!.charCodeAt(0);
        if ((code < 0x20 && c !== "\t") || code === 0x7f) {
          this.#fail("a string holds a control character: write it escaped");
        }
        value += c;
        continue;
      }
      const e = this.next();
      if (e !== undefined && e in ESCAPES) {
        value += ESCAPES[e];
      } else if (e === "u" || e === "U") {
        const length = e === "u" ? 4 : 8;
        const hex = this.#text.slice(this.#pos, this.#pos + length);
        const code = /^[0-9A-Fa-f]+$/.test(hex) && hex.length === length
          ? parseInt(hex, 16)
          : NaN;
        if (
          Number.isNaN(code) || code > 0x10ffff ||
          (code >= 0xd800 && code <= 0xdfff)
        ) {
          this.#fail(`\\${e}${hex} is not a Unicode scalar value`);
        }
        value += String.fromCodePoint(code);
        this.#pos += length;
      } else {
        this.#fail(
          `\\${
            e ?? ""
          } is not an escape: use \\\\ for a backslash, or a literal string '...'`,
        );
      }
    }
  }
}
