/**
 * Fernet tokens (https://github.com/fernet/spec): AES-128-CBC + HMAC-SHA256,
 * version 0x80, ASCII base64url with padding. This module is the public face:
 * {@linkcode FernetKey} (key text, generation, backend choice) and the token
 * types. Two interchangeable backends do the cryptography: WebCrypto
 * (`fernet_webcrypto.ts`) and `node:crypto` (`fernet_node.ts`); the default is
 * chosen by benchmark (PERFORMANCE.md). The node backend is synchronous, can
 * write a token straight into a caller's buffer, and can keep one cipher per
 * key ({@linkcode FernetKeyOptions.persistentCiphers}). The token format
 * itself is in `fernet_format.ts`. Time and IV are injectable for tests.
 *
 * @module
 */
import { InvalidKeyError } from "../errors.ts";
import {
  base64UrlEncodedLength,
  decodeBase64Url,
  encodeBase64UrlToAscii,
} from "./base64.ts";
import {
  type DecryptedToken,
  type FernetDecryptOptions,
  type FernetEncryptOptions,
  HEADER_SIZE,
  HMAC_SIZE,
  paddedLength,
} from "./fernet_format.ts";
import {
  decryptNode,
  encryptNodeInto,
  type NodeKeyState,
  nodeKeyState,
  releaseNodeKeyState,
} from "./fernet_node.ts";
import {
  decryptWebCrypto,
  encryptWebCrypto,
  importWebCryptoKeys,
  type WebCryptoKeys,
} from "./fernet_webcrypto.ts";

export {
  type DecryptedToken,
  FERNET_MAX_CLOCK_SKEW_SECONDS,
  FERNET_VERSION,
  type FernetDecryptOptions,
  type FernetEncryptOptions,
  type IvSource,
  parseToken,
  type TokenFields,
} from "./fernet_format.ts";

/** Which crypto implementation a {@linkcode FernetKey} uses. */
export type FernetBackend = "webcrypto" | "node";

/** The backend used when none is named. */
export const DEFAULT_FERNET_BACKEND: FernetBackend = "node";

/** Options of {@linkcode FernetKey.generate} and {@linkcode FernetKey.fromText}. */
export interface FernetKeyOptions {
  /**
   * Node backend: keep one AES cipher and decipher for the key's whole life
   * instead of making one per token (about 1 µs less per token). Each holds a
   * runtime resource until the key is disposed ({@linkcode FernetKey}'s
   * `[Symbol.dispose]`) or, failing that, garbage collected; Deno's test
   * resource sanitizer reports keys left undisposed. Default false.
   */
  persistentCiphers?: boolean;
}

/** What a key holds for its backend: exactly one of the two is set. */
type KeyMaterial =
  | { readonly node: NodeKeyState; readonly web?: undefined }
  | { readonly node?: undefined; readonly web: WebCryptoKeys };

async function importMaterial(
  raw: Uint8Array<ArrayBuffer>,
  backend: FernetBackend,
  options: FernetKeyOptions,
): Promise<KeyMaterial> {
  if (backend === "node") {
    return { node: nodeKeyState(raw, options.persistentCiphers === true) };
  }
  return { web: await importWebCryptoKeys(raw) };
}

/**
 * Decodes a key's 44 base64url characters (or their ASCII bytes) to its 32
 * bytes, with the text in canonical form.
 * @throws {InvalidKeyError} when it does not decode to exactly 32 bytes
 */
function parseKeyText(
  text: string | Uint8Array,
): { raw: Uint8Array<ArrayBuffer>; canonical: string } {
  let raw: Uint8Array<ArrayBuffer>;
  try {
    raw = decodeBase64Url(text);
  } catch (e) {
    throw new InvalidKeyError(
      `Cannot use Fernet key: ${
        (e as Error).message
      }; a key is 44 base64url characters ending in "="`,
    );
  }
  if (raw.length !== 32) {
    throw new InvalidKeyError(
      `Cannot use Fernet key: it decodes to ${raw.length} bytes, not 32; a key is 44 base64url characters ending in "="`,
    );
  }
  const canonical = typeof text === "string"
    ? text
    : new TextDecoder().decode(encodeBase64UrlToAscii(raw));
  return { raw, canonical };
}

function checkBackend(backend: FernetBackend): void {
  if (backend !== "node" && backend !== "webcrypto") {
    throw new TypeError(
      `Unknown Fernet backend "${backend}": use "node" or "webcrypto"`,
    );
  }
}

/** A Fernet key (32 bytes: 16 signing + 16 encryption) ready to encrypt and decrypt. */
export class FernetKey {
  /** The key as 44 ASCII base64url characters (the form sent in SYMMETRIC_KEY). */
  readonly text: string;
  /** The backend this key uses. */
  readonly backend: FernetBackend;
  #keys: KeyMaterial;

  private constructor(
    text: string,
    backend: FernetBackend,
    keys: KeyMaterial,
  ) {
    this.text = text;
    this.backend = backend;
    this.#keys = keys;
  }

