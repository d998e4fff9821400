import assert from "node:assert/strict";
import { InvalidKeyError } from "../../lib/errors.ts";
import { decodePem, encodePem, keyAlgorithmOid } from "../../lib/crypto/pem.ts";
import {
  RSA_OAEP_OVERHEAD,
  RsaDecryptError,
  RsaPrivateKey,
  RsaPublicKey,
  spkiFingerprint,
} from "../../lib/crypto/rsa.ts";
import { decodeBase64 } from "../../lib/crypto/base64.ts";
import * as fixtures from "../fixtures/rsa_fixtures.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

// One generated 2048-bit pair shared by the tests below (generation is slow).
let pairPromise: Promise<RsaPrivateKey> | undefined;
const pair = () => (pairPromise ??= RsaPrivateKey.generate(2048));
const opensslKey = () =>
  RsaPrivateKey.fromPkcs8Pem(fixtures.RSA2048_PRIVATE_PEM);

async function granted(name: "read" | "run" | "write"): Promise<boolean> {
  return (await Deno.permissions.query({ name })).state === "granted";
}
const canRead = await granted("read");
const canRunOpenssl = (await granted("run")) && (await granted("write")) &&
  await (async () => {
    try {
      return (await new Deno.Command("openssl", { args: ["version"] }).output())
        .success;
    } catch {
      return false;
    }
  })();

Deno.test({
  name: "fromPkcs8Pem() derives the public key openssl derived, byte for byte",
  permissions: "none",
  async fn() {
    const key = await opensslKey();
    assert.equal(key.publicKey.pem, fixtures.RSA2048_PUBLIC_PEM);
    assert.equal(key.publicKey.modulusBits, 2048);
    assert.equal(key.publicKey.blockSize, 256);
    assert.equal(key.publicKey.maxChunkSize, 190);
  },
});

