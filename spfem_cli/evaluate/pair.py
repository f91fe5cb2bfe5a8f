"""``spfem eval --pair source.mp4 edited.mp4``: how well one edit kept the speech.

LSE-D/C of both videos (the edit should not lose lip sync), and with ``crop="track"`` the landmark
distances (M-LMD, F-LMD, in aligned 256² coordinates) and the correlation of the two mouth-opening
signals over time; PSNR/SSIM of the aligned faces say how much of the face changed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spfem_cli.evaluate import image, landmarks
from spfem_cli.evaluate.faces import CropMode, face_chunks, track_arrays
from spfem_cli.evaluate.lse import get_preset


def _aligned_landmarks(track) -> np.ndarray:
    from spfem_cli.face.align import apply_affine

    return np.stack([apply_affine(m, lm) for m, lm in zip(track.transforms, track.landmarks, strict=False)])


def evaluate_pair(source: Path, edited: Path, *, preset: str = "spfem-ned", crop: CropMode = "track",
                  device: str = "auto", models=None, max_image_frames: int = 200) -> dict:
    """Metrics of one edit; ``models`` defaults to the registry's evaluators (SyncNet only is needed)."""

    if models is None:
        from spfem_cli.device import pick_device
        from spfem_cli.evaluate.embedders import load_eval_models

        models = load_eval_models(pick_device(device), need=("sync",))
    lse_preset = get_preset(preset)
    tracks = {}
    if crop == "track":
        tracks = {"source": track_arrays(source), "edited": track_arrays(edited)}
    result: dict = {"preset": preset, "crop": crop}
    for name, path in (("source", source), ("edited", edited)):
        feats = _lse_only(path, models, preset, crop, tracks.get(name))
        result[name] = feats
    if tracks:
        a, b = _aligned_landmarks(tracks["source"]), _aligned_landmarks(tracks["edited"])
        n = min(len(a), len(b))
        ok = tracks["source"].valid[:n] & tracks["edited"].valid[:n]
        result["m_lmd"] = landmarks.m_lmd(a[:n][ok], b[:n][ok])
        result["f_lmd"] = landmarks.f_lmd(a[:n][ok], b[:n][ok])
        result["mouth_opening_correlation"] = landmarks.mouth_opening_correlation(a[:n][ok], b[:n][ok])
    psnrs, ssims = [], []
    for ca, cb in zip(face_chunks(source, lse_preset, crop=crop, track=tracks.get("source")),
                      face_chunks(edited, lse_preset, crop=crop, track=tracks.get("edited")), strict=False):
        for fa, fb in zip(ca.faces, cb.faces, strict=False):
            if fa.shape == fb.shape and len(psnrs) < max_image_frames:
                psnrs.append(image.psnr(fa, fb))
                ssims.append(image.ssim(fa, fb))
    result["psnr"] = float(np.mean(psnrs)) if psnrs else None
    result["ssim"] = float(np.mean(ssims)) if ssims else None
    return result


def _lse_only(path: Path, models, preset: str, crop: CropMode, track) -> dict | None:
    """LSE of one video without the FAD/CSIM embedders (they are not loaded in pair mode)."""
    from spfem_cli.evaluate.embedders import Embedder
    from spfem_cli.evaluate.run import video_features

    class _Skip(Embedder):
        def embed(self, faces: np.ndarray) -> np.ndarray:
            return np.zeros((len(faces), 1), np.float32)

    light = type(models)(_Skip(None, "fad"), _Skip(None, "csim"), models.sync, models.device)
    return video_features(path, light, preset=preset, crop=crop, track=track).lse
