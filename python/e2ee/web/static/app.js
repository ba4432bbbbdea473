// The call page: a join form, a local preview, a grid of remote videos with names and a
// banner per stream ("connecting", "secret mismatch", "no media"), camera and microphone
// toggles, changing the secret, leaving.  Built on e2ee.js only.
//
// URL parameters (for links from an application server, and for automation):
//   session, token, secret, name   fill the form; with session, token and secret the page
//                                  joins at once
//   publish=1                      send camera and microphone (publish=0: receive only)
//   synthetic=1                    send a generated picture (dark left half, bright right
//                                  half) and a 400 Hz tone instead of camera and microphone
//   minIterations=N                lower the client's PBKDF2 floor (tests only)
//
// window.e2ee.state = {ready, dev, connected, publishing, sessionId, connectionId, streams: [{streamId,
// name, framesDecrypted, framesDropped, state}], events: [...]} is kept current.

import { connect, hasEndToEndEncryptionSupport } from "./e2ee.js";
import { looksLikeSource, syntheticAudioTrack, syntheticVideoTrack, videoHalves } from "./synthetic.js";
import { explain, logLine } from "./eventlog.js";
import { layoutGrid, newTile, setTileState } from "./tiles.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const MAX_EVENTS = 200;
/** A stream with no new decrypted frame for this long shows "no media". */
const STALL_MS = 3000;

const state = {
  ready: false,
  dev: false,
  connected: false,
  publishing: false,
  sessionId: null,
  connectionId: null,
  suite: null,
  streams: [],
  events: [],
  error: null,
};

/** Everything a test or a console user may want. */
const api = {
  state,
  session: null,
  publisher: null,
  sample: (streamId) => sample(streamId),
  join: (options) => join(options),
  leave: () => leave(),
  setEncryptionSecret: (secret) => changeSecret(secret),
};
window.e2ee = api;

/** streamId -> {subscriber, tile, audio, stream, lastFrames, lastProgress, state} */
const remotes = new Map();
let local = null; // {tracks, stops, tile}
let refreshTimer = null;

// ---------------------------------------------------------------------------------------
// Events and the log
// ---------------------------------------------------------------------------------------

function record(type, fields = {}, text = type) {
  const event = { type, at: Date.now(), ...fields };
  state.events.push(event);
  if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
  logLine($("log"), event, text);
}

function nameOf(streamId) {
  return remotes.get(streamId)?.name ?? "someone";
}

function setStatus(text, kind) {
  const el = $("status");
  $("status-text").textContent = el.title = text;
  el.dataset.state = kind;
}

/** A passing problem in the status line; "Connected" comes back after a while. */
function warnStatus(text) {
  setStatus(text, "warn");
  setTimeout(() => {
    if (state.connected && $("status-text").textContent === text) setStatus("Connected", "connected");
  }, 8000);
}

function showError(el, error) {
  el.textContent = error ? `${error.code ? `${error.code}: ` : ""}${error.message ?? error}` : "";
  el.hidden = !error;
}

// ---------------------------------------------------------------------------------------
// Tiles (tiles.js), and the "waiting for others" hint
// ---------------------------------------------------------------------------------------

function makeTile(name, options) {
  const tile = newTile($("grid"), $("tile-template"), name, options);
  layout();
  return tile;
}

function layout() {
  $("waiting").hidden = remotes.size > 0 || !state.connected;
  layoutGrid($("grid"));
}

new ResizeObserver(() => layout()).observe(document.documentElement);

// ---------------------------------------------------------------------------------------
// Joining
// ---------------------------------------------------------------------------------------

async function devInfo() {
  try {
    const r = await fetch("/dev", { cache: "no-store" });
    return r.ok ? await r.json() : null;
  } catch {
    return null;
  }
}

async function devPost(path, body) {
  const r = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const reply = await r.json();
  if (!r.ok) throw Object.assign(new Error(reply.message ?? r.statusText), { code: reply.code });
  return reply;
}

async function localTracks(publish, synthetic) {
  if (!publish) return { video: null, audio: null, stops: [] };
  if (synthetic) {
    const v = syntheticVideoTrack();
    const a = syntheticAudioTrack();
    if (a.context.state !== "running") {
      // Without a user gesture yet, the tone starts at the first one.
      const resume = () => a.context.resume().catch(() => {});
      for (const type of ["pointerdown", "keydown"]) addEventListener(type, resume, { once: true });
    }
    return { video: v.track, audio: a.track, stops: [v.stop, a.stop] };
  }
  const media = await navigator.mediaDevices.getUserMedia({
    video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 30 } },
    audio: { echoCancellation: true, noiseSuppression: true },
  });
  return {
    video: media.getVideoTracks()[0] ?? null,
    audio: media.getAudioTracks()[0] ?? null,
    stops: media.getTracks().map((t) => () => t.stop()),
  };
}

