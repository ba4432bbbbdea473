// e2ee v1 frame format in the browser: an independent implementation, with WebCrypto,
// of docs/protocol.md (SFrame, RFC 9605, with the AES-256-CTR-HMAC-SHA512 suites of
// draft-barnes-sframe-iana-256).  The Rust core (rust/e2ee-crypto) is the reference; the
// two are checked against each other and against the official vectors by
// tests/browser/test_sframe_js.py.
//
// Plain ES module, no dependencies.  It needs a secure context (https:, or
// http://127.0.0.1 / localhost) for crypto.subtle, and runs in windows and workers alike
// (an RTCRtpScriptTransform worker imports it).
//
// Conventions:
// - Bytes go in as Uint8Array (any ArrayBuffer or ArrayBufferView is accepted) and come
//   out as a fresh Uint8Array that owns its whole buffer (`out.buffer` is exactly it).
// - KID and CTR are 64-bit unsigned integers, always BigInt.
// - Errors are E2eeError with a `.code` (the names of docs/protocol.md §7) and, for
//   DecryptionInternalError, a `.reason`.  Messages never contain a secret or a key.

// ---------------------------------------------------------------------------------------
// Constants (docs/protocol.md §2, §3, §6)
// ---------------------------------------------------------------------------------------

/** Shortest and longest secret, in Unicode code points after NFC (protocol.md §2). */
export const MIN_SECRET_CHARS = 8;
export const MAX_SECRET_CHARS = 256;
/** PBKDF2 iteration bounds (protocol.md §2); the server picks the count. */
export const MIN_ITERATIONS = 1;
export const MAX_ITERATIONS = 10_000_000;
/** Longest session id in the PBKDF2 salt, in UTF-8 bytes. */
export const MAX_SESSION_ID_LEN = 1024;
/** Widest replay window (protocol.md §6); 0 turns replay protection off. */
export const MAX_REPLAY_WINDOW = 128;
/** Authenticated KIDs a FrameReceiver keeps keys for (the core's LIVE_KIDS). */
export const LIVE_KIDS = 16;
/** Evicted KIDs whose highest CTR is remembered (the core's RETIRED_KIDS). */
export const RETIRED_KIDS = 1024;

const U64_MAX = (1n << 64n) - 1n;
const U128_MASK = (1n << 128n) - 1n;
/** Largest plaintext: AES-CTR's 32-bit block counter must not wrap (protocol.md §3). */
const MAX_PLAINTEXT_LEN = 0xffffffff * 16;
const SALT_PREFIX = "e2ee v1 session ";
const SECRET_ID_INFO = "e2ee v1 secret id";
const KEY_LABEL = "SFrame 1.0 Secret key ";
const SALT_LABEL = "SFrame 1.0 Secret salt ";

/**
 * The cipher suites this module implements (the IANA "SFrame Cipher Suites" registry;
 * protocol.md §3).  Any other suite number throws (`code = "UnsupportedCipherSuite"`).
 *
 * - `aead`: `"gcm"` (AES-GCM) or `"ctr-hmac"` (RFC 9605 §4.5.1).
 * - `hash`: the WebCrypto name of the suite's HKDF (and HMAC) hash.
 * - `nh`, `nka`, `nk`, `nn`, `nt`: byte lengths of the hash output, the AES key, the
 *   whole AEAD key, the nonce and the tag.  (RFC 9605 has no Nka for GCM; as in the
 *   core it is the AES key length there.)
 *
 * @type {Readonly<Record<number, Readonly<{id: number, name: string, aead: string,
 *   hash: string, nh: number, nka: number, nk: number, nn: number, nt: number}>>>}
 */
