"""Pixels the edit does not change come back as they were: exact YUV↔RGB, and the source's colour tags kept."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from spfem_cli.colour import UNSPECIFIED
from spfem_cli.video import VideoWriter, read_frames

# Skin, grass, sky, a saturated red, grey, a dark shadow, a highlight.
COLOURS = np.array([[151, 124, 114], [40, 180, 60], [90, 140, 210], [200, 60, 50], [128, 128, 128], [38, 30, 28],
                    [235, 200, 180]], np.uint8)


def _patches(n: int = 6) -> np.ndarray:
    frames = np.zeros((n, 64, 64 * len(COLOURS), 3), np.uint8)
    for i, colour in enumerate(COLOURS):
        frames[:, :, 64 * i:64 * (i + 1)] = colour
    return frames


def _patch_means(frames: np.ndarray) -> np.ndarray:
    return np.array([frames[:, 16:48, 64 * i + 16:64 * i + 48].reshape(-1, 3).mean(0) for i in range(len(COLOURS))])


def _encode(path: Path, frames: np.ndarray, matrix: int | None) -> Path:
    """A source clip as a camera or another tool writes it: tagged BT.709, or untagged (matrix None)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        if matrix is not None:
            ctx = stream.codec_context
            ctx.colorspace, ctx.color_primaries, ctx.color_trc, ctx.color_range = matrix, matrix, matrix, 1
        for k, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=1 if matrix == 1 else 5)
            frame.pts = k
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _tags(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        return int(ctx.colorspace), int(ctx.color_primaries), int(ctx.color_trc)


def test_flat_colours_written_and_read_back_are_unchanged(tmp_path):
    """FFmpeg's default conversions gave them back 1-3 levels darker (mean -1.1); exact ones within rounding."""
    frames = _patches()
    out = tmp_path / "patches.mp4"
    with VideoWriter(out, 25) as writer:
        writer.write(frames)
    back, _ = read_frames(out)
    error = _patch_means(back) - COLOURS
    assert abs(error.mean()) < 0.25 and np.abs(error).max() <= 1.0
    assert _tags(out) == (1, 1, 1)          # written from nothing: BT.709, said so


@pytest.mark.parametrize("matrix", [1, None], ids=["bt709", "untagged"])
def test_an_edit_keeps_the_source_s_colour_description_and_its_colours(tmp_path, matrix):
    """A BT.709 source gives a BT.709-tagged output (it was untagged BT.601, which players show redder and
    greener on HD); an untagged source stays untagged and is written with the matrix it was read with."""
    source = _encode(tmp_path / "source.mp4", _patches(), matrix)
    decoded, _ = read_frames(source)
    out = tmp_path / "edit.mp4"
    with VideoWriter(out, 25, audio_from=source) as writer:
        writer.write(decoded)
    back, _ = read_frames(out)
    assert np.abs(_patch_means(back) - _patch_means(decoded)).max() <= 1.0
    assert _tags(out) == ((1, 1, 1) if matrix == 1 else (UNSPECIFIED, UNSPECIFIED, UNSPECIFIED))
