"""Does the drawn opening (:mod:`spfem_cli.evaluate.drawn_opening`) read a known change of the lips?

The emotion area reports each edit's mouth opening as drawn in the picture; this area checks that reading
on the same real clips (:func:`~spfem_cli.benchmarks.emotion.bench_clips`, first ``CLIP_SECONDS``) where the
true answer is known: on every frame with a face the lower lip (everything below the source's inner-lip
midpoint, across the face) is moved down the face by a known amount, a seeded draw of
:data:`MOVES` px (closed by 2 px, unchanged, opened by 3 px; never closed past a touching mouth), and
:func:`~spfem_cli.evaluate.drawn_opening.lip_gap_change` must say how far. Reported per clip: the mean and
90th-percentile error of the change in px, and the r of the drawn opening with the true one.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import numpy as np

from spfem_cli.benchmarks.emotion import bench_clips, sample_clip, trimmed
from spfem_cli.benchmarks.runner import BenchRow

AREA = "drawn_opening"
MOVES = (-2.0, 0.0, 0.0, 3.0)
SEED = 0


def lower_lip_moved(gray: np.ndarray, landmarks: np.ndarray, px: float) -> np.ndarray:
    """``gray`` with everything below the inner-lip midpoint (down the face, as the drawn opening's strip
    reads it) moved ``px`` further down, blended over one pixel at the midpoint: the gap opens by ``px``."""
    from spfem_cli.evaluate.drawn_opening import MouthStrip

    strip = MouthStrip.of(landmarks)
    y, x = np.mgrid[0:gray.shape[0], 0:gray.shape[1]].astype(np.float32)
    below = np.clip((x - strip.centre[0]) * strip.down[0] + (y - strip.centre[1]) * strip.down[1], 0.0, 1.0)
    map_x = (x - below * px * strip.down[0]).astype(np.float32)
    map_y = (y - below * px * strip.down[1]).astype(np.float32)
    return cv2.remap(np.asarray(gray, np.float32), map_x, map_y, cv2.INTER_LINEAR)


def known_moves(clip: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source gap, true change, measured change) in frame px on every frame of ``clip`` with a face."""
    from spfem_cli.evaluate.drawn_opening import lip_gap_change, source_gap
    from spfem_cli.face.preprocess import cached_track
    from spfem_cli.video import iter_frames

    track = cached_track(clip, "mediapipe", progress=False)
    draws = np.random.default_rng(SEED).choice(MOVES, size=len(track.valid))
    gaps, truth, measured = [], [], []
    for index, frame in enumerate(iter_frames(clip)):
        if index >= len(track.valid) or not track.valid[index]:
            continue
        landmarks = track.landmarks[index]
        move = float(draws[index]) if source_gap(landmarks) + draws[index] > 0.5 else 0.0
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32)
        gaps.append(source_gap(landmarks))
        truth.append(move)
        measured.append(lip_gap_change(gray, lower_lip_moved(gray, landmarks, move), landmarks))
    return np.array(gaps), np.array(truth), np.array(measured)


def run() -> list[BenchRow]:
    from spfem_cli.evaluate.landmarks import mouth_correlation

    with tempfile.TemporaryDirectory() as tmp:
        clips = [trimmed(c, Path(tmp)) for c in bench_clips()] or [sample_clip(Path(tmp))]
        where = ",".join(c.stem.split(".")[0] for c in clips)
        per_clip, errors = [], []
        for clip in clips:
            gaps, truth, measured = known_moves(clip)
            error = np.abs(measured - truth)
            errors.append(error.mean())
            r = mouth_correlation(gaps + truth, gaps + measured)      # the drawn opening against the true one
            per_clip.append(f"{clip.stem.split('.')[0]} {error.mean():.2f}/{np.percentile(error, 90):.2f}/{r:.3f} "
                            f"({len(truth)} frames)")
    return [BenchRow(AREA, f"drawn opening: error of a known lower-lip move (−2/0/+3 px), every frame with a face, "
                           f"first 4 s ({where})", float(max(errors)), "px (worst clip's mean)",
                     "per clip: mean/p90 |error| px, r of drawn with true opening: " + ", ".join(per_clip))]
