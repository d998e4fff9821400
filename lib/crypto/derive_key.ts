/**
 * Fernet keys derived from another for one purpose only (domain separation,
 * PROTOCOL.md section 7.1): HMAC-SHA-256 keyed with the 32 bytes of the key
 * (its 44 base64url characters decoded) over a fixed ASCII label; the 32
 * bytes out are the derived key, signing half first, encryption half last,
 * both new. A token made under a derived key does not verify under the key
 * it came from nor under another label's key, and the other way round, so a
 * token made for one purpose cannot pass for another. Pure.
 *
 * @module
 */
import { decodeBase64Url, encodeBase64Url } from "./base64.ts";
import { hmacSha256 } from "./hmac.ts";

/**
 * The label of the key that seals removal notices (NOTICE 6 KICKED and 7
 * BANNED, PROTOCOL.md section 7.1): its 25 ASCII bytes.
 */
export const REMOVAL_NOTICE_LABEL = "mcrelay removal notice v1";

/** Size of a Fernet key in bytes: 16 signing + 16 encryption. */
const KEY_SIZE = 32;

const encoder = new TextEncoder();

/**
 * The 32 bytes of the key derived from `key` for `label`:
 * HMAC-SHA-256(key, UTF-8 bytes of label).
 *
 * @example
 * ```ts
 * import { deriveKeyBytes, REMOVAL_NOTICE_LABEL } from "./derive_key.ts";
 * const derived = deriveKeyBytes(new Uint8Array(32), REMOVAL_NOTICE_LABEL);
 * if (derived.length !== 32) throw new Error();
 * ```
 * @param key the 32 bytes of a Fernet key
 * @param label what the derived key is for (not empty)
 * @returns the derived key's 32 bytes: signing half, then encryption half
 * @throws {RangeError} when `key` is not 32 bytes or `label` is empty
 */
export function deriveKeyBytes(key: Uint8Array, label: string): Uint8Array {
  if (key.length !== KEY_SIZE) {
    throw new RangeError(
      `Cannot derive a key from ${key.length} bytes: a Fernet key is ${KEY_SIZE} bytes (its 44 base64url characters decoded)`,
    );
  }
  if (label === "") {
    throw new RangeError(
      "Cannot derive a key for an empty label: name its use",
    );
  }
  return hmacSha256(key, encoder.encode(label));
}

/**
 * {@linkcode deriveKeyBytes} on a key's text: the derived key as 44
 * base64url characters, for `FernetKey.fromText`.
 *
 * @example
 * ```ts
 * import { deriveKeyText, REMOVAL_NOTICE_LABEL } from "./derive_key.ts";
 * const text = deriveKeyText("A".repeat(43) + "=", REMOVAL_NOTICE_LABEL);
 * if (text.length !== 44) throw new Error();
 * ```
 * @param keyText a Fernet key: 44 base64url characters with padding
 * @param label what the derived key is for (not empty)
 * @throws {TypeError} when `keyText` is not base64url
 * @throws {RangeError} when it does not decode to 32 bytes or `label` is empty
 */
export function deriveKeyText(keyText: string, label: string): string {
  return encodeBase64Url(deriveKeyBytes(decodeBase64Url(keyText), label));
}