Deno.test({
  name: "the fingerprint equals openssl's SHA-256 of the DER SPKI",
  permissions: "none",
  async fn() {
    const pub = await RsaPublicKey.fromPem(fixtures.RSA2048_PUBLIC_PEM);
    assert.equal(pub.fingerprint, fixtures.RSA2048_FINGERPRINT);
    assert.equal(
      await spkiFingerprint(
        decodePem(fixtures.RSA2048_PUBLIC_PEM, "PUBLIC KEY"),
      ),
      fixtures.RSA2048_FINGERPRINT,
    );
    assert.equal(
      (await opensslKey()).publicKey.fingerprint,
      fixtures.RSA2048_FINGERPRINT,
    );
    assert.match(pub.fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
  },
});

Deno.test({
  name:
    "decrypt() reads a ciphertext made by openssl pkeyutl (OAEP, SHA-256, MGF1-SHA-256)",
  permissions: "none",
  async fn() {
    const key = await opensslKey();
    const plaintext = await key.decrypt(
      decodeBase64(fixtures.RSA2048_OAEP_CIPHERTEXT_B64),
    );
    assert.equal(decoder.decode(plaintext), fixtures.RSA2048_OAEP_PLAINTEXT);
  },
});

Deno.test({
  name: "toPkcs8Pem() writes the same text as openssl genpkey",
  permissions: "none",
  async fn() {
    assert.equal(
      await (await opensslKey()).toPkcs8Pem(),
      fixtures.RSA2048_PRIVATE_PEM,
    );
  },
});

Deno.test({
  name: "the embedded fixtures match the fixture files",
  ignore: !canRead,
  permissions: { read: [new URL("../fixtures/", import.meta.url)] },
  async fn() {
    const read = (name: string) =>
      Deno.readTextFile(new URL(`../fixtures/${name}`, import.meta.url));
    assert.equal(
      await read("rsa2048_private.pem"),
      fixtures.RSA2048_PRIVATE_PEM,
    );
    assert.equal(
      await read("rsa2048_private_pkcs1.pem"),
      fixtures.RSA2048_PRIVATE_PKCS1_PEM,
    );
    assert.equal(await read("rsa2048_public.pem"), fixtures.RSA2048_PUBLIC_PEM);
    assert.equal(await read("ec_p256_public.pem"), fixtures.EC_P256_PUBLIC_PEM);
    assert.equal(await read("ed25519_public.pem"), fixtures.ED25519_PUBLIC_PEM);
    assert.equal(
      "SHA256:" + (await read("rsa2048_fingerprint.txt")).trim(),
      fixtures.RSA2048_FINGERPRINT,
    );
    assert.equal(
      await read("rsa2048_oaep_plaintext.txt"),
      fixtures.RSA2048_OAEP_PLAINTEXT,
    );
    assert.equal(
      (await read("rsa2048_oaep_ciphertext.b64")).trim(),
      fixtures.RSA2048_OAEP_CIPHERTEXT_B64,
    );
  },
});

Deno.test({
  name:
    "a generated 2048-bit key round trips, and its PEM forms re-import to the same key",
  permissions: "none",
  async fn() {
    const key = await pair();
    assert.equal(key.publicKey.modulusBits, 2048);
    const message = encoder.encode("hello, relay");
    assert.deepEqual(
      await key.decrypt(await key.publicKey.encrypt(message)),
      message,
    );
    const again = await RsaPrivateKey.fromPkcs8Pem(await key.toPkcs8Pem());
    assert.equal(again.publicKey.pem, key.publicKey.pem);
    assert.equal(again.publicKey.fingerprint, key.publicKey.fingerprint);
    const pub = await RsaPublicKey.fromPem(key.publicKey.pem);
    assert.deepEqual(await key.decrypt(await pub.encrypt(message)), message);
    assert.deepEqual(pub.spki, key.publicKey.spki);
  },
});

Deno.test({
  name: "encrypt() takes at most k - 66 bytes",
  permissions: "none",
  async fn() {
    const key = await pair();
    const max = key.publicKey.maxChunkSize;
    assert.equal(max, 256 - RSA_OAEP_OVERHEAD);
    const full = crypto.getRandomValues(new Uint8Array(max));
    const block = await key.publicKey.encrypt(full);
    assert.equal(block.length, 256);
    assert.deepEqual(await key.decrypt(block), full);
    await assert.rejects(
      key.publicKey.encrypt(new Uint8Array(max + 1)),
      RangeError,
    );
  },
});

Deno.test({
  name:
    "encryptChunks() and decryptChunks() round trip lengths 0, k-66, k-65 and 1000",
  permissions: "none",
  async fn() {
    const key = await pair();
    const max = key.publicKey.maxChunkSize;
    for (
      const [length, blocks] of [[0, 1], [max, 1], [max + 1, 2], [1000, 6]]
    ) {
      const plaintext = crypto.getRandomValues(new Uint8Array(length));
      const chunks = await key.publicKey.encryptChunks(plaintext);
      assert.equal(chunks.length, blocks, `length ${length}`);
      for (const c of chunks) assert.equal(c.length, 256);
      assert.deepEqual(await key.decryptChunks(chunks), plaintext);
    }
    // Each block alone decrypts to its chunk, in order.
    const plaintext = crypto.getRandomValues(new Uint8Array(1000));
    const chunks = await key.publicKey.encryptChunks(plaintext);
    assert.deepEqual(await key.decrypt(chunks[5]), plaintext.subarray(5 * max));
    assert.deepEqual(await key.decryptChunks([]), new Uint8Array(0));
  },
});

Deno.test({
  name:
    "decrypt() under the wrong key or of a tampered block throws RsaDecryptError",
  permissions: "none",
  async fn() {
    const key = await pair();
    const other = await opensslKey();
    const block = await key.publicKey.encrypt(encoder.encode("secret"));
    await assert.rejects(other.decrypt(block), RsaDecryptError);
    const tampered = block.slice();
    tampered[100] ^= 1;
    await assert.rejects(key.decrypt(tampered), RsaDecryptError);
    await assert.rejects(key.decryptChunks([block, tampered]), RsaDecryptError);
    await assert.rejects(key.decrypt(new Uint8Array(256)), RsaDecryptError);
  },
});

Deno.test({
  name: "decrypt() rejects a block that is not k bytes with RangeError",
  permissions: "none",
  async fn() {
    const key = await pair();
    const block = await key.publicKey.encrypt(encoder.encode("x"));
    for (const length of [0, 255, 257, 512]) {
      const wrong = new Uint8Array(length);
      wrong.set(block.subarray(0, Math.min(length, 256)));
      await assert.rejects(key.decrypt(wrong), RangeError, `length ${length}`);
    }
  },
});

Deno.test({
  name: "generate() accepts only 2048, 3072 and 4096 bits",
  permissions: "none",
  async fn() {
    for (const bits of [0, 1024, 2047, 2049, 8192]) {
      await assert.rejects(RsaPrivateKey.generate(bits), RangeError, `${bits}`);
    }
  },
});

Deno.test({
  name: "generate(4096) makes a working 512-byte-block key",
  permissions: "none",
  async fn() {
    const key = await RsaPrivateKey.generate(4096);
    assert.equal(key.publicKey.modulusBits, 4096);
    assert.equal(key.publicKey.blockSize, 512);
    assert.equal(key.publicKey.maxChunkSize, 446);
    const plaintext = crypto.getRandomValues(new Uint8Array(1000));
    const chunks = await key.publicKey.encryptChunks(plaintext);
    assert.equal(chunks.length, 3);
    assert.deepEqual(await key.decryptChunks(chunks), plaintext);
    const again = await RsaPrivateKey.fromPkcs8Pem(await key.toPkcs8Pem());
    assert.equal(again.publicKey.pem, key.publicKey.pem);
  },
});

Deno.test({
  name: "fromPem() refuses keys that are not RSA, naming the algorithm",
  permissions: "none",
  async fn() {
    await assert.rejects(RsaPublicKey.fromPem(fixtures.EC_P256_PUBLIC_PEM), {
      name: "InvalidKeyError",
      message: /an EC .*not RSA/,
    });
    await assert.rejects(RsaPublicKey.fromPem(fixtures.ED25519_PUBLIC_PEM), {
      name: "InvalidKeyError",
      message: /an Ed25519 key, not RSA/,
    });
    const ec = decodePem(fixtures.EC_P256_PUBLIC_PEM, "PUBLIC KEY");
    assert.equal(keyAlgorithmOid(ec, "spki"), "1.2.840.10045.2.1");
    await assert.rejects(RsaPublicKey.fromSpki(ec), InvalidKeyError);
  },
});

Deno.test({
  name: "fromPem() and fromPkcs8Pem() explain the wrong kind of PEM",
  permissions: "none",
  async fn() {
    await assert.rejects(RsaPublicKey.fromPem(fixtures.RSA2048_PRIVATE_PEM), {
      name: "InvalidKeyError",
      message: /private key.*-pubout/,
    });
    await assert.rejects(
      RsaPrivateKey.fromPkcs8Pem(fixtures.RSA2048_PRIVATE_PKCS1_PEM),
      {
        name: "InvalidKeyError",
        message: /PKCS#1.*openssl pkcs8 -topk8/,
      },
    );
    await assert.rejects(
      RsaPrivateKey.fromPkcs8Pem(fixtures.RSA2048_PUBLIC_PEM),
      {
        name: "InvalidKeyError",
        message: /public key/,
      },
    );
    const pkcs1Public =
      "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n";
    await assert.rejects(RsaPublicKey.fromPem(pkcs1Public), {
      name: "InvalidKeyError",
      message: /RSAPublicKey_in/,
    });
  },
});

Deno.test({
  name: "fromPem() and fromSpki() refuse garbage with InvalidKeyError",
  permissions: "none",
  async fn() {
    for (
      const text of [
        "",
        "garbage",
        "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "-----BEGIN PUBLIC KEY-----\n%%%%\n-----END PUBLIC KEY-----\n",
        fixtures.RSA2048_PUBLIC_PEM.replace("-----END PUBLIC KEY-----", ""),
      ]
    ) {
      await assert.rejects(
        RsaPublicKey.fromPem(text),
        InvalidKeyError,
        JSON.stringify(text),
      );
    }
    await assert.rejects(
      RsaPublicKey.fromSpki(new Uint8Array(0)),
      InvalidKeyError,
    );
    await assert.rejects(
      RsaPublicKey.fromSpki(crypto.getRandomValues(new Uint8Array(300))),
      InvalidKeyError,
    );
    const spki = decodePem(fixtures.RSA2048_PUBLIC_PEM, "PUBLIC KEY");
    await assert.rejects(
      RsaPublicKey.fromSpki(spki.subarray(0, 200)),
      InvalidKeyError,
    );
    await assert.rejects(
      RsaPrivateKey.fromPkcs8Pem("nothing here"),
      InvalidKeyError,
    );
  },
});

Deno.test({
  name: "decodePem() tolerates CRLF and surrounding text",
  permissions: "none",
  async fn() {
    const der = decodePem(fixtures.RSA2048_PUBLIC_PEM, "PUBLIC KEY");
    const crlf = "Subject: mcrelay\r\n\r\n  " +
      fixtures.RSA2048_PUBLIC_PEM.replace(/\n/g, "\r\n") +
      "\r\ntrailing notes\r\n";
    assert.deepEqual(decodePem(crlf, "PUBLIC KEY"), der);
    const pub = await RsaPublicKey.fromPem(crlf);
    assert.equal(pub.pem, fixtures.RSA2048_PUBLIC_PEM);
    // The first block with the wanted label wins, whatever comes before it.
    const both = fixtures.EC_P256_PUBLIC_PEM.replace(/PUBLIC KEY/g, "OTHER") +
      fixtures.RSA2048_PUBLIC_PEM;
    assert.deepEqual(decodePem(both, "PUBLIC KEY"), der);
  },
});

Deno.test({
  name: "encodePem() writes 64-character lines and a final newline",
  permissions: "none",
  fn() {
    const der = Uint8Array.from({ length: 100 }, (_, i) => i);
    const pem = encodePem("TEST", der);
    const lines = pem.split("\n");
    assert.equal(lines[0], "-----BEGIN TEST-----");
    assert.deepEqual(lines.slice(1, 4).map((l) => l.length), [64, 64, 8]);
    assert.equal(lines[4], "-----END TEST-----");
    assert.equal(lines[5], "");
    assert.equal(lines.length, 6);
    assert.deepEqual(decodePem(pem, "TEST"), der);
    assert.equal(encodePem("TEST", new Uint8Array(48)).split("\n").length, 4);
  },
});

Deno.test({
  name:
    "openssl reads our public PEM, re-emits the same text and computes the same fingerprint",
  ignore: !canRunOpenssl,
  // openssl, and the temporary files it reads and writes.
  permissions: { run: ["openssl"], read: true, write: true },
  async fn() {
    const key = await pair();
    const run = async (args: string[], stdin: Uint8Array) => {
      const child = new Deno.Command("openssl", {
        args,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const writer = child.stdin.getWriter();
      await writer.write(stdin);
      await writer.close();
      const out = await child.output();
      assert.ok(out.success, decoder.decode(out.stderr));
      return out.stdout;
    };
    const pem = encoder.encode(key.publicKey.pem);
    const reemitted = await run(["pkey", "-pubin", "-pubout"], pem);
    assert.equal(decoder.decode(reemitted), key.publicKey.pem);
    const der = await run(["pkey", "-pubin", "-outform", "DER"], pem);
    const digest = await run(["dgst", "-sha256", "-binary"], der);
    assert.equal(
      "SHA256:" +
        decoder.decode(await run(["base64", "-A"], digest)).replace(/=+$/, ""),
      key.publicKey.fingerprint,
    );
  },
});

Deno.test({
  name: "openssl decrypts what we encrypt, and we decrypt what it encrypts",
  ignore: !canRunOpenssl,
  // openssl, and the temporary files it reads and writes.
  permissions: { run: ["openssl"], read: true, write: true },
  async fn() {
    const key = await pair();
    const dir = await Deno.makeTempDir({ prefix: "mcrelay_rsa_test_" });
    try {
      const privatePath = `${dir}/private.pem`;
      const publicPath = `${dir}/public.pem`;
      const dataPath = `${dir}/data.bin`;
      await Deno.writeTextFile(privatePath, await key.toPkcs8Pem());
      await Deno.writeTextFile(publicPath, key.publicKey.pem);
      const oaep = [
        "-pkeyopt",
        "rsa_padding_mode:oaep",
        "-pkeyopt",
        "rsa_oaep_md:sha256",
        "-pkeyopt",
        "rsa_mgf1_md:sha256",
      ];
      const openssl = async (args: string[]) => {
        const out = await new Deno.Command("openssl", { args }).output();
        assert.ok(out.success, decoder.decode(out.stderr));
        return out.stdout;
      };
      const message = encoder.encode("from deno to openssl");
      await Deno.writeFile(dataPath, await key.publicKey.encrypt(message));
      assert.deepEqual(
        await openssl([
          "pkeyutl",
          "-decrypt",
          "-inkey",
          privatePath,
          "-in",
          dataPath,
          ...oaep,
        ]),
        message,
      );
      const reply = encoder.encode("from openssl to deno");
      await Deno.writeFile(dataPath, reply);
      const block = await openssl([
        "pkeyutl",
        "-encrypt",
        "-pubin",
        "-inkey",
        publicPath,
        "-in",
        dataPath,
        ...oaep,
      ]);
      assert.deepEqual(await key.decrypt(block), reply);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
