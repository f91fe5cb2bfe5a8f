"""DECA detail path (UV displacement → detail normals → shape image) on the synthetic FLAME with synthetic UVs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fakes import write_detail_assets

from models.detail import DetailAssets, grid_triangles, read_obj_uvs
from models.flame import FLAME, synthetic_flame
from spfem_cli.backends.ned.render3d import crop_to_aligned, nmfc_colours, render_conditioning
from spfem_cli.face.align import TEMPLATE_68


@pytest.fixture(scope="module")
def flame() -> FLAME:
    return FLAME(*synthetic_flame(TEMPLATE_68, grid=41))


def _assets(flame: FLAME, tmp: Path, mask_value: int = 255) -> DetailAssets:
    paths = write_detail_assets(tmp, flame.v_template.numpy(), flame.faces.numpy(), mask_value=mask_value)
    return DetailAssets.from_files(paths["deca_head_template"], paths["deca_uv_face_eye_mask"],
                                   paths["deca_fixed_displacement"])


def _render(flame: FLAME, displacement: torch.Tensor | None, assets: DetailAssets | None):
    out = flame(torch.zeros(1, 100), torch.zeros(1, 50), torch.tensor([[0.0, 0.2, 0.0, 0.1, 0.0, 0.0]]))
    mats = torch.from_numpy(crop_to_aligned(np.array([[[1.0, 0, 0], [0, 1.0, 0]]]),
                                            np.array([[[256 / 224, 0, 0], [0, 256 / 224, 0]]]))).float()
    eyes = TEMPLATE_68[None, 36:48]
    return render_conditioning(out.vertices, torch.tensor([[7.0, 0.0, 0.0]]), flame.faces,
                               nmfc_colours(flame.v_template), mats, eyes, eyes[:, [0, 6]],
                               displacement=displacement, detail_assets=assets)


def test_obj_uv_reader(tmp_path: Path, flame: FLAME) -> None:
    _assets(flame, tmp_path)
    uv, uvfaces = read_obj_uvs(tmp_path / "head_template.obj")
    assert uv.shape == (flame.v_template.shape[0], 2)
    np.testing.assert_array_equal(uvfaces, flame.faces.numpy())


def test_zero_displacement_detail_normals_reproduce_the_coarse_shading(tmp_path: Path, flame: FLAME) -> None:
    """The UV round trip (rasterise into UV, dense-grid normals, grid_sample back) must agree with coarse normals."""
    assets = _assets(flame, tmp_path)
    coarse = _render(flame, None, None)
    detail = _render(flame, torch.zeros(1, 1, 256, 256), assets)
    m = coarse.mask[0, 0] > 0
    diff = (coarse.shape - detail.shape).abs()[0, 0][m]
    assert torch.quantile(diff, 0.9) < 0.03 and diff.mean() < 0.02


def test_displacement_changes_shading_only_inside_the_mask(tmp_path: Path, flame: FLAME) -> None:
    assets = _assets(flame, tmp_path)
    gen = torch.Generator().manual_seed(0)
    bumps = torch.nn.functional.interpolate(torch.rand(1, 1, 32, 32, generator=gen), size=(256, 256),
                                            mode="bicubic") * 0.01
    flat = _render(flame, torch.zeros(1, 1, 256, 256), assets)
    bumpy = _render(flame, bumps, assets)
    m = flat.mask[0, 0] > 0
    assert (flat.shape - bumpy.shape).abs()[0, 0][m].mean() > 0.01
    no_mask = _assets(flame, tmp_path, mask_value=0)
    assert torch.allclose(_render(flame, bumps, no_mask).shape, _render(flame, None, None).shape, atol=0.05)


def test_grid_triangles_follow_deca_layout() -> None:
    tris = grid_triangles(16, 16)
    assert tris.shape == (2 * (16 - 1 - 4) * (16 - 1 - 10), 3)
    assert tris[0].tolist() == [5 * 16 + 2, 6 * 16 + 2, 5 * 16 + 3]  # [y*w+x, (y+1)*w+x, y*w+x+1] for x=2, y=5


def test_missing_detail_assets_say_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from spfem_cli.weights import WeightsError

    monkeypatch.setenv("SPFEM_HOME", str(tmp_path))
    for name in ("DECA_HEAD_TEMPLATE", "DECA_UV_FACE_EYE_MASK", "DECA_FIXED_DISPLACEMENT"):
        monkeypatch.delenv(f"SPFEM_WEIGHT_{name}", raising=False)
    with pytest.raises(WeightsError, match="head_template"):
        DetailAssets.from_registry()
