"""The `reconstruct` stage of the NED backend: per-frame DECA codes for a tracked video, cached on disk.

Frames are decoded chunk-wise (memory does not grow with the video), each valid frame is cropped as DECA
crops (:func:`models.deca.crop_transform` from the tracked 68 landmarks) and encoded in batches. The result
(:class:`Reconstruction`) holds per frame the 236 DECA parameters + 128 detail values, the crop matrix and
the validity mask; invalid frames hold NaN and are never encoded. Cache: one ``.npz`` per content key
(video bytes + track + weights + settings) with a JSON manifest written last as the completion marker.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch

from models.deca import CROP_SIZE, DECA, PARAM_SIZES, DecaCodes, crop_transform
from spfem_cli.video import AtomicOutput, iter_chunks, probe

CACHE_VERSION = 1
N_CODES = sum(PARAM_SIZES.values()) + 128


@dataclass
class Reconstruction:
    """Per-frame DECA codes. codes N×364 float32 (DECA order: shape, tex, exp, pose, cam, light, detail; NaN where
    invalid) · valid N · crop_mats N×2×3 (image → 224 crop) · fps."""

    codes: np.ndarray
    valid: np.ndarray
    crop_mats: np.ndarray
    fps: Fraction
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.valid)

    def deca_codes(self, index: np.ndarray | slice) -> DecaCodes:
        return DecaCodes.from_flat(torch.from_numpy(np.ascontiguousarray(self.codes[index])).float())

    def expression_sequence(self) -> np.ndarray:
        """NED translator input per frame: jaw opening (first jaw axis-angle value) + 50 expression values (N×51)."""
        jaw = self.codes[:, 100 + 50 + 50 + 3]
        exp = self.codes[:, 150:200]
        return np.concatenate([jaw[:, None], exp], axis=1)

    def save(self, path: Path) -> Path:
        with AtomicOutput(Path(path), suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, codes=self.codes, valid=self.valid, crop_mats=self.crop_mats,
                                fps=np.array([self.fps.numerator, self.fps.denominator]),
                                meta=np.array(json.dumps(self.meta)))
        return Path(path)

    @classmethod
    def load(cls, path: Path) -> Reconstruction:
        with np.load(Path(path), allow_pickle=False) as data:
            num, den = (int(v) for v in data["fps"])
            return cls(codes=data["codes"], valid=data["valid"].astype(bool), crop_mats=data["crop_mats"],
                       fps=Fraction(num, den), meta=json.loads(str(data["meta"])))


def deca_crop(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """224² RGB crop in [0, 1] (float32, H×W×3); bilinear with black outside, as DECA's skimage ``warp``."""
    crop = cv2.warpAffine(frame, np.asarray(matrix, np.float64), (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return crop.astype(np.float32) / 255.0


def reconstruct_frames(video: Path, track, deca: DECA, device: torch.device, *, batch_size: int = 16,
                       chunk_size: int = 32, on_frames: Callable[[int], None] | None = None) -> Reconstruction:
    """Encode every valid tracked frame of ``video``; ``track`` is a FaceTrack (landmarks N×68×2, valid N)."""
    n = len(track.valid)
    codes = np.full((n, N_CODES), np.nan, np.float32)
    crop_mats = np.full((n, 2, 3), np.nan)
    pending: list[tuple[int, np.ndarray]] = []
    deca = deca.to(device).eval()

    def flush() -> None:
        if not pending:
            return
        idx = [i for i, _ in pending]
        batch = torch.from_numpy(np.stack([c for _, c in pending])).permute(0, 3, 1, 2).to(device)
        codes[idx] = deca.encode(batch).flat().float().cpu().numpy()
        pending.clear()

    seen = 0
    for chunk in iter_chunks(Path(video), chunk_size, max_frames=n):
        for k, frame in enumerate(chunk.frames):
            i = chunk.start + k
            if i < n and bool(track.valid[i]) and np.isfinite(track.landmarks[i]).all():
                crop_mats[i] = crop_transform(track.landmarks[i])
                pending.append((i, deca_crop(frame, crop_mats[i])))
                if len(pending) >= batch_size:
                    flush()
        seen += len(chunk.frames)
        if on_frames:
            on_frames(len(chunk.frames))
    flush()
    valid = np.isfinite(codes).all(axis=1)
    return Reconstruction(codes=codes, valid=valid, crop_mats=crop_mats, fps=Fraction(probe(Path(video)).fps),
                          meta={"frames_decoded": seen, "crop": "DECA kpt68, scale 1.25, 224"})


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _weights_digest(deca: DECA | None) -> str:
    if deca is None:
        from spfem_cli.weights import resolve

        path = resolve("deca_model")
        stat = path.stat()
        return f"deca_model:{path}:{stat.st_size}:{stat.st_mtime_ns}"
    digest = hashlib.sha256()
    for key, value in deca.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_key(video: Path, track, weights: str) -> str:
    """Content key: video bytes, the track's landmarks/validity, the weights and the stage version."""
    digest = hashlib.sha256()
    for part in (_file_digest(Path(video)), weights, f"v{CACHE_VERSION}"):
        digest.update(part.encode())
    digest.update(np.ascontiguousarray(track.landmarks, np.float64).tobytes())
    digest.update(np.ascontiguousarray(track.valid, bool).tobytes())
    return digest.hexdigest()


def reconstruct_video(video: Path, track, out_dir: Path, device: str | torch.device = "auto", *,
                      deca: DECA | None = None, batch_size: int = 16, progress: bool = True) -> Path:
    """Per-frame DECA coefficients for ``video`` → ``out_dir/reconstruct-<key>.npz`` (reused when cached).

    ``deca`` defaults to the gated ``deca_model`` from the registry (WeightsError with instructions if absent).
    """
    from spfem_cli.device import pick_device

    dev = pick_device(device) if isinstance(device, str) else device
    weights = _weights_digest(deca)
    key = cache_key(video, track, weights)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"reconstruct-{key[:16]}.npz"
    manifest = path.with_suffix(".json")
    if path.is_file() and manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("key") == key:
                return path
        except json.JSONDecodeError:
            pass
    model = deca if deca is not None else DECA.from_registry()
    total = len(track.valid)
    if progress:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("3D reconstruction (DECA)", total=total)
            recon = reconstruct_frames(video, track, model, dev, batch_size=batch_size,
                                       on_frames=lambda k: bar.advance(task, k))
    else:
        recon = reconstruct_frames(video, track, model, dev, batch_size=batch_size)
    recon.meta.update({"video": str(video), "key": key, "device": str(dev)})
    recon.save(path)
    with AtomicOutput(manifest) as tmp:
        Path(tmp).write_text(json.dumps({"key": key, "version": CACHE_VERSION, "frames": total,
                                         "valid_frames": int(recon.valid.sum()), "complete": True}, indent=2) + "\n")
    return path
