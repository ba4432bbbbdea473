// e2ee v1 frame format in the browser (sframe.js): from a secret to keys
// (docs/protocol.md §2) and the key schedule and AEADs of RFC 9605 §4.4-4.5, with
// WebCrypto.  Internal: applications import sframe.js, which re-exports the public names.

import {
  KEY_LABEL,
  MAX_ITERATIONS,
  MAX_PLAINTEXT_LEN,
  MAX_SECRET_CHARS,
  MAX_SESSION_ID_LEN,
  MIN_ITERATIONS,
  MIN_SECRET_CHARS,
  SALT_LABEL,
  SALT_PREFIX,
  SECRET_ID_INFO,
  bigEndian,
  checkSecretKey,
  checkU64,
  concat,
  constantTimeEqual,
  fail,
  readBigEndian,
  subtle,
  suiteInfo,
  toBytes,
  utf8,
} from "./sframe-base.js";

// ---------------------------------------------------------------------------------------
// Secret to keys (protocol.md §2)
// ---------------------------------------------------------------------------------------

/**
 * The secret in Unicode NFC, checked to be 8 to 256 code points long (protocol.md §2.1).
 * Cheap: use it to validate input before the slow {@link deriveSecretKey}.
 *
 * @param {string} secret
 * @returns {string} the NFC form
 * @throws {E2eeError} `code = "InvalidEncryptionSecret"`; the message gives the length,
 *   never the secret
 */
export function normalizeSecret(secret) {
  if (typeof secret !== "string") {
    throw fail("InvalidEncryptionSecret", "the encryption secret must be a string");
  }
  // A lone surrogate has no UTF-8 form: TextEncoder would silently turn it into U+FFFD
  // (and the core, which takes a Rust str, cannot receive it at all).
  if (!secret.isWellFormed()) {
    throw fail("InvalidEncryptionSecret", "the encryption secret is not valid Unicode");
  }
  const nfc = secret.normalize("NFC");
  const n = [...nfc].length; // code points, not UTF-16 units
  if (n < MIN_SECRET_CHARS) {
    throw fail(
      "InvalidEncryptionSecret",
      `invalid encryption secret: ${n} characters, at least ${MIN_SECRET_CHARS} are needed`,
    );
  }
  if (n > MAX_SECRET_CHARS) {
    throw fail(
      "InvalidEncryptionSecret",
      `invalid encryption secret: ${n} characters, at most ${MAX_SECRET_CHARS} are allowed`,
    );
  }
  return nfc;
}

/**
 * `secret_key = PBKDF2-HMAC-SHA256(P = UTF-8(NFC(secret)), S = "e2ee v1 session " ||
 * UTF-8(sessionId), c = iterations, dkLen = 32)` (protocol.md §2.2, RFC 8018 §5.2).
 *
 * @param {string} secret the shared encryption secret (8 to 256 code points after NFC)
 * @param {string} sessionId 1 to 1024 bytes of UTF-8
 * @param {number} iterations 1 to 10,000,000 (a session parameter; refuse low counts in
 *   production, protocol.md §1)
 * @returns {Promise<Uint8Array>} the 32-byte secret key
 * @throws {E2eeError} `code = "InvalidEncryptionSecret"` for a bad secret;
 *   RangeError/TypeError for bad iterations or session id
 */
export async function deriveSecretKey(secret, sessionId, iterations) {
  const nfc = normalizeSecret(secret);
  if (!Number.isInteger(iterations) || iterations < MIN_ITERATIONS || iterations > MAX_ITERATIONS) {
    throw new RangeError(
      `iterations must be an integer from ${MIN_ITERATIONS} to ${MAX_ITERATIONS}, not ${iterations}`,
    );
  }
  if (typeof sessionId !== "string" || !sessionId.isWellFormed()) {
    throw new TypeError("the session id must be a well-formed string");
  }
  const sid = utf8(sessionId);
  if (sid.length === 0 || sid.length > MAX_SESSION_ID_LEN) {
    throw new RangeError(`session id must be 1 to ${MAX_SESSION_ID_LEN} bytes, not ${sid.length}`);
  }
  const password = utf8(nfc);
  try {
    const key = await subtle().importKey("raw", password, "PBKDF2", false, ["deriveBits"]);
    const params = { name: "PBKDF2", hash: "SHA-256", salt: concat(utf8(SALT_PREFIX), sid), iterations };
    return new Uint8Array(await subtle().deriveBits(params, key, 256));
  } finally {
    password.fill(0);
  }
}

