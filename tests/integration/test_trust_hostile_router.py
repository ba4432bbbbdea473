"""The client against a hostile router: real aiortc peers on loopback, real crypto, the
real in-process ``Router(e2ee=True)``, whose forwarding path the tests tamper with.

Publishers A and B (protected, one session secret) publish to the router; subscriber S
(protected, the same secret) subscribes to A.  The router's hand on each published track
is an :class:`IngressTap`: it stands in for the sink of the track's frame assembler
(``Forwarder.assembler.sink``), which hands each publisher frame, as RTP payloads, to
``Forwarder.on_frame``.  Through the tap the router sees every frame the publisher puts
on the wire, and forwards, withholds, copies, changes or invents frames, either through
the forwarder (its own checks, then every subscriber) or straight to the subscribers'
relays.

1. Injected frames (random bytes after a valid VP8 clear prefix, forged headers under A's
   real KID with a fresh CTR or under a made-up ``secret_id``, frames changed in flight):
   S drops every one and counts it, raises ``encryption_secret_mismatch`` only for a run
   of 3 (docs/protocol.md §7), never hands one to its decoder, keeps decoding A.
2. Replayed frames (every frame twice, then an old batch again): S returns each frame
   once and counts the copies as replayed (§6); the picture stays right.
3. Frames moved between tracks: B's Opus frames in A's video track are dropped; B's
   video frames in A's video track authenticate and show B (the documented limit of the
   shared secret, §1 "Out of scope").
4. In every test: what the publishers put on the wire, as the router received it, is
   ``clear prefix || SFrame header || ...`` under the publisher's KIDs and decodes to
   nothing (libvpx, FFmpeg's VP8 decoder and libopus), while the same frames decrypted
   with the secret do decode to the source (so the check is not vacuous).

The async tests run on pytest-asyncio; what they create goes into the ``cleanup`` fixture
(tests/conftest.py).  Secrets are derived with 1000 PBKDF2 iterations.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import av
import pytest
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCRtpSender

from e2ee import FrameDecryptor, KeyRing
from e2ee.errors import CodecError
from e2ee.rtc import compat
from e2ee.sframe import encode_header
from e2ee.sfu import Router
from e2ee.sfu.frames import RelayFrame
from e2ee.sfu.ingress import Forwarder
from e2ee.tools.synthetic import (
    LEFT_LUMA,
    RIGHT_LUMA,
    FrameCollector,
    SyntheticAudioTrack,
    SyntheticVideoTrack,
    has_tone,
    looks_like_source,
    video_halves,
)
from e2ee.transform import E2eeEvent, E2eeTransform, protect
from e2ee.wire.codecs import clear_prefix_length
from e2ee.wire.sframe_header import parse_sframe_header
from e2ee.wire.vp8 import vp8_descriptor_size
from support.media import new_pc
from support.router import wait_connected

pytestmark = pytest.mark.timeout(240)

SESSION = "hostile-router-session"
SECRET = "correct horse battery staple"
A_SIZE = (160, 120)
B_SIZE = (176, 144)  # another size and a mirrored picture: B's frames are told from A's
MISMATCH = "encryption_secret_mismatch"
MATCH = "encryption_secret_match"


def new_ring() -> KeyRing:
    ring = KeyRing(SESSION, kdf_iterations=1000)
    ring.set_secret(SECRET)
    return ring


NT = new_ring().suite.nt  # tag length of the session's suite


def codec_of(kind: str) -> str:
    return "vp8" if kind == "video" else "opus"


async def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# -- media that tells A from B ------------------------------------------------------------


class MirroredVideoTrack(SyntheticVideoTrack):
    """B's camera: bright left half, dark right half (A's is dark left, bright right)."""

    def __init__(self, width: int, height: int) -> None:
        super().__init__(width, height)
        half = width // 2
        self._row = bytes([RIGHT_LUMA]) * half + bytes([LEFT_LUMA]) * (width - half)


def picture_of(frame: av.VideoFrame) -> str:
    """``"A"`` or ``"B"`` when a decoded picture shows that publisher's source, else
    ``"garbage"``."""
    if looks_like_source(frame):
        return "A"
    left, right = video_halves(frame)
    if abs(left - RIGHT_LUMA) < 20 and abs(right - LEFT_LUMA) < 20:
        return "B"
    return "garbage"


@dataclass
class Picture:
    at: float
    size: tuple[int, int]
    shows: str


class Pictures:
    """Every picture S's video decoder outputs, with whose source it shows."""

    def __init__(self) -> None:
        self.seen: list[Picture] = []

    def check(self, frame: av.VideoFrame) -> bool:
        shows = picture_of(frame)
        self.seen.append(Picture(time.monotonic(), (frame.width, frame.height), shows))
        return shows == "A"

    def since(self, at: float) -> list[Picture]:
        return [p for p in self.seen if p.at >= at]


