// The E2EE worker of the browser client (a module worker, one per session): every
// encoded frame of every protected track passes through here, between the encoder and
// the network (send) and between the network and the decoder (receive).
//
// Tracks arrive as RTCRtpScriptTransform transformers (`rtctransform` events), or, in
// browsers without that API, as the streams of createEncodedStreams posted by e2ee.js.
// Keys arrive from e2ee.js, which runs PBKDF2: `{type: "keys", version, suite, send:
// {key, id} | null, receive: [{key, id, expiresIn}]}`.
//
// Send: each frame is encrypted (docs/protocol.md §4, the codec's clear prefix stays
// readable) under this track's KID for the current secret, a fresh random one per
// (track, secret).  A frame of any codec but VP8 or Opus, a frame without a secret, or
// one that cannot be encrypted is dropped and reported; nothing is written that is not
// an SFrame under this track's KID (checked on the output, per frame).
//
// Receive: each frame is authenticated and decrypted before the decoder sees it.
// Replays are dropped silently (Chromium hands duplicates to the transform; they are not
// failures).  `encryptionSecretMismatch` after 3 mismatched frames in a row (as the
// Python client), `encryptionSecretMatch` at the first good frame after one.  After any
// frame that could not be decrypted, video deltas are held back until the next key frame,
// and a key frame is requested (sendKeyFrameRequest).
//
// Reports to e2ee.js: `{type: "event", id, event}` and, twice a second while anything
// changes, `{type: "stats", transforms: {id: stats}}`.

import { FrameReceiver, FrameSender, clearPrefixLength, decodeHeader, newKid } from "./sframe.js";

/** Mismatched frames in a row before `encryptionSecretMismatch` (python: MISMATCH_THRESHOLD). */
const MISMATCH_THRESHOLD = 3;
/** Shortest interval between two rate-limited events of one track, ms. */
const EVENT_INTERVAL = 1000;
/** Shortest interval between two key-frame requests of one track, ms (unless forced). */
const KEYFRAME_REQUEST_INTERVAL = 300;
const STATS_INTERVAL = 500;
const SUPPORTED = { "video/vp8": "vp8", "audio/opus": "opus" };

/** The ring as e2ee.js last sent it. */
let ring = { version: 0, suite: null, send: null, receive: [] };
/** @type {Map<string, SendTrack | ReceiveTrack>} */
const tracks = new Map();
let statsDirty = false;

