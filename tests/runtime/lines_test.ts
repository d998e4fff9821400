import assert from "node:assert/strict";
import { LineSplitter } from "../../lib/runtime/lines.ts";

const bytes = (text: string) => new TextEncoder().encode(text);

Deno.test({
  name: "LineSplitter returns complete lines across odd splits, LF and CRLF",
  permissions: "none",
  fn() {
    const splitter = new LineSplitter();
    const input = bytes("help\r\nkick 1.2.3.4:5\n\nexit\nhalf");
    const lines: string[] = [];
    // Feed one byte at a time: lines come out whole and in order.
    for (let i = 0; i < input.length; i++) {
      lines.push(...splitter.push(input.subarray(i, i + 1)));
    }
    assert.deepEqual(lines, ["help", "kick 1.2.3.4:5", "", "exit"]);
    assert.equal(splitter.pendingLength, 4);
    const euro = bytes("€\n");
    assert.deepEqual(splitter.push(euro.subarray(0, 2)), []);
    assert.deepEqual(splitter.push(euro.subarray(2)), ["half€"]);
  },
});

Deno.test({
  name:
    "LineSplitter.end() returns an unterminated last line (a split character completed), and nothing after a line end",
  permissions: "none",
  fn() {
    const splitter = new LineSplitter();
    const euro = bytes("€");
    assert.deepEqual(splitter.push(bytes("one\r\nlast ")), ["one"]);
    assert.deepEqual(splitter.push(euro.subarray(0, 1)), []);
    assert.deepEqual(splitter.push(euro.subarray(1)), []);
    assert.deepEqual(splitter.end(), ["last €"]);
    assert.deepEqual(splitter.end(), []);
    assert.deepEqual(splitter.push(bytes("whole\r\n")), ["whole"]);
    assert.deepEqual(splitter.end(), []);
    assert.deepEqual(new LineSplitter().push(bytes("x\r")), []);
  },
});