# -- the hostile router's hand on a published track ---------------------------------------


class IngressTap:
    """Stands in for a :class:`Forwarder`'s assembler sink.  Every frame the publisher
    sends, as the router receives it, is recorded in ``routed`` (the frame's bytes) and
    handed to ``route(data, timestamp)``: by default it goes on to the forwarder
    unchanged."""

    def __init__(self, forwarder: Forwarder) -> None:
        self.forwarder = forwarder
        self.kind = forwarder.kind
        self.inner = forwarder.assembler.sink
        self.routed: list[bytes] = []
        self.last_timestamp = 0
        self.route: Callable[[bytes, int], None] | None = None
        self.errors: list[BaseException] = []
        forwarder.assembler.sink = self.on_frame

    def on_frame(self, payloads: list[bytes], timestamp: int) -> None:
        if self.kind == "video":  # the VP8 payload descriptors are not the frame's
            data = b"".join(p[vp8_descriptor_size(p) :] for p in payloads)
        else:
            data = b"".join(payloads)
        self.routed.append(data)
        self.last_timestamp = timestamp
        try:
            if self.route is None:
                self.forward(data, timestamp)
            else:
                self.route(data, timestamp)
        except Exception as exc:  # never raise inside aiortc; reported by the test
            self.errors.append(exc)

    def _payloads(self, data: bytes) -> list[bytes]:
        if self.kind != "video":
            return [data]
        # RFC 7741 §4.2: S=1, partition 0 on the first packet; 1,000-byte packets.
        chunks = [data[i : i + 1000] for i in range(0, len(data), 1000)] or [b""]
        return [(b"\x10" if i == 0 else b"\x00") + c for i, c in enumerate(chunks)]

    def forward(self, data: bytes, timestamp: int) -> None:
        """Through the forwarder (its VP8 check), to every subscriber of this track."""
        self.inner(self._payloads(data), timestamp)

    def push(self, data: bytes, timestamp: int, key: bool = False) -> None:
        """Straight to the subscribers' relays, past the forwarder's own checks (what a
        hostile router's code would do)."""
        frame = RelayFrame(self._payloads(data), timestamp, key)
        for relay in list(self.forwarder.relays):
            relay.send(frame)


Step = Callable[[bytes, int], None]


class Attack:
    """A script of tampering steps on one tapped track.  Each step replaces the plain
    forwarding of one genuine frame, and the genuine frame after it always passes
    untouched (a good frame between any two steps).  ``injected`` lists every forged
    frame sent, with the outcome expected at the receiver."""

    def __init__(self, tap: IngressTap) -> None:
        self.tap = tap
        self.steps: deque[Step] = deque()
        self.injected: list[tuple[bytes, str]] = []
        self.last_step_at = 0.0
        self._touched = False
        tap.route = self

    def __call__(self, data: bytes, timestamp: int) -> None:
        if self.steps and not self._touched:
            self.steps.popleft()(data, timestamp)
            self.last_step_at = time.monotonic()
            self._touched = True
        else:
            self.tap.forward(data, timestamp)
            self._touched = False

    def inject(self, frames: list[bytes], *, past_forwarder: bool = False) -> None:
        """After one genuine frame, ``frames`` in a row."""

        def step(data: bytes, timestamp: int) -> None:
            self.tap.forward(data, timestamp)
            for i, forged in enumerate(frames):
                self.injected.append((forged, expected_outcome(forged)))
                if past_forwarder:
                    self.tap.push(forged, timestamp + 1 + i)
                else:
                    self.tap.forward(forged, timestamp + 1 + i)

        self.steps.append(step)

    def replace(self, change: Callable[[bytes], bytes]) -> None:
        """One genuine frame changed in flight (the original is never forwarded)."""

        def step(data: bytes, timestamp: int) -> None:
            forged = change(data)
            self.injected.append((forged, expected_outcome(forged)))
            self.tap.forward(forged, timestamp)

        self.steps.append(step)

    async def run(self, timeout: float = 30.0) -> None:
        """Wait until every step ran and a few genuine frames followed."""
        assert await wait_until(lambda: not self.steps, timeout), f"{len(self.steps)} left"
        after = len(self.tap.routed)
        assert await wait_until(lambda: len(self.tap.routed) >= after + 4, timeout)

    def expected(self, outcome: str) -> int:
        return sum(1 for _, o in self.injected if o == outcome)


