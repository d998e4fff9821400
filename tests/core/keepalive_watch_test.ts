/**
 * KeepaliveWatch: the 3-missed rule and how unauthenticated hints (NOTICE 1
 * and 5) turn into probes, with the times given by the test.
 *
 * @module
 */
import assert from "node:assert/strict";
import { KeepaliveWatch } from "../../lib/core/keepalive_watch.ts";

Deno.test({
  name:
    "KeepaliveWatch: unreachable only after 3 unanswered keep-alives of a server that answered once",
  permissions: "none",
  fn() {
    const watch = new KeepaliveWatch(3, 1000);
    for (let i = 0; i < 5; i++) watch.sent();
    assert.equal(watch.unreachable, false, "a v1 server never answers");
    watch.answered(0);
    watch.sent();
    watch.sent();
    assert.equal(watch.unreachable, false);
    watch.sent();
    assert.equal(watch.unreachable, true);
    watch.registered();
    assert.equal(watch.unreachable, false, "counting starts again");
    watch.serverChanged();
    for (let i = 0; i < 3; i++) watch.sent();
    assert.equal(watch.unreachable, false, "a new server key has not answered");
  },
});

Deno.test({
  name:
    "KeepaliveWatch: a hint probes at once, or when the interval after an answer is over; one probe at a time",
  permissions: "none",
  fn() {
    const watch = new KeepaliveWatch(3, 1000);
    assert.equal(watch.hint(0), 0, "no answer yet: probe at once");
    assert.equal(watch.probing, false, "nothing held before the probe is out");
    watch.probeSent();
    assert.equal(watch.probing, true, "messages wait for the probe's answer");
    assert.equal(watch.hint(10), "ignore", "a probe is running");
    assert.equal(watch.probeExpired(), true, "no answer: the probe failed");
    assert.equal(watch.probing, false);

    watch.answered(5_000);
    assert.equal(watch.hint(5_300), 700, "probed when the second is over");
    assert.equal(watch.hint(5_400), "ignore", "a flood costs one probe");
    assert.equal(watch.probing, false, "a probe only due holds nothing");
    watch.probeSent();
    watch.answered(6_000); // the answer ends the probe
    assert.equal(watch.probing, false);
    assert.equal(watch.probeExpired(), false);
    assert.equal(watch.hint(7_500), 0);
  },
});
