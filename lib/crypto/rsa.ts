/**
 * RSA-OAEP with SHA-256 and MGF1-SHA-256 (empty label) on WebCrypto: keys,
 * PEM SubjectPublicKeyInfo and PKCS#8 in the exact text form OpenSSL and
 * pyca/cryptography emit (the PEM and DER text itself is pem.ts), chunked
 * encryption for the RSA profile, and the OpenSSH-style fingerprint. Pure
 * (no files, no sockets).
 *
 * @module
 */
import { InvalidKeyError } from "../errors.ts";
import { encodeBase64 } from "./base64.ts";
import {
  decodePem,
  encodePem,
  keyAlgorithmName,
  keyAlgorithmOid,
  RSA_OID,
} from "./pem.ts";

/** OAEP-SHA-256 overhead per block: 2 * 32 + 2 bytes, so a block carries k - 66 bytes. */
export const RSA_OAEP_OVERHEAD = 66;

const OAEP_IMPORT: RsaHashedImportParams = {
  name: "RSA-OAEP",
  hash: "SHA-256",
};

/** Key sizes {@linkcode RsaPrivateKey.generate} accepts. */
export const RSA_GENERATE_SIZES: readonly number[] = [2048, 3072, 4096];

/** `SHA256:` + unpadded standard base64 of SHA-256 over DER SubjectPublicKeyInfo (OpenSSH's form). */
export async function spkiFingerprint(spki: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", own(spki));
  return "SHA256:" + encodeBase64(new Uint8Array(digest), false);
}

/** Returns `bytes` typed for WebCrypto, copying only when it is not backed by a plain ArrayBuffer. */
function own(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return bytes.buffer instanceof ArrayBuffer
    ? bytes as Uint8Array<ArrayBuffer>
    : new Uint8Array(bytes);
}

/** The InvalidKeyError for DER that WebCrypto would not import as an RSA-OAEP key. */
function importError(
  der: Uint8Array,
  format: "spki" | "pkcs8",
  cause: unknown,
): InvalidKeyError {
  const what = format === "spki"
    ? "RSA public key (DER SubjectPublicKeyInfo)"
    : "RSA private key (PKCS#8)";
  const oid = keyAlgorithmOid(der, format);
  if (oid === null) {
    return new InvalidKeyError(
      `Cannot import ${what}: the bytes are not a DER ${
        format === "spki" ? "SubjectPublicKeyInfo" : "PKCS#8 structure"
      }`,
    );
  }
  if (oid !== RSA_OID) {
    const name = keyAlgorithmName(oid);
    return new InvalidKeyError(
      `Cannot import ${what}: it is ${
        /^[AEIOU]/.test(name) ? "an" : "a"
      } ${name} key, not RSA; mcrelay needs an RSA key (2048 to 4096 bits), ` +
        "e.g. `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`",
    );
  }
  return new InvalidKeyError(
    `Cannot import ${what}: ${
      cause instanceof Error ? cause.message : String(cause)
    }`,
  );
}

/** An RSA public key for OAEP-SHA-256 encryption. */
export class RsaPublicKey {
  /** WebCrypto key (RSA-OAEP, SHA-256, usage encrypt). */
  readonly key: CryptoKey;
  /** DER SubjectPublicKeyInfo. */
  readonly spki: Uint8Array<ArrayBuffer>;
  /** PEM text of the SPKI, as {@linkcode encodePem} writes it. */
  readonly pem: string;
  /** Modulus size in bits. */
  readonly modulusBits: number;
  /** `SHA256:...` fingerprint of the SPKI. */
  readonly fingerprint: string;

  private constructor(
    key: CryptoKey,
    spki: Uint8Array<ArrayBuffer>,
    modulusBits: number,
    fingerprint: string,
  ) {
    this.key = key;
    this.spki = spki;
    this.pem = encodePem("PUBLIC KEY", spki);
    this.modulusBits = modulusBits;
    this.fingerprint = fingerprint;
  }