function sameKey(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

const hexKid = (kid) => (kid === null || kid === undefined ? null : `0x${kid.toString(16).padStart(16, "0")}`);

/** Events of one kind at most once per interval, with the count of those folded in. */
class RateLimiter {
  #last = new Map();
  #pending = new Map();

  hit(key) {
    const pending = (this.#pending.get(key) ?? 0) + 1;
    const now = performance.now();
    if (now - (this.#last.get(key) ?? -Infinity) >= EVENT_INTERVAL) {
      this.#last.set(key, now);
      this.#pending.set(key, 0);
      return pending;
    }
    this.#pending.set(key, pending);
    return 0;
  }
}

class Track {
  constructor(id, side, kind, transformer) {
    this.id = id;
    this.side = side;
    this.kind = kind;
    this.transformer = transformer; // null for createEncodedStreams
    this.negotiated = null; // MIME type from e2ee.js, when frames do not say
    this.codec = null;
    this.limiter = new RateLimiter();
    this.closed = false;
  }

  /** The frame format of a frame: "vp8", "opus", or null (not allowed), and its MIME type. */
  codecOf(frame) {
    let mime = null;
    try {
      mime = frame.getMetadata?.().mimeType ?? null;
    } catch {
      mime = null;
    }
    mime = (mime ?? this.negotiated ?? "").toLowerCase();
    const codec = SUPPORTED[mime] ?? null;
    // The codec must also fit the track: no Opus frames on a video track or the reverse.
    if (codec && (codec === "vp8") !== (this.kind === "video")) return { codec: null, mime };
    return { codec, mime: mime || "unknown" };
  }

  event(type, fields = {}) {
    self.postMessage({
      type: "event",
      id: this.id,
      event: { type, kind: this.kind, direction: this.side, ...fields },
      stats: this.stats(),
    });
  }

  /** Like event(), at most once per EVENT_INTERVAL per type, with a count. */
  limitedEvent(type, fields) {
    const count = this.limiter.hit(type);
    if (count) this.event(type, { ...fields, count });
  }

  async run(readable, writable) {
    const transform = new TransformStream({
      transform: async (frame, controller) => {
        try {
          await this.handle(frame, controller);
        } catch (e) {
          // Never error the stream: drop the frame and report it.
          this.unexpected(e);
        }
        statsDirty = true;
      },
    });
    try {
      await readable.pipeThrough(transform).pipeTo(writable);
    } catch (e) {
      if (!this.closed) console.warn(`e2ee: ${this.side} ${this.kind} track ${this.id} ended`, e);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Send
// ---------------------------------------------------------------------------------------

class SendTrack extends Track {
  constructor(id, kind, transformer) {
    super(id, "send", kind, transformer);
    this.sender = null;
    this.key = null; // the secret key this.sender encrypts under
    this.version = -1;
    this.counts = { framesEncrypted: 0, framesDropped: 0, keyframesEncrypted: 0, keyframeRequests: 0 };
  }

  stats() {
    return {
      side: "send",
      kind: this.kind,
      codec: this.codec,
      kid: hexKid(this.sender?.kid),
      ...this.counts,
    };
  }

  drop(type, message, error) {
    this.counts.framesDropped++;
    this.limitedEvent(type, { message, code: error });
  }

  unexpected(e) {
    this.drop("encryptionError", `frame dropped: ${e?.message ?? e}`, "EncryptionInternalError");
  }

  /** The FrameSender for `codec`, following the ring: a new KID for each new secret. */
  async follow(codec) {
    if (!this.sender || this.codec !== codec || ring.suite !== this.sender.suite) {
      this.sender = new FrameSender(ring.suite, codec);
      this.codec = codec;
      this.key = null;
      this.version = -1;
    }
    if (this.version === ring.version) return this.sender;
    this.version = ring.version;
    const send = ring.send;
    if (!send) {
      this.sender.clearKey();
      this.key = null;
    } else if (!sameKey(this.key, send.key)) {
      const rekey = this.key !== null;
      await this.sender.setKey(send.key, newKid(send.id));
      this.key = send.key;
      if (rekey) this.requestKeyframe();
    }
    return this.sender;
  }

  /** A key frame after a change of secret, where the browser lets the sender ask. */
  requestKeyframe() {
    if (this.kind !== "video" || typeof this.transformer?.generateKeyFrame !== "function") return;
    this.counts.keyframeRequests++;
    this.transformer.generateKeyFrame().catch(() => {});
  }

  async handle(frame, controller) {
    const { codec, mime } = this.codecOf(frame);
    if (!codec) {
      this.drop("encryptionError", `codec ${mime} is not allowed with E2EE (only VP8 and Opus): frame dropped`, "EncryptionInternalError");
      return;
    }
    if (!ring.send || ring.suite === null) {
      this.drop("encryptionSecretMissing", "no encryption secret is set: frame dropped", "EncryptionSecretMissing");
      return;
    }
    const sender = await this.follow(codec);
    const data = new Uint8Array(frame.data);
    let wire;
    try {
      wire = await sender.encrypt(data);
    } catch (e) {
      const code = e?.code === "EncryptionSecretMissing" ? e.code : "EncryptionInternalError";
      const type = code === "EncryptionSecretMissing" ? "encryptionSecretMissing" : "encryptionError";
      this.drop(type, `frame dropped: ${e?.message ?? e}`, code);
      return;
    }
    // Fail closed on the output: what leaves is an SFrame under this track's KID.
    const header = decodeHeader(wire, clearPrefixLength(codec, wire));
    if (!header || header.kid !== sender.kid || wire.length <= data.length) {
      this.drop("encryptionError", "outgoing frame blocked: not an E2EE frame of this track", "EncryptionInternalError");
      return;
    }
    frame.data = wire.buffer;
    this.counts.framesEncrypted++;
    if (codec === "vp8" && (data[0] & 1) === 0) this.counts.keyframesEncrypted++;
    controller.enqueue(frame);
  }
}

// ---------------------------------------------------------------------------------------
// Receive
// ---------------------------------------------------------------------------------------

class ReceiveTrack extends Track {
  constructor(id, kind, transformer) {
    super(id, "receive", kind, transformer);
    this.receiver = null;
    this.version = -1;
    this.state = "idle";
    this.mismatchRun = 0;
    this.needKeyframe = kind === "video";
    this.lastKeyframeRequest = -Infinity;
    this.counts = {
      framesDecrypted: 0,
      framesDelivered: 0,
      framesDropped: 0,
      framesMismatched: 0,
      framesFailed: 0,
      framesReplayed: 0,
      framesMissing: 0,
      framesGated: 0,
      keyframeRequests: 0,
    };
  }

  stats() {
    return { side: "receive", kind: this.kind, codec: this.codec, state: this.state, ...this.counts };
  }

  /** The FrameReceiver for `codec`, holding the ring's current secrets. */
  async follow(codec) {
    if (!this.receiver || this.codec !== codec || ring.suite !== this.receiver.suite) {
      this.receiver = new FrameReceiver(ring.suite, codec);
      this.codec = codec;
      this.version = -1;
    }
    if (this.version !== ring.version) {
      this.version = ring.version;
      const now = performance.now();
      await this.receiver.setSecrets(
        ring.receive.map(({ key, id, expiresAt }) => ({ key, id, expiresAt: expiresAt ?? null })).filter(
          (s) => s.expiresAt === null || s.expiresAt > now,
        ),
      );
    }
    return this.receiver;
  }

  /** A frame was not delivered: the next video frame must be a key frame. */
  hole() {
    this.counts.framesDropped++;
    if (this.kind === "video") {
      this.needKeyframe = true;
      this.requestKeyframe();
    }
  }

  requestKeyframe(force = false) {
    if (this.kind !== "video" || typeof this.transformer?.sendKeyFrameRequest !== "function") return;
    const now = performance.now();
    if (!force && now - this.lastKeyframeRequest < KEYFRAME_REQUEST_INTERVAL) return;
    this.lastKeyframeRequest = now;
    this.counts.keyframeRequests++;
    this.transformer.sendKeyFrameRequest().catch(() => {});
  }

  unexpected(e) {
    this.counts.framesFailed++;
    this.hole();
    this.limitedEvent("decryptionError", { message: `frame dropped: ${e?.message ?? e}`, reason: "internal" });
  }

  async handle(frame, controller) {
    const { codec, mime } = this.codecOf(frame);
    if (!codec || ring.suite === null) {
      this.counts.framesFailed++;
      this.hole();
      const message = codec ? "no session parameters yet" : `codec ${mime} is not allowed with E2EE (only VP8 and Opus)`;
      this.limitedEvent("decryptionError", { message, reason: "malformed" });
      return;
    }
    const receiver = await this.follow(codec);
    let out;
    try {
      out = await receiver.decrypt(new Uint8Array(frame.data));
    } catch (e) {
      this.failed(e);
      return;
    }
    this.mismatchRun = 0;
    this.counts.framesDecrypted++;
    if (this.state !== "ok") {
      const wasMismatch = this.state === "mismatch";
      this.state = "ok";
      if (wasMismatch) {
        this.requestKeyframe(true);
        this.event("encryptionSecretMatch", { kid: hexKid(out.kid) });
      }
    }
    if (this.needKeyframe) {
      if (codec === "vp8" && (out.frame[0] & 1) === 1) {
        this.counts.framesGated++; // a delta frame whose reference is missing here
        this.requestKeyframe();
        return;
      }
      this.needKeyframe = false;
    }
    frame.data = out.frame.buffer;
    this.counts.framesDelivered++;
    controller.enqueue(frame);
  }

  failed(e) {
    switch (e?.code) {
      case "EncryptionSecretMismatch":
        this.counts.framesMismatched++;
        this.mismatchRun++;
        if (this.mismatchRun >= MISMATCH_THRESHOLD && this.state !== "mismatch") {
          this.state = "mismatch";
          this.event("encryptionSecretMismatch", {
            kid: hexKid(e.kid),
            message: "frames arrive under an encryption secret this client does not hold",
          });
        }
        this.hole();
        return;
      case "EncryptionSecretMissing":
        this.counts.framesMissing++;
        if (this.state !== "missing") {
          this.state = "missing";
          this.event("encryptionSecretMissing", { message: "no encryption secret is set" });
        }
        this.hole();
        return;
      case "DecryptionInternalError":
        if (e.reason === "replayed") {
          // A copy of a frame already delivered: no hole in the reference chain, and not
          // a failure (the browser itself hands duplicates to the transform).
          this.counts.framesReplayed++;
          return;
        }
        this.counts.framesFailed++;
        this.hole();
        this.limitedEvent("decryptionError", { message: e.message, reason: e.reason });
        return;
      default:
        this.unexpected(e);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Wiring
// ---------------------------------------------------------------------------------------

function attach(options, transformer, readable, writable) {
  const { id, side, kind } = options ?? {};
  if (typeof id !== "string" || !["send", "receive"].includes(side) || !["audio", "video"].includes(kind)) {
    console.error("e2ee worker: a transform without valid options", options);
    // Nothing passes: the writable side is never fed, so no frame is sent or decoded.
    return;
  }
  const Cls = side === "send" ? SendTrack : ReceiveTrack;
  const track = new Cls(id, kind, transformer);
  const pending = pendingCodecs.get(id);
  if (pending) track.negotiated = pending;
  tracks.set(id, track);
  statsDirty = true;
  track.run(readable, writable);
}

/** Codecs announced before their transformer arrived. */
const pendingCodecs = new Map();

self.onrtctransform = (event) => {
  const t = event.transformer;
  attach(t.options, t, t.readable, t.writable);
};

self.onmessage = (event) => {
  const msg = event.data;
  switch (msg?.type) {
    case "keys": {
      const now = performance.now();
      ring = {
        version: msg.version,
        suite: msg.suite,
        send: msg.send,
        receive: msg.receive.map(({ key, id, expiresIn }) => ({
          key,
          id,
          expiresAt: expiresIn === null || expiresIn === undefined ? null : now + expiresIn,
        })),
      };
      break;
    }
    case "codec": {
      const track = tracks.get(msg.id);
      if (track) track.negotiated = msg.mimeType;
      else pendingCodecs.set(msg.id, msg.mimeType);
      break;
    }
    case "streams":
      attach(msg.options, null, msg.readable, msg.writable);
      break;
    case "close": {
      const track = tracks.get(msg.id);
      if (track) track.closed = true;
      tracks.delete(msg.id);
      pendingCodecs.delete(msg.id);
      break;
    }
  }
};

setInterval(() => {
  if (!statsDirty) return;
  statsDirty = false;
  const transforms = {};
  for (const [id, track] of tracks) transforms[id] = track.stats();
  self.postMessage({ type: "stats", transforms });
}, STATS_INTERVAL);
