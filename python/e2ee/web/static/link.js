// One signaling WebSocket of a session (python/e2ee/client/link.py): the server's hello,
// requests paired with their replies, and events handed to the session, until the
// socket ends.  The protocol is that of python/e2ee/server/signaling.py.
//
// The link records the reason of the server's `disconnected` message, so that a close
// reports why the server ended the connection even where the close code alone would not
// say (CLOSE_REASONS maps the codes it uses).

import { SessionError } from "./errors.js";
import { Redirected } from "./redirect.js";

/** Server event types and their names here. */
export const SERVER_EVENTS = {
  connection_created: "connectionCreated",
  connection_destroyed: "connectionDestroyed",
  stream_created: "streamCreated",
  stream_destroyed: "streamDestroyed",
  subscriber_count: "subscriberCount",
  signal: "signal",
  subscription_expired: "subscriptionExpired",
};

/**
 * The `disconnected` reason of each close code the server uses after a connection was
 * accepted (python/e2ee/server/errors.py): the reason when the server's own
 * `disconnected` message did not arrive before the close.
 */
export const CLOSE_REASONS = Object.freeze({
  1001: "server_shutdown",
  1009: "message_too_large",
  4001: "force_disconnected",
  4008: "too_slow",
  4029: "rate_limited",
  // Cluster mode: the session moved to another node while connected (docs/cluster.md);
  // joining again follows the redirect to it.
  4302: "redirected",
  4404: "session_deleted",
});

/**
 * The WebSocket to one session, opened at construction.
 *
 * `handlers`: `event(msg)` for every server message that is neither a reply nor the
 * `disconnected` notice; `close({reason, code})` once the socket closed (pending
 * requests are already rejected); `rateLimited(type)` before a request rejects with
 * `rate_limited`; `closedByClient()` whether the application ended the session (the
 * reason of a close nothing else explains is then `disconnected`, not `connection_lost`).
 */
export class Link {
  #ws;
  #timeout;
  #handlers;
  #ids = 0;
  #pending = new Map();
  #disconnectReason = null;
  #early = null;

  /**
   * @param {string} url the server's http(s) URL, without a trailing slash
   * @param {string} sessionId
   * @param {string} token
   * @param {{timeout: number, handlers: object}} options `timeout`: ms for the hello and
   *   for each reply
   */
  constructor(url, sessionId, token, { timeout, handlers }) {
    const wsUrl = `${url.replace(/^http/, "ws")}/v1/sessions/${encodeURIComponent(sessionId)}/ws`;
    this.#ws = new WebSocket(`${wsUrl}?token=${encodeURIComponent(token)}`);
    this.#timeout = timeout;
    this.#handlers = handlers;
  }

  get open() {
    return this.#ws.readyState === WebSocket.OPEN;
  }

  /**
   * The server's first message, a `session` hello; rejects on an error reply, a
   * malformed hello, a close before it or the timeout, and with {@link Redirected} when
   * another node owns the session (cluster mode; redirect.js follows it).  What follows
   * the hello is kept until {@link Link#start}.
   */
  hello() {
    const ws = this.#ws;
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
        if (msg?.type === "redirect") reject(new Redirected(msg.url, msg.node_id ?? ""));
        else if (msg?.type === "error") reject(new SessionError(msg.code ?? "error", msg.message ?? ""));
        else if (msg?.type !== "session" || typeof msg.session !== "object" || msg.session === null) {
          reject(new SessionError("protocol_error", "the server's hello has no session"));
        } else {
          // Keep what follows the hello until the session is done with it.
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

  /** Hands on what arrived after the hello (while the keys were derived), in order,
   * then the live messages. */
  start() {
    const ws = this.#ws;
    const { messages, closed } = this.#early;
    this.#early = null;
    ws.onmessage = (ev) => this.#onMessage(ev.data);
    ws.onclose = (ev) => this.#onClose(ev);
    for (const text of messages) this.#onMessage(text);
    if (closed) this.#onClose(closed);
  }

  /** Sends one message and waits for its reply; an error reply raises SessionError. */
  request(message) {
    const id = ++this.#ids;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new SessionError("timeout", `no reply to ${message.type}`));
      }, this.#timeout);
      this.#pending.set(id, (reply) => {
        clearTimeout(timer);
        if (reply.type !== "error") return resolve(reply);
        if (reply.code === "rate_limited") this.#handlers.rateLimited(message.type);
        reject(new SessionError(reply.code ?? "error", reply.message ?? ""));
      });
      this.#ws.send(JSON.stringify({ ...message, id }));
    });
  }

  /** Closes the socket (normal closure) without reporting it. */
  close() {
    const ws = this.#ws;
    ws.onmessage = ws.onclose = null;
    if (ws.readyState <= WebSocket.OPEN) ws.close(1000);
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
    if (msg.type === "disconnected") {
      this.#disconnectReason = typeof msg.reason === "string" ? msg.reason : null;
      return;
    }
    this.#handlers.event(msg);
  }

  #onClose(ev) {
    const reason =
      this.#disconnectReason ??
      CLOSE_REASONS[ev.code] ??
      (this.#handlers.closedByClient() ? "disconnected" : "connection_lost");
    const message = `the connection closed (${reason}, ${ev.code})`;
    for (const settle of this.#pending.values()) settle({ type: "error", code: "disconnected", message });
    this.#pending.clear();
    this.#handlers.close({ reason, code: ev.code });
  }
}
