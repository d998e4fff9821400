/**
 * Keys derived for one purpose (PROTOCOL.md section 7.1): the derivation
 * byte for byte, a removal notice byte for byte against a vector made with
 * pyca/cryptography, and the separation itself: a token under a member's key
 * never opens as a removal notice, nor the other way round. Pure.
 */
import assert from "node:assert/strict";
import {
  deriveKeyBytes,
  deriveKeyText,
  REMOVAL_NOTICE_LABEL,
} from "../../lib/crypto/derive_key.ts";
import { type FernetBackend, FernetKey } from "../../lib/crypto/fernet.ts";
import { IvMarker } from "../../lib/crypto/iv_mark.ts";
import { encodeRemoval, noticeRecord } from "../../lib/wire/notice.ts";
import { encodeRecords } from "../../lib/wire/tlv.ts";
import { TokenGuard } from "../../lib/crypto/token_guard.ts";

const test = (name: string, fn: () => void | Promise<void>) =>
  Deno.test({ name, permissions: "none", fn });

const hex = (bytes: Uint8Array) =>
  Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
const decoder = new TextDecoder();

/** The member key of the vector: bytes 00 01 ... 1f. */
const MEMBER_KEY = Uint8Array.from({ length: 32 }, (_, i) => i);
const MEMBER_KEY_TEXT = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/** HMAC-SHA-256(MEMBER_KEY, "mcrelay removal notice v1"), from Python's hmac module. */
const REMOVAL_KEY_HEX =
  "bcb74121bd19ffba038978ac394692bd314d74e6b44131553b6366392cd74fb7";
const REMOVAL_KEY_TEXT = "vLdBIb0Z_7oDiXisOUaSvTFNdOa0QTFVO2NmOSzXT7c=";
/**
 * pyca/cryptography 48.0.0, `Fernet(REMOVAL_KEY_TEXT)._encrypt_from_parts(
 * 00 07 00 00 00 3c "spam", 1800000000, IV a0 a1 ... af)`: a ban of 60 s
 * for "spam".
 */
const REMOVAL_TOKEN =
  "gAAAAABrSdIAoKGio6SlpqeoqaqrrK2ur738PY_Oor4Z_bCHteii9nXT2YxV42cx22N4rJB2PRjQlTMaRAlZ9XV0xzk1AUZnOQ==";
const NOW_SECONDS = 1_800_000_000;
const IV = Uint8Array.from({ length: 16 }, (_, i) => 0xa0 + i);

test("deriveKeyBytes() is HMAC-SHA-256 of the label under the 32 key bytes (pinned vector)", () => {
  assert.equal(REMOVAL_NOTICE_LABEL, "mcrelay removal notice v1");
  assert.equal(
    hex(deriveKeyBytes(MEMBER_KEY, REMOVAL_NOTICE_LABEL)),
    REMOVAL_KEY_HEX,
  );
  assert.equal(
    deriveKeyText(MEMBER_KEY_TEXT, REMOVAL_NOTICE_LABEL),
    REMOVAL_KEY_TEXT,
  );
  // Another label, another key; the input is left as it was.
  assert.notEqual(
    hex(deriveKeyBytes(MEMBER_KEY, "mcrelay removal notice v2")),
    REMOVAL_KEY_HEX,
  );
  assert.equal(hex(MEMBER_KEY.subarray(0, 4)), "00010203");
});

test("deriveKeyBytes() and deriveKeyText() refuse a key that is not 32 bytes and an empty label", () => {
  assert.throws(
    () => deriveKeyBytes(new Uint8Array(31), REMOVAL_NOTICE_LABEL),
    /from 31 bytes: a Fernet key is 32 bytes/,
  );
  assert.throws(() => deriveKeyBytes(MEMBER_KEY, ""), RangeError);
  assert.throws(() => deriveKeyText("AAAA", REMOVAL_NOTICE_LABEL), RangeError);
  assert.throws(
    () => deriveKeyText("not base64!", REMOVAL_NOTICE_LABEL),
    TypeError,
  );
});