  /** Generates a fresh random key. */
  static async generate(
    backend: FernetBackend = DEFAULT_FERNET_BACKEND,
    options: FernetKeyOptions = {},
  ): Promise<FernetKey> {
    checkBackend(backend);
    const raw = crypto.getRandomValues(new Uint8Array(32));
    const text = new TextDecoder().decode(encodeBase64UrlToAscii(raw));
    return new FernetKey(
      text,
      backend,
      await importMaterial(raw, backend, options),
    );
  }

  /**
   * Imports a key from its 44-character base64url text or ASCII bytes.
   * @throws {InvalidKeyError} when it does not decode to exactly 32 bytes
   */
  static async fromText(
    text: string | Uint8Array,
    backend: FernetBackend = DEFAULT_FERNET_BACKEND,
    options: FernetKeyOptions = {},
  ): Promise<FernetKey> {
    checkBackend(backend);
    const { raw, canonical } = parseKeyText(text);
    return new FernetKey(
      canonical,
      backend,
      await importMaterial(raw, backend, options),
    );
  }

  /**
   * {@linkcode fromText}, synchronously, for the node backend (whose keys
   * need no asynchronous import): where a key made on the spot must not
   * delay what is sent with it.
   * @throws {InvalidKeyError} when it does not decode to exactly 32 bytes
   */
  static fromTextSync(
    text: string | Uint8Array,
    options: FernetKeyOptions = {},
  ): FernetKey {
    const { raw, canonical } = parseKeyText(text);
    const node = nodeKeyState(raw, options.persistentCiphers === true);
    return new FernetKey(canonical, "node", { node });
  }

  /** Encrypts `plaintext` into a token's ASCII bytes. */
  encrypt(
    plaintext: Uint8Array,
    options: FernetEncryptOptions = {},
  ): Promise<Uint8Array> {
    if (this.#keys.web) {
      return encryptWebCrypto(this.#keys.web, plaintext, options);
    }
    try {
      return Promise.resolve(this.encryptSync(plaintext, options));
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** The length of the ASCII token {@linkcode encryptSync} makes for `plaintextLength` bytes. */
  static tokenLength(plaintextLength: number): number {
    if (!Number.isSafeInteger(plaintextLength) || plaintextLength < 0) {
      throw new RangeError(
        `Cannot size a Fernet token: ${plaintextLength} is not a byte count`,
      );
    }
    return base64UrlEncodedLength(
      HEADER_SIZE + paddedLength(plaintextLength) + HMAC_SIZE,
    );
  }

  /**
   * Encrypts synchronously (the node backend only): the relay's hot path.
   * @throws {TypeError} for a key of the webcrypto backend
   */
  encryptSync(
    plaintext: Uint8Array,
    options: FernetEncryptOptions = {},
  ): Uint8Array {
    const out = new Uint8Array(FernetKey.tokenLength(plaintext.length));
    this.encryptInto(plaintext, out, 0, options);
    return out;
  }

  /**
   * {@linkcode encryptSync}, writing the ASCII token into `out` at `offset`
   * ({@linkcode tokenLength} bytes). Returns the number of bytes written.
   * @throws {RangeError} when the token does not fit (nothing is written)
   * @throws {TypeError} for a key of the webcrypto backend
   */
  encryptInto(
    plaintext: Uint8Array,
    out: Uint8Array,
    offset: number,
    options: FernetEncryptOptions = {},
  ): number {
    return encryptNodeInto(this.#node(), plaintext, out, offset, options);
  }

  /**
   * Releases the native cipher state this key keeps between tokens (node
   * backend). The key stays usable: a later sync call makes new state.
   * Keys that are merely dropped are released when garbage collected.
   */
  [Symbol.dispose](): void {
    if (this.#keys.node) releaseNodeKeyState(this.#keys.node);
  }

  /**
   * Verifies and decrypts synchronously (the node backend only).
   * @throws {InvalidTokenError} naming the failed check
   * @throws {TypeError} for a key of the webcrypto backend
   */
  decryptSync(
    token: Uint8Array | string,
    options: FernetDecryptOptions = {},
  ): DecryptedToken {
    return decryptNode(this.#node(), token, options);
  }

  /** Whether {@linkcode encryptSync} and {@linkcode decryptSync} are available. */
  get canRunSync(): boolean {
    return this.#keys.node !== undefined;
  }

  #node(): NodeKeyState {
    const node = this.#keys.node;
    if (!node) {
      throw new TypeError(
        "Synchronous Fernet operations need a key of the node backend",
      );
    }
    return node;
  }

  /**
   * Verifies and decrypts a token (ASCII bytes or text). Order: format, HMAC, age and skew, padding.
   * @throws {InvalidTokenError} naming the failed check
   */
  decrypt(
    token: Uint8Array | string,
    options: FernetDecryptOptions = {},
  ): Promise<DecryptedToken> {
    if (this.#keys.web) {
      return decryptWebCrypto(this.#keys.web, token, options);
    }
    try {
      return Promise.resolve(this.decryptSync(token, options));
    } catch (e) {
      return Promise.reject(e);
    }
  }
}
