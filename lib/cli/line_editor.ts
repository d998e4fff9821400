/**
 * A minimal line editor for the interactive client: feeds raw terminal bytes
 * through a pure state machine (printable text, backspace, Enter, Ctrl-U,
 * Ctrl-W, Ctrl-C, Ctrl-D; escape sequences ignored) and renders the prompt
 * line so that incoming messages can be printed above it without garbling
 * what is being typed. Pure: no terminal access.
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

const ESC = 0x1b;

/** The line being typed, edited by raw terminal input. */
export class LineEditor {
  #buffer = "";
  #escape: "none" | "esc" | "csi" = "none";
  readonly #decoder = new TextDecoder();

  /** The text typed so far on the current line. */
  get buffer(): string {
    return this.#buffer;
  }

  /** Applies raw input bytes. */
  feed(bytes: Uint8Array): EditResult {
    const lines: string[] = [];
    let exit = false;
    const text = this.#decoder.decode(bytes, { stream: true });
    for (const char of text) {
      const code = char.codePointAt(0)!;
      if (this.#escape === "esc") {
        this.#escape = char === "[" ? "csi" : "none";
        continue;
      }
      if (this.#escape === "csi") {
        // A CSI sequence ends with a byte in 0x40..0x7e (arrows, Home, ...).
        if (code >= 0x40 && code <= 0x7e) this.#escape = "none";
        continue;
      }
      switch (code) {
        case ESC:
          this.#escape = "esc";
          break;
        case 0x0d: // Enter (CR in raw mode)
        case 0x0a:
          lines.push(this.#buffer);
          this.#buffer = "";
          break;
        case 0x7f: // Backspace
        case 0x08:
          this.#buffer = [...this.#buffer].slice(0, -1).join("");
          break;
        case 0x15: // Ctrl-U: clear the line
          this.#buffer = "";
          break;
        case 0x17: // Ctrl-W: delete the last word
          this.#buffer = this.#buffer.replace(/\S*\s*$/, "");
          break;
        case 0x03: // Ctrl-C
          exit = true;
          break;
        case 0x04: // Ctrl-D
          if (this.#buffer === "") exit = true;
          break;
        default:
          if (code >= 0x20) this.#buffer += char;
      }
    }
    return { lines, exit };
  }
}

/** Terminal control: return to column 0 and erase the line. */
export const CLEAR_LINE = "\r\x1b[2K";

/**
 * The bytes that print `line` above the prompt: erase the prompt line, write
 * the line, then redraw the prompt and what was typed.
 */
export function printAboveText(
  line: string,
  prompt: string,
  buffer: string,
): string {
  return `${CLEAR_LINE}${line}\n${prompt}${buffer}`;
}
