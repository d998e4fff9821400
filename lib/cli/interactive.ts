/**
 * The interactive client (`--stdio`, or when stdin is a terminal): reads
 * lines from stdin and sends them, prints what arrives, and keeps the line
 * being typed intact on a terminal. Commands: `/who`, `/quit`, `/help`.
 *
 * @module
 */
import { CLEAR_LINE, LineEditor, printAboveText } from "./line_editor.ts";
import { LineSplitter } from "../net/lines.ts";

/** What the interactive session needs from the client. */
export interface InteractiveHooks {
  /** Sends a line to the group; resolves with a line to show, if any. */
  readonly send: (line: string) => Promise<string | undefined>;
  /** Lines answering `/who`. */
  readonly who: () => string[];
  /** Called once when the user leaves (`/quit`, Ctrl-C, Ctrl-D, end of input). */
  readonly quit: () => void;
}

/** The `/help` text. */
export const INTERACTIVE_HELP = [
  "type a line and press Enter to send it to the group",
  "/who   members present",
  "/quit  leave (also Ctrl-D, Ctrl-C)",
  "/help  this list",
];

const encoder = new TextEncoder();

/** An interactive session over stdin/stdout. */
export class InteractiveSession {
  readonly #hooks: InteractiveHooks;
  readonly #raw: boolean;
  readonly #prompt: string;
  readonly #editor = new LineEditor();
  #done = false;
  #reading: Promise<void> = Promise.resolve();

  /**
   * @param hooks what to do with lines
   * @param raw edit lines in raw terminal mode (stdin is a terminal)
   */
  constructor(hooks: InteractiveHooks, raw: boolean) {
    this.#hooks = hooks;
    this.#raw = raw;
    this.#prompt = raw ? "> " : "";
  }

  /** Starts reading stdin. */
  start(): void {
    if (this.#raw) {
      Deno.stdin.setRaw(true, { cbreak: false });
      this.#write(this.#prompt);
    }
    this.#reading = this.#readLoop();
  }

  /** Prints a line without disturbing what is being typed. */
  print(line: string): void {
    if (this.#done || !this.#raw) {
      this.#write(`${line}\n`);
      return;
    }
    this.#write(printAboveText(line, this.#prompt, this.#editor.buffer));
  }

  /** Restores the terminal. Reading stops at the next input or end of input. */
  stop(): void {
    if (this.#done) return;
    this.#done = true;
    if (this.#raw) {
      this.#write(CLEAR_LINE);
      try {
        Deno.stdin.setRaw(false);
      } catch {
        // stdin already closed
      }
    }
  }

  /** Resolves when the stdin reader has ended. */
  get finished(): Promise<void> {
    return this.#reading;
  }

  async #readLoop(): Promise<void> {
    const buffer = new Uint8Array(4096);
    const splitter = new LineSplitter();
    try {
      while (!this.#done) {
        const n = await Deno.stdin.read(buffer);
        if (n === null) break;
        if (this.#raw) {
          const { lines, exit } = this.#editor.feed(buffer.subarray(0, n));
          for (const line of lines) {
            this.#write(printAboveText(`${this.#prompt}${line}`, "", ""));
            this.#write(this.#prompt + this.#editor.buffer);
            if (await this.#handle(line)) return;
          }
          if (exit) break;
          this.#write(CLEAR_LINE + this.#prompt + this.#editor.buffer);
        } else {
          for (const line of splitter.push(buffer.subarray(0, n))) {
            if (await this.#handle(line)) return;
          }
        }
      }
    } catch {
      // stdin closed under us: treat as end of input.
    }
    if (!this.#done) this.#hooks.quit();
  }

  /** Handles one line; returns true when the session ends. */
  async #handle(line: string): Promise<boolean> {
    const trimmed = line.trim();
    if (trimmed === "") return false;
    if (trimmed === "/quit") {
      this.#hooks.quit();
      return true;
    }
    if (trimmed === "/help") {
      for (const text of INTERACTIVE_HELP) this.print(text);
      return false;
    }
    if (trimmed === "/who") {
      for (const text of this.#hooks.who()) this.print(text);
      return false;
    }
    if (trimmed.startsWith("/") && !trimmed.startsWith("//")) {
      this.print(`unknown command ${trimmed.split(/\s/)[0]}: try /help`);
      return false;
    }
    // "//text" sends "/text".
    const message = trimmed.startsWith("//") ? line.trimStart().slice(1) : line;
    try {
      const shown = await this.#hooks.send(message);
      if (shown !== undefined) this.print(shown);
    } catch (error) {
      this.print(`error: ${(error as Error).message}`);
    }
    return false;
  }

  #write(text: string): void {
    Deno.stdout.writeSync(encoder.encode(text));
  }
}