def expected_outcome(frame: bytes, codec: str = "vp8") -> str:
    """What a receiver holding the secret makes of a forged frame, by docs/protocol.md §6
    step 1 and 4: ``"failed"`` (malformed, or authentication fails) or ``"mismatched"``
    (well formed, under a ``secret_id`` it does not hold).  Forged frames here never use a
    (KID, CTR) the receiver has seen, so none is a replay."""
    try:
        n = clear_prefix_length(codec, frame)
    except CodecError:
        return "failed"
    header = parse_sframe_header(frame, n)
    if header is None or len(frame) < n + header[2] + NT:
        return "failed"
    if header[0] >> 48 != SECRET_ID:
        return "mismatched"
    return "failed"


SECRET_ID = new_ring().secret_id


def sframe_header(codec: str, frame: bytes) -> tuple[int, int, int, int]:
    """``(clear prefix length, kid, ctr, header length)`` of a frame."""
    n = clear_prefix_length(codec, frame)
    header = parse_sframe_header(frame, n)
    assert header is not None, frame[:24].hex()
    return n, *header


# -- the peers ---------------------------------------------------------------------------


class RecordingQueue:
    """Wraps a receiver's decoder queue: records each frame's bytes, passes it on."""

    def __init__(self, inner: Any, out: list[bytes]) -> None:
        self._inner = inner
        self._out = out

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            self._out.append(bytes(item[1].data))
        self._inner.put(item, block, timeout)

    def put_nowait(self, item: Any) -> None:
        self.put(item, block=False)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass
class Publisher:
    name: str
    pc: RTCPeerConnection
    transform: E2eeTransform
    senders: dict[str, RTCRtpSender]
    taps: dict[str, IngressTap] = field(default_factory=dict)

    def kids(self, kind: str) -> set[int]:
        """The KIDs this publisher's ``kind`` sender encrypted under (its guard's list)."""
        protected = self.transform.sender_for(self.senders[kind])
        assert protected is not None
        return set(protected.guard.kids)

    def genuine(self, kind: str = "video") -> list[bytes]:
        """The plaintext of every frame the router received from this publisher,
        decrypted by the test, which holds the secret (each must authenticate)."""
        decryptor = FrameDecryptor(new_ring(), codec_of(kind))
        return [decryptor.decrypt(f) for f in list(self.taps[kind].routed)]


