/**
 * Server key files (issue 17 item 9): a key under 2048 bits, several PEM
 * blocks, or text around the one block are refused with one clear error.
 *
 * @module
 */
import assert from "node:assert/strict";
import { ConfigError } from "../../lib/errors.ts";
import { loadOrCreateKey } from "../../lib/cli/key_file.ts";
import { encodePem } from "../../lib/crypto/pem.ts";
import {
  RSA2048_PRIVATE_PEM,
  RSA2048_PUBLIC_PEM,
} from "../fixtures/rsa_fixtures.ts";

/** Writes `text` to a fresh 0600 file and returns its path. */
async function keyFile(text: string): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".pem" });
  await Deno.chmod(path, 0o600);
  await Deno.writeTextFile(path, text);
  return path;
}

/** A PKCS#8 PEM RSA key of `bits`, made with WebCrypto (mcrelay generates none this small). */
async function pkcs8Pem(bits: number): Promise<string> {
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
  const der = await crypto.subtle.exportKey("pkcs8", pair.privateKey);
  return encodePem("PRIVATE KEY", new Uint8Array(der));
}

async function refused(text: string, message: RegExp): Promise<void> {
  const path = await keyFile(text);
  try {
    await assert.rejects(loadOrCreateKey(path, 2048), (error: unknown) => {
      assert.ok(error instanceof ConfigError, String(error));
      assert.match(error.message, message);
      return true;
    });
  } finally {
    await Deno.remove(path);
  }
}

Deno.test("key file: a 1024-bit key is refused, naming the size and the fix", async () => {
  await refused(
    await pkcs8Pem(1024),
    /1024-bit RSA key; mcrelay needs 2048 to 4096 bits/,
  );
});

Deno.test("key file: several PEM blocks are refused, naming them", async () => {
  await refused(
    RSA2048_PRIVATE_PEM + RSA2048_PUBLIC_PEM,
    /holds 2 PEM blocks \(PRIVATE KEY, PUBLIC KEY\)/,
  );
});

Deno.test("key file: text before or after the block is refused", async () => {
  await refused(RSA2048_PRIVATE_PEM + "trailing\n", /text before or after/);
  await refused("leading\n" + RSA2048_PRIVATE_PEM, /text before or after/);
});

Deno.test("key file: one 2048-bit block with surrounding whitespace loads", async () => {
  const path = await keyFile("\n" + RSA2048_PRIVATE_PEM + "\n\n");
  try {
    const { key, created } = await loadOrCreateKey(path, 2048);
    assert.equal(created, false);
    assert.equal(key.publicKey.modulusBits, 2048);
  } finally {
    await Deno.remove(path);
  }
});
