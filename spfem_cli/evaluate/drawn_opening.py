"""How an edit's mouth opening compares with its source's, read off the pictures instead of a tracker.

The re-tracked opening (MediaPipe's inner-lip points) is the speech check the issue asks for, but the
tracker's mouth prior reads a mouth's *shape* into its opening: on a real clip a mouth narrowed by anger
read 17 % more open at its peaks while its lips had moved apart by 1 % in the picture, and a talker's
closed grin read as a 4.7 px opening that vanished when the grin was taken away. This measure asks the
picture. Through the source's inner-lip midpoint, down the face (perpendicular to the corner line), it
samples a narrow strip of grey levels in source and edit; the strip spans the gap and the lips. Lips open
as two bodies moving apart: the shift that best maps the upper half of the source's profile onto the
edit's, and the lower half's, say how far each lip moved, so how much taller or shorter the drawn opening
is than the source's gap, frame by frame. The warp keeps the source's inner-lip midpoints in place, so the
same place is compared, and no tracker reads the edit. Checked on real frames whose lower lip was moved by a
known amount (bench area ``drawn_opening``: every frame of the held-out clips' first 4 s, a seeded −2, 0 or
+3 px, closed frames included): BENCHMARKS.md has the errors per clip.

The drawn opening is read on every frame with a face and judged as the re-tracked one is
(:func:`~spfem_cli.evaluate.landmarks.mouth_correlation`, :func:`~spfem_cli.evaluate.landmarks.peak_ratio`):
its r with the source's opening over time, and the ratio of their peaks (on d20 made happy: r 0.945
re-tracked, 1.000 drawn; the tracker read half-open frames of the widened mouth as three times as open).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

SHIFTS = np.arange(-8.0, 8.01, 0.25)                # px each lip may move between source and edit
STEP = 0.5                                          # px between samples along the strip
FIT_SHARE = 0.8                                     # of the strip's half-height compared at most (its ends shift out of view)
# Each half is compared from the midpoint to this far past the source's gap edge (px, or this share of the gap):
# the edge and the inner lip, not the lip's outer border, which AU10 (disgust's raised upper lip) moves while
# the inner edge stays (compared out to the outer border, d19's disgusted edit read 1.17; near the gap 1.08).
EDGE_MARGIN = 3.0
EDGE_MARGIN_SHARE = 0.25
MOUTH_LEFT, MOUTH_RIGHT, INNER_TOP, INNER_BOTTOM = 48, 54, 62, 66   # iBUG-68


@dataclass(frozen=True)
class MouthStrip:
    """Where to read one frame: the inner-lip midpoint, the unit vector down the face, and the strip's size (px)."""

    centre: np.ndarray
    down: np.ndarray
    half_height: float
    half_width: float

    @classmethod
    def of(cls, landmarks: np.ndarray) -> MouthStrip:
        """The strip of a face's 68 landmarks (frame px): as tall as 1.2 gaps or a quarter of the mouth's width
        either side, whichever is more (lips included), and 8 % of the mouth's width either side across."""
        lm = np.asarray(landmarks, np.float64)
        across = lm[MOUTH_RIGHT] - lm[MOUTH_LEFT]
        width = float(np.linalg.norm(across))
        unit = across / max(width, 1e-9)
        down = np.array([-unit[1], unit[0]])
        gap = float(np.linalg.norm(lm[INNER_BOTTOM] - lm[INNER_TOP]))
        return cls((lm[INNER_TOP] + lm[INNER_BOTTOM]) / 2, down, max(1.2 * gap, 0.25 * width), max(1.0, 0.08 * width))


def strip_profile(gray: np.ndarray, strip: MouthStrip) -> tuple[np.ndarray, np.ndarray]:
    """(grey level along the strip, averaged across it; the offsets down the face in px)."""
    offsets = np.arange(-strip.half_height, strip.half_height + 1e-9, STEP)
    across = np.arange(-strip.half_width, strip.half_width + 1e-9, 1.0)
    side = np.array([strip.down[1], -strip.down[0]])
    points = strip.centre + offsets[:, None, None] * strip.down + across[None, :, None] * side
    map_x, map_y = points[..., 0].astype(np.float32), points[..., 1].astype(np.float32)
    return cv2.remap(np.asarray(gray, np.float32), map_x, map_y, cv2.INTER_LINEAR).mean(axis=1), offsets