/**
 * Joins a session: connect (checking the server against the policy), publish, and
 * subscribe to every other stream, now and as they come.
 */
async function join({ sessionId, token, secret, name, publish, synthetic, minIterations }) {
  state.error = null;
  setStatus("Connecting…", "connecting");
  const policy = minIterations ? { minIterations } : undefined;
  const on = { redirected: (ev) => record(ev.type, ev, `Redirected to node ${ev.nodeId} at ${ev.url}`) };
  const session = await connect(location.origin, sessionId, token, { encryptionSecret: secret, policy, on });
  api.session = session;
  state.connected = true;
  state.sessionId = sessionId;
  state.connectionId = session.connection.id;
  state.suite = session.info.suite;
  setStatus("Connected", "connected");
  record("connected", {}, `Joined session (suite ${session.info.suite}, ${session.info.kdf_iterations} PBKDF2 iterations)`);
  $("join").hidden = true;
  $("call").hidden = false;
  $("controls").hidden = false;
  layout();
  $("badge").hidden = !session.e2ee;
  $("toggle-camera").hidden = $("toggle-mic").hidden = !publish;
  $("fact-suite").textContent = session.info.suite ?? "–";
  $("fact-secret").textContent = secretIdText(session);

  session.on("streamCreated", ({ stream }) => {
    if (stream.connection_id !== session.connection.id) subscribeTo(session, stream);
  });
  session.on("streamDestroyed", ({ stream, reason }) => {
    const remote = remotes.get(stream.id);
    if (remote) {
      record("streamDestroyed", { streamId: stream.id }, `${remote.name} left (${reason})`);
      removeRemote(stream.id);
    }
  });
  session.on("connectionCreated", ({ connection }) => {
    record("connectionCreated", { connectionId: connection.id }, `${connection.data || "Someone"} joined`);
    updateFacts();
  });
  session.on("connectionDestroyed", () => updateFacts());
  session.on("encryptionSecretMismatch", (ev) => {
    record(ev.type, ev, `Secret mismatch on ${nameOf(ev.streamId)}'s ${ev.kind}`);
    refresh();
  });
  session.on("encryptionSecretMatch", (ev) => {
    record(ev.type, ev, `Secret matches again on ${nameOf(ev.streamId)}'s ${ev.kind}`);
    refresh();
  });
  session.on("encryptionSecretMissing", (ev) => record(ev.type, ev, `No secret for ${nameOf(ev.streamId)}'s ${ev.kind}`));
  session.on("decryptionError", (ev) =>
    record(ev.type, ev, `${ev.count ?? 1} ${ev.kind} frame(s) of ${nameOf(ev.streamId)} failed (${ev.reason})`),
  );
  session.on("encryptionError", (ev) => record(ev.type, ev, `Could not encrypt ${ev.kind}: ${ev.message}`));
  session.on("stats", () => refresh());
  session.on("disconnected", ({ reason, code }) => {
    const text = `Disconnected: ${explain(reason)} (${reason}, ${code})`;
    record("disconnected", { reason, code }, text);
    api.session = null;
    teardown();
    setStatus(text, "error");
    // Back to the form: joining again is one click (if the server lets this token in).
    $("call").hidden = true;
    $("join").hidden = false;
  });
  session.on("rateLimited", ({ request }) => {
    const text = `Slow down: too many "${request}" messages (rate_limited)`;
    if ($("status-text").textContent !== text) record("rateLimited", { request }, text);
    warnStatus(text);
  });

  if (publish) {
    const tracks = await localTracks(publish, synthetic);
    local = { ...tracks, tile: makeTile(`${name || "You"} (you)`, { isLocal: true }) };
    local.tile.querySelector("video").srcObject = new MediaStream([tracks.video].filter(Boolean));
    api.publisher = await session.publish({ video: tracks.video, audio: tracks.audio, name: name || "" });
    state.publishing = true;
    record("published", { streamId: api.publisher.streamId }, "You are sending encrypted video and audio");
  }
  for (const stream of session.streams.values()) {
    if (stream.connection_id !== session.connection.id) subscribeTo(session, stream);
  }
  updateFacts();
  refreshTimer = setInterval(refresh, 500);
  refresh();
}

