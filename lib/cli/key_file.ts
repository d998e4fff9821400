/**
 * Server key files: PKCS#8 PEM, written with mode 0600, refused when others
 * can read them.
 *
 * @module
 */
import { ConfigError, InvalidKeyError } from "../errors.ts";
import { pemLabels, RsaPrivateKey } from "../crypto/rsa.ts";

/** Server key sizes accepted from a key file, in bits. */
const KEY_FILE_BITS = { min: 2048, max: 4096 };

/** The outcome of {@linkcode loadOrCreateKey}. */
export interface LoadedKey {
  /** The key. */
  readonly key: RsaPrivateKey;
  /** Whether it was generated (and saved, when a path was given) just now. */
  readonly created: boolean;
}

/**
 * Loads the PKCS#8 key at `path`, or generates one of `bits` and saves it
 * there with mode 0600. Without a path, generates an ephemeral key.
 * @throws {ConfigError} when the file is readable by group or others, unreadable, not one RSA PKCS#8 key and nothing else, or a key under 2048 or over 4096 bits
 */
export async function loadOrCreateKey(
  path: string | undefined,
  bits: number,
): Promise<LoadedKey> {
  if (path === undefined) {
    return { key: await RsaPrivateKey.generate(bits), created: true };
  }
  let stat: Deno.FileInfo | undefined;
  try {
    stat = await Deno.stat(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      throw new ConfigError(
        `Cannot read key file ${path}: ${(error as Error).message}`,
      );
    }
  }
  if (stat === undefined) {
    const key = await RsaPrivateKey.generate(bits);
    try {
      await Deno.writeTextFile(path, await key.toPkcs8Pem(), {
        mode: 0o600,
        createNew: true,
      });
    } catch (error) {
      throw new ConfigError(
        `Cannot write key file ${path}: ${(error as Error).message}`,
      );
    }
    return { key, created: true };
  }
  if (!stat.isFile) {
    throw new ConfigError(`Key file ${path} is not a regular file`);
  }
  if (stat.mode !== null && (stat.mode & 0o077) !== 0) {
    const mode = (stat.mode & 0o777).toString(8).padStart(3, "0");
    throw new ConfigError(
      `Key file ${path} is readable by others (mode ${mode}): run "chmod 600 ${path}" and start again`,
    );
  }
  let pem: string;
  try {
    pem = await Deno.readTextFile(path);
  } catch (error) {
    throw new ConfigError(
      `Cannot read key file ${path}: ${(error as Error).message}`,
    );
  }
  checkSingleBlock(path, pem);
  let key: RsaPrivateKey;
  try {
    key = await RsaPrivateKey.fromPkcs8Pem(pem);
  } catch (error) {
    if (error instanceof InvalidKeyError) {
      throw new ConfigError(
        `Key file ${path} does not hold an RSA private key in PKCS#8 PEM (${error.message}): convert it as said, or move it away to have a new one generated`,
      );
    }
    throw error;
  }
  const found = key.publicKey.modulusBits;
  if (found < KEY_FILE_BITS.min || found > KEY_FILE_BITS.max) {
    throw new ConfigError(
      `Key file ${path} holds a ${found}-bit RSA key; mcrelay needs ${KEY_FILE_BITS.min} to ${KEY_FILE_BITS.max} bits: move it away to have a new one generated (--key-bits chooses the size)`,
    );
  }
  return { key, created: false };
}

/**
 * Refuses a key file that holds several PEM blocks, or text before or after
 * its one block: which key would be used must never be a guess.
 */
function checkSingleBlock(path: string, pem: string): void {
  const labels = pemLabels(pem);
  if (labels.length > 1) {
    throw new ConfigError(
      `Key file ${path} holds ${labels.length} PEM blocks (${
        labels.join(", ")
      }): keep only the one PRIVATE KEY block`,
    );
  }
  const text = pem.trim();
  if (
    labels.length === 1 &&
    (!text.startsWith("-----BEGIN ") || !/-----END [^-\r\n]*-----$/.test(text))
  ) {
    throw new ConfigError(
      `Key file ${path} has text before or after its PEM block: remove it, keeping only the PRIVATE KEY block`,
    );
  }
}
