"""``spfem eval --pair source.mp4 edited.mp4``: how well one edit kept the speech, and whether it reads as its emotion.

LSE-D/C of both videos (the edit should not lose lip sync; needs SyncNet, marked unavailable without
it), and with ``crop="track"`` the landmark distances (M-LMD, F-LMD, in aligned 256² coordinates) and
the correlation of the two mouth-opening signals over time; PSNR/SSIM of the aligned faces say how
much of the face changed; the FER-2013 recogniser reads the emotion of both (``emotion``: accuracy of
the target label, as EAMM/EAT report it, kept apart from the speech metrics).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spfem_cli.emotions import canonical
from spfem_cli.errors import SpfemError
from spfem_cli.evaluate import image, landmarks
from spfem_cli.evaluate.faces import CropMode, face_chunks, track_arrays
from spfem_cli.evaluate.lse import get_preset

EMOTION_FRAMES = 40


def _aligned_landmarks(track) -> np.ndarray:
    from spfem_cli.face.align import apply_affine

    return np.stack([apply_affine(m, lm) for m, lm in zip(track.transforms, track.landmarks, strict=False)])


def target_from_name(edited: Path) -> str | None:
    """The target emotion written into an edit's default name (``clip.happy.mp4`` → happy), else None."""
    for part in reversed(Path(edited).name.split(".")[1:-1]):
        try:
            return canonical(part)
        except ValueError:
            continue
    return None


def _sync_models(device: str):
    """SyncNet for LSE, or (None, why) when it is not installed: everything else does not need it."""
    from spfem_cli.device import pick_device
    from spfem_cli.evaluate.embedders import load_eval_models

    try:
        return load_eval_models(pick_device(device), need=("sync",)), None
    except SpfemError as exc:
        return None, str(exc)


def evaluate_pair(source: Path, edited: Path, *, preset: str = "spfem-ned", crop: CropMode = "track",
                  device: str = "auto", models=None, max_image_frames: int = 200, target: str | None = None,
                  emotion_frames: int = EMOTION_FRAMES) -> dict:
    """Metrics of one edit; ``models`` defaults to the registry's SyncNet (LSE is skipped, and said so, without it).

    ``target``: the edit's emotion for the recognition accuracy (default: read from the edited file's name).
    """
    lse_unavailable = None
    if models is None:
        models, lse_unavailable = _sync_models(device)
    lse_preset = get_preset(preset)
    tracks = {}
    if crop == "track":
        tracks = {"source": track_arrays(source), "edited": track_arrays(edited)}
    result: dict = {"preset": preset, "crop": crop}
    for name, path in (("source", source), ("edited", edited)):
        result[name] = _lse_only(path, models, preset, crop, tracks.get(name)) if models is not None else None
    if lse_unavailable:
        result["lse_unavailable"] = lse_unavailable
    if tracks:
        a, b = _aligned_landmarks(tracks["source"]), _aligned_landmarks(tracks["edited"])
        n = min(len(a), len(b))
        ok = tracks["source"].valid[:n] & tracks["edited"].valid[:n]
        result["m_lmd"] = landmarks.m_lmd(a[:n][ok], b[:n][ok])
        result["f_lmd"] = landmarks.f_lmd(a[:n][ok], b[:n][ok])
        result["mouth_opening_correlation"] = landmarks.mouth_opening_correlation(a[:n][ok], b[:n][ok])
    psnrs, ssims = [], []
    picked: dict[str, list[np.ndarray]] = {"source": [], "edited": []}
    wanted = _emotion_frames(tracks, source, edited, emotion_frames)
    for ca, cb in zip(face_chunks(source, lse_preset, crop=crop, track=tracks.get("source")),
                      face_chunks(edited, lse_preset, crop=crop, track=tracks.get("edited")), strict=False):
        for j, (fa, fb) in enumerate(zip(ca.faces, cb.faces, strict=False)):
            if fa.shape == fb.shape and len(psnrs) < max_image_frames:
                psnrs.append(image.psnr(fa, fb))
                ssims.append(image.ssim(fa, fb))
            if ca.start + j in wanted:
                picked["source"].append(fa)
                picked["edited"].append(fb)
    result["psnr"] = float(np.mean(psnrs)) if psnrs else None
    result["ssim"] = float(np.mean(ssims)) if ssims else None
    result["emotion"] = emotion_result(picked["source"], picked["edited"],
                                       target if target is not None else target_from_name(edited))
    return result


def _emotion_frames(tracks: dict, source: Path, edited: Path, n: int) -> set[int]:
    """~n frames spread over those where both videos have a face (every frame for face-crop videos)."""
    from spfem_cli.face.expression import sample_indices
    from spfem_cli.video import probe

    if tracks:
        m = min(len(tracks["source"].valid), len(tracks["edited"].valid))
        ok = tracks["source"].valid[:m] & tracks["edited"].valid[:m]
    else:
        ok = np.ones(min(probe(source).n_frames, probe(edited).n_frames), bool)
    return set(sample_indices(ok, n).tolist())


def emotion_result(source_faces: list[np.ndarray], edited_faces: list[np.ndarray], target: str | None) -> dict:
    """Perceived emotion of both (aligned faces), P(target) of each and the edit's recognition accuracy:
    ``accuracy`` 1/0 = the edited video's mean-probability top-1 is the target; ``frame_accuracy`` over its frames."""
    from spfem_cli.face.expression import ExpressionRecognizer, column, perceived
    from spfem_cli.weights import WeightsError

    try:
        recognizer = ExpressionRecognizer()
    except WeightsError as exc:
        return {"unavailable": str(exc)}
    probs = {k: recognizer.probabilities_aligned(np.array(v)) if v else np.zeros((0, 7), np.float32)
             for k, v in (("source", source_faces), ("edited", edited_faces))}
    seen = {k: perceived(p) for k, p in probs.items()}
    out: dict = {"target": target, "frames": len(probs["edited"]),
                 **{k: (p.as_dict() if p else None) for k, p in seen.items()}}
    col = column(target) if target else None
    if target is None:
        out["note"] = "no target emotion (pass --emotion or name the edit <stem>.<emotion>.mp4)"
    elif col is None:
        out["note"] = f"the FER-2013 recogniser has no '{target}' class"
    elif len(probs["edited"]):
        out["p_target_source"] = float(probs["source"][:, col].mean()) if len(probs["source"]) else None
        out["p_target_edited"] = float(probs["edited"][:, col].mean())
        out["accuracy"] = float(seen["edited"].label == target)
        out["frame_accuracy"] = float((probs["edited"].argmax(1) == col).mean())
    return out


def _lse_only(path: Path, models, preset: str, crop: CropMode, track) -> dict | None:
    """LSE of one video without the FAD/CSIM embedders (they are not loaded in pair mode)."""
    from spfem_cli.evaluate.embedders import Embedder
    from spfem_cli.evaluate.run import video_features

    class _Skip(Embedder):
        def embed(self, faces: np.ndarray) -> np.ndarray:
            return np.zeros((len(faces), 1), np.float32)

    light = type(models)(_Skip(None, "fad"), _Skip(None, "csim"), models.sync, models.device)
    return video_features(path, light, preset=preset, crop=crop, track=track).lse