/**
 * HKDF (RFC 5869) with an empty salt: `HKDF-Expand(HKDF-Extract("", ikm), info, length)`.
 * WebCrypto runs Extract and Expand in one call.
 */
async function hkdf(hash, ikm, info, length) {
  const key = await subtle().importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const params = { name: "HKDF", hash, salt: new Uint8Array(0), info };
  return new Uint8Array(await subtle().deriveBits(params, key, length * 8));
}

/**
 * `secret_id = HKDF-SHA256(IKM = secretKey, salt = "", info = "e2ee v1 secret id", L = 2)`
 * read as a big-endian 16-bit number (protocol.md §2.3).  It names a secret without
 * revealing it, and is the top 16 bits of every KID made for it.
 *
 * @param {Uint8Array} secretKey the 32-byte key from {@link deriveSecretKey}
 * @returns {Promise<number>} 0 to 65535
 */
export async function secretId(secretKey) {
  const id = await hkdf("SHA-256", checkSecretKey(secretKey), utf8(SECRET_ID_INFO), 2);
  return (id[0] << 8) | id[1];
}

/**
 * A fresh KID for one (track, secret): `secretId << 48 | r`, with `r` 48 random bits from
 * `crypto.getRandomValues` (protocol.md §2.4).  Draw a new one for every secret a track
 * encrypts under, even one used before.
 *
 * @param {number} secretId 0 to 65535
 * @returns {bigint}
 */
export function newKid(secretId) {
  if (!Number.isInteger(secretId) || secretId < 0 || secretId > 0xffff) {
    throw new RangeError("secretId must be an integer from 0 to 65535");
  }
  const r = globalThis.crypto.getRandomValues(new Uint8Array(6));
  return (BigInt(secretId) << 48n) | readBigEndian(r, 0, 6);
}

/**
 * The `secret_id` a KID was made for: its top 16 bits.
 *
 * @param {bigint} kid
 * @returns {number}
 */
export function kidSecretId(kid) {
  return Number(checkU64(kid, "kid") >> 48n);
}

// ---------------------------------------------------------------------------------------
// Key schedule and AEADs (RFC 9605 §4.4, §4.5)
// ---------------------------------------------------------------------------------------

/**
 * `sframe_key` and `sframe_salt` of one KID, RFC 9605 §4.4.2:
 *
 *     sframe_secret = HKDF-Extract("", base_key)
 *     sframe_key    = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret key "  || KID || suite, Nk)
 *     sframe_salt   = HKDF-Expand(sframe_secret, "SFrame 1.0 Secret salt " || KID || suite, Nn)
 *
 * with KID a 64-bit and the suite a 16-bit big-endian integer, and the suite's hash.
 * Low level, for vectors and tests; frames go through {@link SFrameContext}.
 *
 * @param {number} suite 5 or 6
 * @param {Uint8Array} baseKey
 * @param {bigint} kid
 * @returns {Promise<{key: Uint8Array, salt: Uint8Array}>}
 */
export async function deriveKeySalt(suite, baseKey, kid) {
  const s = suiteInfo(suite);
  baseKey = toBytes(baseKey, "base key");
  const context = concat(bigEndian(checkU64(kid, "kid"), 8), bigEndian(BigInt(s.id), 2));
  const key = await hkdf(s.hash, baseKey, concat(utf8(KEY_LABEL), context), s.nk);
  const salt = await hkdf(s.hash, baseKey, concat(utf8(SALT_LABEL), context), s.nn);
  return { key, salt };
}

/** The suite's AEAD key as non-extractable CryptoKeys. CTR-HMAC (RFC 9605 §4.5.1):
 * `enc_key = key[..Nka]`, `auth_key = key[Nka..]`. */
export async function importAeadKey(s, key) {
  if (key.length !== s.nk) throw fail("InvalidLength", `an ${s.name} key is ${s.nk} bytes`);
  if (s.aead === "gcm") {
    return { gcm: await subtle().importKey("raw", key, "AES-GCM", false, ["encrypt", "decrypt"]) };
  }
  const [enc, auth] = await Promise.all([
    subtle().importKey("raw", key.subarray(0, s.nka), "AES-CTR", false, ["encrypt", "decrypt"]),
    subtle().importKey("raw", key.subarray(s.nka), { name: "HMAC", hash: s.hash }, false, ["sign"]),
  ]);
  return { enc, auth };
}