export const SUITES = Object.freeze({
  5: Object.freeze({
    id: 5,
    name: "AES_256_GCM_SHA512_128",
    aead: "gcm",
    hash: "SHA-512",
    nh: 64,
    nka: 32,
    nk: 32,
    nn: 12,
    nt: 16,
  }),
  6: Object.freeze({
    id: 6,
    name: "AES_256_CTR_HMAC_SHA512_80",
    aead: "ctr-hmac",
    hash: "SHA-512",
    nh: 64,
    nka: 32,
    nk: 96,
    nn: 12,
    nt: 10,
  }),
});

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/**
 * Every error this module raises on purpose.  `code` is one of: InvalidEncryptionSecret,
 * EncryptionSecretMissing, EncryptionSecretMismatch (`.kid`), DecryptionInternalError
 * (`.reason`: "authentication" | "malformed" | "replayed"), EncryptionInternalError,
 * AuthenticationFailed, MalformedHeader, InvalidLength, FrameTooShort, UnknownKeyId,
 * UnsupportedCipherSuite, UnsupportedCodec, KidReused.  Wrong argument types raise a
 * plain TypeError or RangeError instead.
 */
export class E2eeError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{cause?: unknown, reason?: string, kid?: bigint, ctr?: bigint}} [details]
   */
  constructor(code, message, details = {}) {
    const { cause, ...fields } = details;
    super(message, cause === undefined ? undefined : { cause });
    this.name = code;
    this.code = code;
    Object.assign(this, fields);
  }
}

