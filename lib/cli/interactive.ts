/**
 * The interactive client (`--stdio`, or when stdin is a terminal): reads
 * lines from stdin and sends them, prints what arrives, and keeps the line
 * being typed intact on a terminal. Commands: `/who`, `/quit`, `/help`.
 *
 * @module
 */
import { CLEAR_LINE, LineEditor, printAboveText } from "./line_editor.ts";
import { LineSplitter } from "../runtime/lines.ts";

/** What the interactive session needs from the client. */
export interface InteractiveHooks {
  /** Sends a line to the group; resolves with a line to show, if any. */
  readonly send: (line: string) => Promise<string | undefined>;
  /** Lines answering `/who`. */
  readonly who: () => string[];
  /** Called once when the user leaves (`/quit`, Ctrl-C, Ctrl-D, end of input). */
  readonly quit: () => void;
  /** The client's state, for a word on what happens to a line sent now. */
  readonly state?: () => SendState;
}

/** What {@linkcode sendNote} looks at. */
export interface SendState {
  /** Whether the client is registered with a server right now. */
  readonly connected: boolean;
  /** Other members it knows to be present. */
  readonly others: number;
}

/**
 * A note for the user about a line being sent: before it goes (`when`
 * "before"), whether it waits for the client to register again; after it
 * went ("after"), whether anyone else received it. Undefined when there is
 * nothing to say.
 */
export function sendNote(
  state: SendState,
  when: "before" | "after",
): string | undefined {
  if (when === "before") {
    return state.connected
      ? undefined
      : "not connected: registering with the server again; the line goes out once that succeeds";
  }
  return state.connected && state.others === 0
    ? "(no one else is here)"
    : undefined;
}

/** The `/help` text. */
export const INTERACTIVE_HELP = [
  "type a line and press Enter to send it to the group",
  "/who   members present",
  "/quit  leave (also Ctrl-D, Ctrl-C)",
  "/help  this list",
  '//text sends "/text"',
  "keys: Left/Right, Home/End move; Up/Down recall earlier lines",
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
      this.#write(this.#promptLine());
    }
    this.#reading = this.#readLoop();
  }

  /** Whether lines are edited on a terminal (prompt drawn, raw mode). */
  get raw(): boolean {
    return this.#raw;
  }

  /** Prints a line without disturbing what is being typed. */
  print(line: string): void {
    if (this.#done || !this.#raw) {
      this.#write(`${line}\n`);
      return;
    }
    this.#write(printAboveText(line, this.#promptLine()));
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
            this.#write(
              printAboveText(`${this.#prompt}${line}`, this.#promptLine()),
            );
            if (await this.#handle(line)) return;
          }
          if (exit) break;
          this.#write(this.#promptLine());
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
    const before = this.#hooks.state && sendNote(this.#hooks.state(), "before");
    if (before) this.print(before);
    try {
      const shown = await this.#hooks.send(message);
      if (shown !== undefined) this.print(shown);
      const after = this.#hooks.state &&
        sendNote(this.#hooks.state(), "after");
      if (after) this.print(after);
    } catch (error) {
      this.print(`error: ${(error as Error).message}`);
    }
    return false;
  }

  /** The prompt line as it is drawn now, for the terminal's current width. */
  #promptLine(): string {
    let width = 80;
    try {
      width = Deno.consoleSize().columns || width;
    } catch {
      // Not a terminal after all: 80 columns.
    }
    return this.#editor.render(this.#prompt, width);
  }

  #write(text: string): void {
    Deno.stdout.writeSync(encoder.encode(text));
  }
}
