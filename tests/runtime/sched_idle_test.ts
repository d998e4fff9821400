import assert from "node:assert/strict";
import {
  enterSchedIdle,
  SchedIdleError,
  schedIdleUnavailable,
} from "../../lib/runtime/sched_idle.ts";

Deno.test({
  name:
    "without --allow-ffi SCHED_IDLE is unavailable, with a reason naming the flag, and enterSchedIdle() throws it",
  permissions: "none",
  fn() {
    const reason = schedIdleUnavailable();
    assert.match(reason ?? "", /--allow-ffi|Linux only/);
    assert.throws(
      () => enterSchedIdle(),
      (error: unknown) =>
        error instanceof SchedIdleError && error.message === reason,
    );
  },
});
