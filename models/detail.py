"""DECA's detailed-shape normals: the UV displacement map applied on the coarse FLAME surface.

DECA (``displacement2normal``): rasterise the coarse vertices and normals into the 256² UV map, add
``(D_detail + fixed_displacement) · normal`` (D_detail masked by ``uv_face_eye_mask``), take normals of the
resulting dense UV-grid mesh, keep coarse normals outside the mask; images sample that map through the per-pixel
UV coordinates (``grid_sample``, align_corners=False). UV pixels: x = u·S − ½, y = (1 − v)·S − ½ (v points up).
Assets (gated, DECA's data/): ``head_template.obj`` (UVs), ``uv_face_eye_mask.png``, ``fixed_displacement_256.npy``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.raster import Fragments, interpolate, rasterize, vertex_normals

UV_SIZE = 256


@dataclass
class DetailAssets:
    """uvcoords T×2 in [0, 1] (v up) · uvfaces F×3 (into uvcoords, same face order as FLAME's faces) ·
    face_eye_mask S×S in [0, 1] · fixed_displacement S×S."""

    uvcoords: torch.Tensor
    uvfaces: torch.Tensor
    face_eye_mask: torch.Tensor
    fixed_displacement: torch.Tensor

    @classmethod
    def from_files(cls, obj_path: Path | str, mask_path: Path | str, displacement_path: Path | str,
                   size: int = UV_SIZE) -> DetailAssets:
        import cv2

        uv, uvfaces = read_obj_uvs(obj_path)
        mask = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        if mask is None:
            raise ValueError(f"cannot read {mask_path}")
        mask = mask[..., 2] if mask.ndim == 3 else mask  # DECA reads RGB channel 0; OpenCV gives BGR
        mask = torch.from_numpy(mask.astype(np.float32) / 255.0)[None, None]
        mask = F.interpolate(mask, [size, size])[0, 0]  # DECA's default (nearest) resize
        disp = torch.from_numpy(np.load(displacement_path, allow_pickle=False).astype(np.float32))
        return cls(torch.from_numpy(uv).float(), torch.from_numpy(uvfaces).long(), mask, disp)

    @classmethod
    def from_registry(cls) -> DetailAssets:
        from spfem_cli.weights import resolve

        return cls.from_files(resolve("deca_head_template"), resolve("deca_uv_face_eye_mask"),
                              resolve("deca_fixed_displacement"))

    def to(self, device: torch.device | str) -> DetailAssets:
        return DetailAssets(*(t.to(device) for t in (self.uvcoords, self.uvfaces, self.face_eye_mask,
                                                      self.fixed_displacement)))


def read_obj_uvs(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """``vt`` coordinates and the per-face ``vt`` indices (0-based) of a triangle OBJ."""
    uvs, uvfaces = [], []
    with open(path) as fh:
        for line in fh:
            if line.startswith("vt "):
                uvs.append([float(v) for v in line.split()[1:3]])
            elif line.startswith("f "):
                corners = line.split()[1:]
                if len(corners) != 3 or any(c.count("/") < 1 for c in corners):
                    raise ValueError(f"{path}: expected triangles with v/vt indices, got {line.strip()!r}")
                uvfaces.append([int(c.split("/")[1]) - 1 for c in corners])
    return np.asarray(uvs, np.float64), np.asarray(uvfaces, np.int64)


def uv_pixels(uvcoords: torch.Tensor, size: int = UV_SIZE) -> torch.Tensor:
    """UV coordinates → UV-image pixel coordinates with a constant depth (T×3)."""
    x = uvcoords[:, 0] * size - 0.5
    y = (1 - uvcoords[:, 1]) * size - 0.5
    return torch.stack([x, y, torch.zeros_like(x)], dim=-1)


def grid_triangles(h: int, w: int, margin_x: int = 2, margin_y: int = 5) -> torch.Tensor:
    """DECA's ``generate_triangles``: two triangles per UV-grid quad inside the margins, corner order (0, 2, 1)."""
    xs, ys = torch.meshgrid(torch.arange(margin_x, w - 1 - margin_x), torch.arange(margin_y, h - 1 - margin_y),
                            indexing="ij")
    xs, ys = xs.reshape(-1), ys.reshape(-1)
    t0 = torch.stack([ys * w + xs, (ys + 1) * w + xs, ys * w + xs + 1], -1)
    t1 = torch.stack([ys * w + xs + 1, (ys + 1) * w + xs, (ys + 1) * w + xs + 1], -1)
    return torch.stack([t0, t1], 1).reshape(-1, 3)


def world_to_uv(attrs: torch.Tensor, faces: torch.Tensor, uv_frags: Fragments) -> torch.Tensor:
    """Per-vertex attributes B×V×C → UV maps B×C×S×S (DECA ``world2uv``)."""
    return interpolate(uv_frags, faces, attrs)


def detail_normal_map(vertices: torch.Tensor, faces: torch.Tensor, displacement: torch.Tensor,
                      assets: DetailAssets) -> torch.Tensor:
    """Detail normals in UV space, B×3×S×S, from coarse vertices B×V×3 and D_detail output B×1×S×S."""
    batch = vertices.shape[0]
    size = assets.face_eye_mask.shape[-1]
    uv_frags = rasterize(uv_pixels(assets.uvcoords, size)[None].to(vertices), assets.uvfaces, size)
    uv_frags = Fragments(*(t.expand(batch, *t.shape[1:]) for t in (uv_frags.face, uv_frags.bary, uv_frags.zbuf)))
    coarse_normals = vertex_normals(vertices, faces)
    uv_verts = world_to_uv(vertices, faces, uv_frags)
    uv_normals = world_to_uv(coarse_normals, faces, uv_frags)
    mask = assets.face_eye_mask.to(vertices)[None, None]
    disp = displacement * mask + assets.fixed_displacement.to(vertices)[None, None]
    detail_verts = uv_verts + disp * uv_normals
    dense = detail_verts.permute(0, 2, 3, 1).reshape(batch, -1, 3)
    dense_normals = vertex_normals(dense, grid_triangles(size, size).to(vertices.device))
    dense_normals = dense_normals.reshape(batch, size, size, 3).permute(0, 3, 1, 2)
    return dense_normals * mask + uv_normals * (1 - mask)


def sample_uv_map(uv_map: torch.Tensor, frags: Fragments, uvcoords: torch.Tensor, uvfaces: torch.Tensor) -> torch.Tensor:
    """Look a UV map (B×C×S×S) up at every rendered pixel's UV coordinate → B×C×H×W (0 off the mesh)."""
    uv = interpolate(frags, uvfaces, uvcoords.to(uv_map))  # B×2×H×W
    grid = torch.stack([uv[:, 0] * 2 - 1, (1 - uv[:, 1]) * 2 - 1], dim=-1)
    out = F.grid_sample(uv_map, grid, mode="bilinear", align_corners=False)
    return out * frags.mask[:, None].to(out)
