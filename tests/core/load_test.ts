import assert from "node:assert/strict";
import { LoadMeter } from "../../lib/core/load.ts";

Deno.test({
  name: "a window's utilization is 1 - waited / length, taken when it closes",
  permissions: "none",
  fn() {
    const meter = new LoadMeter({ windowMs: 100, overloadedAt: 0.9 });
    assert.equal(meter.utilization, 0);
    assert.equal(meter.overloaded, false);
    // Window from t=0: waits of 2 + 3 ms, then one report at 100 closes it.
    meter.waited(0, 2);
    meter.waited(50, 53);
    assert.equal(meter.utilization, 0, "the window is still open at 53 ms");
    meter.waited(95, 100);
    assert.equal(meter.utilization, 0.9);
    assert.equal(meter.overloaded, true, "90% is the threshold: overloaded");
    // Next window from t=100: 50 ms waited of 120 ms.
    meter.waited(110, 160);
    meter.waited(219, 220);
    assert.ok(Math.abs(meter.utilization - (1 - 51 / 120)) < 1e-9);
    assert.equal(meter.overloaded, false);
  },
});

Deno.test({
  name:
    "a loop that never waits reads 1; a long idle wait reads about 0; the value stays in [0, 1]",
  permissions: "none",
  fn() {
    const meter = new LoadMeter();
    for (let t = 0; t <= 300; t += 10) meter.waited(t, t);
    assert.equal(meter.utilization, 1);
    assert.equal(meter.overloaded, true);
    meter.waited(300, 5300); // 5 s without input
    assert.equal(meter.utilization, 0);
    assert.equal(meter.overloaded, false);
    meter.waited(5400, 5300); // a clock that went back counts as no wait
    assert.ok(meter.utilization >= 0 && meter.utilization <= 1);
  },
});

Deno.test({
  name: "the constructor refuses a window or threshold out of range",
  permissions: "none",
  fn() {
    for (const windowMs of [0, -1, NaN, Infinity]) {
      assert.throws(() => new LoadMeter({ windowMs }), RangeError);
    }
    for (const overloadedAt of [0, -0.1, 1.01, NaN]) {
      assert.throws(() => new LoadMeter({ overloadedAt }), RangeError);
    }
    assert.equal(new LoadMeter({ overloadedAt: 1 }).overloadedAt, 1);
  },
});
