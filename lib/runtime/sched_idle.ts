/**
 * Linux's `SCHED_IDLE` scheduling policy for the calling thread, set through
 * libc (FFI). A thread under it runs only when no normal thread wants the
 * CPU, and a normal thread that wakes preempts it at once. Niceness 19 does
 * not give that: under the kernel's EEVDF scheduler a nice-19 thread that got
 * the CPU may keep it for its whole time slice (milliseconds) while the
 * relay's event loop waits. Measured in PERFORMANCE.md.
 *
 * Loading libc needs `--allow-ffi`, which lifts Deno's sandbox for the
 * process: hence opt-in (`--rsa-sched-idle`).
 *
 * @module
 */

/** Linux's number for the policy (`<sched.h>`). */
export const SCHED_IDLE = 5;

/** The C library (glibc on Linux): `sched_setscheduler` here, the sockets of udp_mmsg_libc.ts. */
export const LIBC = "libc.so.6";

/** Why the calling thread could not be put under `SCHED_IDLE`. */
export class SchedIdleError extends Error {
  override name = "SchedIdleError";
}

/**
 * Whether this process may load libc (`--allow-ffi`), and the reason in
 * words when it may not; undefined when it may.
 */
export function schedIdleUnavailable(): string | undefined {
  if (Deno.build.os !== "linux") {
    return `SCHED_IDLE exists on Linux only, not on ${Deno.build.os}`;
  }
  // Unscoped: Deno resolves a scoped library name against the working
  // directory, where dlopen would then look for it.
  const { state } = Deno.permissions.querySync({ name: "ffi" });
  return state === "granted"
    ? undefined
    : `SCHED_IDLE is set through ${LIBC} and needs --allow-ffi`;
}

/**
 * Puts the calling thread (only it: Linux schedules threads, and pid 0 names
 * the caller) under `SCHED_IDLE`, and checks that it took.
 * @throws {SchedIdleError} when libc cannot be loaded or the kernel refuses
 */
export function enterSchedIdle(): void {
  const unavailable = schedIdleUnavailable();
  if (unavailable) throw new SchedIdleError(unavailable);
  let lib;
  try {
    lib = Deno.dlopen(LIBC, {
      sched_setscheduler: {
        parameters: ["i32", "i32", "buffer"],
        result: "i32",
      },
      sched_getscheduler: { parameters: ["i32"], result: "i32" },
    });
  } catch (error) {
    throw new SchedIdleError(
      `cannot load ${LIBC}: ${(error as Error).message}`,
    );
  }
  try {
    // struct sched_param { int sched_priority; }: 0, as SCHED_IDLE requires.
    const param = new Uint8Array(4);
    if (
      lib.symbols.sched_setscheduler(0, SCHED_IDLE, param) !== 0 ||
      lib.symbols.sched_getscheduler(0) !== SCHED_IDLE
    ) {
      throw new SchedIdleError("the kernel refused SCHED_IDLE for this thread");
    }
  } finally {
    lib.close();
  }
}
