"""The three evaluator networks behind one small interface: face images in, feature rows out.

Preprocessing lives here, next to the network it belongs to (reference facts §3):
- FAD (ArcFace ResNet-Face-18): grayscale (ITU-R 601 luma, as PIL's ``convert('L')``), resize to
  164², centre-crop 128², ``(x/255 − 0.5)/0.5``; 512-d.
- CSIM (EfficientFace AffectNet-7): RGB, resize to 256², centre-crop 224², mean/std of the checkpoint;
  1024-d pooled features.
- LSE (SyncNet v2): see :mod:`spfem_cli.evaluate.lse`.
Faces are square crops (aligned 256² faces), so "resize the short side" is a plain resize here.
Missing weights raise one line that names the command to get them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from spfem_cli.errors import SpfemError

FAD_WEIGHT = "arcface_resnet18_fad"
CSIM_WEIGHT = "efficientface_affectnet7"
SYNC_WEIGHT = "syncnet_v2"


def _resize_crop(images: np.ndarray, resize: int, crop: int) -> np.ndarray:
    out = []
    off = (resize - crop) // 2
    for img in images:
        if img.shape[:2] != (resize, resize):
            interp = cv2.INTER_AREA if img.shape[0] > resize else cv2.INTER_LINEAR
            img = cv2.resize(img, (resize, resize), interpolation=interp)
        out.append(img[off:off + crop, off:off + crop])
    return np.stack(out)


def fad_input(faces: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` RGB uint8 → ``N×1×128×128`` in [-1, 1]."""
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in faces])
    crops = _resize_crop(gray, 164, 128).astype(np.float32) / 255.0
    return torch.from_numpy((crops - 0.5) / 0.5)[:, None]


def csim_input(faces: np.ndarray) -> torch.Tensor:
    """``(N, H, W, 3)`` RGB uint8 → ``N×3×224×224`` normalised with EfficientFace's mean/std."""
    from models.efficientface import MEAN, STD

    crops = _resize_crop(faces, 256, 224).astype(np.float32) / 255.0
    crops = (crops - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    return torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))


@dataclass
class Embedder:
    """A network plus its preprocessing: ``embed(faces)`` → ``(N, D)`` float32."""

    model: torch.nn.Module
    kind: str                 # "fad" | "csim"
    device: torch.device = torch.device("cpu")
    batch: int = 32

    def embed(self, faces: np.ndarray) -> np.ndarray:
        prep = fad_input if self.kind == "fad" else csim_input
        fn = self.model if self.kind == "fad" else self.model.features
        out = []
        for s in range(0, len(faces), self.batch):
            x = prep(faces[s:s + self.batch]).to(self.device)
            with torch.inference_mode():
                out.append(fn(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 512 if self.kind == "fad" else 1024), np.float32)


@dataclass
class EvalModels:
    fad: Embedder
    csim: Embedder
    sync: torch.nn.Module
    device: torch.device
    identity: str = ""        # which weight files (name, size, mtime): part of the per-video cache key


def resolve_weight(name: str) -> Path:
    """Registry path, or a one-line SpfemError naming `spfem weights fetch NAME`."""
    from spfem_cli.weights import WeightsError, resolve

    try:
        return resolve(name)
    except WeightsError as exc:
        raise SpfemError(f"{exc} (or: `spfem weights fetch {name} --from FILE` for a copy you downloaded)") from None


def load_eval_models(device: torch.device | str = "cpu", *, need: tuple[str, ...] = ("fad", "csim", "sync")) -> EvalModels:
    """Load the evaluator networks from the registry (all names are checked before any is loaded)."""
    from models.efficientface import load_efficientface
    from models.resnet_face import load_resnet_face18
    from models.syncnet import load_syncnet

    device = torch.device(device)
    names = {"fad": FAD_WEIGHT, "csim": CSIM_WEIGHT, "sync": SYNC_WEIGHT}
    paths, problems = {}, []
    for key in need:
        try:
            paths[key] = resolve_weight(names[key])
        except SpfemError as exc:
            problems.append(str(exc))
    if problems:
        raise SpfemError("; ".join(problems))
    fad = load_resnet_face18(paths["fad"]).to(device) if "fad" in paths else None
    csim = load_efficientface(paths["csim"]).to(device) if "csim" in paths else None
    sync = load_syncnet(paths["sync"]).to(device) if "sync" in paths else None
    identity = ";".join(f"{k}:{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for k, p in sorted(paths.items()))
    return EvalModels(Embedder(fad, "fad", device), Embedder(csim, "csim", device), sync, device, identity)