  /**
   * Imports a PEM SubjectPublicKeyInfo (`-----BEGIN PUBLIC KEY-----`).
   * @throws {InvalidKeyError} when it is not a PEM RSA public key
   */
  static async fromPem(pem: string): Promise<RsaPublicKey> {
    return await RsaPublicKey.fromSpki(decodePem(pem, "PUBLIC KEY"));
  }

  /**
   * Imports DER SubjectPublicKeyInfo.
   * @throws {InvalidKeyError} when it is not an RSA public key
   */
  static async fromSpki(spki: Uint8Array): Promise<RsaPublicKey> {
    const der = new Uint8Array(spki);
    let key: CryptoKey;
    try {
      key = await crypto.subtle.importKey("spki", der, OAEP_IMPORT, true, [
        "encrypt",
      ]);
    } catch (e) {
      throw importError(der, "spki", e);
    }
    const modulusBits = (key.algorithm as RsaHashedKeyAlgorithm).modulusLength;
    if (Math.ceil(modulusBits / 8) <= RSA_OAEP_OVERHEAD) {
      throw new InvalidKeyError(
        `Cannot use RSA public key: a ${modulusBits}-bit modulus is too small for OAEP-SHA-256`,
      );
    }
    return new RsaPublicKey(key, der, modulusBits, await spkiFingerprint(der));
  }

  /** Modulus size in bytes (k): the size of every ciphertext block. */
  get blockSize(): number {
    return Math.ceil(this.modulusBits / 8);
  }

  /**
   * Checks that `block` is one ciphertext block of this key (k bytes).
   * @throws {RangeError} when it is not
   */
  checkBlock(block: Uint8Array): void {
    const k = this.blockSize;
    if (block.length !== k) {
      throw new RangeError(
        `Cannot RSA-OAEP decrypt a ${block.length}-byte block: a ${this.modulusBits}-bit key needs exactly ${k} bytes`,
      );
    }
  }

  /** Largest plaintext per block: k - 66. */
  get maxChunkSize(): number {
    return this.blockSize - RSA_OAEP_OVERHEAD;
  }

  /**
   * Encrypts one block of at most {@linkcode maxChunkSize} bytes.
   * @throws {RangeError} when `data` is too long
   */
  async encrypt(data: Uint8Array): Promise<Uint8Array> {
    if (data.length > this.maxChunkSize) {
      throw new RangeError(
        `Cannot RSA-OAEP encrypt ${data.length} bytes: a ${this.modulusBits}-bit key takes at most ${this.maxChunkSize} per block`,
      );
    }
    return new Uint8Array(
      await crypto.subtle.encrypt({ name: "RSA-OAEP" }, this.key, own(data)),
    );
  }

  /** Cuts `plaintext` into chunks of at most k - 66 bytes and encrypts each (an empty plaintext gives one block). */
  encryptChunks(plaintext: Uint8Array): Promise<Uint8Array[]> {
    const size = this.maxChunkSize;
    const chunks: Promise<Uint8Array>[] = [];
    for (let i = 0; i < plaintext.length; i += size) {
      chunks.push(this.encrypt(plaintext.subarray(i, i + size)));
    }
    if (chunks.length === 0) chunks.push(this.encrypt(new Uint8Array(0)));
    return Promise.all(chunks);
  }
}

/** An RSA private key with its public half. */
export class RsaPrivateKey {
  /** WebCrypto key (RSA-OAEP, SHA-256, usage decrypt, extractable). */
  readonly key: CryptoKey;
  /** The matching public key. */
  readonly publicKey: RsaPublicKey;

  private constructor(key: CryptoKey, publicKey: RsaPublicKey) {
    this.key = key;
    this.publicKey = publicKey;
  }

