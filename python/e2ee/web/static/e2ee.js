// The browser client of e2ee: a participant in a session on an e2ee server, with
// end-to-end encryption of every track.  The same concepts and names as the Python
// client (python/e2ee/client/session.py), in JavaScript style:
//
//   import { connect } from "/static/e2ee.js";
//   const session = await connect(location.origin, sessionId, token, {
//     encryptionSecret: "our shared secret",
//   });
//   session.on("streamCreated", ({ stream }) => session.subscribe(stream.id));
//   const publisher = await session.publish({ video: camTrack, audio: micTrack, name });
//   const subscriber = await session.subscribe(streamId);  // subscriber.stream: MediaStream
//   session.on("encryptionSecretMismatch", ({ streamId }) => warn(streamId));
//   await session.setEncryptionSecret("a new shared secret");
//   await session.disconnect();
//
// The client is the trust anchor, not the server (docs/protocol.md §1).  Given an
// encryption secret it requires end-to-end encryption: a server hello without it, with a
// cipher suite outside the policy (5 and 6 by default) or with fewer PBKDF2 iterations
// than the policy's floor (100,000 unless the application lowers it explicitly) is
// refused at connect, before any key is derived or any media leaves.
//
// Media is never sent in clear: every sender gets its E2EE transform (an
// RTCRtpScriptTransform in a worker, e2ee-worker.js) before the offer is made, and where
// the browser has no transform API publishing and subscribing fail (there is no
// plaintext fallback).  Every description set or sent is stripped of the RTP header
// extensions computed from the media (the audio level would show the router who
// speaks).  Keys: PBKDF2 in this thread (WebCrypto, off the main loop), then the derived
// secret keys are posted to the worker, which draws a random KID per (track, secret).
//
// Signaling is the WebSocket protocol of python/e2ee/server/signaling.py.

import {
  E2eeError,
  MAX_ITERATIONS,
  SUITES,
  deriveSecretKey,
  normalizeSecret,
  secretId,
} from "./sframe.js";

export { E2eeError };

// ---------------------------------------------------------------------------------------
// Errors: the product's codes (python/e2ee/errors.py), as `.code`
// ---------------------------------------------------------------------------------------

/** The secret is not a string of 8 to 256 characters after NFC normalization. */
export class InvalidEncryptionSecret extends E2eeError {
  constructor(message, details) {
    super("InvalidEncryptionSecret", message, details);
  }
}

/** Connect, publish or subscribe in an E2EE session without a secret. */
export class EncryptionSecretMissing extends E2eeError {
  constructor(message, details) {
    super("EncryptionSecretMissing", message, details);
  }
}

/** Frames arrive under a secret this client does not hold (`.kid`). */
export class EncryptionSecretMismatch extends E2eeError {
  constructor(message, details) {
    super("EncryptionSecretMismatch", message, details);
  }
}

/** A frame under a held secret failed authentication or parsing (`.reason`). */
export class DecryptionInternalError extends E2eeError {
  constructor(message, details) {
    super("DecryptionInternalError", message, details);
  }
}

/** A frame could not be encrypted (it is dropped, never sent in clear), or media could
 * not be protected at all (publishing fails). */
export class EncryptionInternalError extends E2eeError {
  constructor(message, details) {
    super("EncryptionInternalError", message, details);
  }
}

/** The server asked for a cipher suite or PBKDF2 iteration count the policy refuses
 * (`.suite`, `.kdfIterations`: what the server asked). */
export class WeakSessionParameters extends E2eeError {
  constructor(message, details) {
    super("WeakSessionParameters", message, details);
  }
}

/** The server refused something, or the client refused the server; `.code` is the
 * server's error code or one of the client's (`not_connected`, `protocol_error`,
 * `e2ee_required`, `e2ee_not_supported`, `timeout`, `disconnected`). */
export class SessionError extends E2eeError {}

/** Given an encryption secret, the client refuses a session without E2EE. */
export class E2eeRequired extends SessionError {
  constructor(message) {
    super("e2ee_required", message);
  }
}

const ERROR_CLASSES = {
  InvalidEncryptionSecret,
  EncryptionSecretMissing,
  EncryptionSecretMismatch,
  DecryptionInternalError,
  EncryptionInternalError,
};

/** An error of sframe.js as the matching class of this module (same code). */
function asNamedError(e) {
  const cls = e && ERROR_CLASSES[e.code];
  if (!cls || e instanceof cls) return e;
  const { reason, kid } = e;
  return new cls(e.message, { cause: e, ...(reason ? { reason } : {}), ...(kid ? { kid } : {}) });
}

// ---------------------------------------------------------------------------------------
// Policy: what the client accepts from a server (python/e2ee/wire/params.py)
// ---------------------------------------------------------------------------------------

