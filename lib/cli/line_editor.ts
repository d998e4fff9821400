/**
 * A small line editor for the interactive client: feeds raw terminal bytes
 * through a pure state machine (printable text, Left/Right, Home/End,
 * Up/Down through a bounded history, Backspace/Delete, Enter, Ctrl-A, Ctrl-E,
 * Ctrl-U, Ctrl-W, Ctrl-C, Ctrl-D; other escape sequences ignored) and renders
 * the prompt line for a given terminal width, so that incoming messages and
 * log lines can be printed above it without garbling what is being typed.
 *
 * The prompt line never wraps: a line wider than the terminal scrolls
 * sideways, keeping the cursor in view, so erasing one row always erases all
 * of it and no stale copy is left. Pure: no terminal access.
 *
 * @module
 */

/** What one batch of input produced. */
export interface EditResult {
  /** Lines completed with Enter, in order. */
  readonly lines: string[];
  /** Whether the user asked to leave (Ctrl-C, or Ctrl-D on an empty line). */
  readonly exit: boolean;
}

/** Options of {@linkcode LineEditor}. */
export interface LineEditorOptions {
  /** Entered lines kept for Up/Down, oldest dropped first. Default 100. */
  readonly historySize?: number;
}

const ESC = 0x1b;

/** The line being typed, edited by raw terminal input. */
export class LineEditor {
  /** The line as code points, so the cursor never splits a character. */
  #chars: string[] = [];
  #cursor = 0;
  #escape: "none" | "esc" | "csi" | "ss3" = "none";
  #csi = "";
  readonly #history: string[] = [];
  readonly #historySize: number;
  /** Index into the history while browsing it; history.length: the draft. */
  #historyIndex = 0;
  /** The line being typed before Up was pressed, restored by Down. */
  #draft: string[] = [];
  readonly #decoder = new TextDecoder();

  /** @param options history size */
  constructor(options: LineEditorOptions = {}) {
    this.#historySize = Math.max(0, options.historySize ?? 100);
  }

  /** The text typed so far on the current line. */
  get buffer(): string {
    return this.#chars.join("");
  }

  /** The cursor position, in characters (code points) from the start. */
  get cursor(): number {
    return this.#cursor;
  }

  /** Entered lines kept for Up/Down, oldest first. */
  get history(): readonly string[] {
    return this.#history;
  }