function secretIdText(session) {
  const id = session.ring?.secretId;
  return id === null || id === undefined ? "–" : `0x${id.toString(16).padStart(4, "0")}`;
}

function updateFacts() {
  const session = api.session;
  if (session) $("fact-participants").textContent = String(session.connections.size);
}

async function subscribeTo(session, stream) {
  if (remotes.has(stream.id)) return;
  const name = stream.name || "Guest";
  const tile = makeTile(name);
  const remote = { name, tile, subscriber: null, audio: null, lastFrames: 0, lastProgress: 0, since: performance.now() };
  remotes.set(stream.id, remote);
  refresh();
  try {
    const sub = await session.subscribe(stream.id);
    if (!remotes.has(stream.id)) {
      session.unsubscribe(sub);
      return;
    }
    remote.subscriber = sub;
    tile.querySelector("video").srcObject = sub.stream;
    const audio = new Audio();
    audio.autoplay = true;
    audio.srcObject = sub.stream;
    remote.audio = audio;
    audio.play().catch(() => {
      $("enable-sound").hidden = false;
    });
    record("subscribed", { streamId: stream.id }, `Receiving ${name}`);
  } catch (e) {
    const text = `Could not receive ${name}: ${explain(e.code, e.message)}`;
    record("error", { streamId: stream.id, code: e.code }, text);
    remote.failed = true;
    setTileState(tile, "no-media");
    if (state.connected) warnStatus(e.code ? `${text} (${e.code})` : text);
  }
}

function removeRemote(streamId) {
  const remote = remotes.get(streamId);
  if (!remote) return;
  remotes.delete(streamId);
  remote.tile.remove();
  layout();
  if (remote.audio) remote.audio.srcObject = null;
  refresh();
}

/** Recomputes window.e2ee.state.streams and every banner from the worker's counters. */
function refresh() {
  const now = performance.now();
  const streams = [];
  for (const [streamId, remote] of remotes) {
    const sub = remote.subscriber;
    const stats = sub ? sub.stats() : [];
    const sum = (key) => stats.reduce((n, s) => n + (s[key] ?? 0), 0);
    const video = stats.find((s) => s.kind === "video");
    const audio = stats.find((s) => s.kind === "audio");
    const framesDecrypted = sum("framesDecrypted");
    if (framesDecrypted > remote.lastFrames) {
      remote.lastFrames = framesDecrypted;
      remote.lastProgress = now;
    }
    let streamState = sub ? sub.state : remote.failed ? "no-media" : "connecting";
    if (streamState === "ok" && now - remote.lastProgress > STALL_MS) streamState = "no-media";
    if (sub && ["failed", "closed"].includes(sub.pc.connectionState)) streamState = "no-media";
    setTileState(remote.tile, streamState);
    const meter = remote.tile.querySelector(".meter");
    meter.textContent = video && streamState === "ok" ? `${video.framesDecrypted} frames` : "";
    streams.push({
      streamId,
      name: remote.name,
      framesDecrypted,
      framesDropped: sum("framesDropped"),
      framesReplayed: sum("framesReplayed"),
      state: streamState,
      video: video ?? null,
      audio: audio ?? null,
    });
  }
  state.streams = streams;
  if (api.session) $("fact-secret").textContent = secretIdText(api.session);
}

/** What a remote video element shows: mean luma of its halves (see synthetic.js). */
function sample(streamId) {
  const remote = remotes.get(streamId) ?? [...remotes.values()][0];
  if (!remote) return null;
  const halves = videoHalves(remote.tile.querySelector("video"));
  return halves && { ...halves, looksLikeSource: looksLikeSource(halves) };
}

// ---------------------------------------------------------------------------------------
// Controls
// ---------------------------------------------------------------------------------------

function toggle(button, track, what) {
  if (!track) return;
  track.enabled = !track.enabled;
  button.setAttribute("aria-pressed", String(track.enabled));
  button.title = track.enabled ? `Turn the ${what} off` : `Turn the ${what} on`;
  if (what === "camera") local.tile.classList.toggle("camera-off", !track.enabled);
}

async function changeSecret(secret) {
  await api.session.setEncryptionSecret(secret);
  record("secretChanged", {}, `You changed the secret (id ${secretIdText(api.session)})`);
  refresh();
}

