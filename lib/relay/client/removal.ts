/**
 * The checks of a removal notice (NOTICE 6 KICKED, 7 BANNED; PROTOCOL.md
 * section 7). A hybrid client acts only on a body that opens under the key
 * derived from its own for removal notices (every token check; a relayed
 * message under its own key does not open) and names the same code;
 * anything else is ignored and counted (`removal_notice_*`), so nobody but
 * the server can make it leave. An RSA-profile client has no key to check
 * with and takes the plain text.
 *
 * @module
 */
import { REMOVAL_NOTICE_LABEL } from "../../crypto/derive_key.ts";
import type { TokenGuard } from "../../crypto/token_guard.ts";
import {
  decodeRemoval,
  parseRemovalText,
  type RemovalNotice,
} from "../../wire/notice.ts";
import type { Session } from "./session.ts";

const decoder = new TextDecoder();

/** Opens the removal notices of one client; see the module comment. */
export class RemovalNotices {
  readonly #session: Session;
  /**
   * The guard of removal notices (PROTOCOL.md section 7.1) per key, derived
   * once so that its replay window holds for that key.
   */
  readonly #guards = new WeakMap<TokenGuard, Promise<TokenGuard>>();

  /** @param session the client's shared state (its key, drops, clock) */
  constructor(session: Session) {
    this.#session = session;
  }

  /**
   * The notice the server sent, or undefined when the body does not pass
   * (counted in the drops).
   * @param code the NOTICE code (6 or 7)
   * @param body the NOTICE value after its code
   */
  async open(
    code: number,
    body: Uint8Array,
  ): Promise<RemovalNotice | undefined> {
    const session = this.#session;
    const drop = (reason: string) => {
      session.drops.drop(reason, session.serverAddress);
      return undefined;
    };
    try {
      if (session.profile !== "hybrid") {
        return parseRemovalText(code, decoder.decode(body));
      }
      const guard = session.guard;
      if (!guard) {
        session.drops.count("removal_notice_unexpected");
        return undefined;
      }
      let removal = this.#guards.get(guard);
      if (!removal) {
        removal = guard.derive(REMOVAL_NOTICE_LABEL);
        this.#guards.set(guard, removal);
      }
      const opened = await (await removal).open(body, session.now());
      if (!opened.ok) return drop(`removal_notice_${opened.reason}`);
      const notice = decodeRemoval(opened.plaintext);
      if (notice.code !== code) return drop("removal_notice_code_mismatch");
      return notice;
    } catch {
      return drop("removal_notice_malformed");
    }
  }
}
