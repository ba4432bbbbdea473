// The E2EE transforms of a session's tracks: an encoded-frame transform on every sender
// and receiver, run in one module worker (e2ee-worker.js) that holds the keys of the
// session's key ring and reports each track's E2EE state and counters.
//
// Nothing is ever sent in clear: a transform that does not take is an error, and a
// browser without any encoded-frame transform API cannot publish or subscribe.

import { EncryptionInternalError } from "./errors.js";
import { Publisher, Subscriber } from "./peers.js";

/** Whether this browser can protect media end to end (an encoded-frame transform API,
 * WebCrypto, module workers). */
export function hasEndToEndEncryptionSupport() {
  return transformApi() !== null && !!globalThis.crypto?.subtle && typeof Worker === "function";
}

/** "script-transform" (RTCRtpScriptTransform), "encoded-streams" (the older
 * createEncodedStreams, only where the former is missing), or null. */
export function transformApi() {
  if (typeof RTCRtpScriptTransform === "function") return "script-transform";
  if (typeof RTCRtpSender !== "undefined" && typeof RTCRtpSender.prototype.createEncodedStreams === "function") {
    return "encoded-streams";
  }
  return null;
}

let transformCounter = 0;

/**
 * The transforms of one session and the worker they run in.
 *
 * `onEvent(event)` after a publisher or subscriber emitted an E2EE event of one of its
 * tracks (`streamId`, and `subscriptionId` for a subscriber); `onStats()` after the
 * worker reported the counters (twice a second while frames flow).
 */
export class Transforms {
  #worker = null;
  /** transform id -> the Publisher or Subscriber of its track */
  #owners = new Map();
  #stats = new Map();
  #onEvent;
  #onStats;

  /**
   * @param {"script-transform" | "encoded-streams" | null} api the API to attach with
   * @param {{onEvent: Function, onStats: Function}} handlers
   */
  constructor(api, { onEvent, onStats }) {
    this.api = api;
    this.#onEvent = onEvent;
    this.#onStats = onStats;
  }

  /** Starts the worker with the keys of `ring`, and posts them again on every change. */
  start(ring) {
    this.#worker = new Worker(new URL("./e2ee-worker.js", import.meta.url), { type: "module", name: "e2ee" });
    this.#worker.onmessage = (ev) => this.#onWorker(ev.data);
    this.#worker.onerror = (ev) => console.error("e2ee worker failed", ev.message ?? ev);
    const postKeys = () => this.#worker?.postMessage({ type: "keys", ...ring.forWorker() });
    ring.onChange(postKeys);
    postKeys();
  }

  /**
   * Attaches the E2EE transform to a sender or receiver, before any negotiation; throws
   * if it did not take (nothing is ever sent in clear, nothing undecrypted decoded).
   */
  protect(transceiver, side, kind, owner) {
    const senderOrReceiver = side === "send" ? transceiver.sender : transceiver.receiver;
    const id = `t${++transformCounter}`;
    const options = { id, side, kind };
    const api = this.api === "encoded-streams" ? this.api : transformApi();
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
    this.#owners.set(id, owner);
    owner.transforms.set(id, transceiver);
    return id;
  }

  /** Tells the worker which codec a transform's track negotiated (for browsers whose
   * encoded frames do not say). */
  postCodecs(owner) {
    for (const [id, t] of owner.transforms) {
      const params = owner instanceof Publisher ? t.sender.getParameters() : t.receiver.getParameters();
      const mimeType = params?.codecs?.[0]?.mimeType;
      if (mimeType) this.#worker?.postMessage({ type: "codec", id, mimeType });
    }
  }

  /** Ends the transforms of a closed publisher or subscriber. */
  forget(owner) {
    for (const id of owner.transforms.keys()) {
      this.#owners.delete(id);
      this.#worker?.postMessage({ type: "close", id });
    }
  }

  /** The counters of one transform, as last reported by the worker. */
  statsOf(id) {
    return this.#stats.get(id);
  }

  /** The counters of every transform, as last reported (kept after the worker stops). */
  stats() {
    return Object.fromEntries(this.#stats);
  }

  stop() {
    this.#worker?.terminate();
    this.#worker = null;
  }

  #onWorker(msg) {
    if (msg.type === "stats") {
      for (const [id, s] of Object.entries(msg.transforms)) {
        if (this.#owners.has(id)) this.#stats.set(id, s);
      }
      this.#onStats();
      return;
    }
    if (msg.type !== "event") return;
    const owner = this.#owners.get(msg.id);
    if (!owner) return;
    const event = { ...msg.event, streamId: owner.streamId };
    if (owner instanceof Subscriber) {
      event.subscriptionId = owner.subscriptionId;
      if (msg.stats) this.#stats.set(msg.id, msg.stats);
      owner.events.push(event);
    }
    owner.emit(event.type, event);
    this.#onEvent(event);
  }
}
