import assert from "node:assert/strict";
import {
  CLEAR_LINE,
  LineEditor,
  printAboveText,
} from "../../lib/cli/line_editor.ts";

const bytes = (text: string) => new TextEncoder().encode(text);
const test = (name: string, fn: () => void) =>
  Deno.test({ name, permissions: "none", fn });

test("LineEditor completes a line on Enter (CR or LF) and keeps the rest", () => {
  const editor = new LineEditor();
  assert.deepEqual(editor.feed(bytes("hello\rwor")), {
    lines: ["hello"],
    exit: false,
  });
  assert.equal(editor.buffer, "wor");
  assert.deepEqual(editor.feed(bytes("ld\n")).lines, ["world"]);
  assert.equal(editor.buffer, "");
});

test("LineEditor handles backspace, Ctrl-U and Ctrl-W", () => {
  const editor = new LineEditor();
  editor.feed(bytes("helloo\x7f"));
  assert.equal(editor.buffer, "hello");
  editor.feed(bytes(" big world\x17"));
  assert.equal(editor.buffer, "hello big ");
  editor.feed(bytes("\x15"));
  assert.equal(editor.buffer, "");
  editor.feed(bytes("\x7f\x7f")); // backspace on empty stays empty
  assert.equal(editor.buffer, "");
});

test("LineEditor ignores escape sequences such as arrow keys", () => {
  const editor = new LineEditor();
  editor.feed(bytes("ab\x1b[Dc\x1b[1;5C\x1bOd"));
  // ESC O is a two-byte sequence: only "O" is swallowed, "d" stays.
  assert.equal(editor.buffer, "abcd");
});

test("LineEditor keeps multi-byte characters whole across reads and deletes them whole", () => {
  const editor = new LineEditor();
  const euro = bytes("€"); // 3 bytes
  editor.feed(euro.subarray(0, 1));
  editor.feed(euro.subarray(1));
  assert.equal(editor.buffer, "€");
  editor.feed(bytes("😀\x7f"));
  assert.equal(editor.buffer, "€");
});

test("LineEditor exits on Ctrl-C, and on Ctrl-D only when the line is empty", () => {
  const editor = new LineEditor();
  assert.equal(editor.feed(bytes("abc\x04")).exit, false);
  assert.equal(editor.feed(bytes("\x15\x04")).exit, true);
  assert.equal(new LineEditor().feed(bytes("typing\x03")).exit, true);
});

test("printAboveText() clears the prompt line, prints, and redraws prompt and typed text", () => {
  assert.equal(
    printAboveText("[1.2.3.4:5] hi", "> ", "half-typ"),
    `${CLEAR_LINE}[1.2.3.4:5] hi\n> half-typ`,
  );
  assert.equal(CLEAR_LINE, "\r\x1b[2K");
});
