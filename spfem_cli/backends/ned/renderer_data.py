"""Build a renderer-training "actor folder" from one video: aligned frames + NED conditioning images.

Stages (all cached by their owners): track (``spfem_cli.face.preprocess.cached_track``) → DECA codes
(``spfem_cli.backends.ned.reconstruct.reconstruct_video``) → FLAME → NMFC / shape / eye-gaze images in the aligned
256² frame (``spfem_cli.backends.ned.render3d.render_conditioning``). Frames without a valid track or reconstruction
are left out. The face mask is NED's: FSGAN's face segmentation of the aligned real frames, soft-eroded,
largest component (``spfem_cli.face.mask``), when the gated ``fsgan_segmentation`` weight is present; without
it (or on a frame where segmentation finds no face) the mask is the FLAME mesh coverage. ``actor.json`` records
which. The mouth centre is the median of the aligned iBUG mouth points 48–67, as NED's ``get_mouth_center``.
Arrays go straight to memory-mapped ``.npy`` files (streaming).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import torch

# The per-frame arrays an actor folder holds (one .npy each), in the order training reads them.
ACTOR_ARRAYS = ("frames", "nmfc", "gaze", "shape", "mask", "mouth")


def prepare_actor_data(video: Path, out: Path, *, tracker: str = "fan", device: str = "auto", chunk_size: int = 16,
                       progress: bool = True, detail: bool = True, track=None, flame=None, deca=None,
                       detail_assets=None, segmenter: torch.nn.Module | Literal["auto"] | None = "auto",
                       mask_input_range: Literal["fsgan", "ned"] = "fsgan") -> Path:
    """Write ``out/{frames,nmfc,gaze,shape,mask,mouth}.npy`` for ``video``; returns ``out``.

    ``detail``: NED's *detailed* shape image (DECA detail normals); False renders coarse shading. ``track``,
    ``flame``, ``deca``, ``detail_assets`` default to the cached track and the registry's (gated) weights.
    ``segmenter``: "auto" uses FSGAN's U-Net when ``fsgan_segmentation`` resolves, else the mesh coverage;
    None forces the mesh coverage; a module is used as the segmentation network. ``mask_input_range``: see
    :mod:`spfem_cli.face.mask`.
    """
    from models.deca import DECA
    from models.flame import FLAME
    from spfem_cli.backends.ned.reconstruct import Reconstruction, reconstruct_video
    from spfem_cli.backends.ned.render3d import ALIGNED, render_tracked_frames
    from spfem_cli.device import pick_device
    from spfem_cli.face.align import apply_affine, warp_to_aligned
    from spfem_cli.face.mask import mesh_or_segmentation, resolve_segmenter
    from spfem_cli.face.preprocess import cached_track
    from spfem_cli.video import iter_chunks

    video, out = Path(video), Path(out)
    dev = pick_device(device)
    track = track if track is not None else cached_track(video, tracker=tracker, progress=progress)
    deca = (deca or DECA.from_registry()).to(dev).eval()
    recon = Reconstruction.load(reconstruct_video(video, track, out / "cache", dev, deca=deca, progress=progress))
    flame = (flame or FLAME.from_registry()).to(dev).eval()
    if detail:
        from models.detail import DetailAssets

        detail_assets = (detail_assets or DetailAssets.from_registry()).to(dev)
    segmenter = resolve_segmenter(segmenter, dev)
    n = len(recon)
    ok_all = recon.valid[:n] & track.valid[:n] & np.isfinite(track.transforms[:n]).all(axis=(1, 2))
    total = int(ok_all.sum())
    out.mkdir(parents=True, exist_ok=True)
    shapes = {"frames": (total, ALIGNED, ALIGNED, 3), "nmfc": (total, ALIGNED, ALIGNED, 3),
              "gaze": (total, ALIGNED, ALIGNED, 3), "shape": (total, ALIGNED, ALIGNED, 3),
              "mask": (total, ALIGNED, ALIGNED), "mouth": (total, 2)}
    arrays = {k: np.lib.format.open_memmap(out / f"{k}.npy", mode="w+", dtype=np.int64 if k == "mouth" else np.uint8,
                                           shape=shapes[k]) for k in ACTOR_ARRAYS}
    row = segmented = 0
    for chunk in iter_chunks(video, chunk_size, max_frames=n):
        idx = np.arange(chunk.start, chunk.start + len(chunk.frames))
        keep = ok_all[idx]
        sel = idx[keep]
        if not len(sel):
            continue
        imgs = render_tracked_frames(sel, track, recon, flame, deca=deca if detail else None,
                                     detail_assets=detail_assets if detail else None)
        k = len(sel)
        aligned = np.stack([warp_to_aligned(f, track.transforms[i]) for f, i in zip(chunk.frames[keep], sel, strict=True)])
        arrays["frames"][row:row + k] = aligned
        arrays["nmfc"][row:row + k], arrays["gaze"][row:row + k], arrays["shape"][row:row + k], mesh_mask = imgs.to_uint8()
        mask, seg_ok = mesh_or_segmentation(aligned, mesh_mask, segmenter, dev,
                                            input_range=mask_input_range)
        arrays["mask"][row:row + k] = mask
        segmented += int(seg_ok.sum())
        mouth = [np.median(apply_affine(track.transforms[i], track.landmarks[i][48:68]), axis=0) for i in sel]
        arrays["mouth"][row:row + k] = np.round(np.stack(mouth)).astype(np.int64)
        row += k
    for arr in arrays.values():
        arr.flush()
    mask_info = {"mask": "FLAME mesh coverage"}
    if segmenter is not None:
        mask_info = {"mask": "FSGAN segmentation", "mask_input_range": mask_input_range,
                     "mask_mesh_fallback_frames": total - segmented}
    (out / "actor.json").write_text(json.dumps({"frames": total, "size": [ALIGNED, ALIGNED], "video": str(video),
                                                "tracker": tracker, **mask_info,
                                                "shape": "detailed" if detail else "coarse"}))
    return out
