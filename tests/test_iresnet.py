"""IResNet: state-dict layout of insightface ``backbone.pth`` (r50), strict loading, stage shapes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.iresnet import IResNet, load_arcface_backbone

# Published file size of ms1mv3_arcface_r50_fp16/backbone.pth (weights.toml) — an fp32 pickle.
R50_FILE_BYTES = 174_656_779


def _bn(prefix: str, c: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,), f"{prefix}.running_mean": (c,),
            f"{prefix}.running_var": (c,), f"{prefix}.num_batches_tracked": ()}


def r50_manifest() -> dict[str, tuple[int, ...]]:
    """Expected keys and shapes, written out from the architecture facts (reference facts §2 and
    insightface arcface_torch/backbones/iresnet.py): layers [3,4,14,3], widths 64/128/256/512."""
    m: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 3, 3), **_bn("bn1", 64), "prelu.weight": (64,)}
    cin = 64
    for i, (n, c) in enumerate(zip((3, 4, 14, 3), (64, 128, 256, 512), strict=True), start=1):
        for b in range(n):
            p = f"layer{i}.{b}"
            m.update(_bn(f"{p}.bn1", cin))
            m[f"{p}.conv1.weight"] = (c, cin, 3, 3)
            m.update(_bn(f"{p}.bn2", c))
            m[f"{p}.prelu.weight"] = (c,)
            m[f"{p}.conv2.weight"] = (c, c, 3, 3)
            m.update(_bn(f"{p}.bn3", c))
            if b == 0:
                m[f"{p}.downsample.0.weight"] = (c, cin, 1, 1)
                m.update(_bn(f"{p}.downsample.1", c))
            cin = c
    m.update(_bn("bn2", 512))
    m["fc.weight"] = (512, 512 * 7 * 7)
    m["fc.bias"] = (512,)
    m.update(_bn("features", 512))
    return m


def test_r50_state_dict_matches_manifest() -> None:
    sd = IResNet("r50", head=True).state_dict()
    manifest = r50_manifest()
    assert list(sd) == list(manifest)                    # same names in the same order
    assert {k: tuple(v.shape) for k, v in sd.items()} == manifest
    # the number of fp32 values agrees with the published file size (pickle overhead < 0.2 %)
    floats = sum(v.numel() for k, v in sd.items() if not k.endswith("num_batches_tracked"))
    assert 0 < R50_FILE_BYTES - 4 * floats < 0.002 * R50_FILE_BYTES


def test_backbone_file_loads_strictly_and_head_is_dropped(tmp_path: Path) -> None:
    manifest = r50_manifest()
    gen = torch.Generator().manual_seed(0)
    state = {f"module.{k}": (torch.randn(s, generator=gen).half() if s else torch.tensor(7))
             for k, s in manifest.items() if not k.endswith("num_batches_tracked") or "layer1" in k}
    path = tmp_path / "backbone.pth"
    torch.save(state, path)
    model = load_arcface_backbone(IResNet("r50"), path)
    sd = model.state_dict()
    assert not any(k.startswith(("bn2.", "fc.", "features.")) for k in sd)
    assert torch.equal(sd["layer3.13.conv2.weight"], state["module.layer3.13.conv2.weight"].float())
    full = load_arcface_backbone(IResNet("r50", head=True), path)
    assert torch.equal(full.state_dict()["fc.weight"], state["module.fc.weight"].float())
    del state["module.layer2.0.conv1.weight"]
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="layer2.0.conv1.weight"):
        load_arcface_backbone(IResNet("r50"), path)


@pytest.mark.parametrize("arch,size", [("r18", 112), ("r50", 32)])
def test_stage_shapes(arch: str, size: int) -> None:
    model = IResNet(arch).eval()
    with torch.no_grad():
        feats = model(torch.rand(2, 3, size, size) * 2 - 1)
    assert [tuple(f.shape) for f in feats] == [(2, c, size // s, size // s)
                                               for c, s in zip((64, 128, 256, 512), (2, 4, 8, 16), strict=True)]


def test_embedding_head_at_112() -> None:
    model = IResNet("r18", head=True).eval()
    with torch.no_grad():
        assert model.embed(torch.zeros(1, 3, 112, 112)).shape == (1, 512)