function teardown() {
  clearInterval(refreshTimer);
  for (const stop of local?.stops ?? []) stop();
  for (const id of [...remotes.keys()]) removeRemote(id);
  local?.tile.remove();
  local = null;
  state.connected = state.publishing = false;
  $("controls").hidden = true;
  $("badge").hidden = true;
}

async function leave() {
  const session = api.session;
  api.session = null;
  teardown();
  if (session) await session.disconnect();
  setStatus("Not connected", "idle");
  record("left", {}, "You left the call");
  $("call").hidden = true;
  $("join").hidden = false;
}

function wireControls() {
  $("toggle-camera").onclick = (ev) => toggle(ev.currentTarget, local?.video, "camera");
  $("toggle-mic").onclick = (ev) => toggle(ev.currentTarget, local?.audio, "microphone");
  $("leave").onclick = () => leave();
  $("enable-sound").onclick = () => {
    for (const r of remotes.values()) r.audio?.play().catch(() => {});
    $("enable-sound").hidden = true;
  };
  const dialog = $("secret-dialog");
  $("change-secret").onclick = () => {
    showError($("secret-error"), null);
    dialog.querySelector("input").value = "";
    dialog.showModal();
  };
  $("secret-cancel").onclick = () => dialog.close();
  $("secret-form").onsubmit = async (ev) => {
    ev.preventDefault();
    const secret = new FormData(ev.target).get("secret");
    try {
      await changeSecret(secret);
      dialog.close();
    } catch (e) {
      showError($("secret-error"), e);
    }
  };
}

// ---------------------------------------------------------------------------------------
// The form
// ---------------------------------------------------------------------------------------

function intParam(name) {
  const v = params.get(name);
  return v !== null && /^\d+$/.test(v) ? Number(v) : undefined;
}

async function main() {
  wireControls();
  const form = $("join-form");
  for (const key of ["session", "token", "name"]) {
    if (params.has(key)) form.elements[key].value = params.get(key);
  }
  if (params.has("secret")) form.elements.secret.value = params.get("secret");
  if (params.has("publish")) form.elements.publish.checked = params.get("publish") === "1";
  const synthetic = params.get("synthetic") === "1";
  const minIterations = intParam("minIterations");
  if (params.has("secret")) {
    // Keep the secret out of the address bar (and out of what the user might share).
    const clean = new URL(location.href);
    clean.searchParams.delete("secret");
    history.replaceState(null, "", clean);
  }
  if (!hasEndToEndEncryptionSupport()) $("support-warning").hidden = false;

  const dev = await devInfo();
  state.dev = dev !== null;
  if (dev) {
    const button = $("dev-create");
    button.hidden = false;
    button.onclick = async () => {
      button.disabled = true;
      try {
        const session = await devPost("/dev/sessions", {});
        form.elements.session.value = session.id;
        form.elements.token.value = "";
        const link = `${location.origin}/?session=${encodeURIComponent(session.id)}`;
        $("dev-note").hidden = false;
        $("dev-note").textContent = `Test session created. Others join with: ${link} (and the same secret).`;
      } catch (e) {
        showError($("join-error"), e);
      } finally {
        button.disabled = false;
      }
    };
  }

  form.onsubmit = async (ev) => {
    ev.preventDefault();
    showError($("join-error"), null);
    const data = new FormData(form);
    const button = $("join-button");
    button.disabled = true;
    try {
      let token = String(data.get("token") ?? "").trim();
      const name = String(data.get("name") ?? "").trim();
      const sessionId = String(data.get("session") ?? "").trim();
      if (!token && dev) {
        token = (await devPost(`/dev/sessions/${encodeURIComponent(sessionId)}/tokens`, { data: name })).token;
      }
      if (!token) throw Object.assign(new Error("a token is needed to join"), { code: "token_missing" });
      await join({
        sessionId,
        token,
        secret: String(data.get("secret") ?? ""),
        name,
        publish: data.get("publish") === "on",
        synthetic,
        minIterations,
      });
    } catch (e) {
      state.error = { code: e.code ?? null, message: e.message };
      record("error", { code: e.code ?? null }, `Could not join: ${e.message}`);
      if (api.session) await leave();
      teardown();
      $("call").hidden = true;
      $("join").hidden = false;
      setStatus(`Could not join: ${explain(e.code, e.message)}${e.code ? ` (${e.code})` : ""}`, "error");
      showError($("join-error"), e);
    } finally {
      button.disabled = false;
    }
  };

  state.ready = true;
  if (params.has("session") && params.has("token") && form.elements.secret.value) form.requestSubmit();
}

main();
