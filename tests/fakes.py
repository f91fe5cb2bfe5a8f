"""Test-made stand-ins for gated files, written in the published layouts (file names, containers, keys).

Shared by the tests that load them through the weights registry; none of these is the real model.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np
import torch


def write_flame_files(folder: Path, *, grid: int = 31) -> dict[str, Path]:
    """``generic_model.pkl`` (protocol-2 pickle of the FLAME arrays) and ``landmark_embedding.npy`` (pickled dict)."""
    from models.flame import synthetic_flame
    from spfem_cli.face.align import TEMPLATE_68

    model, embedding = synthetic_flame(TEMPLATE_68, grid=grid)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"flame_generic": folder / "generic_model.pkl", "flame_landmark_embedding": folder / "landmark_embedding.npy"}
    with open(paths["flame_generic"], "wb") as fh:
        pickle.dump(dict(model), fh, protocol=2)
    np.save(paths["flame_landmark_embedding"], np.array(embedding, dtype=object), allow_pickle=True)
    return paths


def write_detail_assets(folder: Path, v_template: np.ndarray, faces: np.ndarray, *, mask_value: int = 255) -> dict[str, Path]:
    """DECA's ``head_template.obj`` (UV = frontal projection), ``uv_face_eye_mask.png`` and a zero
    ``fixed_displacement_256.npy`` for a FLAME-layout mesh."""
    folder.mkdir(parents=True, exist_ok=True)
    v = np.asarray(v_template)
    uv = (v[:, :2] - v[:, :2].min(0)) / (v[:, :2].max(0) - v[:, :2].min(0))
    lines = [f"v {x} {y} {z}" for x, y, z in v] + [f"vt {a} {b}" for a, b in uv]
    lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}" for a, b, c in np.asarray(faces)]
    paths = {"deca_head_template": folder / "head_template.obj", "deca_uv_face_eye_mask": folder / "uv_face_eye_mask.png",
             "deca_fixed_displacement": folder / "fixed_displacement_256.npy"}
    paths["deca_head_template"].write_text("\n".join(lines) + "\n")
    mask = np.zeros((256, 256, 3), np.uint8)
    mask[40:216, 40:216] = mask_value
    cv2.imwrite(str(paths["deca_uv_face_eye_mask"]), mask)
    np.save(paths["deca_fixed_displacement"], np.zeros((256, 256)))
    return paths


def frontal_deca(seed: int = 0):
    """Full-size DECA with random weights whose coarse encoder always answers the mean face, frontal, with a
    camera that fills the crop: random encoders otherwise give degenerate cameras and empty renders."""
    from models.deca import DECA

    torch.manual_seed(seed)
    deca = DECA().eval()
    with torch.no_grad():
        head = deca.E_flame.layers[2]
        head.weight.zero_()
        head.bias.zero_()
        head.bias[206] = 7.0   # orthographic scale (code layout: shape 100, tex 50, exp 50, pose 6, cam 3, ...)
    return deca


def write_deca_model(path: Path, deca) -> Path:
    """``deca_model.tar``: a torch file with the E_flame / E_detail / D_detail state dicts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({part: getattr(deca, part).state_dict() for part in ("E_flame", "E_detail", "D_detail")}, path)
    return path