class Subscriber:
    """S: a protected peer that records, per kind, the wire frames it receives (before
    decryption, ``raw``) and the frames its decryption hands to aiortc's decoder
    (``delivered``), and every picture its decoder outputs."""

    def __init__(self, cleanup: list[Any]) -> None:
        self.pc = new_pc()
        cleanup.append(self.pc)
        self.raw: dict[str, list[bytes]] = {"video": [], "audio": []}
        self.delivered: dict[str, list[bytes]] = {"video": [], "audio": []}
        self.events: list[E2eeEvent] = []
        self.pictures = Pictures()
        self.collectors: dict[str, FrameCollector] = {}
        self._inside: set[int] = set()
        # Installed before protect(): protect's transceiver hook then runs after this one,
        # so its decrypting queue wraps this recorder, which sees only what it lets through.
        compat.hook_create_transceiver(self.pc, self._record_delivered)
        self.transform = protect(self.pc, new_ring(), on_event=self.events.append)

        @self.pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            for transceiver in self.pc.getTransceivers():
                receiver = transceiver.receiver
                if receiver.track is track:  # outside the decrypting queue: wire frames
                    compat.set_decoder_queue(
                        receiver,
                        RecordingQueue(compat.decoder_queue(receiver), self.raw[track.kind]),
                    )
            check = self.pictures.check if track.kind == "video" else None
            collector = FrameCollector(track, check=check).start()
            self.collectors[track.kind] = collector
            cleanup.append(collector)

    def _record_delivered(self) -> None:
        for transceiver in self.pc.getTransceivers():
            receiver = transceiver.receiver
            if id(receiver) not in self._inside:
                self._inside.add(id(receiver))
                out = self.delivered[transceiver.kind]
                compat.set_decoder_queue(
                    receiver, RecordingQueue(compat.decoder_queue(receiver), out)
                )

    def stats(self, kind: str = "video") -> dict[str, Any]:
        (stats,) = [
            s for s in self.transform.stats() if s["direction"] == "recv" and s["kind"] == kind
        ]
        return stats

    def events_of(self, type: str, kind: str = "video") -> list[E2eeEvent]:
        return [e for e in self.events if e.type == type and e.kind == kind]

    def good_since(self, at: float) -> int:
        return sum(1 for p in self.pictures.since(at) if p.shows == "A")


@dataclass
class World:
    router: Router
    a: Publisher
    s: Subscriber
    b: Publisher | None = None


async def start_publisher(
    router: Router, cleanup: list[Any], name: str, video: MediaStreamTrack
) -> Publisher:
    pc = new_pc()
    cleanup.append(pc)
    transform = protect(pc, new_ring())
    senders = {
        "video": pc.addTransceiver(video, direction="sendonly").sender,
        "audio": pc.addTransceiver(SyntheticAudioTrack(), direction="sendonly").sender,
    }
    await pc.setLocalDescription(await pc.createOffer())
    answer = await router.publish(name, pc.localDescription)
    publisher = Publisher(name, pc, transform, senders)
    # Before the connection is up, so the taps see the first frame.
    for forwarder in router._streams[name].forwarders:
        publisher.taps[forwarder.kind] = IngressTap(forwarder)
    assert set(publisher.taps) == {"video", "audio"}
    await pc.setRemoteDescription(answer)
    return publisher


async def hostile_world(cleanup: list[Any], *, with_b: bool) -> World:
    """A and (``with_b``) B publishing, S subscribed to A and decoding A's picture."""
    router = Router(e2ee=True, rtc_configuration=RTCConfiguration(iceServers=[]))
    cleanup.append(router)
    a = await start_publisher(router, cleanup, "A", SyntheticVideoTrack(*A_SIZE))
    b = None
    if with_b:
        b = await start_publisher(router, cleanup, "B", MirroredVideoTrack(*B_SIZE))
    for publisher in (a, b):
        if publisher is not None:
            await wait_connected(publisher.pc, timeout=30)

    s = Subscriber(cleanup)
    offer = await router.subscribe("S", "A")
    await s.pc.setRemoteDescription(offer)
    await s.pc.setLocalDescription(await s.pc.createAnswer())
    await router.accept_answer("S", s.pc.localDescription)
    await wait_connected(s.pc, timeout=30)
    assert await wait_until(lambda: s.good_since(0) >= 10, 40), s.pictures.seen[-5:]
    assert s.stats()["frames_failed"] == 0
    return World(router, a, s, b)


# -- 4. What the router sees: ciphertext only ---------------------------------------------


def decoded_pictures(frames: list[bytes], decoder_name: str) -> list[av.VideoFrame]:
    """Every picture a VP8 decoder outputs for ``frames`` fed in order as plain VP8."""
    decoder = av.CodecContext.create(decoder_name, "r")
    pictures: list[av.VideoFrame] = []
    for data in frames:
        with contextlib.suppress(av.error.FFmpegError):
            pictures.extend(decoder.decode(av.Packet(data)))
    return pictures


