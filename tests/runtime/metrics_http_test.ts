/**
 * The HTTP health and metrics endpoint on 127.0.0.1: 503 "starting" on both
 * paths until the service says it is ready (the relay's RSA threads start
 * after the port opens), then `ok` and the rendered metrics.
 */
import assert from "node:assert/strict";
import { MetricsServer } from "../../lib/runtime/metrics_http.ts";

Deno.test("metrics endpoint: 503 starting until ready, then /healthz ok and /metrics rendered", async () => {
  let ready = false;
  let renders = 0;
  await using metrics = MetricsServer.listen({
    hostname: "127.0.0.1",
    port: 0,
    contentType: "text/plain; version=0.0.4",
    ready: () => ready,
    render: () => `mcrelay_test ${++renders}\n`,
  });
  const get = async (path: string) => {
    const response = await fetch(
      `http://${metrics.address}${path}`,
    );
    return { status: response.status, body: await response.text() };
  };
  assert.deepEqual(await get("/healthz"), { status: 503, body: "starting\n" });
  assert.deepEqual(await get("/metrics"), { status: 503, body: "starting\n" });
  assert.equal(renders, 0, "nothing is rendered before the service is ready");
  ready = true;
  assert.deepEqual(await get("/healthz"), { status: 200, body: "ok\n" });
  assert.deepEqual(await get("/metrics"), {
    status: 200,
    body: "mcrelay_test 1\n",
  });
});
