"""Tests of e2ee.wire.codecs: VP8 payload descriptor, VP8 frame header, Opus TOC, clear prefix.

Examples are built from the RFC text (RFC 7741 §4.2/§4.3, RFC 6386 §9.1/§19.1, RFC 6716
§3.1) and from frames captured from libvpx and libopus (tests/fixtures/*.bin, made by
tests/fixtures/make_codec_fixtures.py; PyAV is not needed here).
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e2ee.errors import MalformedHeader
from e2ee.wire import codecs, opus, params, sframe_header, vp8
from e2ee.wire.codecs import (
    CodecError,
    FrameTooShort,
    UnsupportedCodec,
    clear_prefix_length,
    is_vp8_keyframe,
)
from e2ee.wire.opus import OpusBandwidth, OpusMode, OpusParseError, parse_opus_toc
from e2ee.wire.vp8 import Vp8ParseError, parse_vp8_frame_header, parse_vp8_payload_descriptor
from support import FIXTURES, VECTORS

WIRE_MODULES = [codecs, opus, params, sframe_header, vp8]


# -- Helpers that build bytes from the RFC layouts ---------------------------------------


def descriptor(
    *,
    n: bool = False,
    s: bool = False,
    pid: int = 0,
    picture_id: int | None = None,
    long_picture_id: bool = False,
    tl0picidx: int | None = None,
    tid: int | None = None,
    y: bool = False,
    keyidx: int | None = None,
    r_bits: int = 0,
    rsv: int = 0,
    force_x: bool = False,
) -> bytes:
    """Encode a VP8 payload descriptor as drawn in RFC 7741 §4.2."""
    i, l_, t, k = (
        picture_id is not None,
        tl0picidx is not None,
        tid is not None,
        keyidx is not None,
    )
    x = force_x or i or l_ or t or k
    # Octet 0: X|R|N|S|R|PID; r_bits sets the two R bits (0x40 and 0x08).
    out = bytearray([x << 7 | n << 5 | s << 4 | pid | r_bits])
    if x:
        out.append(i << 7 | l_ << 6 | t << 5 | k << 4 | rsv)
    if picture_id is not None:
        if long_picture_id:
            out += bytes([0x80 | picture_id >> 8, picture_id & 0xFF])
        else:
            out.append(picture_id)
    if tl0picidx is not None:
        out.append(tl0picidx)
    if t or k:
        out.append((tid or 0) << 6 | y << 5 | (keyidx or 0))
    return bytes(out)


def frame_tag(*, key: bool, version: int = 0, show: bool = True, size: int = 0) -> bytes:
    """The 3-byte little-endian frame tag of RFC 6386 §9.1 (frame type 0 = key frame)."""
    tmp = (0 if key else 1) | version << 1 | show << 4 | size << 5
    return tmp.to_bytes(3, "little")


def key_header(width: int, height: int, hscale: int = 0, vscale: int = 0, **tag: int) -> bytes:
    """A 10-byte key-frame header: tag, start code, then 2-bit scale | 14-bit size LE16s."""
    return (
        frame_tag(key=True, **tag)  # type: ignore[arg-type]
        + b"\x9d\x01\x2a"
        + (hscale << 14 | width).to_bytes(2, "little")
        + (vscale << 14 | height).to_bytes(2, "little")
    )


# -- Module hygiene ----------------------------------------------------------------------


@pytest.mark.parametrize("module", WIRE_MODULES, ids=lambda m: m.__name__)
def test_module_imports_no_crypto(module: Any) -> None:
    """The router parses codec headers but must never load key material or the core."""
    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            imported.add(node.module or "")
    ours = {m for m in imported if m.split(".")[0] == "e2ee"}
    assert ours <= {"e2ee.errors"} | {m for m in ours if m.startswith("e2ee.wire.")}, ours
    others = {m.split(".")[0] for m in imported - ours}
    assert others <= set(sys.stdlib_module_names), others  # standard library only


@pytest.mark.parametrize("module", WIRE_MODULES, ids=lambda m: m.__name__)
def test_all_names_exist(module: Any) -> None:
    for name in module.__all__:
        assert hasattr(module, name), name


def test_errors_are_value_errors() -> None:
    for exc in (UnsupportedCodec, FrameTooShort, Vp8ParseError, OpusParseError):
        assert issubclass(exc, CodecError)
        assert issubclass(exc, ValueError)


# -- VP8 payload descriptor, RFC 7741 §4.2 -----------------------------------------------


def test_descriptor_minimal_first_packet() -> None:
    # X=0: a single mandatory octet; S=1, PID=0 begins a frame (RFC 7741 §4.3).
    d = parse_vp8_payload_descriptor(b"\x10\x9d")
    assert d.size == 1
    assert (d.extended, d.non_reference, d.start_of_partition, d.partition_index) == (
        False,
        False,
        True,
        0,
    )
    assert d.picture_id is d.tl0picidx is d.tid is d.layer_sync is d.keyidx is None
    assert not d.long_picture_id
    assert d.has_payload_header


def test_descriptor_first_octet_fields() -> None:
    d = parse_vp8_payload_descriptor(bytes([0b0010_0111]))  # N=1, S=0, PID=7
    assert (d.non_reference, d.start_of_partition) == (True, False)
    assert d.partition_index == 7
    assert not d.has_payload_header
    assert not parse_vp8_payload_descriptor(bytes([0b0001_0011])).has_payload_header  # PID 3


@pytest.mark.parametrize("r_bits", [0x40, 0x08, 0x48])
def test_descriptor_reserved_r_bits_are_ignored(r_bits: int) -> None:
    # RFC 7741 §4.2: R "MUST be set to 0 and MUST be ignored by the receiver".  The second
    # R bit (0x08) is not part of the 3-bit PID (aiortc reads 4 bits there).
    plain = parse_vp8_payload_descriptor(descriptor(s=True, pid=5, picture_id=3))
    flagged = parse_vp8_payload_descriptor(descriptor(s=True, pid=5, picture_id=3, r_bits=r_bits))
    assert flagged == plain
    assert flagged.partition_index == 5


def test_descriptor_reserved_rsv_bits_are_ignored() -> None:
    plain = parse_vp8_payload_descriptor(descriptor(picture_id=1, tl0picidx=2, tid=1))
    flagged = parse_vp8_payload_descriptor(descriptor(picture_id=1, tl0picidx=2, tid=1, rsv=0xF))
    assert flagged == plain


def test_descriptor_x_with_no_optional_fields() -> None:
    d = parse_vp8_payload_descriptor(descriptor(s=True, force_x=True))
    assert (d.extended, d.size) == (True, 2)
    assert d.picture_id is None


@pytest.mark.parametrize("pic", [0, 1, 0x42, 0x7F])
def test_descriptor_7_bit_picture_id(pic: int) -> None:
    # I=1, M=0: one octet |M|PictureID(7)|.
    raw = descriptor(s=True, picture_id=pic)
    assert raw == bytes([0x90, 0x80, pic])
    d = parse_vp8_payload_descriptor(raw + b"\x00\x00")
    assert (d.picture_id, d.long_picture_id, d.size) == (pic, False, 3)


@pytest.mark.parametrize("pic", [0, 0x7F, 0x80, 0x1234, 0x7FFF])
def test_descriptor_15_bit_picture_id(pic: int) -> None:
    # I=1, M=1: |M|PictureID(7 high bits)| + |PictureID(8 low bits)| (15 bits in all).
    raw = descriptor(s=True, picture_id=pic, long_picture_id=True)
    assert raw[2] & 0x80
    d = parse_vp8_payload_descriptor(raw)
    assert (d.picture_id, d.long_picture_id, d.size) == (pic, True, 4)


def test_descriptor_15_bit_picture_id_bytes() -> None:
    d = parse_vp8_payload_descriptor(bytes([0x90, 0x80, 0x92, 0x34]))
    assert d.picture_id == 0x1234


def test_descriptor_l_and_t() -> None:
    # L=1 requires T=1 (RFC 7741 §4.2); TID=2, Y=1; K=0 so KEYIDX is ignored.
    raw = bytes([0x90, 0x60, 0x05, 0b10_1_10101])
    d = parse_vp8_payload_descriptor(raw)
    assert (d.tl0picidx, d.tid, d.layer_sync, d.keyidx, d.size) == (5, 2, True, None, 4)


def test_descriptor_k_only_ignores_tid_and_y() -> None:
    # T=0, K=1: the octet is present but TID (and Y) MUST be ignored (RFC 7741 §4.2).
    d = parse_vp8_payload_descriptor(bytes([0x90, 0x10, 0b11_1_10001]))
    assert (d.tid, d.layer_sync, d.keyidx, d.size) == (None, None, 17, 3)


def test_descriptor_t_only_ignores_keyidx() -> None:
    d = parse_vp8_payload_descriptor(bytes([0x90, 0x20, 0b01_0_11111]))
    assert (d.tid, d.layer_sync, d.keyidx, d.size) == (1, False, None, 3)


def test_descriptor_t_and_k_share_one_octet() -> None:
    d = parse_vp8_payload_descriptor(bytes([0x90, 0x30, 0b11_0_00111]))
    assert (d.tid, d.layer_sync, d.keyidx, d.size) == (3, False, 7, 3)


def test_descriptor_l_without_t_is_parsed() -> None:
    # A sender MUST set T with L, but the layout stays unambiguous: accept it.
    d = parse_vp8_payload_descriptor(bytes([0x90, 0x40, 0x09, 0xAA]))
    assert (d.tl0picidx, d.tid, d.keyidx, d.size) == (9, None, None, 3)


def test_descriptor_all_fields_longest_form() -> None:
    # The full figure of RFC 7741 §4.2: X, I with M=1, L, T/K: 6 octets.
    raw = bytes([0xB3, 0xF0, 0xFF, 0xFE, 0x11, 0b01_1_00101])
    d = parse_vp8_payload_descriptor(raw + b"\x9d\x01\x2a")
    assert (d.extended, d.non_reference, d.start_of_partition) == (True, True, True)
    assert d.partition_index == 3
    assert (d.picture_id, d.long_picture_id) == (0x7FFE, True)
    assert (d.tl0picidx, d.tid, d.layer_sync, d.keyidx) == (0x11, 1, True, 5)
    assert d.size == 6


def test_descriptor_as_aiortc_sends_it() -> None:
    # aiortc's VP8 payloader: X=1, I=1 with a 15-bit PictureID, S=1 on the first packet.
    first = bytes([0x90, 0x80, 0x80 | 0x01, 0x02]) + key_header(320, 240)
    d = parse_vp8_payload_descriptor(first)
    assert (d.size, d.has_payload_header, d.picture_id) == (4, True, 0x0102)
    h = parse_vp8_frame_header(first[d.size :])
    assert (h.keyframe, h.width, h.height) == (True, 320, 240)


DESCRIPTOR_EXAMPLES = [
    descriptor(),
    descriptor(s=True, force_x=True),
    descriptor(s=True, picture_id=0x42),
    descriptor(s=True, picture_id=0x4242, long_picture_id=True),
    descriptor(tl0picidx=7, tid=1),
    descriptor(keyidx=3),
    descriptor(picture_id=0x7FFF, long_picture_id=True, tl0picidx=255, tid=3, y=True, keyidx=31),
    descriptor(picture_id=5, tl0picidx=1),
]


@pytest.mark.parametrize("raw", DESCRIPTOR_EXAMPLES, ids=lambda b: b.hex())
def test_descriptor_every_truncation_raises(raw: bytes) -> None:
    assert parse_vp8_payload_descriptor(raw).size == len(raw)
    for k in range(len(raw)):
        with pytest.raises(Vp8ParseError):
            parse_vp8_payload_descriptor(raw[:k])


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_descriptor_accepts_bytes_like(wrap: type) -> None:
    raw = DESCRIPTOR_EXAMPLES[6] + b"payload"
    assert parse_vp8_payload_descriptor(wrap(raw)) == parse_vp8_payload_descriptor(raw)


def test_descriptor_empty_message() -> None:
    with pytest.raises(Vp8ParseError, match="empty"):
        parse_vp8_payload_descriptor(b"")


# -- VP8 frame header, RFC 6386 §9.1 / §19.1 and RFC 7741 §4.3 ---------------------------


def test_frame_tag_bit_layout() -> None:
    # RFC 6386 §9.1: tmp = c[2] << 16 | c[1] << 8 | c[0]; frame type = tmp & 1 (0 = key);
    # version = (tmp >> 1) & 7; show_frame = (tmp >> 4) & 1; first_part_size = tmp >> 5.
    h = parse_vp8_frame_header(bytes([0b101_1_011_1, 0x34, 0x12]))
    assert not h.keyframe
    assert h.version == 3
    assert h.show_frame
    assert h.first_part_size == (0x1234 << 3) | 0b101
    assert h.width is h.height is h.horizontal_scale is h.vertical_scale is None
    assert h.size == 3


@pytest.mark.parametrize("size", [0, 1, 7, 8, 2047, 2048, 0x7FFFF])
@pytest.mark.parametrize("version", [0, 1, 2, 3])
@pytest.mark.parametrize("show", [False, True])
def test_delta_frame_tag_round_trip(size: int, version: int, show: bool) -> None:
    h = parse_vp8_frame_header(frame_tag(key=False, version=version, show=show, size=size))
    assert (h.keyframe, h.version, h.show_frame, h.first_part_size) == (
        False,
        version,
        show,
        size,
    )


@given(st.integers(0, 0x7FFFF))
def test_rfc7741_size_fields_match_first_part_size(size: int) -> None:
    # RFC 7741 §4.3: Size0|H|VER|P, Size1, Size2 and size = Size0 + 8*Size1 + 2048*Size2.
    tag = frame_tag(key=False, size=size)
    size0, size1, size2 = tag[0] >> 5, tag[1], tag[2]
    assert parse_vp8_frame_header(tag).first_part_size == size0 + 8 * size1 + 2048 * size2
    assert size0 + 8 * size1 + 2048 * size2 == size


@pytest.mark.parametrize(
    ("width", "height", "hscale", "vscale"),
    [(320, 240, 0, 0), (640, 480, 0, 0), (1, 1, 1, 2), (1920, 1080, 3, 3), (16383, 16383, 2, 1)],
)
def test_key_frame_dimensions_and_scales(width: int, height: int, hscale: int, vscale: int) -> None:
    # RFC 6386 §9.1/§19.1: after the start code, LE16 (scale << 14 | width), same for height.
    raw = key_header(width, height, hscale, vscale, size=1234)
    h = parse_vp8_frame_header(raw + b"\x00" * 20)
    assert (h.keyframe, h.show_frame, h.version) == (True, True, 0)
    assert h.first_part_size == 1234
    assert (h.width, h.height, h.horizontal_scale, h.vertical_scale) == (
        width,
        height,
        hscale,
        vscale,
    )
    assert h.size == 10


def test_key_frame_640x480_bytes() -> None:
    # 640 = 0x0280, 480 = 0x01e0, stored little-endian.
    raw = frame_tag(key=True, size=100) + bytes.fromhex("9d012a 8002 e001")
    h = parse_vp8_frame_header(raw)
    assert (h.width, h.height) == (640, 480)


def test_version_above_3_is_reported() -> None:
    # RFC 6386 §9.1 defines versions 0-3; others are reserved.  Reported, not rejected.
    assert parse_vp8_frame_header(frame_tag(key=False, version=7)).version == 7


@pytest.mark.parametrize("bad", [b"\x00\x00\x00", b"\x9d\x01\x2b", b"\x2a\x01\x9d"])
def test_key_frame_wrong_start_code(bad: bytes) -> None:
    raw = frame_tag(key=True) + bad + b"\x40\x01\xf0\x00"
    with pytest.raises(Vp8ParseError, match="start code"):
        parse_vp8_frame_header(raw)


def test_delta_frame_does_not_check_start_code() -> None:
    assert not parse_vp8_frame_header(frame_tag(key=False) + b"\x00" * 7).keyframe


@pytest.mark.parametrize(
    "raw",
    [key_header(320, 240), key_header(7, 9, 3, 3, version=1), frame_tag(key=False, size=99)],
    ids=["key", "key-scaled", "delta"],
)
def test_frame_header_every_truncation_raises(raw: bytes) -> None:
    parse_vp8_frame_header(raw)
    for k in range(len(raw)):
        with pytest.raises(Vp8ParseError):
            parse_vp8_frame_header(raw[:k])


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_frame_header_accepts_bytes_like(wrap: type) -> None:
    raw = key_header(320, 240) + b"rest"
    assert parse_vp8_frame_header(wrap(raw)) == parse_vp8_frame_header(raw)


# -- Opus TOC, RFC 6716 §3.1 -------------------------------------------------------------

# RFC 6716 §3.1, Table 2: (configs, mode, bandwidth, frame sizes in ms).
OPUS_TABLE = [
    (range(0, 4), OpusMode.SILK, OpusBandwidth.NB, (10, 20, 40, 60)),
    (range(4, 8), OpusMode.SILK, OpusBandwidth.MB, (10, 20, 40, 60)),
    (range(8, 12), OpusMode.SILK, OpusBandwidth.WB, (10, 20, 40, 60)),
    (range(12, 14), OpusMode.HYBRID, OpusBandwidth.SWB, (10, 20)),
    (range(14, 16), OpusMode.HYBRID, OpusBandwidth.FB, (10, 20)),
    (range(16, 20), OpusMode.CELT, OpusBandwidth.NB, (2.5, 5, 10, 20)),
    (range(20, 24), OpusMode.CELT, OpusBandwidth.WB, (2.5, 5, 10, 20)),
    (range(24, 28), OpusMode.CELT, OpusBandwidth.SWB, (2.5, 5, 10, 20)),
    (range(28, 32), OpusMode.CELT, OpusBandwidth.FB, (2.5, 5, 10, 20)),
]
OPUS_CONFIGS = {
    config: (mode, bw, sizes[i])
    for configs, mode, bw, sizes in OPUS_TABLE
    for i, config in enumerate(configs)
}


def test_opus_table_covers_32_configs() -> None:
    assert sorted(OPUS_CONFIGS) == list(range(32))


@pytest.mark.parametrize("config", range(32))
def test_opus_toc_every_config(config: int) -> None:
    mode, bandwidth, duration = OPUS_CONFIGS[config]
    for s in (0, 1):
        for c in range(4):
            byte = config << 3 | s << 2 | c
            for toc in (parse_opus_toc(byte), parse_opus_toc(bytes([byte, 0xAA]))):
                assert toc.config == config
                assert toc.mode is mode
                assert toc.bandwidth is bandwidth
                assert toc.frame_duration_ms == duration
                assert toc.stereo is bool(s)
                assert toc.frame_count_code == c
                assert toc.toc == byte


def test_opus_toc_named_examples() -> None:
    # Config 31: CELT FB 20 ms, libopus's choice for music at high rates.
    toc = parse_opus_toc(b"\xfc")
    assert (toc.config, toc.mode, toc.bandwidth, toc.frame_duration_ms) == (
        31,
        OpusMode.CELT,
        OpusBandwidth.FB,
        20.0,
    )
    assert (toc.stereo, toc.frame_count_code) == (True, 0)
    assert (str(OpusMode.HYBRID), str(OpusBandwidth.SWB)) == ("Hybrid", "SWB")
    assert parse_opus_toc(0x0B).frame_count_code == 3  # config 1, mono, arbitrary count


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_opus_toc_accepts_bytes_like(wrap: type) -> None:
    assert parse_opus_toc(wrap(b"\x48\x01")) is parse_opus_toc(0x48)


@pytest.mark.parametrize("bad", [b"", bytearray(), -1, 256])
def test_opus_toc_errors(bad: object) -> None:
    with pytest.raises(OpusParseError):
        parse_opus_toc(bad)  # type: ignore[arg-type]


# -- clear_prefix_length and is_vp8_keyframe ---------------------------------------------

VP8_NAMES = ["vp8", "VP8", "Vp8", "video/VP8", "video/vp8", "VIDEO/VP8"]
OPUS_NAMES = ["opus", "OPUS", "Opus", "audio/opus", "audio/OPUS"]


@pytest.mark.parametrize("codec", VP8_NAMES)
def test_clear_prefix_vp8(codec: str) -> None:
    assert clear_prefix_length(codec, key_header(320, 240)) == 10
    assert clear_prefix_length(codec, key_header(320, 240) + b"x" * 100) == 10
    assert clear_prefix_length(codec, frame_tag(key=False)) == 3
    assert clear_prefix_length(codec, frame_tag(key=False) + b"x" * 100) == 3


@pytest.mark.parametrize("codec", OPUS_NAMES)
def test_clear_prefix_opus(codec: str) -> None:
    assert clear_prefix_length(codec, b"\xfc") == 1
    assert clear_prefix_length(codec, b"\xfc" + b"x" * 100) == 1


@pytest.mark.parametrize(
    "codec", ["h264", "video/H264", "vp9", "VP8 ", "video/opus", "audio/VP8", "", "pcmu"]
)
def test_clear_prefix_unsupported_codec(codec: str) -> None:
    with pytest.raises(UnsupportedCodec, match="VP8 and Opus"):
        clear_prefix_length(codec, b"\x00" * 20)


@pytest.mark.parametrize("codec", [None, 8, b"vp8", ["vp8"]])
def test_clear_prefix_codec_not_a_string(codec: object) -> None:
    with pytest.raises(UnsupportedCodec):
        clear_prefix_length(codec, b"\x00" * 20)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("codec", "frame", "needed"),
    [
        ("vp8", b"", 3),
        ("vp8", b"\x00", 10),  # a key frame needs its 10-byte header
        ("vp8", key_header(320, 240)[:9], 10),
        ("vp8", b"\x01", 3),
        ("vp8", b"\x01\x00", 3),
        ("opus", b"", 1),
        ("audio/opus", bytearray(), 1),
    ],
)
def test_clear_prefix_frame_too_short(codec: str, frame: bytes, needed: int) -> None:
    with pytest.raises(FrameTooShort) as info:
        clear_prefix_length(codec, frame)
    assert info.value.length == len(frame)
    assert info.value.needed == needed
    assert info.value.codec in {"vp8", "opus"}


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_clear_prefix_bytes_like(wrap: type) -> None:
    assert clear_prefix_length("vp8", wrap(key_header(2, 2))) == 10
    assert clear_prefix_length("opus", wrap(b"\x00")) == 1


def test_is_vp8_keyframe() -> None:
    assert is_vp8_keyframe(b"\x00")
    assert is_vp8_keyframe(key_header(320, 240))
    assert not is_vp8_keyframe(b"\x01")
    assert not is_vp8_keyframe(bytearray(frame_tag(key=False, size=77)))
    assert is_vp8_keyframe(memoryview(b"\xfe"))
    with pytest.raises(FrameTooShort):
        is_vp8_keyframe(b"")


# -- Captured frames (tests/fixtures/*.bin) ----------------------------------------------

VP8_FIXTURE = re.compile(r"vp8_(\d+)x(\d+)_(\d\d)_(key|delta)\.bin")
# From make_codec_fixtures.py: file tag -> (expected config, stereo).  lowdelay = CELT only,
# fullband at 64/96 kb/s -> config 31; voip at 12 kb/s mono -> SILK wideband -> config 9.
OPUS_EXPECTED = {"mono": (31, False), "stereo": (31, True), "mono_voip12k": (9, False)}
OPUS_FIXTURE = re.compile(r"opus_48k_20ms_(\w+?)_(\d\d)\.bin")


def _fixtures(pattern: str) -> list[Path]:
    return sorted(FIXTURES.glob(pattern))


def test_fixtures_present_and_small() -> None:
    vp8, opus = _fixtures("vp8_*.bin"), _fixtures("opus_*.bin")
    assert (len(vp8), len(opus)) == (6, 6)
    assert sum(p.stat().st_size for p in FIXTURES.glob("*.bin")) < 60_000


@pytest.mark.parametrize("path", _fixtures("vp8_*.bin"), ids=lambda p: p.name)
def test_captured_vp8_frames(path: Path) -> None:
    m = VP8_FIXTURE.fullmatch(path.name)
    assert m, path.name
    width, height, index = int(m[1]), int(m[2]), int(m[3])
    data = path.read_bytes()
    h = parse_vp8_frame_header(data)
    # An encoder's first frame is a key frame; later ones (no forced key frame) are deltas.
    assert h.keyframe is (index == 0)
    assert is_vp8_keyframe(data) is h.keyframe
    assert (h.version, h.show_frame) == (0, True)
    # RFC 6386 §9.1: the first partition follows the 3- or 10-byte header, and the token
    # partition(s) follow it.
    assert h.first_part_size < len(data)
    assert h.size + h.first_part_size < len(data)
    assert clear_prefix_length("video/VP8", data) == h.size
    if h.keyframe:
        assert (h.width, h.height) == (width, height)
        assert (h.horizontal_scale, h.vertical_scale) == (0, 0)
    else:
        assert (h.width, h.height) == (None, None)
    for k in range(h.size):
        with pytest.raises(Vp8ParseError):
            parse_vp8_frame_header(data[:k])


@pytest.mark.parametrize("path", _fixtures("opus_*.bin"), ids=lambda p: p.name)
def test_captured_opus_packets(path: Path) -> None:
    m = OPUS_FIXTURE.fullmatch(path.name)
    assert m, path.name
    config, stereo = OPUS_EXPECTED[m[1]]
    data = path.read_bytes()
    toc = parse_opus_toc(data)
    assert toc.config == config
    assert toc.stereo is stereo
    assert toc.frame_duration_ms == 20.0  # frame_size 960 at 48 kHz
    assert toc.frame_count_code == 0  # one 20 ms frame per packet
    assert clear_prefix_length("opus", data) == 1


# -- Property tests ----------------------------------------------------------------------

FUZZ = settings(max_examples=500, deadline=None)


@FUZZ
@given(st.binary(max_size=16))
def test_fuzz_descriptor_raises_only_own_errors(data: bytes) -> None:
    try:
        d = parse_vp8_payload_descriptor(data)
    except Vp8ParseError:
        return
    # A parse uses exactly `size` bytes: that prefix parses the same, shorter ones fail.
    assert 1 <= d.size <= min(6, len(data))
    assert parse_vp8_payload_descriptor(data[: d.size]) == d
    with pytest.raises(Vp8ParseError):
        parse_vp8_payload_descriptor(data[: d.size - 1])


@FUZZ
@given(st.binary(max_size=16))
def test_fuzz_frame_header_raises_only_own_errors(data: bytes) -> None:
    try:
        h = parse_vp8_frame_header(data)
    except Vp8ParseError:
        return
    assert h.size <= len(data)
    assert clear_prefix_length("vp8", data) == h.size
    assert parse_vp8_frame_header(data[: h.size]) == h


@FUZZ
@given(st.binary(max_size=4))
def test_fuzz_opus_toc_raises_only_own_errors(data: bytes) -> None:
    try:
        toc = parse_opus_toc(data)
    except OpusParseError:
        assert data == b""
        return
    assert toc.toc == data[0]


@FUZZ
@given(st.sampled_from(VP8_NAMES + OPUS_NAMES + ["h264", "x"]), st.binary(max_size=12))
def test_fuzz_clear_prefix_raises_only_own_errors(codec: str, data: bytes) -> None:
    try:
        n = clear_prefix_length(codec, data)
    except (FrameTooShort, UnsupportedCodec):
        return
    assert 1 <= n <= len(data)
    if codec.lower().endswith("vp8"):
        assert n == (3 if data[0] & 1 else 10)
        assert is_vp8_keyframe(data) is (n == 10)
    else:
        assert n == 1


@FUZZ
@given(st.binary(max_size=12))
def test_fuzz_is_vp8_keyframe(data: bytes) -> None:
    try:
        assert is_vp8_keyframe(data) is (data[0] & 1 == 0)
    except FrameTooShort:
        assert data == b""


@FUZZ
@given(
    n=st.booleans(),
    s=st.booleans(),
    pid=st.integers(0, 7),
    long_picture_id=st.booleans(),
    picture_id=st.none() | st.integers(0, 0x7FFF),
    tl0picidx=st.none() | st.integers(0, 255),
    tid=st.none() | st.integers(0, 3),
    y=st.booleans(),
    keyidx=st.none() | st.integers(0, 31),
    r_bits=st.sampled_from([0, 0x08, 0x40, 0x48]),
    rsv=st.integers(0, 15),
    tail=st.binary(max_size=4),
)
def test_descriptor_round_trip(
    n: bool,
    s: bool,
    pid: int,
    long_picture_id: bool,
    picture_id: int | None,
    tl0picidx: int | None,
    tid: int | None,
    y: bool,
    keyidx: int | None,
    r_bits: int,
    rsv: int,
    tail: bytes,
) -> None:
    if picture_id is not None and picture_id > 0x7F:
        long_picture_id = True
    if picture_id is None:
        long_picture_id = False
    raw = descriptor(
        n=n,
        s=s,
        pid=pid,
        picture_id=picture_id,
        long_picture_id=long_picture_id,
        tl0picidx=tl0picidx,
        tid=tid,
        y=y,
        keyidx=keyidx,
        r_bits=r_bits,
        rsv=rsv,
    )
    d = parse_vp8_payload_descriptor(raw + tail)
    assert d.size == len(raw)
    assert (d.non_reference, d.start_of_partition, d.partition_index) == (n, s, pid)
    assert (d.picture_id, d.long_picture_id) == (picture_id, long_picture_id)
    assert (d.tl0picidx, d.tid, d.keyidx) == (tl0picidx, tid, keyidx)
    assert d.layer_sync == (y if tid is not None else None)
    for k in range(len(raw)):
        with pytest.raises(Vp8ParseError):
            parse_vp8_payload_descriptor(raw[:k])


@FUZZ
@given(
    width=st.integers(0, 0x3FFF),
    height=st.integers(0, 0x3FFF),
    hscale=st.integers(0, 3),
    vscale=st.integers(0, 3),
    version=st.integers(0, 7),
    show=st.booleans(),
    size=st.integers(0, 0x7FFFF),
)
def test_key_header_round_trip(
    width: int, height: int, hscale: int, vscale: int, version: int, show: bool, size: int
) -> None:
    raw = key_header(width, height, hscale, vscale, version=version, show=show, size=size)
    h = parse_vp8_frame_header(raw)
    assert h.keyframe
    assert (h.version, h.show_frame, h.first_part_size) == (version, show, size)
    assert (h.width, h.height, h.horizontal_scale, h.vertical_scale) == (
        width,
        height,
        hscale,
        vscale,
    )


# -- SFrame header (the router's pure-Python reader) -------------------------------------

SFRAME_HEADERS = json.loads((VECTORS / "rfc9605.json").read_text())["header"]


def test_sframe_header_matches_every_official_vector() -> None:
    assert len(SFRAME_HEADERS) == 289
    for case in SFRAME_HEADERS:
        encoded = bytes.fromhex(case["encoded"])
        expected = (case["kid"], case["ctr"], len(encoded))
        assert sframe_header.parse_sframe_header(b"\x9d\x01\x2a" + encoded + b"body", 3) == expected
        for cut in range(len(encoded)):
            assert sframe_header.parse_sframe_header(encoded[:cut]) is None


def test_sframe_header_refuses_non_minimal_encodings_like_the_core() -> None:
    assert sframe_header.parse_sframe_header(b"\x80\x05") is None  # KID 5 in an extended byte
    assert sframe_header.parse_sframe_header(b"\x09\x00\x10") is None  # CTR 0x10 in two bytes
    assert sframe_header.parse_sframe_header(b"\x53") == (5, 3, 1)
    assert sframe_header.parse_sframe_header(b"\x53", 1) is None


@given(st.binary(max_size=20))
@settings(max_examples=2000)
def test_sframe_header_agrees_with_the_rust_decoder(data: bytes) -> None:
    from e2ee.crypto import sframe

    try:
        expected: tuple[int, int, int] | None = sframe.decode_header(data)
    except MalformedHeader:
        expected = None
    assert sframe_header.parse_sframe_header(data) == expected
