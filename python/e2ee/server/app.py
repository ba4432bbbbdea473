"""The session server's aiohttp application: REST API (:mod:`e2ee.server.rest`),
signaling WebSocket (:mod:`e2ee.server.ws_endpoint`, :mod:`e2ee.server.signaling`), live
state (:mod:`e2ee.server.hub`, :mod:`e2ee.server.rooms`), media routers
(:mod:`e2ee.server.media`), durable state (:mod:`e2ee.server.store`).

Run it with ``e2ee serve --port 8080 --data-dir ./e2ee-data`` or :func:`run`.  On first
start it creates the project credentials in the data directory (SQLite, file mode 0600)
and prints the API key and where the secret is; the secret is
never printed, logged or sent.  There is no TLS here: outside the loopback interface,
serve it behind a TLS-terminating proxy (clients must use https/wss).

``GET /healthz`` answers ``{"status": "ok"}`` without authentication.  ``GET /v1/metrics``
(project auth) gives the event loop's lag (:class:`e2ee.server.looplag.LoopLagProbe`).

The browser client's page and files: :mod:`e2ee.server.static`.

Hostile clients: the access log and every log line carrying request text escape it
(:func:`e2ee.server.logs.clean`); requests aiohttp's parser rejects get a JSON
``bad_request`` and one WARNING line without traceback; a connection must send a
complete request head within :data:`HEADER_TIMEOUT` seconds (also the idle keep-alive
limit) and at most :data:`MAX_CONNECTIONS` are open at once; :func:`run` rate-limits
repeated WARNING/ERROR lines (:class:`e2ee.server.logs.RateLimitFilter`).  WebSockets
from one client address are bounded in number and rate (HTTP 429 before the upgrade,
:class:`e2ee.server.limits.ServerLimits`); no response names the server software.  The
router offers ICE candidates only on the media addresses (``e2ee serve --media-address``,
default the bind host) and uses no STUN server unless configured (``--stun-server``).

``e2ee serve --cluster redis://...`` makes this process one node of a cluster
(:mod:`e2ee.server.cluster.node`, docs/cluster.md); without it ``redis`` is never imported.

``e2ee serve --dev`` adds the unauthenticated ``/dev`` endpoints of
:mod:`e2ee.server.dev`; it is refused unless the server binds a loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from e2ee.archive.config import ArchiveConfig
from e2ee.rtc import net
from e2ee.server import rest
from e2ee.server.archives import add_archive_routes
from e2ee.server.archiving import ArchiveService
from e2ee.server.dev import add_dev_routes, check_dev_host
from e2ee.server.errors import ApiError
from e2ee.server.gcpause import GcPauseProbe
from e2ee.server.http_compat import GuardedAppRunner
from e2ee.server.hub import Hub
from e2ee.server.limits import AddressLimiter, ServerLimits, address_key
from e2ee.server.logs import RateLimitFilter, clean
from e2ee.server.looplag import LoopLagProbe
from e2ee.server.media import RouterFactory, default_router_factory, preload_router
from e2ee.server.page_policy import CLUSTER_NODE
from e2ee.server.static import index, static_file
from e2ee.server.store import DEFAULT_DATA_DIR, SQLiteStore, Store, db_path
from e2ee.server.ws_endpoint import websocket_handler

if TYPE_CHECKING:
    from e2ee.server.cluster.node import ClusterConfig, ClusterNode

__all__ = ["DEFAULT_DATA_DIR", "HUB", "create_app", "run", "serve"]

log = logging.getLogger("e2ee.server.app")

HUB: web.AppKey[Hub] = web.AppKey("e2ee_hub", Hub)

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


class _AccessLogger(AbstractAccessLogger):
    """Logs method, path (never the query string: it carries tokens), status, time; the
    request's text escaped (:func:`e2ee.server.logs.clean`)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            '%s "%s %s" %s %.1f ms',
            clean(request.remote),
            clean(request.method, 16),
            clean(request.path),
            response.status,
            time * 1000,
        )


