/**
 * The thread of {@linkcode RsaDecryptPool}: RSA-OAEP-SHA-256 decryption with
 * `node:crypto`, synchronously on this worker's own thread, which lowers its
 * scheduling priority first (when allowed: niceness 19, and on request
 * Linux's SCHED_IDLE) so that key exchanges use idle cores and never take a
 * core from the relay's event loop.
 *
 * Messages in: {@linkcode RsaWorkerInit} once, then {@linkcode RsaWorkerJob}s.
 * Messages out: {@linkcode RsaWorkerReady}, then one {@linkcode RsaWorkerResult}
 * per job, in order.
 *
 * @module
 */
import { constants, createPrivateKey, privateDecrypt } from "node:crypto";
import { setPriority } from "node:os";
import { Buffer } from "node:buffer";
import { enterSchedIdle } from "./sched_idle.ts";

/** First message: the key (PKCS#8 DER) and the priority to take. */
export interface RsaWorkerInit {
  readonly type: "init";
  readonly pkcs8: Uint8Array;
  /** Niceness for this thread (0-19), or undefined to keep the parent's. */
  readonly nice: number | undefined;
  /** Also put this thread under SCHED_IDLE (Linux, `--allow-ffi`). */
  readonly idle: boolean;
}

/** One block to decrypt. */
export interface RsaWorkerJob {
  readonly type: "job";
  readonly id: number;
  readonly block: Uint8Array;
}

/** Answer to the init message. */
export interface RsaWorkerReady {
  readonly type: "ready";
  /** Whether the thread runs at the requested niceness. */
  readonly niced: boolean;
  /** Whether the thread runs under SCHED_IDLE. */
  readonly idle: boolean;
  /** Why SCHED_IDLE, when asked for, could not be set. */
  readonly idleError?: string;
  /** Why the key could not be imported, if it could not. */
  readonly error?: string;
}

/** Answer to a job: the plaintext, or `undefined` when decryption failed. */
export interface RsaWorkerResult {
  readonly type: "result";
  readonly id: number;
  readonly plaintext: Uint8Array | undefined;
}

/** The worker scope, typed without the worker lib (the project is checked as one program). */
const scope = globalThis as unknown as {
  onmessage: (event: MessageEvent<RsaWorkerInit | RsaWorkerJob>) => void;
  postMessage(
    message: RsaWorkerReady | RsaWorkerResult,
    transfer?: Transferable[],
  ): void;
};

/** The key as PKCS#8 PEM: measured 3% faster per call than a KeyObject, which Deno re-exports to PEM on every call. */
let key: string | undefined;

scope.onmessage = (event) => {
  const message = event.data;
  if (message.type === "init") {
    let niced = false;
    if (message.nice !== undefined) {
      try {
        // On Linux, priority applies per thread: this one only.
        setPriority(message.nice);
        niced = true;
      } catch {
        // No --allow-sys=setPriority: stay at the parent's priority.
      }
    }
    let idle = false;
    let idleError: string | undefined;
    if (message.idle) {
      try {
        enterSchedIdle();
        idle = true;
      } catch (error) {
        idleError = (error as Error).message;
      }
    }
    const ready = { type: "ready", niced, idle, idleError } as const;
    try {
      key = createPrivateKey({
        key: Buffer.from(message.pkcs8),
        format: "der",
        type: "pkcs8",
      }).export({ type: "pkcs8", format: "pem" }) as string;
      scope.postMessage(ready);
    } catch (error) {
      scope.postMessage({ ...ready, error: String(error) });
    }
    return;
  }
  let plaintext: Uint8Array<ArrayBuffer> | undefined;
  try {
    plaintext = new Uint8Array(privateDecrypt({
      key: key!,
      padding: constants.RSA_PKCS1_OAEP_PADDING,
      oaepHash: "sha256",
    }, message.block));
  } catch {
    plaintext = undefined;
  }
  scope.postMessage(
    { type: "result", id: message.id, plaintext },
    plaintext ? [plaintext.buffer] : [],
  );
};
