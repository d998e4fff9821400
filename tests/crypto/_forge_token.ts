/**
 * Test helper shared by the Fernet tests: a correctly signed token around
 * arbitrary ciphertext, to reach the checks that follow the HMAC.
 *
 * @module
 */
import { createHmac } from "node:crypto";
import { decodeBase64Url, encodeBase64Url } from "../../lib/crypto/base64.ts";

/** Builds a token with a valid HMAC under `keyText` around `ciphertext` (independently of lib/crypto/fernet.ts). */
export function forge(
  keyText: string,
  timestamp: number,
  iv: Uint8Array,
  ciphertext: Uint8Array,
): string {
  const key = decodeBase64Url(keyText);
  const body = new Uint8Array(25 + ciphertext.length);
  body[0] = 0x80;
  new DataView(body.buffer).setBigUint64(1, BigInt(timestamp));
  body.set(iv, 9);
  body.set(ciphertext, 25);
  const mac = createHmac("sha256", key.subarray(0, 16)).update(body).digest();
  const token = new Uint8Array(body.length + 32);
  token.set(body);
  token.set(mac, body.length);
  return encodeBase64Url(token);
}
