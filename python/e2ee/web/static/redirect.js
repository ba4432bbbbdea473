// Cluster mode (docs/cluster.md): the redirects a session follows at connect, with the
// rules of the Python client (python/e2ee/client/redirect.py).  A node that does not own
// the session answers the join with `{"type": "redirect", "url", "node_id"}` and close
// 4302; the client opens the same path with the same token on the owner instead.  The
// target must be an http(s) base URL, never a step down from https to http (the token
// would then travel in clear), and at most MAX_REDIRECTS are followed in a row (more
// means the nodes disagree).  The owner's hello is checked like any other: the keys
// never depend on which node routes the media.

import { SessionError } from "./errors.js";

/** Redirects followed in a row before the join fails with `too_many_redirects`. */
export const MAX_REDIRECTS = 3;

/** The server's `redirect` at a join (`.url`, `.nodeId`); past MAX_REDIRECTS in a row
 * the session rejects with it, code `too_many_redirects`. */
export class Redirected extends SessionError {
  constructor(url, nodeId, code = "redirect") {
    const where = `node ${JSON.stringify(nodeId)} at ${JSON.stringify(url)}`;
    super(
      code,
      code === "redirect"
        ? `the session is on ${where}`
        : `more than ${MAX_REDIRECTS} redirects in a row, the last to ${where}: the nodes disagree`,
    );
    this.url = url;
    this.nodeId = nodeId;
  }
}

/**
 * The base URL to follow a redirect to, from `current` (both `http(s)://HOST[:PORT]`,
 * with an optional path); `SessionError` `protocol_error` for a target refused.
 */
export function redirectTarget(current, target) {
  if (typeof target !== "string" || !target) {
    throw new SessionError("protocol_error", "the server's redirect names no URL");
  }
  let parts = null;
  try {
    parts = new URL(target);
  } catch {
    // refused below
  }
  const shown = JSON.stringify(target.slice(0, 200));
  if (!parts || !["http:", "https:"].includes(parts.protocol) || !parts.hostname || parts.username || parts.password) {
    throw new SessionError("protocol_error", `the server redirected to ${shown}`);
  }
  if (new URL(current).protocol === "https:" && parts.protocol !== "https:") {
    throw new SessionError(
      "protocol_error",
      `the server redirected from https to ${shown}: refused (the token would travel unencrypted)`,
    );
  }
  return `${parts.origin}${parts.pathname.replace(/\/+$/, "")}`;
}

/**
 * Opens a link at `entry` and waits for its hello, following redirects: `open(base)`
 * makes a link (link.js), `onRedirect({fromUrl, url, nodeId})` is told of each one
 * followed.  Returns `{link, first, url}` (the hello, the URL of the node that sent it);
 * on any failure the links opened are closed.
 */
export async function openFollowing(entry, open, onRedirect) {
  let base = entry;
  for (let hops = 0; ; hops++) {
    const link = open(base);
    try {
      return { link, first: await link.hello(), url: base };
    } catch (e) {
      link.close();
      if (!(e instanceof Redirected)) throw e;
      if (hops === MAX_REDIRECTS) throw new Redirected(e.url, e.nodeId, "too_many_redirects");
      const url = redirectTarget(base, e.url);
      onRedirect({ fromUrl: base, url, nodeId: e.nodeId });
      base = url;
    }
  }
}
