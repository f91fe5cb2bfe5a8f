"""NED's conditioning images from DECA/FLAME geometry, drawn directly in the aligned 256² frame.

NED's renderer is conditioned on three images per frame (reference-facts §1 step 6): the NMFC (vertex
colours = FLAME template coordinates min-max normalised per axis to [0, 1]), the (detailed) shape shading
image, and the eye-gaze image (filled disks at the pupils). NED renders the first two in DECA's 224 crop and
warps them; here the projected vertices are mapped through crop⁻¹ and the frame's alignment similarity and
rasterised once in the aligned frame, which is the same geometry without a second resampling.

All images: B×3×256×256 float in [0, 1], RGB, background 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from models.raster import Fragments, apply_affine, interpolate, ndc_to_pixels, orthographic, rasterize, vertex_normals

ALIGNED = 256
# DECA's SRenderY.render_shape defaults: 5 directional lights of intensity 1.7, grey albedo 180/255, and a
# pixel counts as face only where the surface normal's camera-space z is below 0.15 (facing the camera).
SHAPE_LIGHT_DIRS = torch.tensor([[-1.0, 1, 1], [1, 1, 1], [-1, -1, 1], [1, -1, 1], [0, 0, 1]])
SHAPE_LIGHT_INTENSITY = 1.7
SHAPE_ALBEDO = 180.0 / 255.0
FACING_Z = 0.15


def nmfc_colours(v_template: torch.Tensor) -> torch.Tensor:
    """Per-vertex NMFC colours: template coordinates min-max normalised per axis to [0, 1] (V×3)."""
    lo = v_template.amin(0, keepdim=True)
    hi = v_template.amax(0, keepdim=True)
    return (v_template - lo) / (hi - lo).clamp_min(1e-12)


def crop_to_aligned(crop_mats: np.ndarray, align_mats: np.ndarray) -> np.ndarray:
    """Compose per-frame maps: crop pixels → image pixels (crop⁻¹) → aligned pixels. N×2×3."""
    out = np.empty_like(np.asarray(align_mats, np.float64))
    for i, (c, a) in enumerate(zip(crop_mats, align_mats, strict=True)):
        c3 = np.vstack([c, [0, 0, 1]])
        a3 = np.vstack([a, [0, 0, 1]])
        out[i] = (a3 @ np.linalg.inv(c3))[:2]
    return out


def project(vertices: torch.Tensor, cam: torch.Tensor, crop_to_frame: torch.Tensor, crop_size: int = 224) -> torch.Tensor:
    """FLAME vertices (B×V×3) → pixels of the target frame via DECA's orthographic camera and crop maps (B×2×3)."""
    crop_px = ndc_to_pixels(orthographic(vertices, cam), crop_size)
    return apply_affine(crop_px, crop_to_frame.to(vertices.dtype))


