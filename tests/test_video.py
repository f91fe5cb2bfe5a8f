"""Streamed video I/O: chunking, exact frame rates, audio carried over, odd sizes, atomic output."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from spfem_cli import video as V


def _frames(n=20, h=64, w=80, seed=0):
    """Real-photo frames (the astronaut, resized), shifted a pixel per frame."""
    import cv2
    from skimage import data

    base = cv2.resize(np.roll(data.astronaut(), 37 * seed, axis=0), (w, h), interpolation=cv2.INTER_AREA)
    return np.stack([np.roll(base, i, axis=1) for i in range(n)])


def _tone(seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * 440 * t)


def test_chunks_cover_every_frame_in_order(tmp_path):
    frames = _frames(23)
    path = V.write_video(tmp_path / "a.mp4", frames, 25)
    chunks = list(V.iter_chunks(path, chunk_size=8))
    assert [c.start for c in chunks] == [0, 8, 16]
    assert sum(len(c.frames) for c in chunks) == 23
    decoded = np.concatenate([c.frames for c in chunks])
    assert np.abs(decoded.astype(int) - frames.astype(int)).mean() < 6  # H.264 at crf 18
    times = np.concatenate([c.times for c in chunks])
    assert np.allclose(np.diff(times), 1 / 25, atol=1e-3)


def test_exact_fractional_fps_is_kept(tmp_path):
    path = V.write_video(tmp_path / "ntsc.mp4", _frames(10), Fraction(30000, 1001))
    assert V.probe(path).fps == Fraction(30000, 1001)


@pytest.mark.parametrize("audio_name", ["speech.wav", "speech.m4a"])
def test_audio_is_carried_over(tmp_path, audio_name):
    src_audio = V.write_audio(tmp_path / audio_name, _tone(1.0), 16000)
    path = V.write_video(tmp_path / "v.mp4", _frames(25), 25, audio_from=src_audio)
    info = V.probe(path)
    assert info.audio_codec == "aac"
    out = V.read_audio(path, 16000)
    ref = V.read_audio(src_audio, 16000)
    n = min(len(out), len(ref))
    assert abs(len(out) - len(ref)) < 2048
    # The tone survives (AAC may shift by its priming delay: compare spectra, not samples).
    spec = np.abs(np.fft.rfft(out[:n]))
    assert abs(np.argmax(spec) * 16000 / n - 440) < 5


def test_remuxed_audio_packets_are_identical(tmp_path):
    src_audio = V.write_audio(tmp_path / "s.m4a", _tone(1.0), 16000)
    first = V.write_video(tmp_path / "first.mp4", _frames(25), 25, audio_from=src_audio)
    second = V.write_video(tmp_path / "second.mp4", _frames(25, seed=1), 25, audio_from=first)
    import av

    def payloads(p):
        with av.open(str(p)) as c:
            return [bytes(pk) for pk in c.demux(c.streams.audio[0]) if pk.size]

    assert payloads(first) == payloads(second)


def test_odd_sizes_are_padded_not_cropped(tmp_path):
    path = V.write_video(tmp_path / "odd.mp4", _frames(5, h=33, w=47), 25)
    info = V.probe(path)
    assert (info.height, info.width) == (34, 48)


def test_existing_output_is_never_overwritten_without_consent(tmp_path):
    target = tmp_path / "keep.mp4"
    target.write_bytes(b"user data")
    with pytest.raises(V.VideoError, match="already exists"):
        V.write_video(target, _frames(3), 25)
    assert target.read_bytes() == b"user data"


def test_failure_midway_leaves_no_partial_file(tmp_path):
    target = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with V.VideoWriter(target, 25) as writer:
            writer.write(_frames(3))
            raise RuntimeError("interrupted")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_unreadable_input_gives_a_clear_error(tmp_path):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(V.VideoError, match="not a readable video"):
        V.probe(bad)
    with pytest.raises(V.VideoError, match="no such file"):
        V.probe(tmp_path / "missing.mp4")


def test_check_output_path_refuses_input_and_unwritable(tmp_path):
    src = V.write_video(tmp_path / "in.mp4", _frames(3), 25)
    with pytest.raises(V.VideoError, match="is the input"):
        V.check_output_path(src, inputs=(src,), overwrite=True)
    with pytest.raises(V.VideoError, match="does not exist"):
        V.check_output_path(tmp_path / "nope" / "o.mp4")
