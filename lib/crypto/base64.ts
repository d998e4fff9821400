/**
 * Strict base64 and base64url codecs over bytes (padding required on decode
 * where the Fernet format has it). Pure.
 *
 * Both decoders are table-driven and read a string's char codes or ASCII bytes
 * directly (no intermediate string). They are strict: a character outside the
 * alphabet (including whitespace), `=` anywhere but at the end, an impossible
 * length, or non-zero bits in the last character's unused low bits (a
 * non-canonical encoding) is a `TypeError`.
 *
 * @module
 */

const STD_ALPHABET =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_ALPHABET =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const PAD = 0x3d; // "="
const INVALID = 0xff;

function encodeTable(alphabet: string): Uint8Array {
  const table = new Uint8Array(64);
  for (let i = 0; i < 64; i++) table[i] = alphabet.charCodeAt(i);
  return table;
}

function decodeTable(alphabet: string): Uint8Array {
  const table = new Uint8Array(256).fill(INVALID);
  for (let i = 0; i < 64; i++) table[alphabet.charCodeAt(i)] = i;
  return table;
}

const STD_ENCODE = encodeTable(STD_ALPHABET);
const URL_ENCODE = encodeTable(URL_ALPHABET);
const STD_DECODE = decodeTable(STD_ALPHABET);
const URL_DECODE = decodeTable(URL_ALPHABET);

const textDecoder = new TextDecoder();

/** Writes the base64 ASCII of `bytes` with `table`; padding when `pad`. */
function encodeInto(
  bytes: Uint8Array,
  table: Uint8Array,
  pad: boolean,
): Uint8Array<ArrayBuffer> {
  const n = bytes.length;
  const full = n - (n % 3);
  const rem = n - full;
  const outLen = (full / 3) * 4 + (rem === 0 ? 0 : pad ? 4 : rem + 1);
  const out = new Uint8Array(outLen);
  let o = 0;
  for (let i = 0; i < full; i += 3) {
    const v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out[o] = table[v >>> 18];
    out[o + 1] = table[(v >>> 12) & 63];
    out[o + 2] = table[(v >>> 6) & 63];
    out[o + 3] = table[v & 63];
    o += 4;
  }
  if (rem === 1) {
    const v = bytes[full];
    out[o++] = table[v >>> 2];
    out[o++] = table[(v & 3) << 4];
    if (pad) {
      out[o++] = PAD;
      out[o++] = PAD;
    }
  } else if (rem === 2) {
    const v = (bytes[full] << 8) | bytes[full + 1];
    out[o++] = table[v >>> 10];
    out[o++] = table[(v >>> 4) & 63];
    out[o++] = table[(v & 15) << 2];
    if (pad) out[o++] = PAD;
  }
  return out;
}

function asciiToString(ascii: Uint8Array): string {
  if (ascii.length <= 64) {
    let s = "";
    for (let i = 0; i < ascii.length; i++) s += String.fromCharCode(ascii[i]);
    return s;
  }
  return textDecoder.decode(ascii);
}

/** Encodes bytes as base64url with `=` padding (the Fernet token and key form). */
export function encodeBase64Url(bytes: Uint8Array): string {
  return asciiToString(encodeInto(bytes, URL_ENCODE, true));
}

/**
 * Encodes bytes as base64url with `=` padding, straight into ASCII bytes (no
 * intermediate string): the form a FERNET_MESSAGE record carries.
 */
export function encodeBase64UrlToAscii(
  bytes: Uint8Array,
): Uint8Array<ArrayBuffer> {
  return encodeInto(bytes, URL_ENCODE, true);
}

/** Encodes bytes as standard base64 (`+/`), with padding unless `pad` is false. */
export function encodeBase64(bytes: Uint8Array, pad = true): string {
  return asciiToString(encodeInto(bytes, STD_ENCODE, pad));
}

function codeAt(text: string | Uint8Array, i: number): number {
  return typeof text === "string" ? text.charCodeAt(i) : text[i];
}

/** Builds the TypeError for the first offending position (slow path only). */
function decodeError(
  kind: string,
  text: string | Uint8Array,
  table: Uint8Array,
  dataLen: number,
): TypeError {
  for (let i = 0; i < dataLen; i++) {
    const c = codeAt(text, i);
    if (c > 255 || table[c] === INVALID) {
      const shown = c === PAD
        ? "'=' (padding before the end)"
        : c >= 0x21 && c < 0x7f
        ? `'${String.fromCharCode(c)}'`
        : `code ${c}`;
      return new TypeError(
        `Cannot decode ${kind}: character ${shown} at offset ${i} is outside the alphabet`,
      );
    }
  }
  return new TypeError(
    `Cannot decode ${kind}: the last character has non-zero unused bits (non-canonical encoding)`,
  );
}

