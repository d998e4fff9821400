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

/** The length of the base64 ASCII of `n` bytes; with `=` padding when `pad`. */
function encodedLength(n: number, pad: boolean): number {
  const rem = n % 3;
  return ((n - rem) / 3) * 4 + (rem === 0 ? 0 : pad ? 4 : rem + 1);
}

/**
 * Writes the base64 ASCII of `bytes` with `table` (padding when `pad`) into
 * `out` at `offset`, which the caller has checked has room; returns the
 * number of bytes written.
 */
function encodeInto(
  bytes: Uint8Array,
  table: Uint8Array,
  pad: boolean,
  out: Uint8Array,
  offset: number,
): number {
  const n = bytes.length;
  const full = n - (n % 3);
  const rem = n - full;
  let o = offset;
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
  return o - offset;
}

/** Allocates and fills the base64 ASCII of `bytes`. */
function encodeNew(
  bytes: Uint8Array,
  table: Uint8Array,
  pad: boolean,
): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(encodedLength(bytes.length, pad));
  encodeInto(bytes, table, pad, out, 0);
  return out;
}

/** Throws a RangeError unless `length` bytes fit in `out` at `offset`. */
function checkRoom(
  what: string,
  length: number,
  out: Uint8Array,
  offset: number,
): void {
  if (
    !Number.isInteger(offset) || offset < 0 || offset + length > out.length
  ) {
    throw new RangeError(
      `Cannot ${what}: ${length} bytes do not fit at offset ${offset} of a ${out.length}-byte buffer`,
    );
  }
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
  return asciiToString(encodeNew(bytes, URL_ENCODE, true));
}

/**
 * Encodes bytes as base64url with `=` padding, straight into ASCII bytes (no
 * intermediate string): the form a FERNET_MESSAGE record carries.
 */
export function encodeBase64UrlToAscii(
  bytes: Uint8Array,
): Uint8Array<ArrayBuffer> {
  return encodeNew(bytes, URL_ENCODE, true);
}

/** The length of {@linkcode encodeBase64UrlToAscii}'s output for `n` bytes. */
export function base64UrlEncodedLength(n: number): number {
  return encodedLength(n, true);
}

/**
 * {@linkcode encodeBase64UrlToAscii}, written into `out` at `offset`.
 * Returns the number of bytes written.
 * @throws {RangeError} when the encoding does not fit
 */
export function encodeBase64UrlToAsciiInto(
  bytes: Uint8Array,
  out: Uint8Array,
  offset: number,
): number {
  checkRoom(
    "encode base64url",
    encodedLength(bytes.length, true),
    out,
    offset,
  );
  return encodeInto(bytes, URL_ENCODE, true, out, offset);
}

/** Encodes bytes as standard base64 (`+/`), with padding unless `pad` is false. */
export function encodeBase64(bytes: Uint8Array, pad = true): string {
  return asciiToString(encodeNew(bytes, STD_ENCODE, pad));
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
 * Checks the length and padding of `text` and returns how many characters
 * carry data. `requirePadding`: the length must be a multiple of 4 (with `=`
 * padding); otherwise padding is optional but, when present, must complete
 * the last quad.
 */
function dataLength(
  text: string | Uint8Array,
  requirePadding: boolean,
  kind: string,
): number {
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
  if (dataLen % 4 === 1) {
    throw new TypeError(
      `Cannot decode ${kind}: ${dataLen} characters cannot end a valid encoding`,
    );
  }
  return dataLen;
}

/** The number of bytes `dataLen` base64 data characters decode to. */
function decodedLength(dataLen: number): number {
  const rem = dataLen % 4;
  return ((dataLen - rem) / 4) * 3 + (rem === 0 ? 0 : rem - 1);
}

/**
 * Decodes the first `dataLen` characters of `text` (as checked by
 * {@linkcode dataLength}) with `table` into `out` at `offset`, which the
 * caller has checked has room.
 */
function decodeInto(
  text: string | Uint8Array,
  dataLen: number,
  table: Uint8Array,
  kind: string,
  out: Uint8Array,
  offset: number,
): void {
  const rem = dataLen % 4;
  const full = dataLen - rem;
  let o = offset;
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
}

/** Decodes `text` with `table` into a new array. */
function decodeNew(
  text: string | Uint8Array,
  table: Uint8Array,
  requirePadding: boolean,
  kind: string,
): Uint8Array<ArrayBuffer> {
  const dataLen = dataLength(text, requirePadding, kind);
  const out = new Uint8Array(decodedLength(dataLen));
  decodeInto(text, dataLen, table, kind, out, 0);
  return out;
}

/**
 * Decodes base64url text or ASCII bytes, padding required (length a multiple of 4).
 * @throws {TypeError} on a character outside the base64url alphabet, bad length or bad padding
 */
export function decodeBase64Url(
  text: string | Uint8Array,
): Uint8Array<ArrayBuffer> {
  return decodeNew(text, URL_DECODE, true, "base64url");
}

/**
 * {@linkcode decodeBase64Url}, written into `out` at `offset`. Returns the
 * number of bytes written; on a decoding error `out` may be partly written.
 * @throws {TypeError} on a character outside the base64url alphabet, bad length or bad padding
 * @throws {RangeError} when the decoded bytes do not fit
 */
export function decodeBase64UrlInto(
  text: string | Uint8Array,
  out: Uint8Array,
  offset: number,
): number {
  const dataLen = dataLength(text, true, "base64url");
  const length = decodedLength(dataLen);
  checkRoom("decode base64url", length, out, offset);
  decodeInto(text, dataLen, URL_DECODE, "base64url", out, offset);
  return length;
}

/**
 * Decodes standard base64 (`+/`), padding optional.
 * @throws {TypeError} on a character outside the alphabet or an impossible length
 */
export function decodeBase64(text: string): Uint8Array<ArrayBuffer> {
  return decodeNew(text, STD_DECODE, false, "base64");
}
