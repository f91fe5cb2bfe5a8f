"""STCCL metric: sampling geometry, InfoNCE, DAAS per row, gradient routing, registration, files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from models.stccl import (
    STCCL,
    STCCLConfig,
    central_range,
    info_nce_rows,
    neighbour_pairs,
    sample_centres,
)


def _small(**kw) -> STCCL:
    torch.manual_seed(0)
    return STCCL(STCCLConfig(arch="r18", input_size=64, **kw))


def _face_batch(b: int = 2, size: int = 64) -> torch.Tensor:
    from skimage.data import astronaut

    img = torch.from_numpy(astronaut()[:256, 128:384]).permute(2, 0, 1).float() / 127.5 - 1
    img = F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return torch.cat([img, img.flip(-1)][:b])


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("size,expected", [(112, (3, 109)), (56, (1, 54)), (28, (1, 27)), (14, (1, 13)), (7, (1, 6))])
def test_central_square_keeps_a_margin(size: int, expected: tuple[int, int]) -> None:
    # paper side H//2 + 0.45H (the reference's margin at 14 is 0 -> neighbours wrap); ours keeps >= 1
    assert central_range(size) == expected


@pytest.mark.parametrize("h,w", [(14, 14), (7, 7), (5, 9)])
def test_neighbours_never_wrap(h: int, w: int) -> None:
    centres = sample_centres(h, w, 1000, torch.Generator().manual_seed(1))
    c, nb = neighbour_pairs(centres, w)
    cy, cx, ny, nx = c // w, c % w, nb // w, nb % w
    assert len(c) == 8 * len(centres)
    assert ((ny - cy).abs() <= 1).all() and ((nx - cx).abs() <= 1).all()   # a wrap would jump a row/column
    assert ((nb >= 0) & (nb < h * w)).all() and not (nb == c).any()
    assert set(zip((ny - cy).tolist()[:8], (nx - cx).tolist()[:8], strict=True)) == {
        (-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)}


def test_centres_are_distinct_and_shared_by_seed() -> None:
    a = sample_centres(14, 14, 16, torch.Generator().manual_seed(5))
    b = sample_centres(14, 14, 16, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and len({tuple(r) for r in a.tolist()}) == 16


# ----------------------------------------------------------------------------- InfoNCE on constructed features
def test_info_nce_identical_is_near_minimum_and_shuffled_is_higher() -> None:
    gen = torch.Generator().manual_seed(0)
    k = F.normalize(torch.randn(2, 64, 32, generator=gen), dim=-1)
    tau = 0.07
    same = info_nce_rows(k, k, tau).mean()
    # lower bound for these keys: every negative similarity at its actual value, positive at 1
    assert same < 0.05
    shuffled = info_nce_rows(k[:, torch.randperm(64, generator=gen)], k, tau).mean()
    assert shuffled > 50 * same and shuffled > math.log(64) / 2


# ----------------------------------------------------------------------------- DAAS
def test_daas_weights_each_row_by_target_disparity_magnitude() -> None:
    model = _small()
    raw = torch.zeros(1, 4, 64)
    raw[0, 1] = 0.5
    raw[0, 2] = 2.0
    raw[0, 3, :8] = 8.0          # same RMS as row 2: 8·√8/√64 = 2√2 ≈ 2.83 > 2
    w = model.daas_weight(raw)[0]
    expected = [2 * torch.sigmoid(torch.tensor(x)) ** 2 for x in (0.0, 0.5, 2.0, 8 * math.sqrt(8) / 8)]
    assert torch.allclose(w, torch.stack(expected))
    assert w[0] == pytest.approx(0.5) and (w.diff() > 0).all() and w.max() < 2
    off = _small(daas=False).daas_weight(raw)
    assert torch.equal(off, torch.ones(1, 4))


def test_daas_is_applied_per_row_before_the_mean() -> None:
    model = _small(mode="spatial").eval()
    x = _face_batch()
    y = x.roll(3, dims=-1)
    terms = model.terms(x, y, generator=torch.Generator().manual_seed(7))
    # recompute stage 1 by hand with the same centres
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        fx, fy = model.features(x)[0], model.features(y)[0]
        idx = neighbour_pairs(sample_centres(*fx.shape[-2:], 32, gen), fx.shape[-1])
        _, q = model.spatial_disparities(fx, 0, idx)
        raw_k, k = model.spatial_disparities(fy, 0, idx)
        rows = info_nce_rows(q, k, 0.07)
        w = model.daas_weight(raw_k)
    assert terms.per_stage["spatial1"] == pytest.approx(float((w * rows).mean()), rel=1e-4)
    assert w.std() > 0.01                                             # not one scalar
    assert float((w * rows).mean()) != pytest.approx(float(w.mean() * rows.mean()), rel=1e-3)
    off = _small(mode="spatial", daas=False).eval()
    off.load_state_dict(model.state_dict())
    plain = off.terms(x, y, generator=torch.Generator().manual_seed(7))
    assert plain.per_stage["spatial1"] == pytest.approx(float(rows.mean()), rel=1e-4)


# ----------------------------------------------------------------------------- the module
def test_identical_pair_scores_lower_than_shuffled_positions() -> None:
    model = _small(mode="spatial").eval()
    x = _face_batch()
    perm = torch.randperm(64 * 64, generator=torch.Generator().manual_seed(3))
    shuffled = x.flatten(2)[:, :, perm].view_as(x)
    with torch.no_grad():
        same = model(x, x.clone(), generator=torch.Generator().manual_seed(1))
        other = model(x, shuffled, generator=torch.Generator().manual_seed(1))
    assert other > same + 1.0


@pytest.mark.parametrize("grad", ["generated", "both"])
def test_gradient_routing(grad: str) -> None:
    model = _small(grad=grad)
    gen = _face_batch().requires_grad_(True)
    tgt = _face_batch().roll(2, dims=-2).requires_grad_(True)
    model(gen, tgt).backward()
    assert gen.grad is not None and gen.grad.abs().sum() > 0
    if grad == "generated":
        assert tgt.grad is None
    else:
        assert tgt.grad is not None and tgt.grad.abs().sum() > 0


def test_every_module_is_registered_and_trained() -> None:
    model = _small(grad="both", share_projection=False, samples=(4, 4, 2, 2))
    names = set(dict(model.named_parameters()))
    assert any(n.startswith("temporal_proj.3") for n in names) and any(n.startswith("spatial_proj.0") for n in names)
    assert set(model.state_dict()) >= names
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(names)
    clip = (torch.rand(2, 3, 3, 48, 48) * 2 - 1)
    model(clip, clip.roll(1, dims=-1)).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_temporal_pairs_and_shapes() -> None:
    assert len(_small().frame_pairs(9)) == 36
    assert _small(temporal_pairs="adjacent").frame_pairs(9).tolist() == [[i, i + 1] for i in range(8)]
    model = _small(mode="temporal")
    with pytest.raises(ValueError, match="clips"):
        model(_face_batch(), _face_batch())
    clip = _face_batch()[:, None].repeat(1, 5, 1, 1, 1)
    clip = clip + 0.1 * torch.arange(5).view(1, 5, 1, 1, 1)   # brightness ramp = temporal change
    terms = model.terms(clip, clip.clone())
    assert terms.spatial == 0 and terms.temporal > 0 and set(terms.per_stage) == {f"temporal{i}" for i in range(1, 5)}


def test_resizes_inside_and_file_roundtrip(tmp_path: Path) -> None:
    model = _small(daas=False).eval()
    big = F.interpolate(_face_batch(), size=(96, 96), mode="bilinear", align_corners=False)
    with torch.no_grad():
        value = model(big, big.flip(-2), generator=torch.Generator().manual_seed(0))
    path = model.save(tmp_path / "stccl_metric.pt")
    again = STCCL.load(path).eval()
    assert again.config.samples == (32, 16, 8, 4) and again.config.arch == "r18"
    with torch.no_grad():
        assert torch.allclose(again(big, big.flip(-2), generator=torch.Generator().manual_seed(0)), value)
    assert STCCL.load(path, grad="both").config.grad == "both"
    torch.save({"x": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an spfem STCCL"):
        STCCL.load(tmp_path / "other.pt")


def test_vectorised_loss_equals_the_per_patch_loop() -> None:
    from spfem_cli.benchmarks.stccl import per_patch_loss

    model = _small(mode="spatial", samples=(4, 4, 2, 2))
    gen = torch.Generator().manual_seed(0)
    shapes = ((64, 12), (128, 8), (256, 6), (512, 4))
    fg = [torch.randn(2, c, s, s, generator=gen) for c, s in shapes]
    ft = [torch.randn(2, c, s, s, generator=gen) for c, s in shapes]
    fast = model.terms_from_features(fg, ft, generator=torch.Generator().manual_seed(4)).total
    slow = per_patch_loss(model, fg, ft, torch.Generator().manual_seed(4))
    assert torch.allclose(fast, slow, rtol=1e-4, atol=1e-5)


def test_info_nce_logits_stay_fp32_under_autocast() -> None:
    q = F.normalize(torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(0)), dim=-1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rows = info_nce_rows(q, q, 0.07)
    assert rows.dtype == torch.float32
    assert torch.allclose(rows, info_nce_rows(q.float(), q.float(), 0.07))