def decoded_audio(frames: list[bytes]) -> list[av.AudioFrame]:
    """Every audio frame libopus outputs for ``frames`` fed in order as plain Opus."""
    decoder = av.CodecContext.create("libopus", "r")
    decoder.format = "s16"
    decoder.layout = "stereo"
    decoder.sample_rate = 48_000
    out: list[av.AudioFrame] = []
    for data in frames:
        with contextlib.suppress(av.error.FFmpegError):
            out.extend(decoder.decode(av.Packet(data)))
    return out


def assert_router_saw_only_ciphertext(publisher: Publisher, source: str) -> None:
    """Every frame ``publisher`` sent reached the router as ``clear prefix || SFrame
    header || ciphertext || tag`` under its own KIDs, with rising CTRs, and nothing of it
    decodes to the source; decrypted with the secret, the same frames do."""
    for kind, tap in publisher.taps.items():
        codec = codec_of(kind)
        frames = list(tap.routed)
        assert len(frames) > 30, (publisher.name, kind, len(frames))
        kids = publisher.kids(kind)
        ctrs = []
        for frame in frames:
            n, kid, ctr, size = sframe_header(codec, frame)
            assert kid in kids, (publisher.name, kind, hex(kid))
            assert len(frame) >= n + size + NT
            ctrs.append(ctr)
        assert ctrs == sorted(set(ctrs)), "the router saw each (KID, CTR) once, in order"
        plain = publisher.genuine(kind)  # raises unless every frame authenticates
        if kind == "video":
            for name in ("libvpx", "vp8"):
                pictures = decoded_pictures(frames, name)
                shown = [picture_of(p) for p in pictures]
                assert shown.count(source) == 0, (publisher.name, name, Counter(shown))
                # Control: the decrypted frames do decode to the publisher's picture.
                control = [picture_of(p) for p in decoded_pictures(plain, name)]
                assert control.count(source) >= 20, (name, Counter(control))
        else:
            assert not any(has_tone(f) for f in decoded_audio(frames)), publisher.name
            assert sum(has_tone(f) for f in decoded_audio(plain)) >= 20
        assert not tap.errors, tap.errors


def assert_only_genuine_delivered(s: Subscriber, *publishers: Publisher) -> None:
    """S's decoder got only frames some publisher encoded, each at most as often as the
    router received it, and output only pictures of a publisher's source."""
    genuine: Counter[bytes] = Counter()
    for publisher in publishers:
        genuine.update(publisher.genuine("video"))
    delivered = Counter(s.delivered["video"])
    assert delivered, "S's decoder got nothing"
    assert not delivered - genuine, "S's decoder got a frame no publisher sent, or too often"
    stats = s.stats()
    assert stats["frames_delivered"] == len(s.delivered["video"])
    assert stats["frames_delivered"] + stats["frames_gated"] == stats["frames_ok"]


