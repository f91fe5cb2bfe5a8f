"""The embedded ``warp`` backend: FACS landmark edits rendered by a piecewise-affine mesh warp.

encode      aligned 68 landmarks per frame (from the shared track)
manipulate  edited = source + intensity · Σₖ wₖ(t)·fieldₖ (target AUs in, conflicting source AUs out),
            then the source's inner-lip gap and jaw restored frame by frame (speech kept by construction)
render      warp an aligned crop (supersampled to the face's native resolution) from source to edited
            landmarks; the shared paste-back puts it into the frame

The edit field depends on time only through the smooth plan weights, so the edited landmarks are
exactly as smooth as the tracked ones: the backend adds no jitter of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from spfem_cli.backends.warp import facs
from spfem_cli.backends.warp.mesh_warp import warp_face
from spfem_cli.edit.targets import EditTarget, component_weights
from spfem_cli.face.align import ALIGNED_SIZE, warp_to_aligned
from spfem_cli.face.tracking.base import FaceTrack

MAX_SUPERSAMPLE = 4


@dataclass
class LandmarkSeq:
    """The warp backend's expression sequence: aligned landmarks (T, 68, 2), NaN where no face."""

    landmarks: np.ndarray
    valid: np.ndarray

    @classmethod
    def from_track(cls, track: FaceTrack) -> LandmarkSeq:
        return cls(track.aligned_landmarks(), track.valid.copy())


@dataclass
class WarpPlan:
    """Per-frame displacement in aligned pixels and what it was made of (for reports)."""

    displacement: np.ndarray          # (T, 68, 2)
    source_aus: dict[str, float]
    target_aus: dict[str, float]


class WarpBackend:
    name = "warp"

    def encode(self, track: FaceTrack) -> LandmarkSeq:
        return LandmarkSeq.from_track(track)

    def plan(self, seq: LandmarkSeq, target: EditTarget, fps: float,
             reference: LandmarkSeq | None = None) -> WarpPlan:
        """Displacements for every frame, scaled by intensity.

        A label adds its AU prototype and removes the source's own AUs that the label does not use
        (a smiling face made "sad" loses its smile first; made "happy" it smiles more). "neutral"
        removes every AU. A reference replaces the source's AU offset by the reference's.
        """
        n = len(seq.valid)
        source_offset, source_aus = facs.estimate_expression(seq.landmarks[seq.valid])
        weights = component_weights(target, n, fps)
        fields: dict[str, np.ndarray] = {}
        target_aus: dict[str, float] = {}
        for name in weights:
            if name == "reference":
                if reference is None or not reference.valid.any():
                    raise ValueError("a reference target needs the reference clip's landmarks")
                ref_offset, target_aus = facs.estimate_expression(reference.landmarks[reference.valid])
                fields[name] = ref_offset - source_offset
            else:
                keep = facs.EMOTION_AUS[name]
                removed = sum((c * facs.ACTION_UNITS[au] for au, c in source_aus.items() if au not in keep), np.zeros((68, 2)))
                fields[name] = facs.prototype(name) - removed
                target_aus.update(keep)
        total = np.zeros((n, 68, 2))
        for name, w in weights.items():
            total += w[:, None, None] * fields[name][None]
        return WarpPlan(target.intensity * total, source_aus, target_aus)

    def manipulate(self, seq: LandmarkSeq, plan: WarpPlan) -> LandmarkSeq:
        edited = seq.landmarks + plan.displacement
        edited = facs.keep_mouth_opening(seq.landmarks, edited)
        edited[~seq.valid] = np.nan
        return LandmarkSeq(edited, seq.valid.copy())

    @staticmethod
    def supersample(matrix: np.ndarray) -> int:
        """Crop scale so the aligned crop is at least as sharp as the face in the frame."""
        scale = float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2]))))   # aligned px per frame px
        return int(np.clip(np.ceil(1.0 / max(scale, 1e-6)), 1, MAX_SUPERSAMPLE))

    def render(self, frame: np.ndarray, matrix: np.ndarray, source: np.ndarray,
               edited: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Edited aligned crop and its image→crop matrix, for one frame.

        ``source``/``edited`` are aligned landmarks (68, 2) at the 256² scale.
        """
        k = self.supersample(matrix)
        matrix_k = np.asarray(matrix, np.float64) * k
        crop = warp_to_aligned(frame, matrix_k, size=ALIGNED_SIZE * k)
        warped = warp_face(crop, source * k, edited * k)
        return warped, matrix_k

