// The client's policy: what it accepts from a server (python/e2ee/client/policy.py,
// python/e2ee/wire/params.py) and what its descriptions may carry
// (python/e2ee/wire/extmap.py).  Pure: no I/O, no keys.
//
// The client is the trust anchor, not the server (docs/protocol.md §1): the server's
// hello says whether a session is end-to-end encrypted and with which parameters, and
// the client decides whether that is acceptable.

import { EncryptionSecretMissing, E2eeRequired, SessionError, WeakSessionParameters } from "./errors.js";
import { MAX_ITERATIONS, SUITES } from "./sframe.js";

/** The fewest PBKDF2 iterations accepted by default (docs/protocol.md §1). */
export const MIN_ITERATIONS = 100_000;
/** The suites accepted by default: AES-256 with an 80-bit or 128-bit tag. */
export const E2EE_SUITES = Object.freeze([5, 6]);
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
 * `sdp` without the `a=extmap` lines of {@link MEDIA_DERIVED_EXTENSIONS}; every other line
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