/** The fewest PBKDF2 iterations accepted by default (docs/protocol.md §1). */
export const MIN_ITERATIONS = 100_000;
/** The suites accepted by default: AES-256 with an 80-bit or 128-bit tag. */
export const E2EE_SUITES = Object.freeze([5, 6]);
/** How long a replaced secret is still accepted from others, in seconds. */
export const DEFAULT_GRACE_PERIOD = 10;
/** Extensions whose values are computed from the media (RFC 6464, RFC 6465). */
export const MEDIA_DERIVED_EXTENSIONS = Object.freeze([
  "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
  "urn:ietf:params:rtp-hdrext:csrc-audio-level",
]);
/** The codecs of an E2EE session: negotiated MIME type -> codec of the frame format. */
export const SUPPORTED_CODECS = Object.freeze({ "video/vp8": "vp8", "audio/opus": "opus" });

const isInt = (v) => Number.isInteger(v);

/**
 * A policy: `{minIterations, maxIterations, suites, pinSuite, pinIterations}`.  The
 * defaults are the floors (100,000 to 10,000,000 iterations, suites 5 and 6); a test or
 * an application may lower `minIterations` explicitly, nothing lowers it implicitly.
 * Only suites this browser client implements (5, 6) may be listed.
 *
 * @throws {RangeError} for an inconsistent policy
 */
export function sessionPolicy(options = {}) {
  const p = {
    minIterations: MIN_ITERATIONS,
    maxIterations: MAX_ITERATIONS,
    suites: E2EE_SUITES,
    pinSuite: null,
    pinIterations: null,
    ...options,
  };
  const suites = [...p.suites];
  if (!suites.length || !suites.every((s) => isInt(s) && SUITES[s])) {
    throw new RangeError(`policy suites must be a non-empty list of 5 and 6, not ${suites}`);
  }
  for (const name of ["minIterations", "maxIterations"]) {
    if (!isInt(p[name]) || p[name] < 1 || p[name] > MAX_ITERATIONS) {
      throw new RangeError(`policy ${name} must be an integer from 1 to ${MAX_ITERATIONS}`);
    }
  }
  if (p.minIterations > p.maxIterations) {
    throw new RangeError("policy minIterations must not exceed maxIterations");
  }
  if (p.pinSuite !== null && !suites.includes(p.pinSuite)) {
    throw new RangeError(`policy pinSuite ${p.pinSuite} is not one of the allowed suites`);
  }
  if (
    p.pinIterations !== null &&
    !(isInt(p.pinIterations) && p.pinIterations >= p.minIterations && p.pinIterations <= p.maxIterations)
  ) {
    throw new RangeError(`policy pinIterations must be from ${p.minIterations} to ${p.maxIterations}`);
  }
  return Object.freeze({ ...p, suites: Object.freeze(suites) });
}

const suiteName = (n) => (SUITES[n] ? `${n} (${SUITES[n].name})` : String(n));

/**
 * Checks the `session` object of a server's hello against what the client wants
 * (python/e2ee/client/policy.py: check_hello).  Pure.
 *
 * @returns {{suite: number, kdfIterations: number} | null} the parameters to derive keys
 *   with, or null for a session without E2EE (joined only without a secret)
 * @throws {E2eeRequired} a secret was given and the server offers no valid E2EE session
 * @throws {WeakSessionParameters} its suite or iteration count fails the policy
 * @throws {EncryptionSecretMissing} an E2EE session and no secret
 */
export function checkHello(session, { secretGiven, policy = sessionPolicy() }) {
  const { e2ee, media_mode: mediaMode, suite, kdf_iterations: iterations } = session ?? {};
  if (!secretGiven) {
    if (e2ee === true) {
      throw new EncryptionSecretMissing(
        "this session is end-to-end encrypted: set an encryption secret to connect",
      );
    }
    if (e2ee !== false) throw new SessionError("protocol_error", `the server's hello has e2ee=${e2ee}`);
    return null;
  }
  if (e2ee !== true) {
    throw new E2eeRequired(
      `the server offered an unencrypted session (e2ee=${e2ee}); this client was given an ` +
        "encryption secret and refuses to join without end-to-end encryption",
    );
  }
  if (mediaMode !== "routed") {
    throw new E2eeRequired(
      `the server offered a session with media_mode=${mediaMode}, which has no end-to-end ` +
        "encryption; this client refuses to join anything but an end-to-end encrypted routed session",
    );
  }
  if (!isInt(suite) || !isInt(iterations)) {
    throw new E2eeRequired(
      `the server offered an end-to-end encrypted session without valid parameters ` +
        `(suite=${suite}, kdf_iterations=${iterations}); this client refuses it`,
    );
  }
  const problems = [];
  if (policy.pinSuite !== null && suite !== policy.pinSuite) {
    problems.push(`suite ${suiteName(suite)}, this client requires ${suiteName(policy.pinSuite)}`);
  } else if (!policy.suites.includes(suite)) {
    problems.push(`suite ${suiteName(suite)}, this client allows ${policy.suites.map(suiteName).join(", ")}`);
  }
  if (policy.pinIterations !== null && iterations !== policy.pinIterations) {
    problems.push(`${iterations} PBKDF2 iterations, this client requires ${policy.pinIterations}`);
  } else if (iterations < policy.minIterations || iterations > policy.maxIterations) {
    problems.push(
      `${iterations} PBKDF2 iterations, this client allows ${policy.minIterations} to ${policy.maxIterations}`,
    );
  }
  if (problems.length) {
    throw new WeakSessionParameters(`the server asked for ${problems.join("; ")}`, {
      suite,
      kdfIterations: iterations,
    });
  }
  return { suite, kdfIterations: iterations };
}

