"""The tracker contract and the per-video result, :class:`FaceTrack`.

A tracker turns one RGB frame into a list of :class:`Detection` (68 iBUG-order landmarks, a box,
two pupils), any number per frame, in no particular order. Everything temporal (choosing the face,
smoothing, gaps, cuts) happens in :mod:`spfem_cli.face.tracking.track`, the same for every tracker.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from spfem_cli.face.align import apply_affine
from spfem_cli.video import AtomicOutput

# iBUG-68 groups, named once.
JAW = np.arange(0, 17)
RIGHT_BROW = np.arange(17, 22)    # subject's right = image left in a frontal view
LEFT_BROW = np.arange(22, 27)
NOSE = np.arange(27, 36)
RIGHT_EYE = np.arange(36, 42)
LEFT_EYE = np.arange(42, 48)
OUTER_LIPS = np.arange(48, 60)
INNER_LIPS = np.arange(60, 68)
UPPER_INNER_LIP_MID, LOWER_INNER_LIP_MID = 62, 66


@dataclass
class Detection:
    """One face in one frame, in image pixels: landmarks (68, 2), box (x0, y0, x1, y1), pupils (2, 2)
    ordered (right eye = points 36-41, left eye = 42-47); ``mesh`` (478, 2) the full MediaPipe FaceMesh
    when the tracker has one (None for 68-point trackers such as FAN)."""

    landmarks: np.ndarray
    box: np.ndarray
    pupils: np.ndarray
    score: float = 1.0
    mesh: np.ndarray | None = None

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


class Tracker(ABC):
    """Per-frame face landmarker. Implementations hold their models; ``close`` releases them."""

    name: str = "base"

    @abstractmethod
    def detect(self, frame: np.ndarray) -> list[Detection]:
        """All faces in an RGB uint8 frame ``(H, W, 3)``; an empty list when there is none."""

    def close(self) -> None:
        """Release native resources (MediaPipe graphs); nothing to release by default."""
        return None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Tight box around 68 landmarks (x0, y0, x1, y1)."""
    return np.r_[landmarks.min(0), landmarks.max(0)].astype(np.float64)


@dataclass
class FaceTrack:
    """One face followed through a video. Arrays are per frame; frames where ``valid`` is False carry
    NaN and must be passed through untouched by later stages.

    boxes (N, 4) x0 y0 x1 y1 · landmarks (N, 68, 2) iBUG order · pupils (N, 2, 2) · valid (N,) ·
    transforms (N, 2, 3) image → 256² aligned crop · interpolated (N,) frames filled across a short gap ·
    cuts (N,) True where a new shot starts · mesh (N, 478, 2) the full FaceMesh (eyelids, cheeks, brows,
    forehead, nose) when the tracker gives one, else None; ``landmarks`` are its iBUG-68 subset ·
    bridge_line (N,) the strength of a line across the nose bridge, an eyeglass frame's cue
    (:mod:`spfem_cli.face.glasses`; NaN on frames without a detected face), or None when not measured.
    Pixels are those of the displayed (rotation-applied) frame.
    """

    boxes: np.ndarray
    landmarks: np.ndarray
    pupils: np.ndarray
    valid: np.ndarray
    transforms: np.ndarray
    interpolated: np.ndarray
    cuts: np.ndarray
    fps: Fraction
    frame_size: tuple[int, int]          # (H, W)
    tracker: str
    meta: dict = field(default_factory=dict)
    mesh: np.ndarray | None = None
    bridge_line: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.valid)

    @property
    def n_valid(self) -> int:
        return int(self.valid.sum())

    def aligned_landmarks(self) -> np.ndarray:
        """Landmarks in aligned-crop coordinates (N, 68, 2); NaN on invalid frames."""
        out = np.full_like(self.landmarks, np.nan)
        for i in np.flatnonzero(self.valid):
            out[i] = apply_affine(self.transforms[i], self.landmarks[i])
        return out

    def aligned_mesh(self) -> np.ndarray:
        """Mesh in aligned-crop coordinates (N, 478, 2); NaN on invalid frames. Needs ``mesh``."""
        if self.mesh is None:
            raise ValueError(f"the {self.tracker} track has no face mesh")
        out = np.full(self.mesh.shape, np.nan)
        for i in np.flatnonzero(self.valid):
            out[i] = apply_affine(self.transforms[i], self.mesh[i])
        return out

    def mouth_opening(self) -> np.ndarray:
        """Inner-lip gap (points 62–66) in aligned pixels per frame; NaN where no face."""
        aligned = self.aligned_landmarks()
        return np.linalg.norm(aligned[:, UPPER_INNER_LIP_MID] - aligned[:, LOWER_INNER_LIP_MID], axis=-1)

    def summary(self) -> dict:
        """Small JSON-able description written next to the arrays."""
        gaps = np.flatnonzero(~self.valid)
        return {
            "frames": len(self), "valid_frames": self.n_valid, "interpolated_frames": int(self.interpolated.sum()),
            "invalid_frames": gaps.tolist()[:1000], "scene_cuts": np.flatnonzero(self.cuts).tolist(),
            "fps": f"{self.fps.numerator}/{self.fps.denominator}", "frame_size": list(self.frame_size),
            "tracker": self.tracker, **self.meta,
        }

    def save(self, path: Path) -> Path:
        """Write ``path`` (.npz) and a ``.json`` summary beside it, both atomically."""
        path = Path(path)
        with AtomicOutput(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, boxes=self.boxes, landmarks=self.landmarks, pupils=self.pupils,
                                valid=self.valid, transforms=self.transforms, interpolated=self.interpolated,
                                cuts=self.cuts, fps=np.array([self.fps.numerator, self.fps.denominator]),
                                frame_size=np.array(self.frame_size), tracker=np.array(self.tracker),
                                meta=np.array(json.dumps(self.meta)),
                                **({} if self.mesh is None else {"mesh": self.mesh.astype(np.float32)}),
                                **({} if self.bridge_line is None else {"bridge_line": self.bridge_line}))
        with AtomicOutput(path.with_suffix(".json")) as tmp:
            Path(tmp).write_text(json.dumps(self.summary(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> FaceTrack:
        with np.load(Path(path), allow_pickle=False) as data:
            num, den = (int(v) for v in data["fps"])
            return cls(boxes=data["boxes"], landmarks=data["landmarks"], pupils=data["pupils"],
                       valid=data["valid"].astype(bool), transforms=data["transforms"],
                       interpolated=data["interpolated"].astype(bool), cuts=data["cuts"].astype(bool),
                       fps=Fraction(num, den), frame_size=tuple(int(v) for v in data["frame_size"]),
                       tracker=str(data["tracker"]), meta=json.loads(str(data["meta"])),
                       mesh=data["mesh"].astype(np.float64) if "mesh" in data.files else None,
                       bridge_line=data["bridge_line"] if "bridge_line" in data.files else None)
