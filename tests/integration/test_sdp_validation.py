"""SDP the router refuses before aiortc sees it, how the server reports it, the router's
ICE configuration (no STUN server unless configured, only the media addresses), and the
log hygiene helpers of the server."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCSessionDescription

from e2ee.rtc import net
from e2ee.server.logs import RateLimitFilter, clean
from e2ee.server.media import media_error
from e2ee.sfu import sdp as sdp_module
from e2ee.sfu.router import Router
from e2ee.sfu.sdp import InvalidSdp, check_off_loop, parse_checked, validate_sdp
from support.media import new_pc
from support.router import publish, subscribe

_HEAD = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
_DTLS = "a=fingerprint:sha-256 AA:BB\r\n"
_ICE = "a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuv\r\n"
_VIDEO = (
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtpmap:96 VP8/90000\r\n"
)


async def _real_offer(cleanup: list[Any]) -> str:
    from aiortc.mediastreams import VideoStreamTrack

    pc = new_pc()
    cleanup.append(pc)
    pc.addTransceiver(VideoStreamTrack(), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


@pytest.mark.parametrize(
    ("sdp", "reason"),
    [
        (_HEAD + _DTLS + _ICE + "m=video 9 UDP/TLS/RTP/SAVPF\r\na=mid:0\r\n", "without formats"),
        (_HEAD + _DTLS + _ICE + "m=audio\r\n", "without formats"),
        (_HEAD + _ICE + _VIDEO, "fingerprint"),
        (_HEAD + _DTLS + _VIDEO + "a=ice-pwd:abcdefghijklmnopqrstuv\r\n", "ICE ufrag"),
        (_HEAD + _DTLS + _VIDEO + "a=ice-ufrag:abcd\r\n", "ICE password"),
        (_HEAD + _DTLS + _ICE, "no m-lines"),
        (_HEAD + _DTLS + _ICE + _VIDEO + "a=x" * 30000, "over"),
    ],
)
def test_validate_sdp_refuses(sdp: str, reason: str) -> None:
    with pytest.raises(InvalidSdp, match=reason):
        validate_sdp(sdp, "test")


def test_validate_sdp_accepts_session_or_media_level() -> None:
    validate_sdp(_HEAD + _DTLS + _ICE + _VIDEO, "test")
    validate_sdp(_HEAD + _VIDEO + _DTLS + _ICE, "test")
    assert parse_checked(_HEAD + _DTLS + _ICE + _VIDEO, "test").media[0].kind == "video"


def test_parse_failures_become_invalid_sdp(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiortc import sdp as aiortc_sdp

    def boom(_text: str) -> None:
        raise AssertionError

    monkeypatch.setattr(aiortc_sdp.SessionDescription, "parse", staticmethod(boom))
    with pytest.raises(InvalidSdp, match="malformed SDP"):
        parse_checked(_HEAD + _DTLS + _ICE + _VIDEO, "test")


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "mangle",
    [
        lambda sdp: re.sub(r"m=video (\d+) (\S+) [^\r\n]*", r"m=video \1 \2", sdp),
        lambda sdp: re.sub(r"a=fingerprint:[^\r\n]*\r\n", "", sdp),
        lambda sdp: re.sub(r"a=ice-ufrag:[^\r\n]*\r\n", "", sdp),
    ],
    ids=["no-formats", "no-fingerprint", "no-ice-ufrag"],
)
async def test_router_refuses_malformed_offers_as_bad_request(
    cleanup: list[Any], caplog: pytest.LogCaptureFixture, mangle: Any
) -> None:
    router = Router()
    cleanup.append(router)
    offer = RTCSessionDescription(sdp=mangle(await _real_offer(cleanup)), type="offer")
    with pytest.raises(InvalidSdp) as info:
        await router.publish("alice", offer)
    assert router.streams == []
    with caplog.at_level(logging.DEBUG):
        err = media_error(info.value, "publish")
    assert (err.code, err.status) == ("bad_request", 400)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_media_error_maps_aiortc_assertions_to_bad_request(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        err = media_error(AssertionError(), "publish")
    assert (err.code, err.status) == ("bad_request", 400)
    assert not caplog.records


# -- SDP parsing off the event loop ---------------------------------------------------------


def _record_validations(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, str, str]]:
    """(thread ident, thread name, what) of every validate_sdp call (parse_checked's
    first step) from now on."""
    calls: list[tuple[int, str, str]] = []
    original = sdp_module.validate_sdp

    def recording(text: str, what: str) -> None:
        thread = threading.current_thread()
        calls.append((thread.ident or 0, thread.name, what))
        original(text, what)

    monkeypatch.setattr(sdp_module, "validate_sdp", recording)
    return calls


@pytest.mark.asyncio
async def test_router_parses_offers_and_answers_off_the_event_loop(
    cleanup: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiortc.mediastreams import VideoStreamTrack

    calls = _record_validations(monkeypatch)
    router = Router()
    cleanup.append(router)
    pc = await publish(router, "alice", [VideoStreamTrack()])
    cleanup.append(pc)
    sub_pc, _tracks = await subscribe(router, "bob<-alice", "alice")
    cleanup.append(sub_pc)
    loop_thread = threading.get_ident()
    assert [what for _, _, what in calls] == ["stream 'alice'", "subscription 'bob<-alice'"]
    for ident, name, _ in calls:
        assert ident != loop_thread
        assert name.startswith("e2ee-sdp")


@pytest.mark.asyncio
async def test_the_loop_runs_while_an_offer_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    # The parse waits for a task on the loop to run: on the loop thread it never would.
    loop_ran = threading.Event()
    original = sdp_module.validate_sdp

    def waiting(text: str, what: str) -> None:
        assert loop_ran.wait(10), "the event loop did not run during the parse"
        original(text, what)

    monkeypatch.setattr(sdp_module, "validate_sdp", waiting)
    parse = asyncio.ensure_future(check_off_loop(_HEAD + _DTLS + _ICE + _VIDEO, "t", e2ee=True))
    await asyncio.sleep(0)
    loop_ran.set()
    text, description = await asyncio.wait_for(parse, 15)
    assert description.media[0].kind == "video"
    assert text == _HEAD + _DTLS + _ICE + _VIDEO


@pytest.mark.asyncio
async def test_parsing_threads_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    active = 0
    most = 0
    threads: set[int] = set()
    lock = threading.Lock()
    original = sdp_module.validate_sdp

    def counting(text: str, what: str) -> None:
        nonlocal active, most
        with lock:
            active += 1
            most = max(most, active)
            threads.add(threading.get_ident())
        try:
            threading.Event().wait(0.02)  # long enough for the parses to overlap
            original(text, what)
        finally:
            with lock:
                active -= 1

    monkeypatch.setattr(sdp_module, "validate_sdp", counting)
    text = _HEAD + _DTLS + _ICE + _VIDEO
    results = await asyncio.gather(*(check_off_loop(text, "t", e2ee=True) for _ in range(24)))
    assert len(results) == 24
    assert 1 <= most <= sdp_module.PARSE_WORKERS
    assert len(threads) <= sdp_module.PARSE_WORKERS
    with pytest.raises(InvalidSdp, match="fingerprint"):  # errors come back to the caller
        await check_off_loop(_HEAD + _ICE + _VIDEO, "t", e2ee=True)


@pytest.mark.asyncio
async def test_router_uses_no_stun_server_by_default(
    cleanup: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from e2ee.sfu import router as router_module

    router = Router()
    cleanup.append(router)
    assert isinstance(router.rtc_configuration, RTCConfiguration)
    assert router.rtc_configuration.iceServers == []
    made: list[Any] = []
    real = router_module.RTCPeerConnection

    def recording(configuration: RTCConfiguration) -> Any:
        made.append(configuration)
        return real(configuration)

    monkeypatch.setattr(router_module, "RTCPeerConnection", recording)
    pc = router._new_pc()
    await pc.close()
    assert len(made) == 1
    assert made[0].iceServers == []

    stun = RTCConfiguration(iceServers=[RTCIceServer(urls="stun:stun.example.org:3478")])
    configured = Router(rtc_configuration=stun)
    cleanup.append(configured)
    assert configured.rtc_configuration is stun


@pytest.mark.asyncio
async def test_router_candidates_are_only_the_media_address(cleanup: list[Any]) -> None:
    from aiortc.mediastreams import VideoStreamTrack

    net.restrict_ice_addresses(["127.0.0.1"])  # as `e2ee serve --media-address 127.0.0.1`
    router = Router()
    cleanup.append(router)
    pc = await publish(router, "alice", [VideoStreamTrack()])
    cleanup.append(pc)
    offer = await router.subscribe("bob<-alice", "alice")
    candidates = re.findall(r"a=candidate:\S+ \d+ \S+ \d+ (\S+) \d+ typ (\S+)", offer.sdp)
    assert candidates
    assert {(address, kind) for address, kind in candidates} == {("127.0.0.1", "host")}


def test_default_media_addresses() -> None:
    assert net.default_media_addresses("127.0.0.1") == ["127.0.0.1"]
    assert net.default_media_addresses("localhost") == ["127.0.0.1"]
    assert net.default_media_addresses("192.0.2.7") == ["192.0.2.7"]
    assert net.default_media_addresses("::1") == ["::1"]
    assert net.default_media_addresses("0.0.0.0") == []
    assert net.default_media_addresses("example.org") == []


def test_configure_media_addresses_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    applied: list[list[str]] = []
    monkeypatch.setattr(net, "restrict_ice_addresses", lambda a: applied.append(list(a)))
    monkeypatch.setenv(net.ENV_VAR, "127.0.0.2")
    assert net.configure_media_addresses(["127.0.0.3"], "127.0.0.1") == ["127.0.0.3"]
    assert net.configure_media_addresses(None, "127.0.0.1") == ["127.0.0.2"]
    monkeypatch.delenv(net.ENV_VAR)
    assert net.configure_media_addresses(None, "localhost") == ["127.0.0.1"]
    assert net.configure_media_addresses(None, "0.0.0.0") == []
    assert applied == [["127.0.0.3"], ["127.0.0.2"], ["127.0.0.1"]]


def test_clean_escapes_and_caps() -> None:
    assert clean('/a\nb\x1b[0m\x00\\"') == "/a\\x0ab\\x1b[0m\\x00\\x5c\\x22"
    assert clean("\u2028é") == "\\u2028é"
    assert clean("x" * 300) == "x" * 200 + "..."
    assert clean(None) == "None"


def test_rate_limit_filter_summarizes_suppressed_lines() -> None:
    now = [100.0]
    limiter = RateLimitFilter(3, clock=lambda: now[0])

    def record(level: int = logging.WARNING, msg: str = "rejected %s") -> logging.LogRecord:
        return logging.LogRecord("e2ee.x", level, __file__, 1, msg, ("a",), None)

    assert [limiter.filter(record()) for _ in range(5)] == [True, True, True, False, False]
    assert limiter.filter(record(msg="other %s"))  # another kind of line
    assert limiter.filter(record(logging.INFO))  # lower levels always pass
    now[0] += 1.5
    summary = record()
    assert limiter.filter(summary)
    assert summary.getMessage() == "rejected a (2 similar lines suppressed)"
    again = record()
    assert limiter.filter(again)
    assert again.getMessage() == "rejected a"
