"""video.py timing and containers: frames keep their presentation times, audio keeps its offset,
spans cut picture and sound together, the extension picks the container."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from spfem_cli.video import VideoError, VideoWriter, container_format, cut_span, frame_times, probe, read_audio, write_audio

VFR_TIMES = np.r_[np.arange(50) / 25, 2 + np.arange(1, 21) / 12.5]     # 25 fps for 2 s, then 12.5 fps


def _frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, h, w, 3), dtype=np.uint8)


def _audio_start(path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.start_time * stream.time_base)


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    t = np.arange(16000 * 4) / 16000
    return write_audio(tmp_path_factory.mktemp("tone") / "tone.wav", 0.3 * np.sin(2 * np.pi * 440 * t), 16000)


@pytest.fixture(scope="module")
def vfr_clip(tmp_path_factory, tone):
    path = tmp_path_factory.mktemp("vfr") / "vfr.mp4"
    with VideoWriter(path, 25, audio_from=tone) as writer:
        writer.write(_frames(len(VFR_TIMES)), VFR_TIMES)
    return path


def test_explicit_times_are_kept_and_probe_says_vfr(vfr_clip):
    assert np.abs(frame_times(vfr_clip) - VFR_TIMES).max() < 1e-4
    assert probe(vfr_clip, timing=True).vfr is True
    assert probe(vfr_clip).vfr is None           # not checked unless asked (it reads every packet)


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv"])
def test_frames_follow_the_source_timing_in_every_container(vfr_clip, tmp_path, suffix):
    out = tmp_path / f"copy{suffix}"
    with VideoWriter(out, probe(vfr_clip).fps, audio_from=vfr_clip) as writer:
        writer.write(_frames(len(VFR_TIMES)))
    times = frame_times(out)
    period = np.diff(VFR_TIMES).min()
    # Matroska cannot store negative times: the muxer moves every stream by the AAC priming (same shift).
    shift = times[0] - VFR_TIMES[0]
    assert np.abs(times - shift - VFR_TIMES).max() < period / 2
    if suffix != ".mkv":
        assert shift == pytest.approx(0, abs=1e-4)
        assert _audio_start(out) == pytest.approx(_audio_start(vfr_clip), abs=1e-4)


def test_constant_rate_source_stays_exact(tmp_path, tone):
    path = tmp_path / "cfr.mp4"
    with VideoWriter(path, Fraction(30000, 1001), audio_from=tone) as writer:
        writer.write(_frames(30))
    info = probe(path, timing=True)
    assert info.fps == Fraction(30000, 1001) and info.vfr is False


def test_cut_span_moves_frames_and_audio_together(vfr_clip, tmp_path):
    out = cut_span(vfr_clip, tmp_path / "cut.mp4", 1.5, 3.0)
    inside = VFR_TIMES[(VFR_TIMES >= 1.5) & (VFR_TIMES < 3.0)]
    assert np.abs(frame_times(out) - (inside - 1.5)).max() < 1e-4
    assert len(read_audio(out)) / 16000 == pytest.approx(1.5, abs=0.07)    # AAC pads the last frame
    assert _audio_start(out) == pytest.approx(0, abs=1e-4)


def test_cut_span_refuses_a_span_past_the_end(vfr_clip, tmp_path):
    with pytest.raises(VideoError, match="past the end"):
        cut_span(vfr_clip, tmp_path / "cut.mp4", 10.0, 12.0)


@pytest.mark.parametrize("name", ["out.avi", "out", "out.webm"])
def test_unsupported_containers_are_refused(name):
    with pytest.raises(VideoError, match=r"\.mp4, \.mov, \.mkv"):
        container_format(name)


def test_opus_audio_is_remuxed_into_mkv_and_reencoded_for_mov(tmp_path):
    opus = tmp_path / "speech.mkv"
    with av.open(str(opus), "w", format="matroska") as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        pcm = (0.2 * np.sin(np.arange(48000) / 10)).astype(np.float32)
        for start in range(0, len(pcm), 960):
            frame = av.AudioFrame.from_ndarray(pcm[None, start:start + 960], format="flt", layout="mono")
            frame.rate, frame.pts = 48000, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    for suffix, codec in ((".mkv", "opus"), (".mov", "aac")):
        path = tmp_path / f"v{suffix}"
        with VideoWriter(path, 25, audio_from=opus) as writer:
            writer.write(_frames(10))
        assert probe(path).audio_codec == codec
