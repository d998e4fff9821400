/**
 * The one event stream of the relay client and the basic server
 * (lib/relay/event_stream.ts): listeners, bounded readers that drop their
 * oldest events (counted), filtered readers (what they skip is neither
 * queued nor counted), readers that end with the endpoint or their signal,
 * and the buffer size check. Pure: no sockets, no timers.
 */
import assert from "node:assert/strict";
import { EventStream } from "../../lib/relay/event_stream.ts";

/** Everything `reader` yields until it ends. */
async function readAll<T>(reader: AsyncIterable<T>): Promise<T[]> {
  const read: T[] = [];
  for await (const event of reader) read.push(event);
  return read;
}

Deno.test("a slow reader keeps the newest bufferSize events and counts the rest as dropped", async () => {
  const stopped = new AbortController();
  const stream = new EventStream<number>({
    bufferSize: 3,
    stopped: stopped.signal,
  });
  const heard: number[] = [];
  stream.onEvent((n) => heard.push(n));
  const reader = stream.events();
  for (let n = 1; n <= 5; n++) stream.emit(n);
  stopped.abort();
  assert.deepEqual(await readAll(reader), [3, 4, 5]);
  assert.deepEqual(heard, [1, 2, 3, 4, 5]);
  assert.equal(stream.dropped, 2);
});

Deno.test("a filtered reader queues and counts only the events it accepts", async () => {
  const stopped = new AbortController();
  const stream = new EventStream<{ type: string }>({
    bufferSize: 2,
    stopped: stopped.signal,
  });
  const everything = stream.events();
  const messages = stream.events(
    undefined,
    (event): event is { type: "message" } => event.type === "message",
  );
  stream.emit({ type: "join" });
  stream.emit({ type: "message" });
  stream.emit({ type: "leave" });
  stopped.abort();
  assert.deepEqual(await readAll(messages), [{ type: "message" }]);
  assert.deepEqual((await readAll(everything)).map((e) => e.type), [
    "message",
    "leave",
  ]);
  assert.equal(stream.dropped, 1); // "join", by the unfiltered reader
});

Deno.test("a reader ends when its signal aborts, others read on; an ended reader no longer listens", async () => {
  const stopped = new AbortController();
  const stream = new EventStream<number>({
    bufferSize: 1,
    stopped: stopped.signal,
  });
  const mine = new AbortController();
  const short = stream.events(mine.signal)[Symbol.asyncIterator]();
  const long = stream.events()[Symbol.asyncIterator]();
  const waiting = short.next();
  mine.abort();
  assert.deepEqual(await waiting, { done: true, value: undefined });
  stream.emit(7);
  assert.deepEqual(await long.next(), { done: false, value: 7 });
  stream.emit(8);
  assert.deepEqual(await long.next(), { done: false, value: 8 });
  stopped.abort();
  assert.equal((await long.next()).done, true);
  // Had the ended reader still queued 7 and 8, it would have dropped one.
  assert.equal(stream.dropped, 0);
});

Deno.test("a listener that throws does not keep the event from the others; unsubscribing stops a listener", () => {
  const stream = new EventStream<number>({
    bufferSize: 1,
    stopped: new AbortController().signal,
  });
  const heard: number[] = [];
  stream.onEvent(() => {
    throw new Error("listener bug");
  });
  const stop = stream.onEvent((n) => heard.push(n));
  stream.emit(1);
  stop();
  stream.emit(2);
  assert.deepEqual(heard, [1]);
});

Deno.test("a buffer size that is not a positive whole number is a RangeError", () => {
  const stopped = new AbortController().signal;
  for (const bufferSize of [0, -1, 1.5, Number.NaN]) {
    assert.throws(
      () => new EventStream({ bufferSize, stopped }),
      RangeError,
      String(bufferSize),
    );
  }
});

Deno.test("a reader returned before its first read, or thrown into, stops listening at once", async () => {
  const stopped = new AbortController();
  const stream = new EventStream<number>({
    bufferSize: 4,
    stopped: stopped.signal,
  });
  const returned = stream.events();
  const thrown = stream.events();
  assert.equal(stream.listening, true);
  assert.deepEqual(await returned.return(undefined), {
    done: true,
    value: undefined,
  });
  await assert.rejects(thrown.throw(new Error("reader gave up")), /gave up/);
  assert.equal(stream.listening, false);
  stream.emit(1); // queued for nobody
  assert.equal(stream.dropped, 0);
  stopped.abort();
});
