/**
 * Micro-benchmarks of the crypto layer: the two Fernet backends (and the node
 * backend's sync paths, with fresh or persistent ciphers), sync versus
 * WebCrypto HMAC, and RSA-2048 OAEP. Run:
 *
 *     deno bench --allow-read bench/crypto_bench.ts
 *
 * @module
 */
import { FernetKey } from "../lib/crypto/fernet.ts";
import { createHmac } from "node:crypto";
import { hmacSha256 } from "../lib/crypto/hmac.ts";
import { HmacSha256 } from "../lib/crypto/sha256.ts";
import { RsaPrivateKey } from "../lib/crypto/rsa.ts";
import { decodeBase64Url, encodeBase64Url } from "../lib/crypto/base64.ts";

const plaintext = crypto.getRandomValues(new Uint8Array(100));
const node = await FernetKey.generate("node");
const web = await FernetKey.fromText(node.text, "webcrypto");
const persistent = await FernetKey.fromText(node.text, "node", {
  persistentCiphers: true,
});
const token = await node.encrypt(plaintext);
const tokenText = new TextDecoder().decode(token);
const tokenOut = new Uint8Array(FernetKey.tokenLength(plaintext.length) + 16);

Deno.bench({
  name: "node",
  group: "fernet encrypt 100 B",
  baseline: true,
  async fn() {
    await node.encrypt(plaintext);
  },
});
Deno.bench({
  name: "webcrypto",
  group: "fernet encrypt 100 B",
  async fn() {
    await web.encrypt(plaintext);
  },
});
Deno.bench({
  name: "node encryptSync, fresh ciphers",
  group: "fernet encrypt 100 B",
  fn() {
    node.encryptSync(plaintext);
  },
});
Deno.bench({
  name: "node encryptSync, persistent ciphers",
  group: "fernet encrypt 100 B",
  fn() {
    persistent.encryptSync(plaintext);
  },
});
Deno.bench({
  name: "node encryptInto, fresh ciphers",
  group: "fernet encrypt 100 B",
  fn() {
    node.encryptInto(plaintext, tokenOut, 16);
  },
});
Deno.bench({
  name: "node encryptInto, persistent ciphers",
  group: "fernet encrypt 100 B",
  fn() {
    persistent.encryptInto(plaintext, tokenOut, 16);
  },
});
Deno.bench({
  name: "node",
  group: "fernet decrypt 100 B",
  baseline: true,
  async fn() {
    await node.decrypt(token);
  },
});
Deno.bench({
  name: "webcrypto",
  group: "fernet decrypt 100 B",
  async fn() {
    await web.decrypt(token);
  },
});
Deno.bench({
  name: "node decryptSync, fresh ciphers",
  group: "fernet decrypt 100 B",
  fn() {
    node.decryptSync(token);
  },
});
Deno.bench({
  name: "node decryptSync, persistent ciphers",
  group: "fernet decrypt 100 B",
  fn() {
    persistent.decryptSync(token);
  },
});

const hmacKey = crypto.getRandomValues(new Uint8Array(32));
const hmacData = crypto.getRandomValues(new Uint8Array(100));
const subtleHmacKey = await crypto.subtle.importKey(
  "raw",
  hmacKey,
  { name: "HMAC", hash: "SHA-256" },
  false,
  ["sign"],
);
const preHashed = new HmacSha256(hmacKey);
Deno.bench({
  name: "HmacSha256.mac (TypeScript, pads pre-hashed once per key)",
  group: "HMAC-SHA-256 100 B",
  baseline: true,
  fn() {
    preHashed.mac(hmacData);
  },
});
Deno.bench({
  name: "hmacSha256 (TypeScript, one-off key)",
  group: "HMAC-SHA-256 100 B",
  fn() {
    hmacSha256(hmacKey, hmacData);
  },
});
Deno.bench({
  name: "node:crypto createHmac (sync)",
  group: "HMAC-SHA-256 100 B",
  fn() {
    createHmac("sha256", hmacKey).update(hmacData).digest();
  },
});
Deno.bench({
  name: "crypto.subtle.sign",
  group: "HMAC-SHA-256 100 B",
  async fn() {
    await crypto.subtle.sign("HMAC", subtleHmacKey, hmacData);
  },
});

const rsa = await RsaPrivateKey.generate(2048);
const rsaBlock = await rsa.publicKey.encrypt(new Uint8Array(44));
Deno.bench({
  name: "RSA-2048 OAEP-SHA-256 decrypt (44 B)",
  group: "RSA",
  async fn() {
    await rsa.decrypt(rsaBlock);
  },
});
Deno.bench({
  name: "RSA-2048 OAEP-SHA-256 encrypt (44 B)",
  group: "RSA",
  async fn() {
    await rsa.publicKey.encrypt(new Uint8Array(44));
  },
});

Deno.bench({
  name: "decodeBase64Url (token text, 184 chars)",
  group: "base64",
  fn() {
    decodeBase64Url(tokenText);
  },
});
Deno.bench({
  name: "decodeBase64Url (token ASCII bytes)",
  group: "base64",
  fn() {
    decodeBase64Url(token);
  },
});
const raw = decodeBase64Url(token);
Deno.bench({
  name: "encodeBase64Url (137 bytes)",
  group: "base64",
  fn() {
    encodeBase64Url(raw);
  },
});