# -- 1. Injected frames --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_injected_frames_are_dropped_and_mismatch_is_debounced(cleanup: list[Any]) -> None:
    world = await hostile_world(cleanup, with_b=False)
    a, s = world.a, world.s
    tap = a.taps["video"]
    attack = Attack(tap)
    rng = random.Random(9605)
    (a_kid,) = a.kids("video")
    assert a_kid >> 48 == SECRET_ID

    def templates() -> tuple[bytes, bytes]:
        routed = list(tap.routed)
        key = next(f for f in reversed(routed) if not f[0] & 1)
        delta = next(f for f in reversed(routed) if f[0] & 1)
        return key, delta

    def made_up_secret(template: bytes) -> bytes:
        """A well-formed frame under a ``secret_id`` S does not hold."""
        n, _, _, size = sframe_header("vp8", template)
        other = (SECRET_ID + 1 + rng.randrange(0xFFFE)) & 0xFFFF
        header = encode_header(other << 48 | rng.getrandbits(48), rng.randrange(1, 5000))
        return template[:n] + header + rng.randbytes(len(template) - n - size)

    def under_a_kid(template: bytes) -> bytes:
        """A's real KID, a fresh CTR far ahead of A's, random ciphertext and tag.  Were
        the replay window moved before the tag is checked, every genuine frame of A after
        it would count as replayed."""
        n, kid, ctr, size = sframe_header("vp8", template)
        header = encode_header(kid, ctr + 1_000_000)
        return template[:n] + header + rng.randbytes(len(template) - n - size)

    def random_after_prefix(template: bytes) -> bytes:
        n = clear_prefix_length("vp8", template)
        return template[:n] + rng.randbytes(len(template) - n)

    def flip_ciphertext(frame: bytes) -> bytes:
        n, _, _, size = sframe_header("vp8", frame)
        i = n + size + (len(frame) - n - size) // 2
        return frame[:i] + bytes([frame[i] ^ 0x01]) + frame[i + 1 :]

    def change_clear_prefix(frame: bytes) -> bytes:
        # Byte 1 of the VP8 frame tag (first-partition size); the key-frame bit and so
        # the prefix length stay as they were.
        return frame[:1] + bytes([frame[1] ^ 0x40]) + frame[2:]

    # (a) 1, then 2 in a row, injected frames under an unknown secret: dropped and
    # counted, but no mismatch event (a good frame of A comes between).
    key, delta = templates()
    attack.inject([made_up_secret(delta)])
    attack.inject([made_up_secret(delta), made_up_secret(key)])
    await attack.run()
    assert await wait_until(lambda: s.stats()["frames_mismatched"] >= 3, 10)
    await asyncio.sleep(0.3)
    assert s.stats()["frames_mismatched"] == 3
    assert s.events_of(MISMATCH) == []
    assert s.events_of(MATCH) == []

    # (b) Forgeries under the held secret, random bytes, frames changed in flight: each
    # alone between genuine frames.
    key, delta = templates()
    for template in (delta, key, delta, key):
        attack.inject([random_after_prefix(template)])
    attack.inject([under_a_kid(delta)])
    attack.inject([under_a_kid(key)])
    attack.replace(flip_ciphertext)
    attack.replace(change_clear_prefix)
    attack.inject([under_a_kid(delta), under_a_kid(delta), random_after_prefix(delta)])
    await attack.run()
    await asyncio.sleep(0.5)
    assert s.events_of(MISMATCH) == [], "a mismatch event without a run of 3"

    # (c) A run of 4 under a made-up secret: now the event, once; the next genuine frame
    # of A brings the match.
    key, delta = templates()
    attack.inject([made_up_secret(delta) for _ in range(4)])
    await attack.run()
    assert await wait_until(lambda: bool(s.events_of(MATCH)), 10)
    (mismatch,) = s.events_of(MISMATCH)
    assert mismatch.kid is not None
    assert mismatch.kid >> 48 != SECRET_ID
    (match,) = s.events_of(MATCH)
    assert s.events.index(match) > s.events.index(mismatch)

    # S keeps decoding A after the last forged frame.
    last = attack.last_step_at
    assert await wait_until(lambda: s.good_since(last + 0.1) >= 15, 40), s.pictures.seen[-5:]
    await asyncio.sleep(0.3)

    # Every forged frame reached S, and each was dropped and counted as expected.
    forged = [f for f, _ in attack.injected]
    raw = set(s.raw["video"])
    assert all(f in raw for f in forged), "a forged frame did not reach S"
    stats = s.stats()
    assert attack.expected("mismatched") >= 7
    assert attack.expected("failed") >= 6
    assert stats["frames_mismatched"] == attack.expected("mismatched"), stats
    assert stats["frames_failed"] == attack.expected("failed"), stats
    assert stats["frames_replayed"] == 0, stats
    genuine_wire = set(tap.routed)
    assert stats["frames_ok"] == sum(1 for f in s.raw["video"] if f in genuine_wire)
    assert stats["frames_dropped"] == len(forged)
    assert s.events_of("decryption_error")

    # Nothing forged reached S's decoder; every picture is A's.
    assert_only_genuine_delivered(s, a)
    assert {p.shows for p in s.pictures.seen} == {"A"}
    assert {p.size for p in s.pictures.seen} == {A_SIZE}
    assert_router_saw_only_ciphertext(a, "A")