  /** Applies raw input bytes. */
  feed(bytes: Uint8Array): EditResult {
    const lines: string[] = [];
    let exit = false;
    const text = this.#decoder.decode(bytes, { stream: true });
    for (const char of text) {
      const code = char.codePointAt(0)!;
      if (this.#escape === "esc") {
        this.#escape = char === "[" ? "csi" : char === "O" ? "ss3" : "none";
        this.#csi = "";
        continue;
      }
      if (this.#escape === "ss3") {
        // ESC O x: arrows, Home and End in the terminal's application mode.
        this.#escape = "none";
        this.#key(char);
        continue;
      }
      if (this.#escape === "csi") {
        // A CSI sequence ends with a byte in 0x40..0x7e (arrows, Home, ...).
        if (code >= 0x40 && code <= 0x7e) {
          this.#escape = "none";
          this.#key(char, this.#csi);
        } else if (this.#csi.length < 16) {
          this.#csi += char;
        }
        continue;
      }
      switch (code) {
        case ESC:
          this.#escape = "esc";
          break;
        case 0x0d: // Enter (CR in raw mode)
        case 0x0a:
          lines.push(this.#enter());
          break;
        case 0x7f: // Backspace
        case 0x08:
          if (this.#cursor > 0) {
            this.#chars.splice(--this.#cursor, 1);
          }
          break;
        case 0x01: // Ctrl-A: start of line
          this.#cursor = 0;
          break;
        case 0x05: // Ctrl-E: end of line
          this.#cursor = this.#chars.length;
          break;
        case 0x15: // Ctrl-U: clear the line
          this.#chars = [];
          this.#cursor = 0;
          break;
        case 0x17: { // Ctrl-W: delete the word before the cursor
          const before = this.#chars.slice(0, this.#cursor).join("");
          const kept = [...before.replace(/\S*\s*$/, "")];
          this.#chars.splice(kept.length, this.#cursor - kept.length);
          this.#cursor = kept.length;
          break;
        }
        case 0x03: // Ctrl-C
          exit = true;
          break;
        case 0x04: // Ctrl-D: leave on an empty line, else delete
          if (this.#chars.length === 0) exit = true;
          else this.#deleteAtCursor();
          break;
        default:
          if (code >= 0x20 && !(code >= 0x80 && code < 0xa0)) {
            this.#chars.splice(this.#cursor++, 0, char);
          }
      }
    }
    return { lines, exit };
  }

  /** Acts on the final byte of an escape sequence (and its CSI parameters). */
  #key(final: string, params = ""): void {
    switch (final) {
      case "D": // Left
        if (this.#cursor > 0) this.#cursor--;
        return;
      case "C": // Right
        if (this.#cursor < this.#chars.length) this.#cursor++;
        return;
      case "H": // Home
        this.#cursor = 0;
        return;
      case "F": // End
        this.#cursor = this.#chars.length;
        return;
      case "A": // Up
        return this.#browse(-1);
      case "B": // Down
        return this.#browse(1);
      case "~": // ESC [ n ~: 1/7 Home, 4/8 End, 3 Delete
        switch (params.split(";")[0]) {
          case "1":
          case "7":
            this.#cursor = 0;
            return;
          case "4":
          case "8":
            this.#cursor = this.#chars.length;
            return;
          case "3":
            this.#deleteAtCursor();
            return;
        }
    }
  }

  #deleteAtCursor(): void {
    if (this.#cursor < this.#chars.length) this.#chars.splice(this.#cursor, 1);
  }

  /** Moves through the history: -1 older, +1 newer (back to the draft). */
  #browse(step: -1 | 1): void {
    const next = this.#historyIndex + step;
    if (next < 0 || next > this.#history.length) return;
    if (this.#historyIndex === this.#history.length) {
      this.#draft = this.#chars;
    }
    this.#historyIndex = next;
    this.#chars = next === this.#history.length
      ? this.#draft
      : [...this.#history[next]];
    this.#cursor = this.#chars.length;
  }

  /** Completes the line: returns it, keeps it in the history, starts afresh. */
  #enter(): string {
    const line = this.#chars.join("");
    if (
      line.trim() !== "" && this.#historySize > 0 &&
      this.#history.at(-1) !== line
    ) {
      this.#history.push(line);
      if (this.#history.length > this.#historySize) this.#history.shift();
    }
    this.#chars = [];
    this.#draft = [];
    this.#cursor = 0;
    this.#historyIndex = this.#history.length;
    return line;
  }

  /**
   * The bytes that redraw the prompt line for a terminal `width` columns
   * wide: see {@linkcode renderPromptLine}.
   */
  render(prompt: string, width: number): string {
    return renderPromptLine(prompt, this.#chars, this.#cursor, width);
  }
}

/** Terminal control: return to column 0 and erase the line. */
export const CLEAR_LINE = "\r\x1b[2K";

/**
 * Columns a character takes on a terminal: 0 for combining marks, 2 for
 * East Asian wide characters and emoji, 1 otherwise.
 */
export function charWidth(char: string): number {
  const code = char.codePointAt(0)!;
  if (
    (code >= 0x300 && code <= 0x36f) || (code >= 0x200b && code <= 0x200f) ||
    (code >= 0xfe00 && code <= 0xfe0f)
  ) {
    return 0;
  }
  if (
    (code >= 0x1100 && code <= 0x115f) || (code >= 0x2e80 && code <= 0xa4cf) ||
    (code >= 0xac00 && code <= 0xd7a3) || (code >= 0xf900 && code <= 0xfaff) ||
    (code >= 0xfe30 && code <= 0xfe4f) || (code >= 0xff00 && code <= 0xff60) ||
    (code >= 0xffe0 && code <= 0xffe6) ||
    (code >= 0x1f300 && code <= 0x1faff) ||
    (code >= 0x20000 && code <= 0x3fffd)
  ) {
    return 2;
  }
  return 1;
}

function textWidth(chars: readonly string[]): number {
  let width = 0;
  for (const char of chars) width += charWidth(char);
  return width;
}

/**
 * The bytes that redraw the prompt line: return to column 0, erase the row,
 * write the prompt and as much of the line as fits in `width - 1` columns,
 * then move the cursor back to its place. A line too wide for the terminal
 * is shown from the first character that keeps the cursor in view, so the
 * row never wraps.
 *
 * @param prompt the prompt, e.g. `"> "`
 * @param chars the line, one code point per element
 * @param cursor the cursor, an index into `chars`
 * @param width the terminal's width in columns
 */
export function renderPromptLine(
  prompt: string,
  chars: readonly string[],
  cursor: number,
  width: number,
): string {
  // The last column stays free: writing there leaves some terminals waiting
  // to wrap, and the next erase would miss the row.
  const room = Math.max(1, width - 1 - textWidth([...prompt]));
  let start = 0;
  // Room for the text before the cursor and the cell the cursor sits on.
  while (start < cursor && textWidth(chars.slice(start, cursor)) + 1 > room) {
    start++;
  }
  let end = start;
  let used = 0;
  while (end < chars.length && used + charWidth(chars[end]) <= room) {
    used += charWidth(chars[end]);
    end++;
  }
  const back = textWidth(chars.slice(cursor, end));
  return `${CLEAR_LINE}${prompt}${chars.slice(start, end).join("")}${
    back > 0 ? `\x1b[${back}D` : ""
  }`;
}

/**
 * The bytes that print `line` above the prompt: erase the prompt line, write
 * the line, then redraw the prompt line (`promptLine`, as
 * {@linkcode renderPromptLine} makes it; empty when there is none).
 */
export function printAboveText(line: string, promptLine: string): string {
  return `${CLEAR_LINE}${line}\n${promptLine}`;
}
