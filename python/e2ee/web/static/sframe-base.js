// e2ee v1 frame format in the browser (sframe.js): constants, the error class and the
// small byte helpers the other sframe-*.js modules share.  Internal: applications import
// sframe.js, which re-exports the public names.

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

export const U64_MAX = (1n << 64n) - 1n;
export const U128_MASK = (1n << 128n) - 1n;
/** Largest plaintext: AES-CTR's 32-bit block counter must not wrap (protocol.md §3). */
export const MAX_PLAINTEXT_LEN = 0xffffffff * 16;
export const SALT_PREFIX = "e2ee v1 session ";
export const SECRET_ID_INFO = "e2ee v1 secret id";
export const KEY_LABEL = "SFrame 1.0 Secret key ";
export const SALT_LABEL = "SFrame 1.0 Secret salt ";

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

export function fail(code, message, details) {
  return new E2eeError(code, message, details);
}

// ---------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------

/** crypto.subtle, or a clear error outside a secure context. */
export function subtle() {
  const s = globalThis.crypto?.subtle;
  if (!s) {
    throw new Error("crypto.subtle is unavailable: sframe.js needs a secure context");
  }
  return s;
}

/** A Uint8Array view of any BufferSource (no copy). */
export function toBytes(x, what = "bytes") {
  if (x instanceof Uint8Array) return x;
  if (x instanceof ArrayBuffer) return new Uint8Array(x);
  if (ArrayBuffer.isView(x)) return new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
  throw new TypeError(`${what} must be a Uint8Array, ArrayBuffer or ArrayBufferView`);
}

export function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export const utf8 = (s) => new TextEncoder().encode(s);

export function checkU64(v, what) {
  if (typeof v !== "bigint") throw new TypeError(`${what} must be a BigInt`);
  if (v < 0n || v > U64_MAX) throw new RangeError(`${what} must be from 0 to 2^64 - 1`);
  return v;
}

/** `v` as an `n`-byte big-endian integer. */
export function bigEndian(v, n) {
  const out = new Uint8Array(n);
  for (let i = n - 1; i >= 0; i--, v >>= 8n) out[i] = Number(v & 0xffn);
  return out;
}

export function readBigEndian(bytes, at, n) {
  let v = 0n;
  for (let i = 0; i < n; i++) v = (v << 8n) | BigInt(bytes[at + i]);
  return v;
}

/**
 * Equality of two byte strings without an early exit, so that the time taken does not
 * say where they differ (the spirit of a constant-time compare; a JS engine gives no
 * hard guarantee).
 */
export function constantTimeEqual(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export const hexKid = (kid) => `0x${kid.toString(16).padStart(16, "0")}`;

export function suiteInfo(suite) {
  const s = Number.isInteger(suite) ? SUITES[suite] : undefined;
  if (!s) {
    throw fail("UnsupportedCipherSuite", `cipher suite ${String(suite)} is not supported (5 or 6)`);
  }
  return s;
}

/** `"vp8"`, `"opus"`, or the MIME forms `video/VP8`, `audio/opus`, in any case. */
export function parseCodec(name) {
  const lower = typeof name === "string" ? name.toLowerCase() : "";
  if (lower === "vp8" || lower === "video/vp8") return "vp8";
  if (lower === "opus" || lower === "audio/opus") return "opus";
  throw fail("UnsupportedCodec", `codec ${String(name)} is not supported (vp8 or opus)`);
}

export function checkSecretKey(key) {
  const bytes = toBytes(key, "secret key");
  if (bytes.length !== 32) {
    throw fail("InvalidLength", `a secret key is 32 bytes, not ${bytes.length}`);
  }
  return bytes;
}
