"""Batched z-buffer triangle rasteriser in plain torch (no pytorch3d: it has no CPU wheels for current torch).

Why this shape: NED needs NMFC / shading images of a FLAME mesh (5023 vertices, 9976 triangles) at 256²
for every frame, on CPU and GPU. Instead of a Python loop over triangles, every triangle is expanded into
the pixel centres of its bounding box (``repeat_interleave``), tested with edge functions, and the z-buffer
is a ``scatter_reduce(amin)`` over flat pixel indices. Triangles are processed in chunks so that the number
of (triangle, pixel) candidates per chunk stays bounded; the loop runs over chunks, not triangles.

Conventions (the same in :func:`rasterize` and the reference in the tests):
- vertex ``x, y`` are pixel coordinates, pixel ``(row i, col j)`` has its centre at ``(x=j, y=i)``
  (OpenCV's convention, so cv2 affine matrices apply unchanged);
- ``z`` is depth: the **smallest** z wins; ties go to the lowest triangle index;
- a pixel centre is inside when all three barycentric coordinates are ``>= 0`` (edges inclusive);
- degenerate (zero-area) triangles are never drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DEFAULT_CANDIDATES_PER_CHUNK = 1 << 22


@dataclass
class Fragments:
    """Per-pixel rasteriser output.

    face: B×H×W long, triangle index or -1 for background.
    bary: B×H×W×3 barycentric weights of the winning triangle (0 on background).
    zbuf: B×H×W depth of the winning surface (+inf on background).
    """

    face: torch.Tensor
    bary: torch.Tensor
    zbuf: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """B×H×W bool coverage."""
        return self.face >= 0


def _edge_coefficients(tris: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per triangle (N×3×3) the plane coefficients of its barycentric weights, N×12 = [a0..2, b0..2, c0..2, z0..2],
    so that ``w_i = a_i·x + b_i·y + c_i``; and the signed area (0 = degenerate)."""
    x, y, z = tris[..., 0], tris[..., 1], tris[..., 2]
    x0, x1, x2 = x.unbind(-1)
    y0, y1, y2 = y.unbind(-1)
    area = (x1 - x0) * (y2 - y0) - (x2 - x0) * (y1 - y0)
    inv = torch.where(area != 0, 1.0 / torch.where(area != 0, area, torch.ones_like(area)), torch.zeros_like(area))
    a = torch.stack([y1 - y2, y2 - y0, y0 - y1], -1)
    b = torch.stack([x2 - x1, x0 - x2, x1 - x0], -1)
    c = torch.stack([x1 * y2 - x2 * y1, x2 * y0 - x0 * y2, x0 * y1 - x1 * y0], -1)
    coef = torch.cat([a * inv[..., None], b * inv[..., None], c * inv[..., None], z], dim=-1)
    return coef.contiguous(), area


def _bary(coef: torch.Tensor, px: torch.Tensor, py: torch.Tensor) -> torch.Tensor:
    """Barycentric weights N×3 of points (px, py) from gathered coefficients N×12."""
    return coef[:, 0:3] * px[:, None] + coef[:, 3:6] * py[:, None] + coef[:, 6:9]


