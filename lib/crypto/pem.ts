/**
 * PEM text (RFC 7468: the exact form OpenSSL and pyca/cryptography emit,
 * with advice when a block is of the wrong kind) and a minimal DER reader
 * that only names the algorithm of a key, so that a key that is not RSA is
 * refused in words. Pure (no files, no sockets).
 *
 * @module
 */
import { InvalidKeyError } from "../errors.ts";
import { decodeBase64, encodeBase64 } from "./base64.ts";

/**
 * Wraps DER in PEM: `-----BEGIN LABEL-----\n`, base64 in lines of 64, `-----END LABEL-----\n`.
 */
export function encodePem(label: string, der: Uint8Array): string {
  const b64 = encodeBase64(der);
  let body = "";
  for (let i = 0; i < b64.length; i += 64) {
    body += b64.slice(i, i + 64) + "\n";
  }
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** The labels of every PEM block in `text`, in order. */
export function pemLabels(text: string): string[] {
  return [...text.matchAll(/-----BEGIN ([^-\r\n]*)-----/g)].map((m) => m[1]);
}

/** Advice for a PEM block of the wrong kind. */
function wrongPemAdvice(found: string, wanted: string): string {
  if (wanted === "PUBLIC KEY") {
    switch (found) {
      case "RSA PUBLIC KEY":
        return "it is a PKCS#1 RSA public key; convert it with `openssl rsa -RSAPublicKey_in -in key.pem -pubout`";
      case "PRIVATE KEY":
      case "RSA PRIVATE KEY":
        return "it is a private key; extract the public key with `openssl pkey -in key.pem -pubout`";
      case "CERTIFICATE":
        return "it is a certificate; extract its key with `openssl x509 -in cert.pem -pubkey -noout`";
    }
  } else if (wanted === "PRIVATE KEY") {
    switch (found) {
      case "RSA PRIVATE KEY":
        return "it is a PKCS#1 RSA private key; convert it with `openssl pkcs8 -topk8 -nocrypt -in key.pem`";
      case "ENCRYPTED PRIVATE KEY":
        return "it is encrypted; decrypt it with `openssl pkcs8 -in key.pem` (mcrelay reads unencrypted PKCS#8)";
      case "PUBLIC KEY":
        return "it is a public key; a private key is needed here";
    }
  }
  return `found ${found ? `"${found}"` : "no PEM block"} instead`;
}

/**
 * Extracts the DER of the first PEM block with `label` (tolerates CRLF, surrounding whitespace and text).
 * @throws {InvalidKeyError} when no such block exists or its base64 is invalid
 */
export function decodePem(
  text: string,
  label: string,
): Uint8Array<ArrayBuffer> {
  const l = escapeRegExp(label);
  const match = new RegExp(
    `-----BEGIN ${l}-----([\\s\\S]*?)-----END ${l}-----`,
  ).exec(text);
  if (match === null) {
    const found = pemLabels(text);
    throw new InvalidKeyError(
      `Cannot read PEM: no "-----BEGIN ${label}-----" block; ` +
        wrongPemAdvice(found[0] ?? "", label),
    );
  }
  const body = match[1].replace(/\s+/g, "");
  if (body.length === 0) {
    throw new InvalidKeyError(`Cannot read PEM "${label}" block: it is empty`);
  }
  try {
    return decodeBase64(body);
  } catch (e) {
    throw new InvalidKeyError(
      `Cannot read PEM "${label}" block: ${(e as Error).message}` +
        (body.includes(":")
          ? " (PEM headers such as Proc-Type mean an encrypted legacy key, which mcrelay does not read)"
          : ""),
    );
  }
}

// --- A minimal DER reader, only to name the algorithm of a key that is not RSA.

/** Names of key algorithms by OID, for errors about a key that is not RSA. */
const KNOWN_ALGORITHMS: Record<string, string> = {
  "1.2.840.113549.1.1.1": "RSA",
  "1.2.840.113549.1.1.10": "RSASSA-PSS",
  "1.2.840.10045.2.1": "EC (ECDSA/ECDH)",
  "1.2.840.10040.4.1": "DSA",
  "1.2.840.10046.2.1": "Diffie-Hellman",
  "1.3.101.110": "X25519",
  "1.3.101.111": "X448",
  "1.3.101.112": "Ed25519",
  "1.3.101.113": "Ed448",
};
/** The OID of rsaEncryption, the algorithm of an RSA key. */
export const RSA_OID = "1.2.840.113549.1.1.1";

/** A readable name of the key algorithm `oid` ("EC (ECDSA/ECDH)", "Ed25519", or "algorithm OID"). */
export function keyAlgorithmName(oid: string): string {
  return KNOWN_ALGORITHMS[oid] ?? `algorithm ${oid}`;
}

/** Reads the TLV at `offset`: [tag, contentStart, contentEnd], or null if it runs past `end`. */
function derTlv(
  der: Uint8Array,
  offset: number,
  end: number,
): [number, number, number] | null {
  if (offset + 2 > end) return null;
  const tag = der[offset];
  let len = der[offset + 1];
  let p = offset + 2;
  if (len & 0x80) {
    const n = len & 0x7f;
    if (n === 0 || n > 4 || p + n > end) return null;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + der[p++];
  }
  if (p + len > end) return null;
  return [tag, p, p + len];
}

function oidText(der: Uint8Array, start: number, end: number): string {
  const parts: number[] = [];
  let v = 0;
  for (let i = start; i < end; i++) {
    v = v * 128 + (der[i] & 0x7f);
    if ((der[i] & 0x80) === 0) {
      if (parts.length === 0) {
        const first = v < 80 ? Math.floor(v / 40) : 2;
        parts.push(first, v - first * 40);
      } else {
        parts.push(v);
      }
      v = 0;
    }
  }
  return parts.join(".");
}

/** The algorithm OID of DER SPKI (`SEQ{SEQ{OID..}, BIT STRING}`) or PKCS#8 (`SEQ{INT, SEQ{OID..}, ..}`), or null. */
export function keyAlgorithmOid(
  der: Uint8Array,
  format: "spki" | "pkcs8",
): string | null {
  const outer = derTlv(der, 0, der.length);
  if (outer === null || outer[0] !== 0x30) return null;
  let p = outer[1];
  if (format === "pkcs8") {
    const version = derTlv(der, p, outer[2]);
    if (version === null || version[0] !== 0x02) return null;
    p = version[2];
  }
  const alg = derTlv(der, p, outer[2]);
  if (alg === null || alg[0] !== 0x30) return null;
  const oid = derTlv(der, alg[1], alg[2]);
  if (oid === null || oid[0] !== 0x06) return null;
  return oidText(der, oid[1], oid[2]);
}
