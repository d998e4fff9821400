/**
 * The WebCrypto backend of `FernetKey`: asynchronous, through
 * `crypto.subtle` (AES-CBC with its own PKCS#7 padding, HMAC-SHA256).
 *
 * @module
 */
import { encodeBase64UrlToAscii } from "./base64.ts";
import {
  checkTime,
  type DecryptedToken,
  encryptArgs,
  type FernetDecryptOptions,
  type FernetEncryptOptions,
  HEADER_SIZE,
  HMAC_SIZE,
  IV_OFFSET,
  paddingError,
  parseRaw,
  signatureError,
  tokenHeader,
} from "./fernet_format.ts";

/** The imported keys of a WebCrypto-backend key. */
export interface WebCryptoKeys {
  /** HMAC-SHA256 under the 16 signing bytes. */
  readonly hmacKey: CryptoKey;
  /** AES-CBC under the 16 encryption bytes. */
  readonly aesKey: CryptoKey;
}

/** Returns `bytes` typed for WebCrypto, copying only when it is not backed by a plain ArrayBuffer. */
function own(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes.buffer instanceof ArrayBuffer
    ? bytes as Uint8Array<ArrayBuffer>
    : new Uint8Array(bytes);
}

/** Imports the 32-byte raw key `raw` (16 signing, then 16 encryption bytes). */
export async function importWebCryptoKeys(
  raw: Uint8Array<ArrayBuffer>,
): Promise<WebCryptoKeys> {
  const [hmacKey, aesKey] = await Promise.all([
    crypto.subtle.importKey(
      "raw",
      raw.slice(0, 16),
      { name: "HMAC", hash: "SHA-256" },
      false,
      ["sign", "verify"],
    ),
    crypto.subtle.importKey("raw", raw.slice(16, 32), "AES-CBC", false, [
      "encrypt",
      "decrypt",
    ]),
  ]);
  return { hmacKey, aesKey };
}

/** Encrypts `plaintext` into a token's ASCII bytes; see `FernetKey.encrypt`. */
export async function encryptWebCrypto(
  keys: WebCryptoKeys,
  plaintext: Uint8Array,
  options: FernetEncryptOptions,
): Promise<Uint8Array> {
  const { timestamp, iv } = encryptArgs(options);
  const ct = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-CBC", iv: own(iv) },
      keys.aesKey,
      own(plaintext),
    ),
  );
  const token = tokenHeader(ct.length, timestamp, iv);
  token.set(ct, HEADER_SIZE);
  const signed = token.subarray(0, HEADER_SIZE + ct.length);
  const mac = await crypto.subtle.sign("HMAC", keys.hmacKey, signed);
  token.set(new Uint8Array(mac), HEADER_SIZE + ct.length);
  return encodeBase64UrlToAscii(token);
}

/**
 * Verifies and decrypts a token; see `FernetKey.decrypt`.
 * @throws {InvalidTokenError} naming the failed check
 */
export async function decryptWebCrypto(
  keys: WebCryptoKeys,
  token: Uint8Array | string,
  options: FernetDecryptOptions,
): Promise<DecryptedToken> {
  const { raw, fields } = parseRaw(token);
  const signed = raw.subarray(0, raw.length - HMAC_SIZE);
  const ok = await crypto.subtle.verify(
    "HMAC",
    keys.hmacKey,
    raw.subarray(raw.length - HMAC_SIZE),
    signed,
  );
  if (!ok) throw signatureError();
  checkTime(fields.timestamp, options);
  let plaintext: Uint8Array;
  try {
    plaintext = new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-CBC", iv: raw.subarray(IV_OFFSET, HEADER_SIZE) },
        keys.aesKey,
        raw.subarray(HEADER_SIZE, raw.length - HMAC_SIZE),
      ),
    );
  } catch {
    throw paddingError();
  }
  return { plaintext, timestamp: fields.timestamp, iv: fields.iv };
}
