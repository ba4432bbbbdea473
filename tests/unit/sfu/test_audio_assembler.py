"""Audio frame assembly at the router's ingress (e2ee.sfu.audio_assembler): each Opus
packet leaves on arrival; duplicates and packets older than one released do not."""

from __future__ import annotations

from types import SimpleNamespace

from e2ee.sfu.audio_assembler import AudioAssembler


def test_audio_leaves_on_arrival_and_drops_duplicates_and_late_packets() -> None:
    out: list[int] = []
    audio = AudioAssembler(lambda payloads, ts: out.append(ts))
    for seq, ts in ((65535, 0), (0, 960), (0, 960), (2, 2880), (1, 1920), (3, 3840)):
        packet = SimpleNamespace(sequence_number=seq, timestamp=ts, marker=True, payload=b"\xfc")
        assert audio.add(packet) == (False, None)
    assert out == [0, 960, 2880, 3840]
    assert audio.late_packets == 2
    assert audio.frames == 4
    assert audio.packets == 6