/**
 * `sdp` without the `a=extmap` lines of {@link MEDIA_DERIVED_EXTENSIONS`}; every other line
 * and line ending is kept (python/e2ee/wire/extmap.py).  Idempotent.
 */
export function stripMediaDerivedExtensions(sdp) {
  return sdp
    .split(/(?<=\n)/)
    .filter((line) => {
      if (!line.startsWith("a=extmap:")) return true;
      const uri = line.trim().split(/\s+/)[1];
      return !(uri && MEDIA_DERIVED_EXTENSIONS.includes(uri.toLowerCase()));
    })
    .join("");
}

/** Whether this browser can protect media end to end (an encoded-frame transform API,
 * WebCrypto, module workers). */
export function hasEndToEndEncryptionSupport() {
  return transformApi() !== null && !!globalThis.crypto?.subtle && typeof Worker === "function";
}

/** "script-transform" (RTCRtpScriptTransform), "encoded-streams" (the older
 * createEncodedStreams, only where the former is missing), or null. */
function transformApi() {
  if (typeof RTCRtpScriptTransform === "function") return "script-transform";
  if (typeof RTCRtpSender !== "undefined" && typeof RTCRtpSender.prototype.createEncodedStreams === "function") {
    return "encoded-streams";
  }
  return null;
}

// ---------------------------------------------------------------------------------------
// KeyRing: the session's secrets (python/e2ee/crypto/keyring.py)
// ---------------------------------------------------------------------------------------

/** The secret as a checked NFC string, or an InvalidEncryptionSecret. */
function validSecret(secret) {
  try {
    return normalizeSecret(secret);
  } catch (e) {
    throw asNamedError(e);
  }
}