# -- 2. Replayed frames --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_replayed_frames_are_returned_once(cleanup: list[Any]) -> None:
    world = await hostile_world(cleanup, with_b=False)
    a, s = world.a, world.s
    tap = a.taps["video"]
    old_batch: list[bytes] = []
    copies: list[bytes] = []
    state = {"double": True}

    def route(data: bytes, timestamp: int) -> None:
        # RTP timestamps are not authenticated: the copy gets its own, so that S's jitter
        # buffer keeps it a frame of its own instead of gluing the two together.
        tap.forward(data, timestamp)
        if state["double"]:
            tap.forward(data, timestamp + 1)
            copies.append(data)
        if len(old_batch) < 30:
            old_batch.append(data)

    tap.route = route
    start = time.monotonic()
    assert await wait_until(lambda: len(copies) >= 90, 40)
    state["double"] = False
    doubled_until = time.monotonic()
    assert s.good_since(start + 0.2) >= 20, "the picture stalled under replays"

    # A while later, the first 30 frames of the attack again, in one burst.
    await asyncio.sleep(1.0)
    replayed_at = len(tap.routed)

    def replay_batch(data: bytes, timestamp: int) -> None:
        tap.forward(data, timestamp)
        if len(tap.routed) == replayed_at + 2:
            for i, old in enumerate(old_batch):
                tap.forward(old, timestamp + 1 + i)
                copies.append(old)

    tap.route = replay_batch
    assert await wait_until(lambda: len(tap.routed) >= replayed_at + 40, 30)
    await asyncio.sleep(0.5)

    # Each (KID, CTR) that reached S was returned once; every copy was counted as replayed.
    raw = s.raw["video"]
    distinct = {sframe_header("vp8", f)[1:3] for f in raw}
    stats = s.stats()
    assert len(raw) - len(distinct) == len(copies) >= 120
    assert stats["frames_replayed"] == len(copies), stats
    assert stats["frames_ok"] == len(distinct), stats
    assert stats["frames_failed"] == stats["frames_mismatched"] == 0, stats
    # (Byte-identical plaintexts do occur, so the delivered frames are compared as a
    # multiset with what A sent, each copy counted.)
    assert_only_genuine_delivered(s, a)

    # The picture stayed right: only A's source, never dropping into a key frame wait
    # (a replayed copy leaves no hole in the reference chain).
    assert {p.shows for p in s.pictures.seen} == {"A"}
    assert stats["frames_gated"] == 0, stats
    assert s.good_since(doubled_until + 1.5) >= 20
    assert s.events_of(MISMATCH) == []
    assert_router_saw_only_ciphertext(a, "A")


# -- 3. Frames moved between tracks -------------------------------------------------------


@pytest.mark.asyncio
async def test_opus_frames_moved_into_a_video_track_are_dropped(cleanup: list[Any]) -> None:
    world = await hostile_world(cleanup, with_b=True)
    a, s, b = world.a, world.s, world.b
    assert b is not None
    b_audio = b.taps["audio"]
    assert await wait_until(lambda: len(b_audio.routed) >= 40, 20)
    attack = Attack(a.taps["video"])

    def latest_opus() -> list[bytes]:
        return list(b_audio.routed)[-8:]

    def as_vp8_delta(opus: bytes) -> bytes:
        # The router re-frames an Opus frame so that a VP8 receiver finds B's real
        # header where it looks: a 3-byte inter-frame tag instead of the TOC byte.  The
        # key and the KID check out; the clear bytes (authenticated data) do not.
        return bytes([0x31, 0x07, 0x00]) + opus[1:]

    # As they are: the TOC byte is not a VP8 frame tag (even TOC: a "key frame" without
    # a start code, which the honest forwarder itself refuses), so they go straight into
    # S's queue; S reads the SFrame header at the wrong offset.
    for opus in latest_opus():
        attack.inject([opus], past_forwarder=True)
    await attack.run()
    opus_as_is = len(attack.injected)
    # Re-framed: B's own KID and CTR at the right offset, through the forwarder.
    reframed = [as_vp8_delta(f) for f in latest_opus()]
    for frame in reframed:
        assert expected_outcome(frame) == "failed"
        attack.inject([frame])
    await attack.run()
    b_audio_kids = b.kids("audio")
    assert all(sframe_header("vp8", f)[1] in b_audio_kids for f in reframed)
    last = attack.last_step_at
    assert await wait_until(lambda: s.good_since(last + 0.1) >= 15, 40), s.pictures.seen[-5:]
    await asyncio.sleep(0.3)

    raw = set(s.raw["video"])
    assert all(f in raw for f, _ in attack.injected), "a moved frame did not reach S"
    assert opus_as_is == len(reframed) == 8
    stats = s.stats()
    assert stats["frames_failed"] == attack.expected("failed") >= len(reframed), stats
    assert stats["frames_mismatched"] == attack.expected("mismatched"), stats
    assert stats["frames_failed"] + stats["frames_mismatched"] == len(attack.injected)
    assert stats["frames_replayed"] == 0, stats
    assert_only_genuine_delivered(s, a)
    assert {p.shows for p in s.pictures.seen} == {"A"}
    # S's audio track, which the router left alone, plays A's tone throughout.
    assert s.stats("audio")["frames_failed"] == 0
    assert s.collectors["audio"].count(good=True) >= 20
    for publisher, source in ((a, "A"), (b, "B")):
        assert_router_saw_only_ciphertext(publisher, source)


