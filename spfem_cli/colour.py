"""Writing an edit in the colour description its source video gave, so players show both alike.

Why: the writer let the encoder convert RGB with FFmpeg's default matrix (BT.601) and left the stream
untagged. Players decode an untagged HD stream as BT.709, so the 720p edit of a BT.709 clip (what phones and
cameras write, and most clips here) showed skin 2–5 levels redder and saturated greens 10–20 levels off
beside its source. PyAV reads frames with their own matrix and range; the writer now converts with the matrix
the source was read with (exactly: swscale's ``ACCURATE_RND``) and gives the output the source's tags
(matrix, primaries, transfer; limited range). An untagged source, or none, is written as before: untagged,
converted by the encoder (BT.601, what FFmpeg reads untagged YUV with), bit for bit what earlier versions wrote.

Not changed: FFmpeg's default YUV→RGB read is 1–3 levels dark on flat colours (mean −1.0); swscale's
``ACCURATE_RND | FULL_CHR_H_INT`` read is exact, but costs ~4–5 ms per 720p frame (5–8 % of an edit), and its
one level of brightness moved MediaPipe's landmarks on the test fixtures enough to flip five threshold tests;
it waits for its own change.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import ColorRange, Interpolation

EXACT = Interpolation.BILINEAR | Interpolation.ACCURATE_RND
"""swscale flags under which its RGB→YUV conversion is exact to rounding (the default path is not)."""

UNSPECIFIED = 2
"""FFmpeg's AVCOL_*_UNSPECIFIED, the same value for the matrix, the primaries and the transfer."""

# FFmpeg's matrix (AVColorSpace) → swscale's coefficient set for it. Absent: no YUV matrix swscale converts
# with (RGB, YCgCo, ICtCp, …); such a stream's tags are not copied.
SWSCALE_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}


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
        """swscale's coefficient set for the tagged matrix (BT.601 for an untagged one, as FFmpeg reads it)."""
        return SWSCALE_MATRIX.get(self.matrix, 5)


NO_SOURCE = ColourTags()
"""What a video written from nothing (a synthetic sample) says: nothing, as before (BT.601 by the encoder)."""


def tags_of(stream) -> ColourTags:
    """The colour description of a video stream (what its codec parameters say)."""
    ctx = stream.codec_context
    return ColourTags(int(ctx.colorspace or UNSPECIFIED), int(ctx.color_primaries or UNSPECIFIED),
                      int(ctx.color_trc or UNSPECIFIED))


def yuv_frame(rgb: np.ndarray, tags: ColourTags) -> av.VideoFrame:
    """An RGB uint8 image as the frame to encode: limited-range yuv420p in ``tags``' matrix, converted exactly;
    for an untagged description the RGB frame itself (the encoder converts it, as it always did)."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    if not tags.tagged:
        return frame
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
