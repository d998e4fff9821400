import assert from "node:assert/strict";
import { runGroupChat } from "../../examples/group_chat.ts";

Deno.test("examples/group_chat.ts delivers each member's hello to the two others exactly once", async () => {
  const lines = await runGroupChat(() => {});
  const got = lines.filter((line) => line.includes(" got ")).sort();
  assert.deepEqual(got, [
    'alice got "hello from bob" from bob',
    'alice got "hello from carol" from carol',
    'bob got "hello from alice" from alice',
    'bob got "hello from carol" from carol',
    'carol got "hello from alice" from alice',
    'carol got "hello from bob" from bob',
  ]);
});