/**
 * Decodes with `table`. `requirePadding`: the length must be a multiple of 4
 * (with `=` padding); otherwise padding is optional but, when present, must
 * complete the last quad.
 */
function decodeWith(
  text: string | Uint8Array,
  table: Uint8Array,
  requirePadding: boolean,
  kind: string,
): Uint8Array<ArrayBuffer> {
  const n = text.length;
  let pad = 0;
  if (n > 0 && codeAt(text, n - 1) === PAD) {
    pad = n > 1 && codeAt(text, n - 2) === PAD ? 2 : 1;
  }
  if ((requirePadding || pad > 0) && n % 4 !== 0) {
    throw new TypeError(
      `Cannot decode ${kind}: length ${n} is not a multiple of 4` +
        (requirePadding ? " (padding is required)" : ""),
    );
  }
  const dataLen = n - pad;
  const rem = dataLen % 4;
  if (rem === 1) {
    throw new TypeError(
      `Cannot decode ${kind}: ${dataLen} characters cannot end a valid encoding`,
    );
  }
  const full = dataLen - rem;
  const out = new Uint8Array(
    (full / 4) * 3 + (rem === 0 ? 0 : rem - 1),
  );
  let o = 0;
  let bad = 0;
  if (typeof text === "string") {
    for (let i = 0; i < full; i += 4) {
      const c0 = text.charCodeAt(i);
      const c1 = text.charCodeAt(i + 1);
      const c2 = text.charCodeAt(i + 2);
      const c3 = text.charCodeAt(i + 3);
      // Codes above 255 index past the table (undefined | 0 is 0), so flag them.
      bad |= (c0 | c1 | c2 | c3) & 0xff00;
      const a = table[c0 & 0xff];
      const b = table[c1 & 0xff];
      const c = table[c2 & 0xff];
      const d = table[c3 & 0xff];
      bad |= a | b | c | d;
      out[o] = (a << 2) | (b >>> 4);
      out[o + 1] = (b << 4) | (c >>> 2);
      out[o + 2] = (c << 6) | d;
      o += 3;
    }
  } else {
    for (let i = 0; i < full; i += 4) {
      const a = table[text[i]];
      const b = table[text[i + 1]];
      const c = table[text[i + 2]];
      const d = table[text[i + 3]];
      bad |= a | b | c | d;
      out[o] = (a << 2) | (b >>> 4);
      out[o + 1] = (b << 4) | (c >>> 2);
      out[o + 2] = (c << 6) | d;
      o += 3;
    }
  }
  if (rem !== 0) {
    const c0 = codeAt(text, full);
    const c1 = codeAt(text, full + 1);
    bad |= (c0 | c1) & 0xff00;
    const a = table[c0 & 0xff];
    const b = table[c1 & 0xff];
    bad |= a | b;
    if (rem === 2) {
      if ((b & 15) !== 0) bad |= 0x100;
      out[o] = (a << 2) | (b >>> 4);
    } else {
      const c2 = codeAt(text, full + 2);
      bad |= c2 & 0xff00;
      const c = table[c2 & 0xff];
      bad |= c;
      if ((c & 3) !== 0) bad |= 0x100;
      out[o] = (a << 2) | (b >>> 4);
      out[o + 1] = (b << 4) | (c >>> 2);
    }
  }
  // Valid sextets are 0..63; INVALID (0xff) or a flagged code sets a higher bit.
  if ((bad & ~63) !== 0) throw decodeError(kind, text, table, dataLen);
  return out;
}

/**
 * Decodes base64url text or ASCII bytes, padding required (length a multiple of 4).
 * @throws {TypeError} on a character outside the base64url alphabet, bad length or bad padding
 */
export function decodeBase64Url(
  text: string | Uint8Array,
): Uint8Array<ArrayBuffer> {
  return decodeWith(text, URL_DECODE, true, "base64url");
}

/**
 * Decodes standard base64 (`+/`), padding optional.
 * @throws {TypeError} on a character outside the alphabet or an impossible length
 */
export function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  return decodeWith(text, STD_DECODE, false, "base64");
}
