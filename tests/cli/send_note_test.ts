import assert from "node:assert/strict";
import { sendNote } from "../../lib/cli/interactive.ts";

const test = (name: string, fn: () => void) =>
  Deno.test({ name, permissions: "none", fn });

test("sendNote() says a line waits while not connected, and reached no one when alone", () => {
  assert.match(
    sendNote({ connected: false, others: 2 }, "before")!,
    /^not connected: /,
  );
  assert.equal(sendNote({ connected: true, others: 0 }, "before"), undefined);
  assert.equal(
    sendNote({ connected: true, others: 0 }, "after"),
    "(no one else is here)",
  );
  assert.equal(sendNote({ connected: true, others: 1 }, "after"), undefined);
  assert.equal(sendNote({ connected: false, others: 0 }, "after"), undefined);
});