for (const backend of ["node", "webcrypto"] as FernetBackend[]) {
  test(`a removal notice byte for byte (${backend}): the pyca token under the derived key, the NOTICE record around it`, async () => {
    const guard = new TokenGuard(
      await FernetKey.fromText(MEMBER_KEY_TEXT, backend),
      new IvMarker(),
    );
    const removal = await guard.derive(REMOVAL_NOTICE_LABEL);
    assert.equal(removal.key.text, REMOVAL_KEY_TEXT);
    assert.equal(removal.key.backend, backend);
    const body = encodeRemoval({ code: 7, seconds: 60, reason: "spam" });
    assert.equal(hex(body), "00070000003c7370616d");
    const token = decoder.decode(
      await removal.key.encrypt(body, { nowSeconds: NOW_SECONDS, iv: IV }),
    );
    assert.equal(token, REMOVAL_TOKEN);
    const record = encodeRecords([noticeRecord(7, 1200, token)!]);
    assert.equal(hex(record.subarray(0, 6)), "001000660007");
    assert.equal(decoder.decode(record.subarray(6)), REMOVAL_TOKEN);
    const now = NOW_SECONDS * 1000;
    const tokenBytes = new TextEncoder().encode(REMOVAL_TOKEN);
    // Under the member's own key it is no token at all.
    assert.deepEqual(await guard.open(tokenBytes, now), {
      ok: false,
      reason: "token_signature",
    });
    assert.deepEqual(await removal.open(tokenBytes, now), {
      ok: true,
      plaintext: body,
    });
    // Its replay window is its own, and holds.
    assert.deepEqual(await removal.open(tokenBytes, now), {
      ok: false,
      reason: "token_replayed",
    });
  });

  test(`a token under the member's key never opens as a removal notice, nor the other way round (${backend})`, async () => {
    const server = new TokenGuard(
      await FernetKey.generate(backend),
      new IvMarker(),
    );
    const client = new TokenGuard(
      await FernetKey.fromText(server.key.text, backend),
      new IvMarker(),
    );
    const [serverRemoval, clientRemoval] = await Promise.all([
      server.derive(REMOVAL_NOTICE_LABEL),
      client.derive(REMOVAL_NOTICE_LABEL),
    ]);
    assert.notEqual(serverRemoval.key.text, server.key.text);
    const now = Date.now();
    // A relayed message whose plaintext a member chose to be a ban body.
    const body = encodeRemoval({ code: 7, seconds: 0, reason: "gotcha" });
    const message = await server.seal(body, now);
    assert.deepEqual(await clientRemoval.open(message, now), {
      ok: false,
      reason: "token_signature",
    });
    // A removal notice does not open as a message either.
    const notice = await serverRemoval.seal(body, now);
    assert.deepEqual(await client.open(notice, now), {
      ok: false,
      reason: "token_signature",
    });
    // Each opens where it belongs.
    assert.ok((await client.open(message, now)).ok);
    assert.ok((await clientRemoval.open(notice, now)).ok);
  });
}

test("TokenGuard.deriveSync() is for keys of the node backend; derive() serves both", async () => {
  const guard = new TokenGuard(
    await FernetKey.fromText(MEMBER_KEY_TEXT, "webcrypto"),
    new IvMarker(),
  );
  assert.throws(
    () => guard.deriveSync(REMOVAL_NOTICE_LABEL),
    /needs a key of the node backend; use derive\(\)/,
  );
  const node = new TokenGuard(
    FernetKey.fromTextSync(MEMBER_KEY_TEXT),
    new IvMarker(),
    30,
  );
  const removal = node.deriveSync(REMOVAL_NOTICE_LABEL);
  assert.equal(removal.key.text, REMOVAL_KEY_TEXT);
  assert.equal(removal.maxAgeSeconds, 30);
  assert.equal(removal.marker, node.marker);
});
