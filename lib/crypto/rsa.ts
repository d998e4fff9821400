/**
 * RSA-OAEP with SHA-256 and MGF1-SHA-256 (empty label) on WebCrypto: keys,
 * PEM SubjectPublicKeyInfo and PKCS#8 in the exact text form OpenSSL and
 * pyca/cryptography emit, chunked encryption for the RSA profile, and the
 * OpenSSH-style fingerprint. Pure (no files, no sockets).
 *
 * @module
 */
import { InvalidKeyError } from "../errors.ts";

/** OAEP-SHA-256 overhead per block: 2 * 32 + 2 bytes, so a block carries k - 66 bytes. */
export const RSA_OAEP_OVERHEAD = 66;

/**
 * Wraps DER in PEM: `-----BEGIN LABEL-----\n`, base64 in lines of 64, `-----END LABEL-----\n`.
 */
export function encodePem(label: string, der: Uint8Array): string {
  throw new Error("not implemented" + label + der);
}

/**
 * Extracts the DER of the first PEM block with `label` (tolerates CRLF, surrounding whitespace and text).
 * @throws {InvalidKeyError} when no such block exists or its base64 is invalid
 */
export function decodePem(
  text: string,
  label: string,
): Uint8Array<ArrayBuffer> {
  throw new InvalidKeyError("not implemented" + text + label);
}

/** `SHA256:` + unpadded standard base64 of SHA-256 over DER SubjectPublicKeyInfo (OpenSSH's form). */
export function spkiFingerprint(spki: Uint8Array): Promise<string> {
  throw new Error("not implemented" + spki);
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
  static fromPem(pem: string): Promise<RsaPublicKey> {
    throw new InvalidKeyError("not implemented" + pem);
  }

  /**
   * Imports DER SubjectPublicKeyInfo.
   * @throws {InvalidKeyError} when it is not an RSA public key
   */
  static fromSpki(spki: Uint8Array): Promise<RsaPublicKey> {
    throw new InvalidKeyError("not implemented" + spki);
  }

  /** Modulus size in bytes (k): the size of every ciphertext block. */
  get blockSize(): number {
    return this.modulusBits / 8;
  }

  /** Largest plaintext per block: k - 66. */
  get maxChunkSize(): number {
    return this.blockSize - RSA_OAEP_OVERHEAD;
  }

  /**
   * Encrypts one block of at most {@linkcode maxChunkSize} bytes.
   * @throws {RangeError} when `data` is too long
   */
  encrypt(data: Uint8Array): Promise<Uint8Array> {
    throw new Error("not implemented" + data);
  }

  /** Cuts `plaintext` into chunks of at most k - 66 bytes and encrypts each (an empty plaintext gives one block). */
  encryptChunks(plaintext: Uint8Array): Promise<Uint8Array[]> {
    throw new Error("not implemented" + plaintext);
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
  static generate(bits = 2048): Promise<RsaPrivateKey> {
    throw new Error("not implemented" + bits);
  }

  /**
   * Imports a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`), deriving the public key.
   * @throws {InvalidKeyError} when it is not a PKCS#8 RSA private key
   */
  static fromPkcs8Pem(pem: string): Promise<RsaPrivateKey> {
    throw new InvalidKeyError("not implemented" + pem);
  }

  /** Exports the private key as PKCS#8 PEM, as {@linkcode encodePem} writes it. */
  toPkcs8Pem(): Promise<string> {
    throw new Error("not implemented");
  }

  /**
   * Decrypts one k-byte OAEP block.
   * @throws {RangeError} when the block is not k bytes; {@linkcode InvalidKeyError} never; a DOMException-free `Error` subclass {@linkcode RsaDecryptError} when decryption fails
   */
  decrypt(block: Uint8Array): Promise<Uint8Array> {
    throw new Error("not implemented" + block);
  }

  /** Decrypts blocks in order and concatenates the plaintexts. @throws {RsaDecryptError} */
  decryptChunks(blocks: readonly Uint8Array[]): Promise<Uint8Array> {
    throw new Error("not implemented" + blocks);
  }
}

/** An RSA-OAEP block that did not decrypt under the key (wrong key, tampered, wrong size). */
export class RsaDecryptError extends Error {
  /** @param message what failed */
  constructor(message: string) {
    super(message);
    this.name = "RsaDecryptError";
  }
}