def lip_shifts(source: np.ndarray, edited: np.ndarray, offsets: np.ndarray, reach: float) -> tuple[float, float]:
    """(upper, lower) px by which the edit's profile moves each half of the source's (the gap's top edge and
    the upper lip above the midpoint, its bottom edge and the lower lip below it) down the face: each half is
    shifted by the one of :data:`SHIFTS` that matches it best (:func:`best_shift`), in the least-squares sense
    over ``reach`` px from the midpoint (at most the strip's central :data:`FIT_SHARE`). Lips open and close
    as two bodies moving apart, so the opening changes by their difference."""
    reach = min(reach, FIT_SHARE * offsets.max())
    at = offsets[None, :] - SHIFTS[:, None]
    moved = np.interp(at.ravel(), offsets, source).reshape(at.shape)
    error = (moved - edited[None, :]) ** 2
    upper = (offsets <= 0) & (offsets >= -reach)
    lower = (offsets >= 0) & (offsets <= reach)
    return best_shift(error[:, upper].mean(1)), best_shift(error[:, lower].mean(1))


NEAR_BEST = 0.1   # a local minimum this share of the error's range above the lowest is as good a match


def best_shift(error: np.ndarray) -> float:
    """The shift of :data:`SHIFTS` whose ``error`` says the half matches: of the local minima inside the range
    within :data:`NEAR_BEST` of the best, the smallest move. A short window of even lip colour also matches
    far off, where it slides onto more even colour (a closed mouth's lower half read an 8 px move, the range's
    end, where its seam had moved 2 px); a minimum at the range's end is taken only when there is no other."""
    error = np.asarray(error, np.float64)
    low, high = float(error.min()), float(error.max())
    inner = np.flatnonzero((error[1:-1] <= error[:-2]) & (error[1:-1] <= error[2:])) + 1
    near = inner[error[inner] <= low + NEAR_BEST * (high - low)]
    if near.size == 0:
        return float(SHIFTS[int(np.argmin(error))])
    return float(SHIFTS[near[np.argmin(np.abs(SHIFTS[near]))]])


def lip_gap_change(source_gray: np.ndarray, edited_gray: np.ndarray, landmarks: np.ndarray) -> float:
    """How far the edit's lips moved apart from the source's in one frame (frame px; < 0: closer), by
    :func:`lip_shifts` on the strip of the *source's* landmarks (frame px), over the gap and the inner lips."""
    strip = MouthStrip.of(landmarks)
    a, offsets = strip_profile(source_gray, strip)
    b, _ = strip_profile(edited_gray, strip)
    gap = source_gap(landmarks)
    upper, lower = lip_shifts(a, b, offsets, gap / 2 + max(EDGE_MARGIN, EDGE_MARGIN_SHARE * gap))
    return lower - upper


def source_gap(landmarks: np.ndarray) -> float:
    """The inner-lip gap of one frame's 68 landmarks (px of the landmarks' frame)."""
    lm = np.asarray(landmarks, np.float64)
    return float(np.linalg.norm(lm[INNER_BOTTOM] - lm[INNER_TOP]))


@dataclass(frozen=True)
class DrawnOpening:
    """An edit's mouth opening as drawn, against its source's (tracked) opening, frame by frame.

    ``openings``: the edit's drawn inner-lip opening per frame in the source track's aligned px (the source's
    opening plus how far the lips moved apart, scaled by the frame's alignment), NaN where the source has no
    face; ``correlation`` and ``peak_ratio`` judge it against the source's opening as the re-tracked opening
    is judged (NaN where undefined: under 3 frames, no motion, a mouth that never opens).
    """

    openings: np.ndarray
    correlation: float
    peak_ratio: float


def _alignment_scale(transform: np.ndarray) -> float:
    """Aligned px per frame px of one image → aligned-crop similarity."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(transform, np.float64)[:, :2]))))


def drawn_opening(source: Path, edited: Path, track) -> DrawnOpening:
    """:class:`DrawnOpening` of ``edited`` against ``source``, whose face ``track`` gives. Both videos are
    decoded in step, frame by frame, so a long video costs no memory; every frame with a face is read."""
    from spfem_cli.evaluate.landmarks import mouth_correlation, peak_ratio
    from spfem_cli.video import iter_frames

    source_opening = np.asarray(track.mouth_opening(), np.float64)
    openings = np.full(len(source_opening), np.nan)
    for index, (a, b) in enumerate(zip(iter_frames(source), iter_frames(edited), strict=False)):
        # An odd-sized source's edit is one pixel larger (padded right and below for yuv420p).
        if index < len(openings) and track.valid[index] and b.shape[0] >= a.shape[0] and b.shape[1] >= a.shape[1]:
            change = lip_gap_change(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY),
                                    cv2.cvtColor(b[:a.shape[0], :a.shape[1]], cv2.COLOR_RGB2GRAY), track.landmarks[index])
            openings[index] = source_opening[index] + change * _alignment_scale(track.transforms[index])
    return DrawnOpening(openings, mouth_correlation(source_opening, openings), peak_ratio(source_opening, openings))
