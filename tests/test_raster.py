"""Rasteriser against an independent slow reference (per pixel, per triangle, solve for barycentrics)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.raster import apply_affine, interpolate, orthographic, rasterize


def _reference(verts: np.ndarray, faces: np.ndarray, height: int, width: int):
    """Per-pixel point-in-triangle + depth test, written independently of models.raster (linear solve)."""
    face_map = np.full((height, width), -1, dtype=np.int64)
    zbuf = np.full((height, width), np.inf)
    bary_map = np.zeros((height, width, 3))
    for i in range(height):
        for j in range(width):
            for f, (a, b, c) in enumerate(faces):
                pa, pb, pc = verts[a], verts[b], verts[c]
                m = np.array([[pb[0] - pa[0], pc[0] - pa[0]], [pb[1] - pa[1], pc[1] - pa[1]]])
                if abs(np.linalg.det(m)) < 1e-12:
                    continue
                u, v = np.linalg.solve(m, np.array([j - pa[0], i - pa[1]]))
                w = np.array([1 - u - v, u, v])
                if (w < 0).any():
                    continue
                z = w @ np.array([pa[2], pb[2], pc[2]])
                if z < zbuf[i, j]:  # strict: lowest face index keeps a tie
                    zbuf[i, j], face_map[i, j], bary_map[i, j] = z, f, w
    return face_map, zbuf, bary_map


def _random_mesh(rng: np.random.Generator, n_verts: int, n_faces: int, height: int, width: int) -> tuple:
    verts = np.stack([rng.uniform(-4, width + 4, n_verts), rng.uniform(-4, height + 4, n_verts),
                      rng.uniform(-1, 1, n_verts)], axis=1)
    faces = np.stack([rng.choice(n_verts, 3, replace=False) for _ in range(n_faces)])
    # a few small triangles too, so the bounding-box path with 0-1 pixels is exercised
    centres = rng.uniform(0, min(height, width), (4, 1, 2))
    small = np.concatenate([centres + rng.uniform(-1.5, 1.5, (4, 3, 2)), rng.uniform(-1, 1, (4, 3, 1))], axis=2)
    verts = np.concatenate([verts, small.reshape(-1, 3)])
    faces = np.concatenate([faces, n_verts + np.arange(12).reshape(4, 3)])
    return verts, faces


@pytest.mark.parametrize("max_candidates", [1 << 22, 37])
def test_rasterize_matches_slow_reference_on_random_meshes(max_candidates: int) -> None:
    rng = np.random.default_rng(0)
    height, width = 19, 23
    meshes = [_random_mesh(rng, 12, 14, height, width) for _ in range(2)]
    faces = meshes[0][1]
    verts = np.stack([meshes[0][0], meshes[1][0]])
    frags = rasterize(torch.from_numpy(verts), torch.from_numpy(faces), (height, width), max_candidates=max_candidates)
    colours = rng.uniform(0, 1, (2, verts.shape[1], 4))
    img = interpolate(frags, torch.from_numpy(faces), torch.from_numpy(colours)).numpy()
    for b in range(2):
        ref_face, ref_z, ref_bary = _reference(verts[b], faces, height, width)
        assert (ref_face >= 0).sum() > 50  # the meshes really cover the image
        np.testing.assert_array_equal(frags.face[b].numpy(), ref_face)  # coverage and depth order
        cov = ref_face >= 0
        np.testing.assert_allclose(frags.zbuf[b].numpy()[cov], ref_z[cov], atol=1e-9)
        assert np.isinf(frags.zbuf[b].numpy()[~cov]).all()
        ref_img = (colours[b][faces[ref_face.clip(0)]] * ref_bary[..., None]).sum(2)
        assert np.abs(img[b].transpose(1, 2, 0)[cov] - ref_img[cov]).max() < 1e-4
        assert (img[b].transpose(1, 2, 0)[~cov] == 0).all()


def test_rasterize_float32_agrees_with_reference_attributes() -> None:
    rng = np.random.default_rng(1)
    verts, faces = _random_mesh(rng, 10, 10, 16, 16)
    frags = rasterize(torch.from_numpy(verts).float()[None], torch.from_numpy(faces), 16)
    ref_face, _, ref_bary = _reference(verts, faces, 16, 16)
    agree = frags.face[0].numpy() == ref_face
    assert agree.mean() > 0.99
    attrs = rng.uniform(0, 1, (verts.shape[0], 3))
    img = interpolate(frags, torch.from_numpy(faces), torch.from_numpy(attrs).float()).numpy()[0].transpose(1, 2, 0)
    ref_img = (attrs[faces[ref_face.clip(0)]] * ref_bary[..., None]).sum(2)
    sel = agree & (ref_face >= 0)
    assert np.abs(img[sel] - ref_img[sel]).max() < 1e-4


def test_nearer_triangle_occludes_farther_one() -> None:
    square = torch.tensor([[2.0, 2.0], [12.0, 2.0], [12.0, 12.0], [2.0, 12.0]])
    far = torch.cat([square, torch.full((4, 1), 5.0)], 1)
    near = torch.cat([square + 3, torch.full((4, 1), -5.0)], 1)
    verts = torch.cat([far, near])[None]
    faces = torch.tensor([[0, 1, 2], [0, 2, 3], [4, 5, 6], [4, 6, 7]])
    frags = rasterize(verts, faces, 16)
    assert frags.face[0, 8, 8] >= 2 and frags.face[0, 3, 3] < 2 and frags.face[0, 0, 0] == -1


def test_orthographic_and_affine_keep_depth_order() -> None:
    verts = torch.tensor([[[0.0, 0.0, 0.1], [0.0, 0.0, -0.1]]])
    proj = orthographic(verts, torch.tensor([[2.0, 0.1, 0.0]]))
    assert proj[0, 0, 2] < proj[0, 1, 2]  # +Z (towards the camera) is nearer
    assert torch.allclose(proj[0, :, 0], torch.tensor([0.2, 0.2]))
    mats = torch.tensor([[[2.0, 0.0, 5.0], [0.0, 2.0, 1.0]]])
    out = apply_affine(proj, mats)
    assert torch.allclose(out[0, 0, :2], torch.tensor([5.4, 1.0])) and torch.allclose(out[..., 2], proj[..., 2] * 2)
