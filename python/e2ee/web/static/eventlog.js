// The call page's event log, and the words it tells the user for the server's reasons
// and error codes (app.js).  DOM only, no state of the call.

const LOG_STYLE = {
  encryptionSecretMismatch: "warn",
  encryptionSecretMatch: "good",
  decryptionError: "bad",
  encryptionSecretMissing: "bad",
  encryptionError: "bad",
  disconnected: "bad",
  rateLimited: "warn",
  error: "bad",
};
/** Lines the log shows at most (the newest first). */
const LOG_LINES = 60;

/** Puts `event` ({type, at}: ms since the epoch) at the top of the list `log`, as `text`
 * styled by its type. */
export function logLine(log, event, text) {
  const li = document.createElement("li");
  if (LOG_STYLE[event.type]) li.className = LOG_STYLE[event.type];
  const time = document.createElement("time");
  time.textContent = new Date(event.at).toLocaleTimeString([], { hour12: false });
  li.append(time, text);
  log.prepend(li);
  while (log.children.length > LOG_LINES) log.lastChild.remove();
}

/** What the user is told for the server's reasons and error codes (e2ee.js). */
const REASONS = {
  force_disconnected: "removed from the call by a moderator",
  too_slow: "this browser fell too far behind the call's messages",
  rate_limited: "this browser sent messages too fast",
  server_shutdown: "the server is shutting down",
  message_too_large: "a message was too large",
  connection_lost: "the connection was lost",
  token_revoked: "this invitation was revoked",
  session_deleted: "the session was deleted",
  token_connection_limit: "this invitation is already open in too many tabs or devices",
  participant_limit: "the session is full",
  subscription_expired: "the server gave up waiting for this browser's answer",
};

/** The words for `code`, else `fallback`, else the code itself. */
export const explain = (code, fallback) => REASONS[code] ?? fallback ?? code;