#: Seconds a connection may take to send a complete request (head) after it opens or
#: after its previous response; idle and half-sent connections are closed after it.
HEADER_TIMEOUT = 10.0
#: Open connections the server keeps at most; further ones are closed at once.
MAX_CONNECTIONS = 1000


def _error_response(err: ApiError) -> web.Response:
    return web.json_response(err.body(), status=err.status, headers={"Cache-Control": "no-store"})


def reject_malformed(remote: str | None, status: int, reason: str) -> web.Response:
    """The answer to a request aiohttp's parser refused: one escaped WARNING line, no
    traceback, a JSON error, and the connection closed."""
    log.warning("rejected a malformed request from %s: %s", clean(remote), clean(reason, 120))
    resp = _error_response(
        ApiError(_HTTP_CODES.get(status, "bad_request"), "malformed HTTP request", status)
    )
    resp.force_close()
    return resp


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every error becomes JSON ``{"type": "error", "code", "message"}``; never a
    traceback."""
    try:
        return await handler(request)
    except ApiError as err:
        resp = _error_response(err)
        if err.status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="e2ee"'
        return resp
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = _HTTP_CODES.get(exc.status, "http_error")
        message = exc.reason
        if exc.status == 413:
            message = f"the request body is over {rest.MAX_BODY_BYTES} bytes"
        resp = _error_response(ApiError(code, message, exc.status))
        if exc.status == 405 and "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("%s %s failed", clean(request.method, 16), clean(request.path))
        return _error_response(ApiError("internal_error", "internal server error", 500))


def _address_refusal(key: str, code: str) -> web.Response:
    """A WebSocket refused by the per-address limits: HTTP 429 before the upgrade, one
    WARNING line (rate-limited like every repeated line)."""
    log.warning("refused a WebSocket from %s: %s", clean(key), code)
    if code == "rate_limited":
        message = "too many new connections from this address: retry later"
    else:
        message = "too many open connections from this address"
    resp = _error_response(ApiError(code, message, 429))
    resp.headers["Retry-After"] = "1"
    return resp


async def _strip_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.pop("Server", None)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


LOOP_LAG: web.AppKey[LoopLagProbe] = web.AppKey("e2ee_loop_lag", LoopLagProbe)
GC_PAUSES: web.AppKey[GcPauseProbe] = web.AppKey("e2ee_gc_pauses", GcPauseProbe)


async def metrics(request: web.Request) -> web.Response:
    """``GET /v1/metrics[?since=N][&gc_since=M]`` (project auth): the event loop's lag
    (:class:`LoopLagProbe`) and the garbage collector's pauses (:class:`GcPauseProbe`),
    for ``e2ee bench soak`` and monitoring.  Behind auth: the lag of a shared loop tells
    when others are in calls."""
    await rest.authenticate(request, request.app[HUB])
    try:
        since = int(request.query.get("since", "0"))
        gc_since = int(request.query.get("gc_since", "0"))
    except ValueError:
        raise ApiError("bad_request", "since and gc_since must be integers", 400) from None
    body = {
        "loop_lag": request.app[LOOP_LAG].snapshot(since),
        "gc": request.app[GC_PAUSES].snapshot(gc_since),
    }
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def create_app(
    data_dir: str | Path,
    *,
    store: Store | None = None,
    router_factory: RouterFactory | None = None,
    rtc_configuration: Any = None,
    dev: bool = False,
    limits: ServerLimits | None = None,
    cluster: ClusterNode | None = None,
    archive_config: ArchiveConfig | None = None,
) -> web.Application:
    """The aiohttp application.  ``store`` defaults to :class:`SQLiteStore` in
    ``data_dir``; ``router_factory(session_record)`` makes each session's media router
    (default: :class:`e2ee.sfu.router.Router` with ``rtc_configuration``).  ``dev`` adds
    the unauthenticated ``/dev`` endpoints (:mod:`e2ee.server.dev`): only for a server
    on a loopback address (:func:`serve` checks).  ``limits``: the tunable budgets
    (:class:`e2ee.server.limits.ServerLimits`).  ``cluster``: this node of a cluster
    (its store is the shared one; started and stopped with the application).
    ``archive_config``: archive limits and retention (default: from the environment,
    :meth:`e2ee.archive.config.ArchiveConfig.from_env`)."""
    if cluster is not None:
        store = cluster.store
    if store is None:
        store = SQLiteStore.in_data_dir(data_dir)
    creds = await store.get_or_create_credentials()
    hub = Hub(
        store,
        creds.api_key,
        creds.api_secret,
        router_factory or default_router_factory(rtc_configuration),
    )
    hub.limits = limits or ServerLimits()
    if cluster is not None:
        hub.cluster = cluster
        cluster.attach(hub)
    addresses = AddressLimiter.from_limits(hub.limits)
    app = web.Application(middlewares=[_errors], client_max_size=rest.MAX_BODY_BYTES)
    app[HUB] = hub
    if cluster is not None:  # the page's policy names the live nodes (page_policy.py)
        app[CLUSTER_NODE] = cluster
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/v1/metrics", metrics, allow_head=False)
    app[LOOP_LAG] = lag = LoopLagProbe()
    app[GC_PAUSES] = gc_pauses = GcPauseProbe()
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static_file)
    if dev:
        add_dev_routes(app, hub)

    async def ws(request: web.Request) -> web.StreamResponse:
        key = address_key(request.remote)
        refusal = addresses.admit(key)
        if refusal is not None:
            return _address_refusal(key, refusal)
        try:
            return await websocket_handler(request, hub)
        finally:
            addresses.release(key)

    app.router.add_get("/v1/sessions/{session_id}/ws", ws)
    rest.add_routes(app, hub)
    app.on_response_prepare.append(_strip_server_header)

    async def on_shutdown(_app: web.Application) -> None:
        await hub.shutdown()
        if cluster is not None:  # after the rooms: their sessions are released first
            await cluster.stop()

    async def on_cleanup(_app: web.Application) -> None:
        await hub.store.close()

    app.on_shutdown.append(on_shutdown)
    # After the rooms' shutdown handler: closing the routers ends the archives' tracks.
    # Cluster mode: records in Redis naming this node as the files' holder.
    catalog = cluster.archive_catalog() if cluster is not None else None
    node_id = cluster.node_id if cluster is not None else None
    config = archive_config or ArchiveConfig.from_env()
    archives = ArchiveService(hub, data_dir, config, catalog, node_id)
    add_archive_routes(app, hub, archives, cluster.archives(archives) if cluster else None)

    async def on_startup(_app: web.Application) -> None:
        lag.start()
        gc_pauses.start()
        if cluster is not None:
            await cluster.start()

    async def stop_probe(_app: web.Application) -> None:
        lag.stop()
        gc_pauses.stop()

    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.on_cleanup.append(stop_probe)
    return app


def _banner(
    host: str, port: int, data_dir: Path, hub: Hub, dev: bool = False, cluster: str = ""
) -> str:
    shown = f"[{host}]" if ":" in host else host
    base = f"http://{shown}:{port}"
    kept = cluster or str(db_path(data_dir).resolve())
    lines = [
        f"e2ee session server listening on {base}",
        f"  API key:     {hub.api_key}",
        f"  API secret:  kept in {kept} (never printed)",
        f"  REST API:    {base}/v1/sessions  "
        "(Authorization: Bearer <e2ee.server.tokens.project_auth_token(api_key, api_secret)>)",
        f"  Signaling:   ws://{shown}:{port}/v1/sessions/<session_id>/ws?token=<session token>",
        f"  Health:      {base}/healthz",
        f"  Web client:  {base}/?session=<session_id>&token=<session token>",
    ]
    if dev:
        lines.append(
            f"  DEV MODE:    {base}/ can create test sessions and tokens without "
            "authentication (POST /dev/sessions); never use it in production"
        )
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        lines.append(
            "  WARNING: no TLS here; expose it only behind a TLS-terminating proxy (https/wss)"
        )
    return "\n".join(lines)


async def serve(
    host: str = "127.0.0.1",
    port: int = 8080,
    data_dir: str | Path = DEFAULT_DATA_DIR,
    *,
    router_factory: RouterFactory | None = None,
    rtc_configuration: Any = None,
    stop: asyncio.Event | None = None,
    dev: bool = False,
    media_addresses: Sequence[str] | None = None,
    limits: ServerLimits | None = None,
    cluster: ClusterConfig | None = None,
) -> None:
    """Serves until ``stop`` is set (or SIGINT/SIGTERM).  ``cluster``: run as a node of
    that cluster (docs/cluster.md; its Redis must answer at start).  ``dev``: development mode,
    refused (``ValueError``) unless ``host`` is a loopback address.  ``media_addresses``:
    the only addresses the router offers as ICE candidates (default: ``E2EE_ICE_ADDRESSES``,
    else the bind host, :func:`e2ee.rtc.net.configure_media_addresses`)."""
    if dev:
        check_dev_host(host)
    data_dir = Path(data_dir)
    net.configure_media_addresses(media_addresses, host)  # which addresses ICE offers
    node = None
    if cluster is not None:
        from e2ee.server.cluster.node import ClusterNode  # imports redis: cluster mode only

        node = await ClusterNode.connect(cluster)
    app = await create_app(
        data_dir,
        router_factory=router_factory,
        rtc_configuration=rtc_configuration,
        dev=dev,
        limits=limits,
        cluster=node,
    )
    runner = GuardedAppRunner(
        app,
        max_connections=MAX_CONNECTIONS,
        reject=reject_malformed,
        access_log_class=_AccessLogger,
        shutdown_timeout=5.0,
        keepalive_timeout=HEADER_TIMEOUT,  # also closes connections that never finish a head
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            bound = addr[1]
            break
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before the banner: whoever waits for "listening on" may signal at once.
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    # Modules, classes and the app built so far live as long as the process: move them
    # out of the cyclic collector's sight, so a full collection (which holds the GIL,
    # i.e. stalls every call's media) walks only what calls allocate (e2ee.server.gcpause).
    if router_factory is None:
        preload_router()
    gc.freeze()
    where = node.describe() if node is not None else ""
    print(_banner(host, bound, data_dir, app[HUB], dev, where), flush=True)
    if node is not None:
        print(node.banner_line(), flush=True)
    try:
        await stop.wait()
    finally:
        print("e2ee session server stopping", flush=True)
        await runner.cleanup()


def run(
    host: str = "127.0.0.1",
    port: int = 8080,
    data_dir: str | Path = DEFAULT_DATA_DIR,
    *,
    router_factory: RouterFactory | None = None,
    rtc_configuration: Any = None,
    dev: bool = False,
    media_addresses: Sequence[str] | None = None,
    limits: ServerLimits | None = None,
    cluster: ClusterConfig | None = None,
) -> None:
    """Runs the server until SIGINT/SIGTERM (blocking).  ``port=0`` picks a free port
    (the banner shows which).  ``dev``: development mode (:mod:`e2ee.server.dev`), only
    on a loopback address (``ValueError`` otherwise, before anything starts)."""
    if dev:
        check_dev_host(host)
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        for handler in logging.getLogger().handlers:
            handler.addFilter(RateLimitFilter())
        # aioice logs every candidate pair's state change at INFO: a line per check.
        aioice = logging.getLogger("aioice")
        if aioice.level == logging.NOTSET:
            aioice.setLevel(logging.WARNING)
    asyncio.run(
        serve(
            host,
            port,
            data_dir,
            router_factory=router_factory,
            rtc_configuration=rtc_configuration,
            dev=dev,
            media_addresses=media_addresses,
            limits=limits,
            cluster=cluster,
        )
    )