function sameKey(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

const MAX_PREVIOUS = 2;
const MAX_ACCEPTED = 2;

/**
 * The encryption secret of one client in one E2EE session, turned into keys.
 *
 * `current` is sent and received; `accepted` are received only, until promoted by
 * {@link setSecret}; `previous` are received for the grace period after they were
 * replaced.  The last call wins: of several calls in flight, the one called last decides,
 * whichever PBKDF2 run finishes first.
 */
export class KeyRing {
  #orders = 0;
  #setOrder = 0;
  #snap = { version: 0, current: null, previous: [], accepted: [] };
  #listeners = [];

  /**
   * @param {string} sessionId
   * @param {{suite: number, kdfIterations: number, gracePeriod?: number}} params
   */
  constructor(sessionId, { suite, kdfIterations, gracePeriod = DEFAULT_GRACE_PERIOD }) {
    if (!(gracePeriod >= 0 && gracePeriod <= 86_400)) {
      throw new RangeError("gracePeriod must be from 0 to 86400 seconds");
    }
    this.sessionId = sessionId;
    this.suite = suite;
    this.kdfIterations = kdfIterations;
    this.gracePeriod = gracePeriod;
  }

  get version() {
    return this.#snap.version;
  }

  get hasSecret() {
    return this.#snap.current !== null;
  }

  /** The 16-bit id of the current secret (names it, never reveals it), or null. */
  get secretId() {
    return this.#snap.current?.id ?? null;
  }

  /** `callback(ring)` after every change of the held secrets. */
  onChange(callback) {
    this.#listeners.push(callback);
  }

  /** Makes `secret` current: tracks send under it from their next frame. */
  async setSecret(secret) {
    validSecret(secret);
    const order = ++this.#orders;
    const { key, id } = await this.#derive(secret);
    this.#installCurrent(key, id, order);
  }

  /** Receives under `secret` too, without sending under it (make-before-break). */
  async acceptSecret(secret) {
    validSecret(secret);
    const order = ++this.#orders;
    const { key, id } = await this.#derive(secret);
    this.#installAccepted(key, id, order);
  }

  async #derive(secret) {
    try {
      const key = await deriveSecretKey(secret, this.sessionId, this.kdfIterations);
      return { key, id: await secretId(key) };
    } catch (e) {
      throw asNamedError(e);
    }
  }

  /** What a worker needs: the key to send under and every key to accept, with the
   * milliseconds each previous one is still accepted for. */
  forWorker() {
    const snap = this.#snap;
    const now = performance.now();
    const receive = [];
    if (snap.current) receive.push({ key: snap.current.key, id: snap.current.id, expiresIn: null });
    for (const a of snap.accepted) receive.push({ key: a.key, id: a.id, expiresIn: null });
    for (const p of snap.previous) {
      const left = this.gracePeriod * 1000 - (now - p.retiredAt);
      if (left > 0) receive.push({ key: p.key, id: p.id, expiresIn: left });
    }
    const send = snap.current ? { key: snap.current.key, id: snap.current.id } : null;
    return { version: snap.version, suite: this.suite, send, receive };
  }

  #installCurrent(key, id, order) {
    if (order < this.#setOrder) return; // a later setSecret is already installed
    this.#setOrder = order;
    const snap = this.#snap;
    if (snap.current && sameKey(snap.current.key, key)) return;
    const now = performance.now();
    const promoted = snap.accepted.some((a) => sameKey(a.key, key));
    const others = snap.accepted.filter((a) => !sameKey(a.key, key));
    const accepted = others.filter((a) => promoted || a.order > order);
    const retiring = (snap.current ? [snap.current] : []).concat(others.filter((a) => !accepted.includes(a)));
    this.#snap = {
      version: snap.version + 1,
      current: { key, id, order },
      previous: this.#previous(snap, retiring, key, now),
      accepted,
    };
    this.#changed();
  }

  #installAccepted(key, id, order) {
    if (order < this.#setOrder) return;
    const snap = this.#snap;
    if (snap.current && sameKey(snap.current.key, key)) return;
    if (snap.accepted.some((a) => sameKey(a.key, key))) return;
    const pending = [{ key, id, order }, ...snap.accepted].sort((a, b) => b.order - a.order);
    this.#snap = {
      version: snap.version + 1,
      current: snap.current,
      previous: this.#previous(snap, pending.slice(MAX_ACCEPTED), key, performance.now()),
      accepted: pending.slice(0, MAX_ACCEPTED),
    };
    this.#changed();
  }

  #previous(snap, retiring, key, now) {
    if (this.gracePeriod <= 0) return [];
    const graceMs = this.gracePeriod * 1000;
    const previous = retiring
      .map((r) => ({ key: r.key, id: r.id, order: r.order, retiredAt: now }))
      .concat(snap.previous.filter((p) => now - p.retiredAt < graceMs));
    return previous.filter((p) => !sameKey(p.key, key)).slice(0, MAX_PREVIOUS);
  }

  #changed() {
    for (const cb of [...this.#listeners]) {
      try {
        cb(this);
      } catch (e) {
        console.error("KeyRing listener failed", e);
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

class Emitter {
  #handlers = new Map();

  /** Calls `handler(event)` for every event of `type`; returns a function that stops it. */
  on(type, handler) {
    if (!this.#handlers.has(type)) this.#handlers.set(type, new Set());
    this.#handlers.get(type).add(handler);
    return () => this.off(type, handler);
  }

  off(type, handler) {
    this.#handlers.get(type)?.delete(handler);
  }

  emit(type, event) {
    for (const handler of [...(this.#handlers.get(type) ?? [])]) {
      try {
        handler(event);
      } catch (e) {
        console.error(`handler for ${type} failed`, e);
      }
    }
  }
}

/** Server event types and their names here. */
const SERVER_EVENTS = {
  connection_created: "connectionCreated",
  connection_destroyed: "connectionDestroyed",
  stream_created: "streamCreated",
  stream_destroyed: "streamDestroyed",
  subscriber_count: "subscriberCount",
  signal: "signal",
};

// ---------------------------------------------------------------------------------------
// Publisher and Subscriber
// ---------------------------------------------------------------------------------------

/** A stream this client publishes.  `stream` is the MediaStream of its tracks. */
export class Publisher extends Emitter {
  constructor(session, pc, stream) {
    super();
    this.session = session;
    this.pc = pc;
    this.stream = stream;
    this.streamId = null;
    /** @type {Map<string, RTCRtpTransceiver>} E2EE transform id -> its transceiver */
    this.transforms = new Map();
  }

  /** The E2EE counters of its tracks, as last reported by the worker. */
  stats() {
    return [...this.transforms.keys()].map((id) => this.session._transformStats(id)).filter(Boolean);
  }
}

/**
 * A stream this client receives.  `stream` is a MediaStream with the decrypted tracks
 * (`video`, `audio`); `state` is `"connecting"` (no frame yet), `"ok"`, `"mismatch"`
 * (frames under a secret this client does not hold) or `"missing"` (no secret).
 */
export class Subscriber extends Emitter {
  constructor(session, streamId, subscriptionId, pc) {
    super();
    this.session = session;
    this.streamId = streamId;
    this.subscriptionId = subscriptionId;
    this.pc = pc;
    this.stream = new MediaStream();
    this.video = null;
    this.audio = null;
    /** @type {Map<string, RTCRtpTransceiver>} E2EE transform id -> its transceiver */
    this.transforms = new Map();
    this.events = [];
  }

  /** The E2EE counters of its tracks, as last reported by the worker. */
  stats() {
    return [...this.transforms.keys()].map((id) => this.session._transformStats(id)).filter(Boolean);
  }

  get state() {
    const states = this.stats().map((s) => s.state);
    for (const s of ["mismatch", "missing", "ok"]) if (states.includes(s)) return s;
    return "connecting";
  }
}

// ---------------------------------------------------------------------------------------
// Session
// ---------------------------------------------------------------------------------------

let transformCounter = 0;

/**
 * One connection to one session on an e2ee server.
 *
 * Events (`session.on(type, handler)`): `connectionCreated`, `connectionDestroyed`,
 * `streamCreated`, `streamDestroyed`, `subscriberCount`, `signal`, `disconnected`, and for
 * the E2EE state of subscribed streams `encryptionSecretMismatch`,
 * `encryptionSecretMatch`, `decryptionError`, `encryptionSecretMissing` (each with
 * `streamId`, `subscriptionId`, `kind`), and for published ones `encryptionError`.
 * Subscribers and publishers emit their own E2EE events too.  `stats` comes twice a
 * second while frames flow, with every track's E2EE counters ({@link Session#stats}).
 */
export class Session extends Emitter {
  #url;
  #token;
  #secret;
  #accepted = [];
  #ws = null;
  #ids = 0;
  #pending = new Map();
  #worker = null;
  #stats = new Map();
  #transformOwners = new Map();
  #closed = false;
  #timeout;
  #iceServers;
  #transformApi;
  #disconnectReason = null;
  #early = null;

  /**
   * @param {string} url the server's http(s) URL
   * @param {string} sessionId
   * @param {string} token a session token from the application server
   * @param {{encryptionSecret?: string, policy?: object, gracePeriod?: number,
   *   requestTimeout?: number, iceServers?: RTCIceServer[],
   *   transformApi?: "script-transform" | "encoded-streams"}} [options] `policy`: what
   *   the client accepts of the server's suite and PBKDF2 iterations
   *   ({@link sessionPolicy}, e.g. `{minIterations: 1000}` in tests); `gracePeriod`:
   *   seconds a replaced secret is still accepted (default 10); `requestTimeout`: ms;
   *   `transformApi`: force the older createEncodedStreams API (tests; by default it is
   *   used only where RTCRtpScriptTransform is missing)
   */
  constructor(url, sessionId, token, options = {}) {
    super();
    const {
      encryptionSecret,
      policy,
      gracePeriod = DEFAULT_GRACE_PERIOD,
      requestTimeout = 15_000,
      iceServers = [],
      transformApi: forcedApi,
    } = options;
    this.#url = url.replace(/\/+$/, "");
    this.sessionId = sessionId;
    this.#token = token;
    if (encryptionSecret !== undefined && encryptionSecret !== null) validSecret(encryptionSecret);
    this.#secret = encryptionSecret ?? null;
    this.policy = sessionPolicy(policy ?? {});
    this.gracePeriod = gracePeriod;
    this.#timeout = requestTimeout;
    this.#iceServers = iceServers;
    this.#transformApi = forcedApi ?? transformApi();
    this.ring = null;
    this.e2ee = false;
    this.info = {};
    this.connection = {};
    this.connections = new Map();
    this.streams = new Map();
    this.publishers = new Map();
    this.subscribers = new Map();
  }

  get connected() {
    return this.#ws !== null && this.#ws.readyState === WebSocket.OPEN;
  }

  get #wantsE2ee() {
    return this.#secret !== null || this.#accepted.length > 0;
  }

  // -- connecting ------------------------------------------------------------------------

  /**
   * Joins the session, after checking the server's hello against this client: see
   * {@link checkHello}.  Without transform support in this browser, an E2EE session is
   * refused (`SessionError` with code `e2ee_not_supported`).  On any refusal the
   * connection is closed before anything is sent.
   */
  async connect() {
    const wsUrl = `${this.#url.replace(/^http/, "ws")}/v1/sessions/${encodeURIComponent(this.sessionId)}/ws`;
    const ws = new WebSocket(`${wsUrl}?token=${encodeURIComponent(this.#token)}`);
    this.#ws = ws;
    try {
      const first = await this.#hello(ws);
      const params = checkHello(first.session, { secretGiven: this.#wantsE2ee, policy: this.policy });
      if (params) {
        if (!this.#transformApi || !hasEndToEndEncryptionSupport()) {
          throw new SessionError(
            "e2ee_not_supported",
            "this browser cannot encrypt media end to end (no encoded-frame transform API)",
          );
        }
        await this.#makeRing(params);
      }
      this.e2ee = params !== null;
      this.info = first.session;
      this.connection = first.connection ?? {};
      this.connections = new Map((first.connections ?? []).map((c) => [c.id, c]));
      this.streams = new Map((first.streams ?? []).map((s) => [s.id, s]));
    } catch (e) {
      this.#shutdown();
      throw e;
    }
    // Events that arrived while the keys were derived, in order, then the live ones.
    const { messages, closed } = this.#early;
    this.#early = null;
    ws.onmessage = (ev) => this.#onMessage(ev.data);
    ws.onclose = (ev) => this.#onClose(ev);
    for (const text of messages) this.#onMessage(text);
    if (closed) this.#onClose(closed);
  }

  #hello(ws) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new SessionError("timeout", "no hello from the server")), this.#timeout);
      const done = () => {
        clearTimeout(timer);
        ws.onmessage = ws.onclose = ws.onerror = null;
      };
      ws.onmessage = (ev) => {
        done();
        let msg;
        try {
          msg = JSON.parse(ev.data);
        } catch {
          reject(new SessionError("protocol_error", "the server's hello is not JSON"));
          return;
        }
        if (msg?.type === "error") reject(new SessionError(msg.code ?? "error", msg.message ?? ""));
        else if (msg?.type !== "session" || typeof msg.session !== "object" || msg.session === null) {
          reject(new SessionError("protocol_error", "the server's hello has no session"));
        } else {
          // Keep what follows the hello until connect() is done with it.
          const early = (this.#early = { messages: [], closed: null });
          ws.onmessage = (e) => early.messages.push(e.data);
          ws.onclose = (e) => {
            early.closed = e;
          };
          resolve(msg);
        }
      };
      ws.onclose = (ev) => {
        done();
        reject(new SessionError("connection_failed", `the WebSocket closed (${ev.code}) before the hello`));
      };
      ws.onerror = () => {};
    });
  }

  async #makeRing(params) {
    if (this.#secret === null) {
      throw new EncryptionSecretMissing("this session is end-to-end encrypted: set an encryption secret to connect");
    }
    const ring = new KeyRing(this.sessionId, { ...params, gracePeriod: this.gracePeriod });
    await ring.setSecret(this.#secret);
    for (const s of this.#accepted) await ring.acceptSecret(s);
    this.#accepted = [];
    this.#worker = new Worker(new URL("./e2ee-worker.js", import.meta.url), { type: "module", name: "e2ee" });
    this.#worker.onmessage = (ev) => this.#onWorker(ev.data);
    this.#worker.onerror = (ev) => console.error("e2ee worker failed", ev.message ?? ev);
    ring.onChange(() => this.#postKeys());
    this.ring = ring;
    this.#postKeys();
  }

  #postKeys() {
    this.#worker?.postMessage({ type: "keys", ...this.ring.forWorker() });
  }

  /**
   * Sets or changes the secret, also while connected: every published track moves to a
   * new KID under it at its next frame; the previous one is still accepted from others
   * for the grace period.  Set before {@link connect}, it makes E2EE required.
   *
   * @throws {InvalidEncryptionSecret} the old secret stays
   */
  async setEncryptionSecret(secret) {
    if (this.ring) await this.ring.setSecret(secret);
    else validSecret(secret);
    this.#secret = secret;
  }

  /**
   * Receives under `secret` too, without sending under it yet: the first step of a
   * planned change (every participant accepts the new secret, confirms, then everyone
   * sets it).  Like the Python client's accept_encryption_secret.
   */
  async acceptEncryptionSecret(secret) {
    if (this.ring) await this.ring.acceptSecret(secret);
    else {
      validSecret(secret);
      this.#accepted = [...this.#accepted, secret].slice(-MAX_ACCEPTED);
    }
  }

  // -- requests --------------------------------------------------------------------------

  /** Sends one message and waits for its reply; an error reply raises SessionError. */
  request(message) {
    if (!this.connected) return Promise.reject(new SessionError("not_connected", "the session is not connected"));
    const id = ++this.#ids;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new SessionError("timeout", `no reply to ${message.type}`));
      }, this.#timeout);
      this.#pending.set(id, (reply) => {
        clearTimeout(timer);
        if (reply.type === "error") reject(new SessionError(reply.code ?? "error", reply.message ?? ""));
        else resolve(reply);
      });
      this.#ws.send(JSON.stringify({ ...message, id }));
    });
  }

  /** Sends a signal to one connection (`to`) or to everyone else. */
  async signal(kind, data, { to } = {}) {
    await this.request({ type: "signal", kind, data, ...(to ? { to } : {}) });
  }

  #onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      console.warn("the server sent invalid JSON");
      return;
    }
    const reply = msg.id !== undefined && msg.id !== null ? this.#pending.get(msg.id) : undefined;
    if (reply) {
      this.#pending.delete(msg.id);
      reply(msg);
      return;
    }
    switch (msg.type) {
      case "connection_created":
        this.connections.set(msg.connection.id, msg.connection);
        break;
      case "connection_destroyed":
        this.connections.delete(msg.connection.id);
        break;
      case "stream_created":
        this.streams.set(msg.stream.id, msg.stream);
        break;
      case "stream_destroyed":
        this.streams.delete(msg.stream.id);
        this.#dropStream(msg.stream.id);
        break;
      case "disconnected":
        this.#disconnectReason = msg.reason;
        return;
    }
    const type = SERVER_EVENTS[msg.type];
    if (type) this.emit(type, msg);
  }

  #dropStream(streamId) {
    for (const pub of this.publishers.values()) {
      if (pub.streamId === streamId) this.#closePublisher(pub);
    }
    for (const sub of [...this.subscribers.values()]) {
      if (sub.streamId === streamId) this.#closeSubscriber(sub);
    }
  }

  #onClose(ev) {
    for (const settle of this.#pending.values()) settle({ type: "error", code: "disconnected", message: "the connection closed" });
    this.#pending.clear();
    const reason = this.#disconnectReason ?? (this.#closed ? "disconnected" : `closed (${ev.code})`);
    this.#shutdown();
    this.emit("disconnected", { type: "disconnected", reason, code: ev.code });
  }

  // -- media -----------------------------------------------------------------------------

  /** Refuses `action` unless its media will be what the application asked for. */
  #checkMedia(action) {
    if (!this.connected) throw new SessionError("not_connected", "the session is not connected");
    if (this.e2ee) {
      if (!this.ring?.hasSecret) {
        throw new EncryptionSecretMissing(`${action} in an end-to-end encrypted session needs a secret`);
      }
    } else if (this.#wantsE2ee) {
      throw new E2eeRequired(
        `${action} refused: this session is not end-to-end encrypted, and the application gave an encryption secret`,
      );
    }
  }

  #sdp(sdp) {
    if (typeof sdp !== "string") throw new SessionError("protocol_error", "the server sent no SDP");
    return this.e2ee ? stripMediaDerivedExtensions(sdp) : sdp;
  }

  #newPeerConnection() {
    const config = { iceServers: this.#iceServers };
    if (this.e2ee && this.#transformApi === "encoded-streams") config.encodedInsertableStreams = true;
    return new RTCPeerConnection(config);
  }

  /**
   * Attaches the E2EE transform to a sender or receiver, before any negotiation; throws
   * if it did not take (nothing is ever sent in clear, nothing undecrypted decoded).
   */
  #protect(transceiver, side, kind, owner) {
    const senderOrReceiver = side === "send" ? transceiver.sender : transceiver.receiver;
    const id = `t${++transformCounter}`;
    const options = { id, side, kind };
    const api = this.#transformApi === "encoded-streams" ? this.#transformApi : transformApi();
    if (api === "script-transform") {
      const transform = new RTCRtpScriptTransform(this.#worker, options);
      senderOrReceiver.transform = transform;
      if (senderOrReceiver.transform !== transform) {
        throw new EncryptionInternalError(`the ${kind} ${side} transform could not be attached`);
      }
    } else if (api === "encoded-streams" && typeof senderOrReceiver.createEncodedStreams === "function") {
      const { readable, writable } = senderOrReceiver.createEncodedStreams();
      this.#worker.postMessage({ type: "streams", options, readable, writable }, [readable, writable]);
    } else {
      throw new EncryptionInternalError("this browser has no encoded-frame transform: media cannot be protected");
    }
    this.#transformOwners.set(id, owner);
    owner.transforms.set(id, transceiver);
    return id;
  }

  /** Tells the worker which codec a transform's track negotiated (for browsers whose
   * encoded frames do not say). */
  #postCodecs(owner) {
    for (const [id, t] of owner.transforms) {
      const params = owner instanceof Publisher ? t.sender.getParameters() : t.receiver.getParameters();
      const mimeType = params?.codecs?.[0]?.mimeType;
      if (mimeType) this.#worker?.postMessage({ type: "codec", id, mimeType });
    }
  }

  /**
   * Publishes the given tracks as one stream, encrypted end to end in E2EE sessions.
   *
   * @param {{video?: MediaStreamTrack, audio?: MediaStreamTrack, name?: string}} tracks
   * @returns {Promise<Publisher>}
   */
  async publish({ video = null, audio = null, name } = {}) {
    if (!video && !audio) throw new TypeError("publish needs an audio or a video track");
    this.#checkMedia("publishing");
    const stream = new MediaStream([audio, video].filter(Boolean));
    const pc = this.#newPeerConnection();
    const pub = new Publisher(this, pc, stream);
    try {
      for (const track of [audio, video].filter(Boolean)) {
        const t = pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
        if (this.e2ee) {
          this.#protect(t, "send", track.kind, pub);
          preferE2eeCodecs(t, track.kind);
          stopMediaDerivedExtensions(t);
        }
      }
      const offer = await pc.createOffer();
      const sdp = this.#sdp(offer.sdp);
      await pc.setLocalDescription({ type: "offer", sdp });
      const msg = { type: "publish", sdp };
      if (name !== undefined && name !== null) msg.name = String(name);
      const reply = await this.request(msg);
      await pc.setRemoteDescription({ type: "answer", sdp: this.#sdp(reply.sdp) });
      pub.streamId = reply.stream_id;
    } catch (e) {
      this.#closePublisher(pub);
      throw e;
    }
    this.#postCodecs(pub);
    this.publishers.set(pub.streamId, pub);
    return pub;
  }

  async unpublish(publisher) {
    this.publishers.delete(publisher.streamId);
    if (this.connected && publisher.streamId) {
      await this.request({ type: "unpublish", stream_id: publisher.streamId }).catch(() => {});
    }
    this.#closePublisher(publisher);
  }

  #closePublisher(pub) {
    this.publishers.delete(pub.streamId);
    pub.pc.close();
    this.#forget(pub);
  }

  /**
   * Receives a stream; in E2EE sessions its frames are decrypted before decoding.
   *
   * @returns {Promise<Subscriber>}
   */
  async subscribe(streamId) {
    this.#checkMedia("subscribing");
    const reply = await this.request({ type: "subscribe", stream_id: streamId });
    const pc = this.#newPeerConnection();
    const sub = new Subscriber(this, streamId, reply.subscription_id, pc);
    pc.ontrack = (ev) => {
      sub.stream.addTrack(ev.track);
      sub[ev.track.kind] = ev.track;
    };
    try {
      await pc.setRemoteDescription({ type: "offer", sdp: this.#sdp(reply.sdp) });
      if (this.e2ee) {
        for (const t of pc.getTransceivers()) {
          this.#protect(t, "receive", t.receiver.track.kind, sub);
        }
      }
      const answer = await pc.createAnswer();
      const sdp = this.#sdp(answer.sdp);
      await pc.setLocalDescription({ type: "answer", sdp });
      await this.request({ type: "answer", subscription_id: sub.subscriptionId, sdp });
    } catch (e) {
      this.#closeSubscriber(sub);
      this.request({ type: "unsubscribe", subscription_id: sub.subscriptionId }).catch(() => {});
      throw e;
    }
    this.#postCodecs(sub);
    this.subscribers.set(sub.subscriptionId, sub);
    return sub;
  }

  async unsubscribe(subscriber) {
    this.subscribers.delete(subscriber.subscriptionId);
    if (this.connected) {
      await this.request({ type: "unsubscribe", subscription_id: subscriber.subscriptionId }).catch(() => {});
    }
    this.#closeSubscriber(subscriber);
  }

  #closeSubscriber(sub) {
    this.subscribers.delete(sub.subscriptionId);
    sub.pc.close();
    this.#forget(sub);
  }

  #forget(owner) {
    for (const id of owner.transforms.keys()) {
      this.#transformOwners.delete(id);
      this.#worker?.postMessage({ type: "close", id });
    }
  }

  // -- the worker's reports --------------------------------------------------------------

  _transformStats(id) {
    return this.#stats.get(id);
  }

  /** The E2EE counters of every track, as last reported by the worker. */
  stats() {
    return Object.fromEntries(this.#stats);
  }

  #onWorker(msg) {
    if (msg.type === "stats") {
      for (const [id, s] of Object.entries(msg.transforms)) {
        if (this.#transformOwners.has(id)) this.#stats.set(id, s);
      }
      this.emit("stats", this.stats());
      return;
    }
    if (msg.type !== "event") return;
    const owner = this.#transformOwners.get(msg.id);
    if (!owner) return;
    const event = { ...msg.event, streamId: owner.streamId };
    if (owner instanceof Subscriber) {
      event.subscriptionId = owner.subscriptionId;
      if (msg.stats) this.#stats.set(msg.id, msg.stats);
      owner.events.push(event);
    }
    owner.emit(event.type, event);
    this.emit(event.type, event);
  }

  // -- leaving ---------------------------------------------------------------------------

  /** Leaves the session and closes every peer connection. */
  async disconnect() {
    if (this.connected) {
      await Promise.race([
        this.request({ type: "disconnect" }).catch(() => {}),
        new Promise((r) => setTimeout(r, 2000)),
      ]);
    }
    this.#closed = true;
    this.#shutdown();
  }

  #shutdown() {
    for (const pub of [...this.publishers.values()]) this.#closePublisher(pub);
    for (const sub of [...this.subscribers.values()]) this.#closeSubscriber(sub);
    if (this.#ws) {
      this.#ws.onmessage = this.#ws.onclose = null;
      if (this.#ws.readyState <= WebSocket.OPEN) this.#ws.close(1000);
    }
    this.#worker?.terminate();
    this.#worker = null;
  }
}

/** Keeps only VP8 (with RTX) or Opus on a transceiver: nothing else may be encrypted. */
function preferE2eeCodecs(transceiver, kind) {
  if (typeof transceiver.setCodecPreferences !== "function") return;
  const caps = RTCRtpSender.getCapabilities?.(kind);
  if (!caps) return;
  const wanted = kind === "video" ? ["video/vp8", "video/rtx"] : ["audio/opus"];
  const codecs = caps.codecs.filter((c) => wanted.includes(c.mimeType.toLowerCase()));
  if (codecs.length) transceiver.setCodecPreferences(codecs);
}

/** Stops negotiating the header extensions computed from the media (where the browser
 * lets the application say so; the SDP is stripped of them anyway). */
function stopMediaDerivedExtensions(transceiver) {
  if (typeof transceiver.setHeaderExtensionsToNegotiate !== "function") return;
  const exts = transceiver.getHeaderExtensionsToNegotiate();
  transceiver.setHeaderExtensionsToNegotiate(
    exts.map((h) => (MEDIA_DERIVED_EXTENSIONS.includes(h.uri.toLowerCase()) ? { ...h, direction: "stopped" } : h)),
  );
}

/**
 * Connects to a session: `new Session(...)` then {@link Session#connect}.
 *
 * @returns {Promise<Session>}
 */
export async function connect(url, sessionId, token, options = {}) {
  const session = new Session(url, sessionId, token, options);
  await session.connect();
  return session;
}