def rasterize(verts: torch.Tensor, faces: torch.Tensor, image_size: tuple[int, int] | int,
              *, max_candidates: int = DEFAULT_CANDIDATES_PER_CHUNK) -> Fragments:
    """Rasterise B meshes sharing one topology.

    verts: B×V×3 (x, y in pixels, z depth, smaller = nearer); faces: F×3 long.
    Returns :class:`Fragments`. Computation runs in ``verts.dtype`` on ``verts.device``.
    """
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    height, width = image_size
    batch = verts.shape[0]
    device, dtype = verts.device, verts.dtype
    n_pix = batch * height * width
    faces = faces.to(device=device, dtype=torch.long)
    n_faces = faces.shape[0]

    tris = verts[:, faces].reshape(-1, 3, 3)  # (B*F)×3×3
    coef, area = _edge_coefficients(tris)
    xy = tris[..., :2]
    lo = torch.ceil(xy.amin(dim=1)).clamp_min(0)
    hi = torch.floor(xy.amax(dim=1))
    x0 = lo[:, 0].long()
    y0 = lo[:, 1].long()
    bw = (hi[:, 0].clamp(max=width - 1).long() - x0 + 1).clamp_min(0)
    bh = (hi[:, 1].clamp(max=height - 1).long() - y0 + 1).clamp_min(0)
    drawable = torch.isfinite(tris).all(dim=2).all(dim=1) & (area != 0)
    counts = torch.where(drawable, bw * bh, torch.zeros_like(bw))

    best_z = torch.full((n_pix,), float("inf"), device=device, dtype=dtype)
    best_face = torch.full((n_pix,), -1, device=device, dtype=torch.long)
    # chunk boundaries over the flattened (batch, face) list so each chunk has <= max_candidates pairs
    csum = torch.cumsum(counts, 0)
    total = int(csum[-1]) if csum.numel() else 0
    starts = [0]
    if total > max_candidates:
        cuts = torch.searchsorted(csum, torch.arange(max_candidates, total, max_candidates, device=csum.device))
        starts += sorted({int(c) for c in cuts.tolist() if int(c) > 0})
    starts.append(counts.numel())
    for a, b in zip(starts[:-1], starts[1:], strict=False):
        if b > a:
            _rasterize_chunk(a, b, counts, coef, x0, y0, bw, n_faces, height, width, best_z, best_face)

    covered = best_face >= 0
    bary = torch.zeros(n_pix, 3, device=device, dtype=dtype)
    pix = torch.nonzero(covered).squeeze(1)
    if pix.numel():
        b_idx = pix // (height * width)
        rem = pix % (height * width)
        bary[pix] = _bary(coef[b_idx * n_faces + best_face[pix]], (rem % width).to(dtype), (rem // width).to(dtype))
    return Fragments(face=best_face.view(batch, height, width), bary=bary.view(batch, height, width, 3),
                     zbuf=best_z.view(batch, height, width))


def _rasterize_chunk(a: int, b: int, counts: torch.Tensor, coef: torch.Tensor, x0: torch.Tensor, y0: torch.Tensor,
                     bw: torch.Tensor, n_faces: int, height: int, width: int,
                     best_z: torch.Tensor, best_face: torch.Tensor) -> None:
    """Depth-test all (triangle, pixel) candidates of flattened triangles a..b into the running z-buffer."""
    device, dtype = coef.device, coef.dtype
    cnt = counts[a:b]
    n = int(cnt.sum())
    if n == 0:
        return
    rel = torch.repeat_interleave(torch.arange(b - a, device=device), cnt)  # triangle (within chunk) per candidate
    k = torch.arange(n, device=device) - (torch.cumsum(cnt, 0) - cnt)[rel]
    local = rel + a
    w = bw[local]
    px = x0[local] + k % w
    py = y0[local] + k // w
    g = coef[local]
    bary = _bary(g, px.to(dtype), py.to(dtype))
    inside = bary.amin(dim=1) >= 0
    idx = torch.nonzero(inside).squeeze(1)
    if idx.numel() == 0:
        return
    z = (bary[idx] * g[idx, 9:12]).sum(1)
    local = local[idx]
    face_idx = local % n_faces
    pix = ((local // n_faces) * height + py[idx]) * width + px[idx]
    chunk_z = torch.full_like(best_z, float("inf"))
    chunk_z.scatter_reduce_(0, pix, z, reduce="amin")
    win = z == chunk_z[pix]
    chunk_face = torch.full_like(best_face, torch.iinfo(torch.long).max)
    chunk_face.scatter_reduce_(0, pix[win], face_idx[win], reduce="amin")
    better = chunk_z < best_z  # strict: an earlier chunk (lower face index) keeps ties
    best_z[better] = chunk_z[better]
    best_face[better] = chunk_face[better]


def interpolate(fragments: Fragments, faces: torch.Tensor, attrs: torch.Tensor,
                background: float = 0.0) -> torch.Tensor:
    """Barycentric interpolation of per-vertex attributes.

    attrs: B×V×C (or V×C shared); returns B×C×H×W, ``background`` where nothing is drawn.
    """
    batch, height, width = fragments.face.shape
    if attrs.dim() == 2:
        attrs = attrs.unsqueeze(0).expand(batch, -1, -1)
    faces = faces.to(device=attrs.device, dtype=torch.long)
    face_attrs = attrs[:, faces]  # B×F×3×C
    idx = fragments.face.clamp_min(0).reshape(batch, -1)
    gathered = torch.gather(face_attrs, 1, idx[..., None, None].expand(-1, -1, 3, attrs.shape[-1]))
    out = (gathered * fragments.bary.reshape(batch, -1, 3, 1).to(attrs.dtype)).sum(2)
    out = torch.where(fragments.mask.reshape(batch, -1, 1), out, torch.full_like(out, background))
    return out.reshape(batch, height, width, -1).permute(0, 3, 1, 2)


def orthographic(verts: torch.Tensor, cam: torch.Tensor) -> torch.Tensor:
    """DECA's orthographic camera: cam = (s, tx, ty); returns B×V×3 in [-1, 1] image coordinates.

    x = s·(X + tx), y = −s·(Y + ty) (image y points down), z = −s·Z (FLAME +Z faces the camera, so
    the nearest point gets the smallest z, as :func:`rasterize` expects).
    """
    s = cam[:, None, 0:1]
    out = torch.cat([verts[..., :2] + cam[:, None, 1:3], verts[..., 2:3]], dim=-1) * s
    return out * out.new_tensor([1.0, -1.0, -1.0])


def ndc_to_pixels(points: torch.Tensor, size: int) -> torch.Tensor:
    """[-1, 1] image coordinates to pixel coordinates of a size×size crop (x, y only; z kept)."""
    xy = (points[..., :2] + 1.0) * (size / 2.0)
    return torch.cat([xy, points[..., 2:]], dim=-1)


def apply_affine(points: torch.Tensor, mats: torch.Tensor) -> torch.Tensor:
    """Apply B×2×3 similarity matrices to B×N×3 pixel points; z is scaled by the matrix scale."""
    xy = points[..., :2] @ mats[:, :, :2].transpose(1, 2) + mats[:, None, :, 2]
    scale = torch.sqrt(torch.det(mats[:, :, :2]).abs()).view(-1, 1, 1)
    return torch.cat([xy, points[..., 2:] * scale], dim=-1)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals, B×V×3 (used for shading images)."""
    faces = faces.to(device=verts.device, dtype=torch.long)
    v0, v1, v2 = verts[:, faces[:, 0]], verts[:, faces[:, 1]], verts[:, faces[:, 2]]
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)
    normals = torch.zeros_like(verts)
    for corner in range(3):
        normals.index_add_(1, faces[:, corner], fn)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
