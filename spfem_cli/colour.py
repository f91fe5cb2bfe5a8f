"""Exact RGB from a video's YUV frames and back, in the colour description the source video gave.

Why: an edit must leave every pixel it does not change as it was. Two things moved them.

* FFmpeg's default YUV→RGB path (PyAV's ``to_ndarray(format="rgb24")``) reads flat colours 1–3 levels too
  dark (mean −1.0 on skin, grass and sky tones). Its accurate path (``ACCURATE_RND | FULL_CHR_H_INT``) is
  exact to rounding. RGB→YUV with ``ACCURATE_RND`` is exact too.
* The writer converted with FFmpeg's default matrix (BT.601) and left the stream untagged. Players
  decode an untagged HD stream as BT.709, so a 720p edit of a BT.709 clip showed skin 2–5 levels redder and
  saturated greens 10–20 levels off. The writer now converts with the matrix the source was read with and
  gives the output the source's tags (matrix, primaries, transfer; always limited range, as H.264 yuv420p is
  usually played). An untagged source gives an untagged output read the same way as the source.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import ColorRange, Interpolation

EXACT = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
"""swscale flags under which its YUV↔RGB conversions are exact to rounding (the default path is not)."""

UNSPECIFIED = 2
"""FFmpeg's AVCOL_*_UNSPECIFIED, the same value for the matrix, the primaries and the transfer."""

# FFmpeg's matrix (AVColorSpace) → swscale's coefficient set for it. Absent: no YUV matrix swscale converts
# with (RGB, YCgCo, ICtCp, …); such a stream's tags are not copied.
SWSCALE_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}
BT709 = 1


@dataclass(frozen=True)
class ColourTags:
    """How a stream says its YUV is to be read: FFmpeg's matrix, primaries and transfer codes."""

    matrix: int = UNSPECIFIED
    primaries: int = UNSPECIFIED
    transfer: int = UNSPECIFIED

    @property
    def tagged(self) -> bool:
        return self.matrix in SWSCALE_MATRIX

    @property
    def swscale_matrix(self) -> int:
        """The coefficients to convert with: the tagged matrix, else BT.601 (what FFmpeg reads untagged YUV with)."""
        return SWSCALE_MATRIX.get(self.matrix, 5)


NO_SOURCE = ColourTags(BT709, BT709, BT709)
"""What a video written from nothing (a synthetic sample) says: BT.709, the HD default every player reads."""


def tags_of(stream) -> ColourTags:
    """The colour description of a video stream (what its codec parameters say)."""
    ctx = stream.codec_context
    return ColourTags(int(ctx.colorspace or UNSPECIFIED), int(ctx.color_primaries or UNSPECIFIED),
                      int(ctx.color_trc or UNSPECIFIED))


def rgb_of(frame: av.VideoFrame) -> np.ndarray:
    """The frame as RGB uint8, converted exactly with its own matrix and range."""
    return frame.reformat(format="rgb24", interpolation=EXACT).to_ndarray()


def yuv_frame(rgb: np.ndarray, tags: ColourTags) -> av.VideoFrame:
    """An RGB uint8 image as a limited-range yuv420p frame in ``tags``' matrix, converted exactly."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    return frame.reformat(format="yuv420p", dst_colorspace=tags.swscale_matrix, dst_color_range=ColorRange.MPEG,
                          interpolation=EXACT)


def tag_stream(stream, tags: ColourTags) -> None:
    """Write ``tags`` into an output stream's parameters (nothing for an untagged source: it stays untagged)."""
    if not tags.tagged:
        return
    ctx = stream.codec_context
    ctx.colorspace = tags.matrix
    ctx.color_range = int(ColorRange.MPEG)
    if tags.primaries != UNSPECIFIED:
        ctx.color_primaries = tags.primaries
    if tags.transfer != UNSPECIFIED:
        ctx.color_trc = tags.transfer
