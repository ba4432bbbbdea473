// The session: one connection to one session on an e2ee server, with publish and
// subscribe (python/e2ee/client/session.py).  It joins through a signaling link
// (link.js) after checking the server's hello against the client's policy (policy.js),
// derives its keys in a key ring (keyring.js) and protects every track with an E2EE
// transform (transforms.js) before any negotiation.  Public through e2ee.js.

import { E2eeRequired, EncryptionSecretMissing, SessionError } from "./errors.js";
import { Emitter } from "./emitter.js";
import { DEFAULT_GRACE_PERIOD, KeyRing, MAX_ACCEPTED, validSecret } from "./keyring.js";
import { Link, SERVER_EVENTS } from "./link.js";
import { Publisher, Subscriber, preferE2eeCodecs, stopMediaDerivedExtensions } from "./peers.js";
import { checkHello, sessionPolicy, stripMediaDerivedExtensions } from "./policy.js";
import { openFollowing } from "./redirect.js";
import { Transforms, hasEndToEndEncryptionSupport, transformApi } from "./transforms.js";

/**
 * One connection to one session on an e2ee server.
 *
 * Events (`session.on(type, handler)`): `connectionCreated`, `connectionDestroyed`,
 * `streamCreated`, `streamDestroyed`, `subscriberCount`, `signal`, `subscriptionExpired`
 * (`subscription_id`, `stream_id`: a subscription not answered in time ended; its
 * pending {@link Session#subscribe} rejects with code `subscription_expired`),
 * `rateLimited` (`request`: the type of a message the server refused as over its rate
 * limit; the request rejects with code `rate_limited`), `redirected` (`fromUrl`, `url`,
 * `nodeId`: cluster mode, the node joined does not own the session and the session
 * follows it to the one that does, redirect.js; emitted during {@link Session#connect},
 * so listen before it or through connect()'s `on` option),
 * `disconnected` (`{reason, code}`: the server's reason, such as `force_disconnected`,
 * `too_slow`, `rate_limited`, or CLOSE_REASONS (link.js) of the close code, `disconnected`
 * after {@link Session#disconnect}, `connection_lost` otherwise), and for
 * the E2EE state of subscribed streams `encryptionSecretMismatch`,
 * `encryptionSecretMatch`, `decryptionError`, `encryptionSecretMissing` (each with
 * `streamId`, `subscriptionId`, `kind`), and for published ones `encryptionError`.
 * Subscribers and publishers emit their own E2EE events too.  `stats` comes twice a
 * second while frames flow, with every track's E2EE counters ({@link Session#stats}).
 */
export class Session extends Emitter {
  #url;
  /** The node the session is on (cluster mode: where the redirects led). */
  url;
  #token;
  #secret;
  #accepted = [];
  #link = null;
  #transforms;
  #closed = false;
  #timeout;
  #iceServers;
  /** subscription id -> rejects its subscribe() while the answer is made */
  #unanswered = new Map();

  /**
   * @param {string} url the server's http(s) URL (cluster mode: any node; {@link Session#url}
   *   is then the one the session is on)
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
    this.#url = this.url = url.replace(/\/+$/, "");
    this.sessionId = sessionId;
    this.#token = token;
    if (encryptionSecret !== undefined && encryptionSecret !== null) validSecret(encryptionSecret);
    this.#secret = encryptionSecret ?? null;
    this.policy = sessionPolicy(policy ?? {});
    this.gracePeriod = gracePeriod;
    this.#timeout = requestTimeout;
    this.#iceServers = iceServers;
    this.#transforms = new Transforms(forcedApi ?? transformApi(), {
      onEvent: (event) => this.emit(event.type, event),
      onStats: () => this.emit("stats", this.stats()),
    });
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
    return this.#link !== null && this.#link.open;
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
    const open = (base) =>
      (this.#link = new Link(base, this.sessionId, this.#token, {
        timeout: this.#timeout,
        handlers: {
          event: (msg) => this.#onMessage(msg),
          close: (ev) => this.#onClose(ev),
          rateLimited: (request) => this.emit("rateLimited", { type: "rateLimited", request }),
          closedByClient: () => this.#closed,
        },
      }));
    const redirected = (ev) => this.emit("redirected", { type: "redirected", ...ev });
    let link;
    try {
      const opened = await openFollowing(this.#url, open, redirected);
      link = opened.link;
      this.url = opened.url;
      const first = opened.first;
      const params = checkHello(first.session, { secretGiven: this.#wantsE2ee, policy: this.policy });
      if (params) {
        if (!this.#transforms.api || !hasEndToEndEncryptionSupport()) {
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
    link.start();
  }

  async #makeRing(params) {
    if (this.#secret === null) {
      throw new EncryptionSecretMissing("this session is end-to-end encrypted: set an encryption secret to connect");
    }
    const ring = new KeyRing(this.sessionId, { ...params, gracePeriod: this.gracePeriod });
    await ring.setSecret(this.#secret);
    for (const s of this.#accepted) await ring.acceptSecret(s);
    this.#accepted = [];
    this.#transforms.start(ring);
    this.ring = ring;
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

  /** Sends one message and waits for its reply; an error reply raises SessionError.  A
   * reply `rate_limited` (the message was not handled) also emits `rateLimited`
   * `{request}` (the message type) before the rejection. */
  request(message) {
    if (!this.connected) return Promise.reject(new SessionError("not_connected", "the session is not connected"));
    return this.#link.request(message);
  }

