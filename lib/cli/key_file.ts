/**
 * Secret files: server key files (PKCS#8 PEM) and cluster key files (one
 * Fernet key), written with mode 0600, refused when others can read them.
 *
 * @module
 */
import { ConfigError, InvalidKeyError } from "../errors.ts";
import { pemLabels } from "../crypto/pem.ts";
import { RsaPrivateKey } from "../crypto/rsa.ts";
import { FernetKey } from "../crypto/fernet.ts";

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
  let generated: RsaPrivateKey | undefined;
  const { text: pem, created } = await readOrCreateSecretFile(
    path,
    "Key file",
    async () => {
      generated = await RsaPrivateKey.generate(bits);
      return await generated.toPkcs8Pem();
    },
  );
  if (created) return { key: generated!, created };
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

/** The outcome of {@linkcode readOrCreateSecretFile}. */
export interface SecretFile {
  /** The file's text. */
  readonly text: string;
  /** Whether the file was created just now. */
  readonly created: boolean;
}

/**
 * Reads the secret file at `path`, or creates it with mode 0600 holding
 * `create()`'s text when it does not exist.
 * @param label how errors name the file, e.g. "Key file"
 * @throws {ConfigError} when the file is readable by group or others, not a regular file, or cannot be read or written
 */
export async function readOrCreateSecretFile(
  path: string,
  label: string,
  create: () => Promise<string>,
): Promise<SecretFile> {
  let stat: Deno.FileInfo | undefined;
  try {
    stat = await Deno.stat(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) {
      throw cannotRead(label, path, error);
    }
  }
  if (stat === undefined) {
    const text = await create();
    try {
      await Deno.writeTextFile(path, text, { mode: 0o600, createNew: true });
    } catch (error) {
      throw new ConfigError(
        `Cannot write ${label.toLowerCase()} ${path}: ${
          (error as Error).message
        }`,
      );
    }
    return { text, created: true };
  }
  if (!stat.isFile) {
    throw new ConfigError(`${label} ${path} is not a regular file`);
  }
  if (stat.mode !== null && (stat.mode & 0o077) !== 0) {
    const mode = (stat.mode & 0o777).toString(8).padStart(3, "0");
    throw new ConfigError(
      `${label} ${path} is readable by others (mode ${mode}): run "chmod 600 ${path}" and start again`,
    );
  }
  try {
    return { text: await Deno.readTextFile(path), created: false };
  } catch (error) {
    throw cannotRead(label, path, error);
  }
}

/**
 * The error for a secret file that cannot be read. Deno's own advice for a
 * special file (`--allow-all`) would lift the sandbox to read a system file
 * that holds no key anyway, so it is replaced.
 */
function cannotRead(label: string, path: string, error: unknown): ConfigError {
  const why = error instanceof Deno.errors.NotCapable
    ? "Deno lets mcrelay read ordinary files only, not special ones such as those under /proc or /dev: give the path of an ordinary file (a missing one is created with mode 0600), e.g. ~/.config/mcrelay/server.pem"
    : (error as Error).message;
  return new ConfigError(`Cannot read ${label.toLowerCase()} ${path}: ${why}`);
}

/**
 * Loads the cluster key at `path` (one Fernet key: 44 base64url characters
 * and an optional line end), or generates one and saves it with mode 0600.
 * @throws {ConfigError} as {@linkcode readOrCreateSecretFile}, or when the file holds anything but one Fernet key
 */
export async function loadOrCreateClusterKey(
  path: string,
): Promise<{ readonly key: FernetKey; readonly created: boolean }> {
  const { text, created } = await readOrCreateSecretFile(
    path,
    "Cluster key file",
    async () => `${(await FernetKey.generate()).text}\n`,
  );
  const keyText = text.replace(/\r?\n$/, "");
  if (!/^[A-Za-z0-9_-]{43}=$/.test(keyText)) {
    throw new ConfigError(
      `Cluster key file ${path} does not hold one Fernet key (44 base64url characters ending in "="): copy the file of another relay of the cluster, or move it away to have a new one generated`,
    );
  }
  try {
    return { key: await FernetKey.fromText(keyText), created };
  } catch (error) {
    if (error instanceof InvalidKeyError) {
      throw new ConfigError(`Cluster key file ${path}: ${error.message}`);
    }
    throw error;
  }
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
