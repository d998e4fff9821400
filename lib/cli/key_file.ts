/**
 * Server key files: PKCS#8 PEM, written with mode 0600, refused when others
 * can read them.
 *
 * @module
 */
import { ConfigError, InvalidKeyError } from "../errors.ts";
import { RsaPrivateKey } from "../crypto/rsa.ts";

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
 * @throws {ConfigError} when the file is readable by group or others, unreadable, or not an RSA PKCS#8 key
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
  try {
    return { key: await RsaPrivateKey.fromPkcs8Pem(pem), created: false };
  } catch (error) {
    if (error instanceof InvalidKeyError) {
      throw new ConfigError(
        `Key file ${path} does not hold an RSA private key in PKCS#8 PEM (${error.message}): remove it to have a new one generated`,
      );
    }
    throw error;
  }
}