  /** Sends a signal to one connection (`to`) or to everyone else. */
  async signal(kind, data, { to } = {}) {
    await this.request({ type: "signal", kind, data, ...(to ? { to } : {}) });
  }

  /** A server event (replies and the `disconnected` notice stay in the link). */
  #onMessage(msg) {
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
      case "subscription_expired":
        this.#unanswered.get(msg.subscription_id)?.(
          new SessionError("subscription_expired", "the server ended the subscription: its answer came too late"),
        );
        break;
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

  /** The link closed (its pending requests already rejected). */
  #onClose({ reason, code }) {
    this.#shutdown();
    this.emit("disconnected", { type: "disconnected", reason, code });
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
    if (this.e2ee && this.#transforms.api === "encoded-streams") config.encodedInsertableStreams = true;
    return new RTCPeerConnection(config);
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
          this.#transforms.protect(t, "send", track.kind, pub);
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
    this.#transforms.postCodecs(pub);
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
    this.#transforms.forget(pub);
  }

  /**
   * Receives a stream; in E2EE sessions its frames are decrypted before decoding.
   * Rejects with code `subscription_expired` if the server ended the subscription
   * before its answer arrived (the server's pending timeout; python/e2ee/server/rooms.py).
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
    const expired = new Promise((_, reject) => this.#unanswered.set(sub.subscriptionId, reject));
    try {
      await Promise.race([this.#answer(sub, reply.sdp), expired]);
    } catch (e) {
      this.#closeSubscriber(sub);
      if (e.code !== "subscription_expired") {
        this.request({ type: "unsubscribe", subscription_id: sub.subscriptionId }).catch(() => {});
      }
      throw e;
    } finally {
      this.#unanswered.delete(sub.subscriptionId);
    }
    this.#transforms.postCodecs(sub);
    this.subscribers.set(sub.subscriptionId, sub);
    return sub;
  }

  async #answer(sub, offerSdp) {
    const pc = sub.pc;
    await pc.setRemoteDescription({ type: "offer", sdp: this.#sdp(offerSdp) });
    if (pc.signalingState === "closed") return; // it expired meanwhile: nothing to protect
    if (this.e2ee) {
      for (const t of pc.getTransceivers()) {
        this.#transforms.protect(t, "receive", t.receiver.track.kind, sub);
      }
    }
    const answer = await pc.createAnswer();
    const sdp = this.#sdp(answer.sdp);
    await pc.setLocalDescription({ type: "answer", sdp });
    await this.request({ type: "answer", subscription_id: sub.subscriptionId, sdp });
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
    this.#transforms.forget(sub);
  }

  // -- the worker's reports --------------------------------------------------------------

  _transformStats(id) {
    return this.#transforms.statsOf(id);
  }

  /** The E2EE counters of every track, as last reported by the worker. */
  stats() {
    return this.#transforms.stats();
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
    this.#link?.close();
    this.#transforms.stop();
  }
}

/**
 * Connects to a session: `new Session(...)` then {@link Session#connect}.  `options.on`:
 * handlers of events by type, listening from before the connect (e.g. `redirected`).
 *
 * @returns {Promise<Session>}
 */
export async function connect(url, sessionId, token, options = {}) {
  const session = new Session(url, sessionId, token, options);
  for (const [type, handler] of Object.entries(options.on ?? {})) session.on(type, handler);
  await session.connect();
  return session;
}
