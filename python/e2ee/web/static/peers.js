// The peer connections a session owns (python/e2ee/client/peers.py): each published
// stream is a Publisher and each subscription a Subscriber, with one RTCPeerConnection
// each; and what an E2EE session negotiates on their transceivers.

import { Emitter } from "./emitter.js";
import { MEDIA_DERIVED_EXTENSIONS } from "./policy.js";

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

/** Keeps only VP8 (with RTX) or Opus on a transceiver: nothing else may be encrypted. */
export function preferE2eeCodecs(transceiver, kind) {
  if (typeof transceiver.setCodecPreferences !== "function") return;
  const caps = RTCRtpSender.getCapabilities?.(kind);
  if (!caps) return;
  const wanted = kind === "video" ? ["video/vp8", "video/rtx"] : ["audio/opus"];
  const codecs = caps.codecs.filter((c) => wanted.includes(c.mimeType.toLowerCase()));
  if (codecs.length) transceiver.setCodecPreferences(codecs);
}

/** Stops negotiating the header extensions computed from the media (where the browser
 * lets the application say so; the SDP is stripped of them anyway). */
export function stopMediaDerivedExtensions(transceiver) {
  if (typeof transceiver.setHeaderExtensionsToNegotiate !== "function") return;
  const exts = transceiver.getHeaderExtensionsToNegotiate();
  transceiver.setHeaderExtensionsToNegotiate(
    exts.map((h) => (MEDIA_DERIVED_EXTENSIONS.includes(h.uri.toLowerCase()) ? { ...h, direction: "stopped" } : h)),
  );
}
