// e2ee v1 frame format in the browser: an independent implementation, with WebCrypto,
// of docs/protocol.md (SFrame, RFC 9605, with the AES-256-CTR-HMAC-SHA512 suites of
// draft-barnes-sframe-iana-256).  The Rust core (rust/e2ee-crypto) is the reference; the
// two are checked against each other and against the official vectors by
// tests/browser/test_sframe_js.py.
//
// Plain ES modules, no dependencies beyond these files.  It needs a secure context (https:, or
// http://127.0.0.1 / localhost) for crypto.subtle, and runs in windows and workers alike
// (an RTCRtpScriptTransform worker imports it).
//
// Conventions:
// - Bytes go in as Uint8Array (any ArrayBuffer or ArrayBufferView is accepted) and come
//   out as a fresh Uint8Array that owns its whole buffer (`out.buffer` is exactly it).
// - KID and CTR are 64-bit unsigned integers, always BigInt.
// - Errors are E2eeError with a `.code` (the names of docs/protocol.md §7) and, for
//   DecryptionInternalError, a `.reason`.  Messages never contain a secret or a key.
//
// Five files: sframe-base.js (constants, errors, helpers), sframe-header.js (the header,
// the clear prefix), sframe-keys.js (secret to keys, the AEADs), sframe-replay.js (the
// replay window) and this one (contexts, senders, receivers), which re-exports the
// public names: applications import this one only.

import {
  E2eeError,
  LIVE_KIDS,
  MAX_REPLAY_WINDOW,
  RETIRED_KIDS,
  U64_MAX,
  bigEndian,
  checkSecretKey,
  checkU64,
  concat,
  constantTimeEqual,
  fail,
  hexKid,
  parseCodec,
  suiteInfo,
  toBytes,
} from "./sframe-base.js";
import { ReplayWindow } from "./sframe-replay.js";
import { clearPrefixLength, decodeHeader, encodeHeader } from "./sframe-header.js";
import {
  deriveKeySalt,
  deriveSecretKey,
  importAeadKey,
  kidSecretId,
  newKid,
  open,
  seal,
  secretId,
} from "./sframe-keys.js";

export {
  E2eeError,
  LIVE_KIDS,
  MAX_ITERATIONS,
  MAX_REPLAY_WINDOW,
  MAX_SECRET_CHARS,
  MAX_SESSION_ID_LEN,
  MIN_ITERATIONS,
  MIN_SECRET_CHARS,
  RETIRED_KIDS,
  SUITES,
} from "./sframe-base.js";
export { clearPrefixLength, decodeHeader, encodeHeader } from "./sframe-header.js";
export {
  aeadDecrypt,
  aeadEncrypt,
  deriveKeySalt,
  deriveSecretKey,
  kidSecretId,
  newKid,
  normalizeSecret,
  secretId,
} from "./sframe-keys.js";

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
