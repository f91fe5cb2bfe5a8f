"""DECA: the published deca_model.tar key layout loads strictly; crop geometry follows DECA's datasets.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.deca import DECA, DecaCodes, crop_transform
from spfem_cli.weights import WeightsError


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def _resnet_encoder_manifest(outsize: int) -> dict[str, tuple[int, ...]]:
    """Keys of DECA's ResnetEncoder (decalib/models/encoders.py + resnet.py, ResNet(Bottleneck, [3,4,6,3]))."""
    m = {"encoder.conv1.weight": (64, 3, 7, 7), **_bn("encoder.bn1", 64)}
    inplanes = 64
    for li, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for b in range(blocks):
            p = f"encoder.layer{li}.{b}"
            cin = inplanes if b == 0 else planes * 4
            m[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
            m.update(_bn(f"{p}.bn1", planes))
            m[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            m.update(_bn(f"{p}.bn2", planes))
            m[f"{p}.conv3.weight"] = (planes * 4, planes, 1, 1)
            m.update(_bn(f"{p}.bn3", planes * 4))
            if b == 0:
                m[f"{p}.downsample.0.weight"] = (planes * 4, cin, 1, 1)
                m.update(_bn(f"{p}.downsample.1", planes * 4))
        inplanes = planes * 4
    m.update({"layers.0.weight": (1024, 2048), "layers.0.bias": (1024,),
              "layers.2.weight": (outsize, 1024), "layers.2.bias": (outsize,)})
    return m


def _detail_decoder_manifest() -> dict[str, tuple[int, ...]]:
    """Keys of DECA's Generator(latent_dim=128+50+3) (decalib/models/decoders.py)."""
    m = {"l1.0.weight": (8192, 181), "l1.0.bias": (8192,), **_bn("conv_blocks.0", 128)}
    for conv, bn, cin, cout in [(2, 3, 128, 128), (6, 7, 128, 64), (10, 11, 64, 64), (14, 15, 64, 32),
                                (18, 19, 32, 16)]:
        m[f"conv_blocks.{conv}.weight"] = (cout, cin, 3, 3)
        m[f"conv_blocks.{conv}.bias"] = (cout,)
        m.update(_bn(f"conv_blocks.{bn}", cout))
    m.update({"conv_blocks.21.weight": (1, 16, 3, 3), "conv_blocks.21.bias": (1,)})
    return m


MANIFEST = {"E_flame": _resnet_encoder_manifest(236), "E_detail": _resnet_encoder_manifest(128),
            "D_detail": _detail_decoder_manifest()}


def _fake_checkpoint(path: Path, *, drop_batch_counters: bool = False) -> dict:
    gen = torch.Generator().manual_seed(0)
    ckpt = {}
    for part, keys in MANIFEST.items():
        state = {}
        for key, shape in keys.items():
            if key.endswith("num_batches_tracked"):
                if not drop_batch_counters:
                    state[key] = torch.tensor(7)
            elif key.endswith("running_var"):
                state[key] = torch.rand(shape, generator=gen) + 0.5
            else:
                state[key] = torch.randn(shape, generator=gen) * 0.02
        ckpt[part] = state
    ckpt["opt"] = {"note": torch.zeros(1)}  # extra top-level entries in the file are ignored
    torch.save(ckpt, path)
    return ckpt


def test_model_state_dict_matches_the_published_manifest() -> None:
    model = DECA()
    for part, keys in MANIFEST.items():
        got = {k: tuple(v.shape) for k, v in getattr(model, part).state_dict().items()}
        assert got == keys, part


@pytest.mark.parametrize("drop_batch_counters", [False, True])
def test_deca_model_tar_layout_loads_strictly(tmp_path: Path, drop_batch_counters: bool) -> None:
    ckpt = _fake_checkpoint(tmp_path / "deca_model.tar", drop_batch_counters=drop_batch_counters)
    model = DECA().load_checkpoint(tmp_path / "deca_model.tar")
    assert torch.equal(model.E_flame.layers[2].weight, ckpt["E_flame"]["layers.2.weight"])
    assert torch.equal(model.D_detail.conv_blocks[21].bias, ckpt["D_detail"]["conv_blocks.21.bias"])
    assert model.D_detail.conv_blocks[3].eps == 0.8  # DECA's BatchNorm2d(c, 0.8)


def test_random_weights_encode_shapes_only(tmp_path: Path) -> None:
    """With random weights only shapes and the code split are judged, not the values."""
    _fake_checkpoint(tmp_path / "d.tar")
    model = DECA().load_checkpoint(tmp_path / "d.tar")
    codes = model.encode(torch.rand(2, 3, 64, 64))
    assert codes.shape.shape == (2, 100) and codes.tex.shape == (2, 50) and codes.exp.shape == (2, 50)
    assert codes.pose.shape == (2, 6) and codes.cam.shape == (2, 3) and codes.light.shape == (2, 9, 3)
    assert codes.detail.shape == (2, 128)
    back = DecaCodes.from_flat(codes.flat())
    assert torch.equal(back.light, codes.light) and torch.equal(back.detail, codes.detail)
    disp = model.displacement(codes)
    assert disp.shape == (2, 1, 256, 256) and disp.abs().max() <= 0.01


def test_crop_transform_follows_deca_kpt68_box() -> None:
    lm = np.stack(np.meshgrid(np.linspace(100, 200, 4), np.linspace(50, 130, 17)), -1).reshape(-1, 2)[:68]
    m = crop_transform(lm)
    side = int((100 + 80) / 2 * 1.1 * 1.25)
    centre = m @ np.array([150.0, 90.0, 1.0])
    np.testing.assert_allclose(centre, [111.5, 111.5])  # the box centre lands in the crop centre
    np.testing.assert_allclose(m[0, 0], 223 / side)
    corner = m @ np.array([150 - side / 2, 90 - side / 2, 1.0])
    np.testing.assert_allclose(corner, [0, 0], atol=1e-9)


def test_missing_deca_model_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPFEM_HOME", str(tmp_path))
    monkeypatch.delenv("SPFEM_WEIGHT_DECA_MODEL", raising=False)
    with pytest.raises(WeightsError, match="deca"):
        DECA.from_registry()
