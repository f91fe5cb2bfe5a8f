"""Face crops for the evaluators, streamed chunk by chunk from a video.

``crop="track"`` runs the tracker (:mod:`spfem_cli.face.tracking`, imported lazily) and warps every frame
to the 256² aligned template (:func:`spfem_cli.face.align.warp_to_aligned`); frames without a face reuse
the nearest valid transform so the lip stream stays continuous, and are excluded from FAD/CSIM.
``crop="none"`` takes frames as they are: for videos that already are face crops (NED writes
aligned 256² faces), or for quick runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from spfem_cli.errors import SpfemError
from spfem_cli.evaluate.lse import LsePreset, box_crop, lip_crop
from spfem_cli.video import iter_chunks

CropMode = Literal["track", "none"]


@dataclass
class FaceChunk:
    start: int
    faces: np.ndarray      # (N, S, S, 3) RGB uint8: aligned faces (or the frames, crop="none")
    lips: np.ndarray       # (N, 224, 224, 3) BGR uint8 lip-tower inputs for the preset
    valid: np.ndarray      # (N,) bool: a face was tracked in this frame


@dataclass
class TrackArrays:
    """The parts of a tracker's FaceTrack that evaluation uses."""

    landmarks: np.ndarray  # (T, 68, 2) image pixels
    valid: np.ndarray      # (T,) bool
    transforms: np.ndarray  # (T, 2, 3) image → aligned 256²
    boxes: np.ndarray      # (T, 4) x0, y0, x1, y1


def track_arrays(video: Path) -> TrackArrays:
    """Track ``video`` with the project's tracker and pull out landmarks, validity, transforms, boxes."""
    try:
        from spfem_cli.face import align, tracking
    except ImportError as exc:
        raise SpfemError(f"face tracking is not available ({exc}); use --crop none for videos of face crops") from None
    track = tracking.track_video(Path(video), progress=False)
    landmarks = np.asarray(track.landmarks, np.float64)
    valid = np.asarray(getattr(track, "valid", np.ones(len(landmarks), bool)), bool)
    if not valid.any():
        raise SpfemError(f"no face found in {video}")
    transforms = getattr(track, "transforms", None)
    if transforms is None:
        transforms = np.stack([align.alignment_transform(lm) if ok else np.eye(2, 3)
                               for lm, ok in zip(landmarks, valid, strict=True)])
    boxes = getattr(track, "boxes", None)
    if boxes is None:
        boxes = np.concatenate([landmarks.min(axis=1), landmarks.max(axis=1)], axis=1)
    transforms, boxes = _fill_invalid(np.asarray(transforms, np.float64), valid), _fill_invalid(np.asarray(boxes), valid)
    return TrackArrays(landmarks, valid, transforms, boxes)


def _fill_invalid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Copy the nearest valid entry into invalid frames."""
    good = np.flatnonzero(valid)
    nearest = good[np.clip(np.searchsorted(good, np.arange(len(valid))), 0, len(good) - 1)]
    out = values.copy()
    out[~valid] = values[nearest[~valid]]
    return out


def face_chunks(video: Path, preset: LsePreset, *, crop: CropMode = "track", chunk: int = 32,
                track: TrackArrays | None = None) -> Iterator[FaceChunk]:
    """Aligned faces and lip-tower crops of every frame of ``video``."""
    if crop == "track" and track is None:
        track = track_arrays(video)
    for part in iter_chunks(video, chunk):
        n = len(part.frames)
        if crop == "none":
            faces = part.frames
            valid = np.ones(n, bool)
            lips = np.stack([lip_crop(f, preset) for f in faces])
        else:
            from spfem_cli.face.align import warp_to_aligned

            sl = slice(part.start, part.start + n)
            tr, bx = track.transforms[sl], track.boxes[sl]
            valid = track.valid[sl]
            if len(tr) < n:   # decoder produced more frames than the track: reuse the last transform
                tr = np.concatenate([tr, np.repeat(track.transforms[-1:], n - len(tr), 0)])
                bx = np.concatenate([bx, np.repeat(track.boxes[-1:], n - len(bx), 0)])
                valid = np.concatenate([valid, np.zeros(n - len(valid), bool)])
            faces = np.stack([warp_to_aligned(f, m) for f, m in zip(part.frames, tr, strict=False)])
            if preset.crop == "box":
                lips = np.stack([lip_crop(box_crop(f, b), preset) for f, b in zip(part.frames, bx, strict=False)])
            else:
                lips = np.stack([lip_crop(f, preset) for f in faces])
        yield FaceChunk(part.start, faces, lips, valid)
