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
//
// This module is the public entry point; the client is made of small modules, one per
// concept, served beside it:
//
//   errors.js      the error classes (`.code`: python/e2ee/errors.py)
//   policy.js      what the client accepts from a server's hello; SDP stripping
//   keyring.js     the session's secrets, turned into keys
//   link.js        the signaling WebSocket: hello, requests and replies, close reasons
//   redirect.js    cluster mode: following a node's redirect to the session's owner
//   transforms.js  the E2EE transforms of the tracks and their worker
//   peers.js       Publisher and Subscriber, one RTCPeerConnection each
//   emitter.js     on/off/emit of a session, a publisher, a subscriber
//   session.js     Session (connect, publish, subscribe, secrets) and connect()

export {
  DecryptionInternalError,
  E2eeError,
  E2eeRequired,
  EncryptionInternalError,
  EncryptionSecretMismatch,
  EncryptionSecretMissing,
  InvalidEncryptionSecret,
  SessionError,
  WeakSessionParameters,
} from "./errors.js";
export { DEFAULT_GRACE_PERIOD, KeyRing } from "./keyring.js";
export { CLOSE_REASONS } from "./link.js";
export { Publisher, Subscriber } from "./peers.js";
export { MAX_REDIRECTS, Redirected, redirectTarget } from "./redirect.js";
export {
  E2EE_SUITES,
  MEDIA_DERIVED_EXTENSIONS,
  MIN_ITERATIONS,
  SUPPORTED_CODECS,
  checkHello,
  sessionPolicy,
  stripMediaDerivedExtensions,
} from "./policy.js";
export { Session, connect } from "./session.js";
export { hasEndToEndEncryptionSupport } from "./transforms.js";
