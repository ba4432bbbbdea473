// The key ring: the session's encryption secrets, turned into keys
// (python/e2ee/crypto/keyring.py).  PBKDF2 runs in this thread (WebCrypto, off the main
// loop); the derived secret keys go to the E2EE worker (transforms.js), which draws a
// random KID per (track, secret).

import { asNamedError } from "./errors.js";
import { deriveSecretKey, normalizeSecret, secretId } from "./sframe.js";

/** How long a replaced secret is still accepted from others, in seconds. */
export const DEFAULT_GRACE_PERIOD = 10;

/** The secret as a checked NFC string, or an InvalidEncryptionSecret. */
export function validSecret(secret) {
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

/** Previous secrets kept for their grace period besides the current one. */
const MAX_PREVIOUS = 2;
/** Accepted (receive-only) secrets held besides the current one. */
export const MAX_ACCEPTED = 2;

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
