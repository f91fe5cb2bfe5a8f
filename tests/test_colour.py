"""An edit shows in a player as its source does: the source's colour description is kept."""

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
HD = (720, 1280)


def _patches(n: int = 4, size: tuple[int, int] = HD) -> np.ndarray:
    frames = np.zeros((n, *size, 3), np.uint8)
    width = size[1] // len(COLOURS)
    for i, colour in enumerate(COLOURS):
        frames[:, :, width * i:width * (i + 1)] = colour
    return frames


def _patch_means(frames: np.ndarray) -> np.ndarray:
    width = frames.shape[2] // len(COLOURS)
    return np.array([frames[:, 300:400, width * i + 40:width * (i + 1) - 40].reshape(-1, 3).mean(0)
                     for i in range(len(COLOURS))])


def _encode(path: Path, frames: np.ndarray, matrix: int | None) -> Path:
    """A source clip as a camera or another tool writes it: tagged BT.709, or untagged BT.601 (matrix None)."""
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


def _as_a_player_shows_it(path: Path) -> np.ndarray:
    """The first frame decoded as players do: by its matrix tag, and an untagged HD stream as BT.709."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        tagged = frame.colorspace not in (0, UNSPECIFIED)
        matrix = frame.colorspace if tagged else (1 if frame.height >= 720 else 5)
        return frame.reformat(format="rgb24", src_colorspace=5 if matrix == 6 else matrix).to_ndarray()[None]


def _tags(path: Path) -> tuple[int, int, int]:
    with av.open(str(path)) as container:
        ctx = container.streams.video[0].codec_context
        return int(ctx.colorspace), int(ctx.color_primaries), int(ctx.color_trc)


@pytest.mark.parametrize("matrix", [1, None], ids=["bt709", "untagged"])
def test_an_edit_keeps_the_source_s_colour_description(tmp_path, matrix):
    """A BT.709 HD source was written as untagged BT.601, which a player shows 2-5 levels redder on skin and
    ~20 off on saturated green and red; now it is written in BT.709 and says so. An untagged source stays
    untagged (a player guesses the same for both)."""
    source = _encode(tmp_path / "source.mp4", _patches(), matrix)
    decoded, _ = read_frames(source)
    out = tmp_path / "edit.mp4"
    with VideoWriter(out, 25, audio_from=source) as writer:
        writer.write(decoded)
    assert _tags(out) == ((1, 1, 1) if matrix == 1 else (UNSPECIFIED, UNSPECIFIED, UNSPECIFIED))
    shown = _patch_means(_as_a_player_shows_it(out)) - _patch_means(_as_a_player_shows_it(source))
    assert np.abs(shown).max() <= 3.0      # the read's own 1-3 levels (see spfem_cli.colour), never a hue shift