def render_nmfc(frags: Fragments, faces: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """NMFC image B×3×H×W from fragments and per-vertex NMFC colours (V×3)."""
    return interpolate(frags, faces, colours)


def shade(normals: torch.Tensor) -> torch.Tensor:
    """DECA's ``add_directionlight`` with the fixed shape lights: normals (..., 3) → RGB shading (..., 3)."""
    dirs = F.normalize(SHAPE_LIGHT_DIRS.to(normals), dim=-1)
    lambert = (normals.unsqueeze(-2) * dirs).sum(-1).clamp(0, 1)  # (..., 5)
    return (lambert.mean(-1) * SHAPE_LIGHT_INTENSITY).unsqueeze(-1).expand(*normals.shape[:-1], 3)


def render_shape(frags: Fragments, faces: torch.Tensor, vertices: torch.Tensor,
                 normal_images: torch.Tensor | None = None) -> torch.Tensor:
    """Grey shaded shape B×3×H×W (DECA ``render_shape``); ``normal_images`` B×3×H×W replaces the coarse normals
    with detail normals where given."""
    normals = vertex_normals(vertices, faces)
    coarse = interpolate(frags, faces, normals)
    facing = (coarse[:, 2:3] > -FACING_Z).to(coarse.dtype) * frags.mask[:, None].to(coarse.dtype)
    n = coarse if normal_images is None else normal_images
    n = F.normalize(n, dim=1, eps=1e-12)
    shading = shade(n.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    return (SHAPE_ALBEDO * shading * facing).clamp(0, 1)


def eye_gaze_images(eye_landmarks: np.ndarray, pupils: np.ndarray, size: int = ALIGNED) -> np.ndarray:
    """NED's eye image: a filled red disk at each pupil, radius from the eye contour.

    eye_landmarks N×12×2 (iBUG 36–47, aligned pixels), pupils N×2×2 (right-eye pupil first, as iBUG 36–41
    precede 42–47). As NED ``create_eyes_image``: points are truncated to int, radius =
    int((|p1−p4| + |p2−p5|) / 4) per eye, pixels (x+j, y+i) with i, j ∈ [−r, r) and √(i²+j²) < r, clipped to
    the image. Returns N×H×W×3 uint8.
    """
    n = len(eye_landmarks)
    out = np.zeros((n, size, size, 3), np.uint8)
    for k in range(n):  # per frame: two disks, vectorised over their pixels
        if not (np.isfinite(eye_landmarks[k]).all() and np.isfinite(pupils[k]).all()):
            continue
        pts = np.asarray(eye_landmarks[k]).astype(np.int32)
        pup = np.asarray(pupils[k]).astype(np.int32)
        for eye in range(2):
            e = pts[6 * eye:6 * eye + 6]
            r = int((np.linalg.norm(e[1] - e[4]) + np.linalg.norm(e[2] - e[5])) / 4)
            if r <= 0:
                continue
            ii, jj = np.meshgrid(np.arange(-r, r), np.arange(-r, r), indexing="ij")
            inside = np.sqrt(ii ** 2 + jj ** 2) < r
            yy = np.clip(pup[eye, 1] + ii[inside], 0, size - 1)
            xx = np.clip(pup[eye, 0] + jj[inside], 0, size - 1)
            out[k, yy, xx, 0] = 255
    return out


@dataclass
class ConditioningImages:
    """B×3×256×256 each, [0, 1]; mask B×1×256×256 (mesh coverage)."""

    nmfc: torch.Tensor
    shape: torch.Tensor
    eyes: torch.Tensor
    mask: torch.Tensor

    def stacked(self) -> torch.Tensor:
        """NED's per-frame input order: NMFC, eye gaze, shape (B×9×H×W)."""
        return torch.cat([self.nmfc, self.eyes, self.shape], dim=1)

    def to_uint8(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(NMFC, eye gaze, shape) as uint8 B×H×W×3 and the mesh coverage as uint8 B×H×W {0, 1} (actor files)."""
        nmfc, eyes, shape = ((x.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype(np.uint8)
                             for x in (self.nmfc, self.eyes, self.shape))
        return nmfc, eyes, shape, (self.mask[:, 0].cpu().numpy() > 0.5).astype(np.uint8)


def render_conditioning(vertices: torch.Tensor, cam: torch.Tensor, faces: torch.Tensor, colours: torch.Tensor,
                        crop_to_aligned_mats: torch.Tensor, eye_landmarks: np.ndarray, pupils: np.ndarray,
                        *, size: int = ALIGNED, displacement: torch.Tensor | None = None,
                        detail_assets=None) -> ConditioningImages:
    """All three conditioning images for B frames. eye_landmarks / pupils are in aligned pixels.

    With ``displacement`` (DECA D_detail output, B×1×256×256) and ``detail_assets``
    (:class:`models.detail.DetailAssets`) the shape image uses DECA's detail normals; otherwise coarse normals.
    """
    pix = project(vertices, cam, crop_to_aligned_mats)
    frags = rasterize(pix, faces, size)
    normal_images = None
    if displacement is not None and detail_assets is not None:
        from models.detail import detail_normal_map, sample_uv_map

        uv_normals = detail_normal_map(vertices, faces, displacement, detail_assets)
        normal_images = sample_uv_map(uv_normals, frags, detail_assets.uvcoords, detail_assets.uvfaces)
    eyes = torch.from_numpy(eye_gaze_images(eye_landmarks, pupils, size)).permute(0, 3, 1, 2).float() / 255
    return ConditioningImages(nmfc=render_nmfc(frags, faces, colours),
                              shape=render_shape(frags, faces, vertices, normal_images),
                              eyes=eyes.to(vertices.device), mask=frags.mask[:, None].float())


def _to(codes, device):
    """DecaCodes on ``device``."""
    from dataclasses import fields, replace

    return replace(codes, **{f.name: getattr(codes, f.name).to(device) for f in fields(codes)})


@torch.no_grad()
def render_tracked_frames(sel: np.ndarray, track, recon, flame, *, deca=None, detail_assets=None,
                          exp: np.ndarray | None = None, jaw_opening: np.ndarray | None = None) -> ConditioningImages:
    """Conditioning images of the tracked, reconstructed frames ``sel``, each in its aligned 256² frame.

    One path for the 3D debug video, the renderer's training data and the ned edit, so what the renderer is
    trained on and what it is fed are made the same way. ``exp`` (len(sel)×50) and ``jaw_opening`` (len(sel))
    replace the reconstructed expression and jaw (an edit; the detail displacement follows them). The shape
    image uses DECA's detail normals when ``deca`` and ``detail_assets`` are given, else coarse shading.
    Runs on ``flame``'s device.
    """
    from dataclasses import replace

    from spfem_cli.face.align import apply_affine as align_points

    device = flame.v_template.device
    codes = _to(recon.deca_codes(sel), device)
    if exp is not None:
        codes = replace(codes, exp=torch.as_tensor(exp, dtype=torch.float32, device=device))
    if jaw_opening is not None:
        pose = codes.pose.clone()
        pose[:, 3] = torch.as_tensor(jaw_opening, dtype=pose.dtype, device=device)
        codes = replace(codes, pose=pose)
    verts = flame(codes.shape, codes.exp, codes.pose).vertices
    mats = torch.from_numpy(crop_to_aligned(recon.crop_mats[sel], track.transforms[sel])).float().to(device)
    eyes_lm = np.stack([align_points(track.transforms[i], track.landmarks[i][36:48]) for i in sel])
    pupils = np.stack([align_points(track.transforms[i], track.pupils[i]) for i in sel])
    detailed = deca is not None and detail_assets is not None
    return render_conditioning(verts, codes.cam, flame.faces, nmfc_colours(flame.v_template), mats, eyes_lm, pupils,
                               displacement=deca.displacement(codes) if detailed else None,
                               detail_assets=detail_assets if detailed else None)


def _overlay(aligned: np.ndarray, shape_img: np.ndarray, mask: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Shaded mesh blended over the aligned frame where the mesh covers it (uint8 H×W×3)."""
    m = mask[..., None] * alpha
    return (aligned * (1 - m) + shape_img * 255 * m).astype(np.uint8)


def write_3d_debug_video(video, track, reconstruction, out_path, *, flame=None, device: str | torch.device = "auto",
                         chunk_size: int = 16, overwrite: bool = True, detail: bool = True, deca=None,
                         detail_assets=None):
    """Debug video for `spfem preprocess --3d`: aligned frame with the mesh overlaid | NMFC | shape | eye gaze.

    ``track``: FaceTrack (transforms image → aligned, landmarks, pupils); ``reconstruction``: a
    :class:`spfem_cli.backends.ned.reconstruct.Reconstruction` or the path written by ``reconstruct_video``;
    ``flame`` defaults to the gated FLAME files from the registry. With ``detail`` the shape panel uses DECA's
    detail normals (``deca`` and ``detail_assets`` default to the registry's deca_model / head template / UV mask
    / fixed displacement); ``detail=False`` renders coarse shading. Output: 256×1024 H.264 with the source audio.
    """
    from pathlib import Path

    from models.flame import FLAME
    from spfem_cli.backends.ned.reconstruct import Reconstruction
    from spfem_cli.device import pick_device
    from spfem_cli.face.align import warp_to_aligned
    from spfem_cli.video import VideoWriter, iter_chunks, probe

    device = pick_device(device) if isinstance(device, str) else device
    recon = reconstruction if isinstance(reconstruction, Reconstruction) else Reconstruction.load(Path(reconstruction))
    flame = (flame or FLAME.from_registry()).to(device).eval()
    if detail:
        from models.deca import DECA
        from models.detail import DetailAssets

        deca = (deca or DECA.from_registry()).to(device).eval()
        detail_assets = (detail_assets or DetailAssets.from_registry()).to(device)
    n = len(recon)
    info = probe(Path(video))
    with VideoWriter(Path(out_path), info.fps, audio_from=Path(video), overwrite=overwrite) as writer:
        for chunk in iter_chunks(Path(video), chunk_size, max_frames=n):
            idx = np.arange(chunk.start, chunk.start + len(chunk.frames))
            panels = np.zeros((len(idx), ALIGNED, 4 * ALIGNED, 3), np.uint8)
            ok = recon.valid[idx] & np.isfinite(track.transforms[idx]).all(axis=(1, 2))
            for k, i in enumerate(idx):
                if np.isfinite(track.transforms[i]).all():
                    panels[k, :, :ALIGNED] = warp_to_aligned(chunk.frames[k], track.transforms[i])
            sel = idx[ok]
            if len(sel):
                imgs = render_tracked_frames(sel, track, recon, flame, deca=deca if detail else None,
                                             detail_assets=detail_assets if detail else None)
                nmfc = imgs.nmfc.permute(0, 2, 3, 1).cpu().numpy()
                shape_img = imgs.shape.permute(0, 2, 3, 1).cpu().numpy()
                eyes = imgs.eyes.permute(0, 2, 3, 1).cpu().numpy()
                mask = imgs.mask[:, 0].cpu().numpy()
                rows = np.flatnonzero(ok)
                panels[rows, :, :ALIGNED] = np.stack([_overlay(panels[r, :, :ALIGNED], shape_img[j], mask[j])
                                                      for j, r in enumerate(rows)])
                panels[rows, :, ALIGNED:2 * ALIGNED] = (nmfc * 255).astype(np.uint8)
                panels[rows, :, 2 * ALIGNED:3 * ALIGNED] = (shape_img * 255).astype(np.uint8)
                panels[rows, :, 3 * ALIGNED:] = (eyes * 255).astype(np.uint8)
            writer.write(panels)
    return Path(out_path)