@pytest.mark.asyncio
async def test_video_moved_between_publishers_authenticates(cleanup: list[Any]) -> None:
    # The documented limit of the shared-secret model (docs/protocol.md §1, "Out of
    # scope: impersonation by secret holders"): every holder of the secret encrypts under
    # it, and a KID names no participant, so frames of B moved into A's track
    # authenticate at S.  Which publisher a track shows rests on the router.  This test
    # pins that limit: if it ever fails because S refuses B's frames, the model changed
    # (e.g. per-sender keys or signed KIDs) and docs/protocol.md §1 must say so.
    world = await hostile_world(cleanup, with_b=True)
    a, s, b = world.a, world.s, world.b
    assert b is not None
    tap_a, tap_b = a.taps["video"], b.taps["video"]
    state: dict[str, Any] = {"moving": False, "offset": None}

    def route_a(data: bytes, timestamp: int) -> None:
        if not state["moving"]:
            tap_a.forward(data, timestamp)  # A's frames withheld once B's are moved in

    def route_b(data: bytes, timestamp: int) -> None:
        tap_b.forward(data, timestamp)  # B's own stream (nobody subscribed) as usual
        if not state["moving"]:
            return
        if state["offset"] is None:
            if data[0] & 1:
                return  # start S on a key frame of B
            state["offset"] = tap_a.last_timestamp + 3000 - timestamp
        # On A's RTP timeline (timestamps are not authenticated).
        tap_a.forward(data, timestamp + state["offset"])

    tap_a.route = route_a
    tap_b.route = route_b
    assert s.events_of(MISMATCH) == []
    before = s.stats()
    moved_at = time.monotonic()
    state["moving"] = True
    tap_b.forwarder.request_keyframe()  # the router asks B for a key frame (PLI)

    def shows_b() -> int:
        return sum(1 for p in s.pictures.since(moved_at) if p.shows == "B")

    assert await wait_until(lambda: shows_b() >= 20, 40), s.pictures.seen[-5:]
    await asyncio.sleep(0.3)

    after = s.stats()
    for counter in ("frames_failed", "frames_mismatched", "frames_replayed"):
        assert after[counter] == before[counter] == 0, (counter, after)
    assert after["frames_ok"] > before["frames_ok"] + 20
    (b_kid,) = b.kids("video")
    (a_kid,) = a.kids("video")
    kids_at_s = {sframe_header("vp8", f)[1] for f in s.raw["video"]}
    assert kids_at_s == {a_kid, b_kid}, "S got A's frames, then B's, under their own KIDs"
    # S decoded B's picture, at B's size, on what it shows as A's track; never garbage.
    pictures = s.pictures.seen
    first_b = next(i for i, p in enumerate(pictures) if p.shows == "B")
    assert {p.shows for p in pictures[:first_b]} == {"A"}
    assert {p.shows for p in pictures[first_b:]} == {"B"}
    assert {p.size for p in pictures[first_b:]} == {B_SIZE}
    assert s.events_of(MISMATCH) == []
    assert s.events_of(MATCH) == []
    assert_only_genuine_delivered(s, a, b)
    for publisher, source in ((a, "A"), (b, "B")):
        assert_router_saw_only_ciphertext(publisher, source)