function fail(code, message, details) {
  return new E2eeError(code, message, details);
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/** crypto.subtle, or a clear error outside a secure context. */
function subtle() {
  const s = globalThis.crypto?.subtle;
  if (!s) {
    throw new Error("crypto.subtle is unavailable: sframe.js needs a secure context");
  }
  return s;
}

/** A Uint8Array view of any BufferSource (no copy). */
function toBytes(x, what = "bytes") {
  if (x instanceof Uint8Array) return x;
  if (x instanceof ArrayBuffer) return new Uint8Array(x);
  if (ArrayBuffer.isView(x)) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  throw new TypeError(`${what} must be a Uint8Array, ArrayBuffer or ArrayBufferView`);
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const utf8 = (s) => new TextEncoder().encode(s);

function checkU64(v, what) {
  if (typeof v !== "bigint") throw new TypeError(`${what} must be a BigInt`);
  if (v < 0n || v > U64_MAX) throw new RangeError(`${what} must be from 0 to 2^64 - 1`);
  return v;
}

/** `v` as an `n`-byte big-endian integer. */
function bigEndian(v, n) {
  const out = new Uint8Array(n);
  for (let i = n - 1; i >= 0; i--, v >>= 8n) out[i] = Number(v & 0xffn);
  return out;
}

function readBigEndian(bytes, at, n) {
  let v = 0n;
  for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(bytes[at + i]);
  return v;
}

/**
 * Equality of two byte strings without an early exit, so that the time taken does not
 * say where they differ (the spirit of a constant-time compare; a JS engine gives no
 * hard guarantee).
 */
function constantTimeEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

const hexKid = (kid) => `0x${kid.toString(16).padStart(16, "0")}`;

function suiteInfo(suite) {
  const s = Number.isInteger(suite) ? SUITES[suite] : undefined;
  if (!s) {
    throw fail("UnsupportedCipherSuite", `cipher suite ${String(suite)} is not supported (5 or 6)`);
  }
  return s;
}

/** `"vp8"`, `"opus"`, or the MIME forms `video/VP8`, `audio/opus`, in any case. */
function parseCodec(name) {
  const lower = typeof name === "string" ? name.toLowerCase() : "";
  if (lower === "vp8" || lower === "video/vp8") return "vp8";
  if (lower === "opus" || lower === "audio/opus") return "opus";
  throw fail("UnsupportedCodec", `codec ${String(name)} is not supported (vp8 or opus)`);
}

function checkSecretKey(key) {
  const bytes = toBytes(key, "secret key");
  if (bytes.length !== 32) {
    throw fail("InvalidLength", `a secret key is 32 bytes, not ${bytes.length}`);
  }
  return bytes;
}

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
// Header encoding, RFC 9605 §4.3 (protocol.md §5)
//
//  0 1 2 3 4 5 6 7
// +-+-+-+-+-+-+-+-+---------------------------+---------------------------+
// |X|  K  |Y|  C  |   KID (0 or K+1 bytes)    |   CTR (0 or C+1 bytes)    |
// +-+-+-+-+-+-+-+-+---------------------------+---------------------------+
// ---------------------------------------------------------------------------------------

/** Bytes a value takes after the config byte: 0 below 8, else 1 to 8 (the fewest). */
function extraLen(v) {
  if (v < 8n) return 0;
  let n = 0;
  for (; v > 0n; v >>= 8n) n++;
  return n;
}

/** The 4-bit half of the config byte for a value of `n` extra bytes. */
const nibble = (v, n) => (n === 0 ? Number(v) : 0x08 | (n - 1));

/**
 * The SFrame header for (kid, ctr), in its minimal encoding (RFC 9605 §4.3): a value
 * below 8 sits in the config byte, a larger one follows big-endian in the fewest bytes.
 *
 * @param {bigint} kid 0 to 2^64 - 1
 * @param {bigint} ctr 0 to 2^64 - 1
 * @returns {Uint8Array} 1 to 17 bytes
 */
export function encodeHeader(kid, ctr) {
  checkU64(kid, "kid");
  checkU64(ctr, "ctr");
  const kn = extraLen(kid);
  const cn = extraLen(ctr);
  const config = Uint8Array.of((nibble(kid, kn) << 4) | nibble(ctr, cn));
  return concat(config, bigEndian(kid, kn), bigEndian(ctr, cn));
}

/** One field announced by a config nibble: `{value, n}`, or null if truncated or not
 * minimal. */
function decodeField(half, bytes, at) {
  if ((half & 0x08) === 0) return { value: BigInt(half), n: 0 };
  const n = (half & 0x07) + 1;
  if (at + n > bytes.length) return null; // truncated
  const value = readBigEndian(bytes, at, n);
  if (extraLen(value) !== n) return null; // non-minimal (protocol.md §5)
  return { value, n };
}

/**
 * Parses the SFrame header at `bytes[offset]`.  Only the minimal encoding is accepted,
 * as by the core (protocol.md §5): `80 05` and `09 00 10` are refused.
 *
 * @param {Uint8Array} bytes
 * @param {number} [offset=0]
 * @returns {{kid: bigint, ctr: bigint, length: number} | null} `length` is the header's
 *   size in bytes; null when the header is empty, truncated or not minimal
 */
export function decodeHeader(bytes, offset = 0) {
  bytes = toBytes(bytes);
  if (!Number.isInteger(offset) || offset < 0) {
    throw new RangeError("offset must be a non-negative integer");
  }
  if (offset >= bytes.length) return null;
  const config = bytes[offset];
  const kid = decodeField(config >> 4, bytes, offset + 1);
  if (!kid) return null;
  const ctr = decodeField(config & 0x0f, bytes, offset + 1 + kid.n);
  if (!ctr) return null;
  return { kid: kid.value, ctr: ctr.value, length: 1 + kid.n + ctr.n };
}

// ---------------------------------------------------------------------------------------
// Codec clear prefix (protocol.md §4)
// ---------------------------------------------------------------------------------------

/**
 * How many leading bytes of an encoded frame stay in clear (and are authenticated as
 * SFrame metadata), protocol.md §4:
 * - VP8 key frame (`frame[0] & 1 == 0`, RFC 6386 §9.1): 10 (frame tag, start code,
 *   dimensions);
 * - VP8 inter frame: 3 (frame tag);
 * - Opus: 1 (the TOC byte, RFC 6716 §3.1).
 *
 * @param {"vp8"|"opus"} codec (the MIME forms `video/VP8`, `audio/opus` work too)
 * @param {Uint8Array} frame
 * @returns {number}
 * @throws {E2eeError} `code = "FrameTooShort"` for a frame shorter than its prefix
 *   (an empty frame never fits)
 */
export function clearPrefixLength(codec, frame) {
  codec = parseCodec(codec);
  frame = toBytes(frame, "frame");
  let needed = 1;
  if (codec === "vp8") needed = frame.length > 0 && (frame[0] & 0x01) === 0 ? 10 : 3;
  if (frame.length < needed) {
    throw fail("FrameTooShort", `${codec} frame of ${frame.length} bytes, ${needed} are needed`);
  }
  return needed;
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
async function importAeadKey(s, key) {
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
async function seal(s, keys, nonce, aad, plaintext) {
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
async function open(s, keys, nonce, aad, sealed) {
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

// ---------------------------------------------------------------------------------------
// SFrameContext: one KID's key (RFC 9605 §4.4)
// ---------------------------------------------------------------------------------------

const CREATE = Symbol("SFrameContext.create");

/**
 * One KID's SFrame key and salt: encrypts and decrypts `header || ct || tag` with
 * `metadata` authenticated but not carried (RFC 9605 §4.4.3).  Low level: it keeps no
 * counter and no replay window ({@link FrameSender} and {@link FrameReceiver} do).
 * Create with `await SFrameContext.create(...)`.
 */
export class SFrameContext {
  #suite;
  #kid;
  #salt;
  #keys;

  /** @private use {@link SFrameContext.create} */
  constructor(token, suite, kid, salt, keys) {
    if (token !== CREATE) throw new TypeError("use `await SFrameContext.create(...)`");
    this.#suite = suite;
    this.#kid = kid;
    this.#salt = salt;
    this.#keys = keys;
  }

  /**
   * Derives the KID's `sframe_key` and `sframe_salt` from `baseKey` (RFC 9605 §4.4.2)
   * and imports the key into WebCrypto (non-extractable).
   *
   * @param {number} suite 5 or 6
   * @param {Uint8Array} baseKey any length (the e2ee secret key in practice)
   * @param {bigint} kid
   * @returns {Promise<SFrameContext>}
   */
  static async create(suite, baseKey, kid) {
    const s = suiteInfo(suite);
    const { key, salt } = await deriveKeySalt(s.id, baseKey, kid);
    try {
      return new SFrameContext(CREATE, s, kid, salt, await importAeadKey(s, key));
    } finally {
      key.fill(0);
    }
  }

  /** @returns {number} the suite number */
  get suite() {
    return this.#suite.id;
  }

  /** @returns {bigint} */
  get kid() {
    return this.#kid;
  }

  /** `nonce = sframe_salt XOR encode_big_endian(CTR, Nn)` (RFC 9605 §4.4.3). */
  #nonce(ctr) {
    const nonce = this.#salt.slice();
    const c = bigEndian(ctr, 8);
    for (let i = 0; i < 8; i++) nonce[4 + i] ^= c[i];
    return nonce;
  }

  /**
   * `header || ciphertext || tag` for `plaintext` under (this KID, `ctr`), with
   * `AAD = header || metadata` (RFC 9605 §4.4.3).  The caller must never use a CTR twice.
   *
   * @param {bigint} ctr
   * @param {Uint8Array} metadata authenticated, not carried
   * @param {Uint8Array} plaintext
   * @returns {Promise<Uint8Array>}
   */
  async encrypt(ctr, metadata, plaintext) {
    const header = encodeHeader(this.#kid, checkU64(ctr, "ctr"));
    const aad = concat(header, toBytes(metadata, "metadata"));
    const sealed = await seal(this.#suite, this.#keys, this.#nonce(ctr), aad, toBytes(plaintext, "plaintext"));
    return concat(header, sealed);
  }

  /**
   * The plaintext of an SFrame made under this KID, after its tag was checked (for
   * CTR-HMAC, before anything is decrypted).  Keeps no replay state.
   *
   * @param {Uint8Array} metadata the metadata it was sealed with
   * @param {Uint8Array} wire `header || ciphertext || tag`
   * @returns {Promise<Uint8Array>}
   * @throws {E2eeError} `code = "AuthenticationFailed"`, or `"MalformedHeader"`,
   *   `"InvalidLength"` (no room for the tag), `"UnknownKeyId"` (another KID)
   */
  async decrypt(metadata, wire) {
    wire = toBytes(wire, "wire");
    const header = decodeHeader(wire);
    if (!header) throw fail("MalformedHeader", "malformed SFrame header (truncated or not minimal)");
    if (header.kid !== this.#kid) {
      throw fail("UnknownKeyId", `frame under KID ${hexKid(header.kid)}, not this one`, { kid: header.kid });
    }
    if (wire.length - header.length < this.#suite.nt) {
      throw fail("InvalidLength", "frame too short for its tag");
    }
    const aad = concat(wire.subarray(0, header.length), toBytes(metadata, "metadata"));
    return open(this.#suite, this.#keys, this.#nonce(header.ctr), aad, wire.subarray(header.length));
  }
}

// ---------------------------------------------------------------------------------------
// FrameSender: one outgoing track (protocol.md §4)
//
//   wire = clear || SFrame(KID, CTR, metadata = clear, plaintext = frame[n:])
// ---------------------------------------------------------------------------------------

/**
 * Encrypts one outgoing VP8 or Opus track: the codec's clear prefix stays readable and is
 * authenticated as SFrame metadata; the rest is sealed under the current KID, CTR from 0
 * (protocol.md §4).  Nothing is ever returned in clear: without a key, encrypt throws.
 */
export class FrameSender {
  #suite;
  #codec;
  #ctx = null;
  #ctr = 0n;
  #generation = 0;
  #usedKids = new Set();

  /**
   * @param {number} suite 5 or 6 (the session's suite)
   * @param {"vp8"|"opus"} codec
   */
  constructor(suite, codec) {
    this.#suite = suiteInfo(suite);
    this.#codec = parseCodec(codec);
  }

  /** @returns {number} */
  get suite() {
    return this.#suite.id;
  }

  /** @returns {"vp8"|"opus"} */
  get codec() {
    return this.#codec;
  }

  /** @returns {bigint|null} the KID frames are sealed under, null without a key */
  get kid() {
    return this.#ctx ? this.#ctx.kid : null;
  }

  /**
   * Encrypts from now on under `secretKey` with `kid` (from {@link newKid}), CTR from 0.
   * The last call wins, even if derivations finish out of order.  A KID this sender
   * used before is refused (`code = "KidReused"`): its CTRs would repeat.
   *
   * @param {Uint8Array} secretKey 32 bytes, from {@link deriveSecretKey}
   * @param {bigint} kid
   * @returns {Promise<void>}
   */
  async setKey(secretKey, kid) {
    const key = checkSecretKey(secretKey);
    checkU64(kid, "kid");
    if (this.#usedKids.has(kid)) {
      throw fail("KidReused", `KID ${hexKid(kid)} was used by this sender already`, { kid });
    }
    this.#usedKids.add(kid);
    const generation = ++this.#generation;
    const ctx = await SFrameContext.create(this.#suite.id, key, kid);
    if (generation !== this.#generation) return; // a later setKey or clearKey won
    this.#ctx = ctx;
    this.#ctr = 0n;
  }

  /** Stops encrypting: every later frame throws `EncryptionSecretMissing`. */
  clearKey() {
    this.#generation++;
    this.#ctx = null;
  }

  /**
   * The wire form of one encoded frame: `clear || header || ciphertext || tag`.
   *
   * @param {Uint8Array} frame an encoded VP8 frame or Opus packet
   * @returns {Promise<Uint8Array>}
   * @throws {E2eeError} `code = "EncryptionSecretMissing"` without a key;
   *   `"EncryptionInternalError"` for a frame that cannot be encrypted (shorter than its
   *   clear prefix, or CTR exhausted).  Drop such a frame, never send it.
   */
  async encrypt(frame) {
    frame = toBytes(frame, "frame");
    const ctx = this.#ctx;
    if (!ctx) throw fail("EncryptionSecretMissing", "no encryption secret is set");
    let n;
    try {
      n = clearPrefixLength(this.#codec, frame);
    } catch (e) {
      throw fail("EncryptionInternalError", `cannot encrypt: ${e.message}`, { cause: e });
    }
    if (this.#ctr > U64_MAX) {
      throw fail("EncryptionInternalError", "every CTR of this KID is used; set a new KID");
    }
    // Taken before any await, so concurrent calls never share a CTR.
    const ctr = this.#ctr++;
    const clear = frame.slice(0, n);
    const sframe = await ctx.encrypt(ctr, clear, frame.subarray(n));
    return concat(clear, sframe);
  }
}

// ---------------------------------------------------------------------------------------
// Replay window, RFC 3711 §3.3.2 (protocol.md §6)
// ---------------------------------------------------------------------------------------

/** The highest CTR accepted and a bitmap of the `width` CTRs at and below it (bit i:
 * `top - i` was accepted).  Updated only after a frame authenticated. */
class ReplayWindow {
  constructor(width) {
    this.width = BigInt(width);
    this.top = null;
    this.seen = 0n;
  }

  /** A window for a KID whose bitmap was lost: every CTR up to `top` counts as seen. */
  static resume(width, top) {
    const w = new ReplayWindow(width);
    if (width > 0) {
      w.top = top;
      w.seen = U128_MASK;
    }
    return w;
  }

  /** Would `ctr` be accepted?  (No change.) */
  check(ctr) {
    if (this.width === 0n || this.top === null || ctr > this.top) return true;
    const age = this.top - ctr;
    return age < this.width && ((this.seen >> age) & 1n) === 0n;
  }

  /** Records `ctr`: only after check() and authentication both succeeded. */
  accept(ctr) {
    if (this.width === 0n) return;
    if (this.top === null) {
      this.top = ctr;
      this.seen = 1n;
    } else if (ctr <= this.top) {
      const age = this.top - ctr;
      if (age < this.width) this.seen |= 1n << age;
    } else {
      const shift = ctr - this.top;
      this.seen = shift >= 128n ? 1n : ((this.seen << shift) & U128_MASK) | 1n;
      this.top = ctr;
    }
  }
}

// ---------------------------------------------------------------------------------------
// FrameReceiver: one incoming track (protocol.md §6)
// ---------------------------------------------------------------------------------------

const live = (held, now) => held.expiresAt === null || now < held.expiresAt;

/**
 * Decrypts one incoming VP8 or Opus track (protocol.md §6).  It holds the secrets
 * (current, and previous ones until they expire), derives a KID's key when a frame under
 * a KID whose `secret_id` matches a held secret arrives, caches it only once a frame
 * under it authenticated, and keeps a replay window per KID.
 *
 * Calls to {@link decrypt} and {@link setSecrets} run one at a time, in call order (an
 * internal queue): concurrent calls can never accept one (KID, CTR) twice.
 */
export class FrameReceiver {
  #suite;
  #codec;
  #width;
  #secrets = [];
  #live = new Map(); // kid -> {ctx, window, key, expiresAt}, oldest first
  #retired = new Map(); // kid -> highest CTR, oldest first
  #queue = Promise.resolve();
  #stats = { frames_ok: 0, frames_mismatched: 0, frames_failed: 0, frames_replayed: 0, frames_missing: 0 };

  /**
   * @param {number} suite 5 or 6 (the session's suite)
   * @param {"vp8"|"opus"} codec
   * @param {{replayWindow?: number}} [options] `replayWindow`: how many CTRs back a
   *   reordered frame is still accepted, 1 to 128 (default 128); 0 turns replay
   *   protection off and must not be used in production
   */
  constructor(suite, codec, { replayWindow = 128 } = {}) {
    if (!Number.isInteger(replayWindow) || replayWindow < 0 || replayWindow > MAX_REPLAY_WINDOW) {
      throw new RangeError(`replayWindow must be an integer from 0 to ${MAX_REPLAY_WINDOW}`);
    }
    this.#suite = suiteInfo(suite);
    this.#codec = parseCodec(codec);
    this.#width = replayWindow;
  }

  /** @returns {number} */
  get suite() {
    return this.#suite.id;
  }

  /** @returns {"vp8"|"opus"} */
  get codec() {
    return this.#codec;
  }

  /**
   * What became of every frame so far, each counted once (the names of protocol.md §7).
   *
   * @returns {{frames_ok: number, frames_mismatched: number, frames_failed: number,
   *   frames_replayed: number, frames_missing: number}}
   */
  get stats() {
    return { ...this.#stats };
  }

  /** @returns {bigint[]} the KIDs with cached keys, oldest first */
  get kids() {
    return [...this.#live.keys()];
  }

  /** Runs `fn` after every earlier queued call. */
  #serialize(fn) {
    const run = this.#queue.then(fn);
    this.#queue = run.catch(() => {});
    return run;
  }

  /**
   * Replaces the held secrets.  KIDs of secrets still held keep their keys and replay
   * windows; KIDs of secrets no longer held are retired (their highest CTR is kept).
   *
   * @param {Array<{key: Uint8Array, id?: number, expiresAt?: number|null}>} secrets
   *   `key`: 32 bytes from {@link deriveSecretKey}; `id`: its {@link secretId}
   *   (computed if absent, checked if given); `expiresAt`: a `performance.now()` time
   *   in ms after which it is no longer accepted (absent or null: until replaced)
   * @returns {Promise<void>}
   */
  async setSecrets(secrets) {
    if (!Array.isArray(secrets)) throw new TypeError("secrets must be an array");
    const entries = secrets.map(({ key, id, expiresAt = null }) => {
      if (expiresAt !== null && (typeof expiresAt !== "number" || Number.isNaN(expiresAt))) {
        throw new TypeError("expiresAt must be a performance.now() time in ms, or null");
      }
      return { key: checkSecretKey(key).slice(), id, expiresAt };
    });
    return this.#serialize(async () => {
      for (const e of entries) {
        const actual = await secretId(e.key);
        if (e.id !== undefined && e.id !== actual) {
          throw new RangeError("a secret's id does not match its key");
        }
        e.id = actual;
      }
      this.#install(entries);
    });
  }

  #install(secrets) {
    this.#secrets = secrets;
    for (const [kid, state] of [...this.#live]) {
      const held = secrets.find((s) => constantTimeEqual(s.key, state.key));
      if (held) state.expiresAt = held.expiresAt;
      else this.#retire(kid);
    }
  }

  /**
   * Authenticates and decrypts one wire frame.
   *
   * @param {Uint8Array} wire `clear || header || ciphertext || tag`
   * @returns {Promise<{frame: Uint8Array, kid: bigint, ctr: bigint}>} `frame` is the
   *   original encoded frame (clear prefix and plaintext)
   * @throws {E2eeError} `code`:
   *   - `"EncryptionSecretMismatch"` (`.kid`): the KID's secret id matches no live held
   *     secret while one is held (decided without crypto, so injectable);
   *   - `"EncryptionSecretMissing"`: no secret held;
   *   - `"DecryptionInternalError"` with `.reason` `"malformed"` (too short, bad or
   *     non-minimal header, no room for the tag), `"replayed"` (CTR accepted before or
   *     older than the window: drop silently) or `"authentication"`.
   *   Every outcome is counted in {@link stats}.
   */
  async decrypt(wire) {
    const bytes = toBytes(wire, "wire").slice(); // ours: the caller may reuse its buffer
    return this.#serialize(() => this.#counted(this.#open(bytes)));
  }

  async #counted(result) {
    const s = this.#stats;
    try {
      const out = await result;
      s.frames_ok++;
      return out;
    } catch (e) {
      if (e.code === "EncryptionSecretMismatch") s.frames_mismatched++;
      else if (e.code === "EncryptionSecretMissing") s.frames_missing++;
      else if (e.reason === "replayed") s.frames_replayed++;
      else s.frames_failed++;
      throw e;
    }
  }

  /** The order of protocol.md §6, "Per frame". */
  async #open(wire) {
    // 1. Malformed frames are failures whatever secrets are held.
    const { n, kid, ctr } = this.#parse(wire);
    const clear = wire.subarray(0, n);
    const sframe = wire.subarray(n);

    // 2. A live KID whose secret expired is retired.
    const now = performance.now();
    let state = this.#live.get(kid);
    if (state && !live(state, now)) {
      this.#retire(kid);
      state = undefined;
    }

    // 3. Live KID: replay check, then authenticate, then update the window.
    if (state) {
      this.#checkReplay(state.window, kid, ctr);
      const plaintext = await this.#authenticate(state.ctx, clear, sframe);
      state.window.accept(ctr);
      return { frame: concat(clear, plaintext), kid, ctr };
    }

    // 4. Unknown or retired KID: find a live held secret by the KID's secret_id.
    const sid = kidSecretId(kid);
    const held = this.#secrets.find((s) => s.id === sid && live(s, now));
    if (!held) {
      if (this.#secrets.some((s) => live(s, now))) {
        throw fail("EncryptionSecretMismatch", `frame under KID ${hexKid(kid)}: no held secret has its secret id`, { kid });
      }
      throw fail("EncryptionSecretMissing", "no encryption secret is set");
    }

    // 5. A retired KID is re-admitted only above its old top; then derive and authenticate.
    const top = this.#retired.get(kid);
    const window = top === undefined ? new ReplayWindow(this.#width) : ReplayWindow.resume(this.#width, top);
    this.#checkReplay(window, kid, ctr);
    const ctx = await SFrameContext.create(this.#suite.id, held.key, kid);
    const plaintext = await this.#authenticate(ctx, clear, sframe);
    window.accept(ctr);

    // 6. Only now is the KID's key cached, with its window.
    this.#admit(kid, { ctx, window, key: held.key, expiresAt: held.expiresAt });
    return { frame: concat(clear, plaintext), kid, ctr };
  }

  /** Clear prefix, SFrame header and room for the tag, or a "malformed" error. */
  #parse(wire) {
    const malformed = (message) => fail("DecryptionInternalError", message, { reason: "malformed" });
    let n;
    try {
      n = clearPrefixLength(this.#codec, wire);
    } catch (e) {
      throw fail("DecryptionInternalError", e.message, { reason: "malformed", cause: e });
    }
    const header = decodeHeader(wire, n);
    if (!header) throw malformed("malformed SFrame header (truncated or not minimal)");
    if (wire.length - n - header.length < this.#suite.nt) throw malformed("frame too short for its tag");
    return { n, kid: header.kid, ctr: header.ctr };
  }

  #checkReplay(window, kid, ctr) {
    if (!window.check(ctr)) {
      throw fail("DecryptionInternalError", `replayed frame: KID ${hexKid(kid)}, CTR ${ctr}`, {
        reason: "replayed",
        kid,
        ctr,
      });
    }
  }

  async #authenticate(ctx, clear, sframe) {
    try {
      return await ctx.decrypt(clear, sframe);
    } catch (e) {
      const reason = e.code === "AuthenticationFailed" ? "authentication" : "malformed";
      throw fail("DecryptionInternalError", e.message, { reason, cause: e });
    }
  }

  /** Caches an authenticated KID, evicting the oldest beyond LIVE_KIDS. */
  #admit(kid, state) {
    if (this.#live.size >= LIVE_KIDS) this.#retire(this.#live.keys().next().value);
    this.#retired.delete(kid);
    this.#live.set(kid, state);
  }

  /** Drops a KID's key but remembers its highest CTR (the oldest forgotten first). */
  #retire(kid) {
    const state = this.#live.get(kid);
    if (!state) return;
    this.#live.delete(kid);
    if (state.window.top === null) return; // replay protection off: nothing to keep
    if (this.#retired.size >= RETIRED_KIDS) this.#retired.delete(this.#retired.keys().next().value);
    this.#retired.set(kid, state.window.top);
  }
}
