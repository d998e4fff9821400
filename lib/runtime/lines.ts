/**
 * Splits a stream of bytes into text lines (LF or CRLF), for the control port
 * and the interactive client. Pure.
 *
 * @module
 */

/** Accumulates bytes and hands back complete lines, without their line ends. */
export class LineSplitter {
  readonly #decoder = new TextDecoder();
  #pending = "";

  /** Adds bytes; returns the lines they complete. */
  push(bytes: Uint8Array): string[] {
    this.#pending += this.#decoder.decode(bytes, { stream: true });
    const lines: string[] = [];
    let newline: number;
    while ((newline = this.#pending.indexOf("\n")) >= 0) {
      lines.push(this.#pending.slice(0, newline).replace(/\r$/, ""));
      this.#pending = this.#pending.slice(newline + 1);
    }
    return lines;
  }

  /** At end of input: the last line when it had no line end (none otherwise). */
  end(): string[] {
    const rest = this.#pending + this.#decoder.decode();
    this.#pending = "";
    return rest === "" ? [] : [rest.replace(/\r$/, "")];
  }

  /** Characters of the line not yet ended. */
  get pendingLength(): number {
    return this.#pending.length;
  }
}
