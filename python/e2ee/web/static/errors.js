// The errors of the browser client: the product's codes (python/e2ee/errors.py) as
// `.code`, and the session's refusals (python/e2ee/client/errors.py).  Public through
// e2ee.js.

import { E2eeError } from "./sframe.js";

export { E2eeError };

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
 * `e2ee_required`, `e2ee_not_supported`, `timeout`, `disconnected`, and in cluster mode
 * `too_many_redirects`: redirect.js).  Server codes an application may meet besides
 * invalid requests: at connect `token_connection_limit`
 * (the token already has its most connections open), `participant_limit` and the
 * `token_*` refusals; on any request `rate_limited` (over the per-type rate limit of
 * python/e2ee/server/limits.py: nothing was done, retry later); on subscribe
 * `subscription_expired` (the answer did not reach the server in time). */
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
export function asNamedError(e) {
  const cls = e && ERROR_CLASSES[e.code];
  if (!cls || e instanceof cls) return e;
  const { reason, kid } = e;
  return new cls(e.message, { cause: e, ...(reason ? { reason } : {}), ...(kid ? { kid } : {}) });
}
