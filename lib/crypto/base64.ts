/**
 * Strict base64 and base64url codecs over bytes (padding required on decode
 * where the Fernet format has it). Pure.
 *
 * @module
 */

/** Encodes bytes as base64url with `=` padding (the Fernet token and key form). */
export function encodeBase64Url(bytes: Uint8Array): string {
  throw new Error("not implemented" + bytes);
}

/**
 * Decodes base64url text or ASCII bytes, padding required (length a multiple of 4).
 * @throws {TypeError} on a character outside the base64url alphabet, bad length or bad padding
 */
export function decodeBase64Url(
  text: string | Uint8Array,
): Uint8Array<ArrayBuffer> {
  throw new Error("not implemented" + text);
}

/** Encodes bytes as standard base64 (`+/`), with padding unless `pad` is false. */
export function encodeBase64(bytes: Uint8Array, pad = true): string {
  throw new Error("not implemented" + bytes + pad);
}

/**
 * Decodes standard base64 (`+/`), padding optional.
 * @throws {TypeError} on a character outside the alphabet or an impossible length
 */
export function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  throw new Error("not implemented" + text);
}