  /**
   * Generates a key pair (public exponent 65537).
   * @throws {RangeError} for sizes other than 2048, 3072 or 4096
   */
  static async generate(bits = 2048): Promise<RsaPrivateKey> {
    if (!RSA_GENERATE_SIZES.includes(bits)) {
      throw new RangeError(
        `Cannot generate a ${bits}-bit RSA key: choose 2048, 3072 or 4096`,
      );
    }
    const pair = await crypto.subtle.generateKey(
      {
        name: "RSA-OAEP",
        modulusLength: bits,
        publicExponent: new Uint8Array([1, 0, 1]),
        hash: "SHA-256",
      },
      true,
      ["encrypt", "decrypt"],
    );
    const spki = new Uint8Array(
      await crypto.subtle.exportKey("spki", pair.publicKey),
    );
    return new RsaPrivateKey(
      pair.privateKey,
      await RsaPublicKey.fromSpki(spki),
    );
  }

  /**
   * Imports a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), deriving the public key.
   * @throws {InvalidKeyError} when it is not a PKCS#8 RSA private key
   */
  static async fromPkcs8Pem(pem: string): Promise<RsaPrivateKey> {
    const der = decodePem(pem, "PRIVATE KEY");
    let key: CryptoKey;
    try {
      key = await crypto.subtle.importKey("pkcs8", der, OAEP_IMPORT, true, [
        "decrypt",
      ]);
    } catch (e) {
      throw importError(der, "pkcs8", e);
    }
    // Derive the public half: the JWK of the private key carries n and e.
    const jwk = await crypto.subtle.exportKey("jwk", key);
    const publicCrypto = await crypto.subtle.importKey(
      "jwk",
      { kty: "RSA", n: jwk.n, e: jwk.e },
      OAEP_IMPORT,
      true,
      ["encrypt"],
    );
    const spki = new Uint8Array(
      await crypto.subtle.exportKey("spki", publicCrypto),
    );
    return new RsaPrivateKey(key, await RsaPublicKey.fromSpki(spki));
  }

  /** Exports the private key as PKCS#8 PEM, as {@linkcode encodePem} writes it. */
  async toPkcs8Pem(): Promise<string> {
    const der = new Uint8Array(
      await crypto.subtle.exportKey("pkcs8", this.key),
    );
    return encodePem("PRIVATE KEY", der);
  }

  /**
   * Decrypts one k-byte OAEP block.
   * @throws {RangeError} when the block is not k bytes; {@linkcode InvalidKeyError} never; a DOMException-free `Error` subclass {@linkcode RsaDecryptError} when decryption fails
   */
  async decrypt(block: Uint8Array): Promise<Uint8Array> {
    this.publicKey.checkBlock(block);
    try {
      return new Uint8Array(
        await crypto.subtle.decrypt({ name: "RSA-OAEP" }, this.key, own(block)),
      );
    } catch {
      throw new RsaDecryptError(
        `Cannot RSA-OAEP decrypt a ${block.length}-byte block: wrong key or corrupted ciphertext`,
      );
    }
  }

  /** Decrypts blocks in order and concatenates the plaintexts. @throws {RsaDecryptError} */
  async decryptChunks(blocks: readonly Uint8Array[]): Promise<Uint8Array> {
    // Every block settles before this does: a rejection must not leave the
    // other decryptions running after the caller has moved on.
    const settled = await Promise.allSettled(
      blocks.map((b) => this.decrypt(b)),
    );
    const failed = settled.find((s) => s.status === "rejected");
    if (failed) throw failed.reason;
    const parts = settled.map((s) =>
      (s as PromiseFulfilledResult<Uint8Array>).value
    );
    let total = 0;
    for (const p of parts) total += p.length;
    const out = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

/** An RSA-OAEP block that did not decrypt under the key (wrong key, tampered, wrong size). */
export class RsaDecryptError extends Error {
  /**
   * Creates the error.
   * @param message what failed
   */
  constructor(message: string) {
    super(message);
    this.name = "RsaDecryptError";
  }
}