/** AES-CTR from the counter block `nonce || 00 00 00 00`, incrementing its low 32 bits
 * (RFC 9605 §4.5.1).  WebCrypto's `length: 32` is exactly that; the plaintext cap keeps
 * the counter from wrapping (WebCrypto would refuse a wrap anyway). */
async function aesCtr(key, nonce, data) {
  const counter = concat(nonce, new Uint8Array(4));
  return new Uint8Array(await subtle().encrypt({ name: "AES-CTR", counter, length: 32 }, key, data));
}

/**
 * The CTR-HMAC tag (RFC 9605 §4.5.1):
 * `truncate(HMAC(auth_key, len(AAD) || len(CT) || Nt || nonce || AAD || CT), Nt)`, the
 * three lengths as 64-bit big-endian integers.  WebCrypto's HMAC has no truncation, so
 * the full MAC is computed and cut here.
 */
async function ctrHmacTag(s, authKey, nonce, aad, ct) {
  const lengths = [aad.length, ct.length, s.nt].map((n) => bigEndian(BigInt(n), 8));
  const input = concat(...lengths, nonce, aad, ct);
  const mac = new Uint8Array(await subtle().sign("HMAC", authKey, input));
  return mac.slice(0, s.nt);
}

/** `ct || tag`. */
export async function seal(s, keys, nonce, aad, plaintext) {
  if (plaintext.length > MAX_PLAINTEXT_LEN) {
    throw fail("InvalidLength", `plaintext of ${plaintext.length} bytes is too long for an SFrame`);
  }
  if (s.aead === "gcm") {
    const params = { name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 };
    return new Uint8Array(await subtle().encrypt(params, keys.gcm, plaintext));
  }
  const ct = await aesCtr(keys.enc, nonce, plaintext);
  return concat(ct, await ctrHmacTag(s, keys.auth, nonce, aad, ct));
}

/** The plaintext of `ct || tag`, only if the tag authenticates; else AuthenticationFailed.
 * Opaque on purpose: the error never says what failed. */
export async function open(s, keys, nonce, aad, sealed) {
  const authFailed = () => fail("AuthenticationFailed", "the frame did not authenticate");
  if (sealed.length < s.nt) throw fail("InvalidLength", "shorter than a tag");
  if (s.aead === "gcm") {
    const params = { name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 };
    try {
      return new Uint8Array(await subtle().decrypt(params, keys.gcm, sealed));
    } catch {
      throw authFailed(); // WebCrypto's GCM releases no plaintext on failure
    }
  }
  const ct = sealed.subarray(0, sealed.length - s.nt);
  const tag = sealed.subarray(sealed.length - s.nt);
  // Tag first, then decrypt: nothing is decrypted for a forged frame.  WebCrypto's
  // HMAC verify refuses truncated MACs, hence our own comparison without early exit.
  const expected = await ctrHmacTag(s, keys.auth, nonce, aad, ct);
  if (!constantTimeEqual(expected, tag)) throw authFailed();
  return aesCtr(keys.enc, nonce, ct);
}

/**
 * The suite's bare AEAD (RFC 9605 §4.5) with an explicit key (Nk bytes), nonce (12) and
 * AAD: `ct || tag`.  Low level, for vectors; frames go through {@link SFrameContext}.
 *
 * @param {number} suite
 * @param {Uint8Array} key
 * @param {Uint8Array} nonce
 * @param {Uint8Array} aad
 * @param {Uint8Array} plaintext
 * @returns {Promise<Uint8Array>}
 */
export async function aeadEncrypt(suite, key, nonce, aad, plaintext) {
  const s = suiteInfo(suite);
  const n = checkNonce(s, nonce);
  const keys = await importAeadKey(s, toBytes(key, "key"));
  return seal(s, keys, n, toBytes(aad, "aad"), toBytes(plaintext, "plaintext"));
}

/**
 * The inverse of {@link aeadEncrypt}.
 *
 * @returns {Promise<Uint8Array>} the plaintext
 * @throws {E2eeError} `code = "AuthenticationFailed"`
 */
export async function aeadDecrypt(suite, key, nonce, aad, sealed) {
  const s = suiteInfo(suite);
  const n = checkNonce(s, nonce);
  const keys = await importAeadKey(s, toBytes(key, "key"));
  return open(s, keys, n, toBytes(aad, "aad"), toBytes(sealed, "ciphertext"));
}

function checkNonce(s, nonce) {
  const n = toBytes(nonce, "nonce");
  if (n.length !== s.nn) throw fail("InvalidLength", `a nonce is ${s.nn} bytes`);
  return n;
}
