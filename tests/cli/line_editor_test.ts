import assert from "node:assert/strict";
import {
  charWidth,
  CLEAR_LINE,
  LineEditor,
  printAboveText,
  renderPromptLine,
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

test("LineEditor ignores escape sequences it does not know", () => {
  const editor = new LineEditor();
  // Ctrl-Right, F1 (ESC O P), Insert (ESC [ 2 ~), a bare ESC then text.
  editor.feed(bytes("ab\x1b[1;5Cc\x1bOPd\x1b[2~e\x1bxf"));
  assert.equal(editor.buffer, "abcdef");
  assert.equal(editor.cursor, 6);
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

test("printAboveText() clears the prompt line, prints, and redraws the prompt line", () => {
  const editor = new LineEditor();
  editor.feed(bytes("half-typ"));
  assert.equal(
    printAboveText("[1.2.3.4:5] hi", editor.render("> ", 80)),
    "\r\x1b[2K[1.2.3.4:5] hi\n\r\x1b[2K> half-typ",
  );
  assert.equal(CLEAR_LINE, "\r\x1b[2K");
});

test("LineEditor moves with Left/Right and inserts and deletes at the cursor", () => {
  const editor = new LineEditor();
  editor.feed(bytes("helo\x1b[D"));
  assert.equal(editor.cursor, 3);
  editor.feed(bytes("l"));
  assert.equal(editor.buffer, "hello");
  assert.equal(editor.cursor, 4);
  editor.feed(bytes("\x1b[D\x7f")); // Backspace deletes before
  assert.equal(editor.buffer, "helo");
  assert.equal(editor.cursor, 2);
  editor.feed(bytes("\x1b[3~")); // Delete deletes under
  assert.equal(editor.buffer, "heo");
  assert.equal(editor.cursor, 2);
  editor.feed(bytes("\x1b[C\x1b[C\x1b[C")); // Right stops at the end
  assert.equal(editor.cursor, 3);
  editor.feed(bytes("\x1b[3~\x04")); // Delete and Ctrl-D at the end: nothing
  assert.equal(editor.buffer, "heo");
  editor.feed(bytes("\x1bOD\x1bOD\x1bOD\x1bOD\x7f")); // Left in application mode, stops at 0
  assert.equal(editor.cursor, 0);
  assert.equal(editor.buffer, "heo");
  assert.equal(editor.feed(bytes("\x04")).exit, false); // Ctrl-D deletes under
  assert.equal(editor.buffer, "eo");
});

test("LineEditor goes to the start and end with Home/End in every encoding and Ctrl-A/Ctrl-E", () => {
  for (
    const [home, end] of [
      ["\x1b[H", "\x1b[F"],
      ["\x1bOH", "\x1bOF"],
      ["\x1b[1~", "\x1b[4~"],
      ["\x1b[7~", "\x1b[8~"],
      ["\x01", "\x05"],
    ]
  ) {
    const editor = new LineEditor();
    editor.feed(bytes(`world${home}`));
    assert.equal(editor.cursor, 0, JSON.stringify(home));
    editor.feed(bytes(`hello ${end}!`));
    assert.equal(editor.buffer, "hello world!", JSON.stringify(end));
  }
});

test("LineEditor's Ctrl-W deletes the word before the cursor only", () => {
  const editor = new LineEditor();
  editor.feed(bytes("one two three\x1b[D\x1b[D\x1b[D\x1b[D\x1b[D\x17"));
  assert.equal(editor.buffer, "one three");
  assert.equal(editor.cursor, 4);
});

test("LineEditor recalls entered lines with Up/Down, keeps the draft, and bounds the history", () => {
  const editor = new LineEditor({ historySize: 3 });
  editor.feed(bytes("first\rsecond\rsecond\r   \rthird\rfourth\r"));
  // Blank lines and a repeat of the last line are not kept; the oldest goes.
  assert.deepEqual(editor.history, ["second", "third", "fourth"]);
  editor.feed(bytes("draft\x1b[A"));
  assert.equal(editor.buffer, "fourth");
  assert.equal(editor.cursor, 6);
  editor.feed(bytes("\x1b[A\x1b[A\x1b[A\x1b[A")); // stops at the oldest
  assert.equal(editor.buffer, "second");
  editor.feed(bytes("\x1bOB")); // Down in application mode
  assert.equal(editor.buffer, "third");
  editor.feed(bytes("\x1b[B\x1b[B\x1b[B"));
  assert.equal(editor.buffer, "draft"); // back to what was being typed
  editor.feed(bytes("\x1b[A!"));
  assert.deepEqual(editor.feed(bytes("\r")).lines, ["fourth!"]);
  assert.deepEqual(editor.history, ["third", "fourth", "fourth!"]);
});

test("renderPromptLine() writes prompt and line and moves the cursor back to its place", () => {
  assert.equal(
    renderPromptLine("> ", [..."hello"], 5, 80),
    "\r\x1b[2K> hello",
  );
  assert.equal(
    renderPromptLine("> ", [..."hello"], 2, 80),
    "\r\x1b[2K> hello\x1b[3D",
  );
  assert.equal(renderPromptLine("> ", [], 0, 80), "\r\x1b[2K> ");
});

test("renderPromptLine() never fills a row: a line wider than the terminal scrolls with the cursor", () => {
  const line = [..."abcdefghijklmnopqrstuvwxyz"];
  // 12 columns: prompt 2, 9 for text, the last column stays free.
  assert.equal(
    renderPromptLine("> ", line, 26, 12),
    "\r\x1b[2K> stuvwxyz",
  );
  assert.equal(
    renderPromptLine("> ", line, 0, 12),
    "\r\x1b[2K> abcdefghi\x1b[9D",
  );
  assert.equal(
    renderPromptLine("> ", line, 10, 12),
    "\r\x1b[2K> cdefghijk\x1b[1D",
  );
  for (let cursor = 0; cursor <= line.length; cursor++) {
    const shown = renderPromptLine("> ", line, cursor, 12)
      // deno-lint-ignore no-control-regex
      .slice(CLEAR_LINE.length).replace(/\x1b\[\d+D$/, "");
    assert.ok(shown.length <= 11, `${cursor}: ${shown}`);
  }
});

test("renderPromptLine() counts wide characters as two columns", () => {
  assert.equal(charWidth("a"), 1);
  assert.equal(charWidth("漢"), 2);
  assert.equal(charWidth("😀"), 2);
  assert.equal(charWidth("\u0301"), 0);
  // 10 columns: prompt 2, 7 for text and the cursor's cell.
  assert.equal(
    renderPromptLine("> ", [..."漢字漢字x"], 5, 10),
    "\r\x1b[2K> 漢字x",
  );
  assert.equal(
    renderPromptLine("> ", [..."漢字漢字x"], 1, 10),
    "\r\x1b[2K> 漢字漢\x1b[4D",
  );
});
