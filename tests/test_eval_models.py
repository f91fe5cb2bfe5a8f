"""Evaluator networks: key manifests of the published files, strict loading of those layouts, shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from models.efficientface import EfficientFace, load_efficientface
from models.resnet_face import ResNetFace18, load_resnet_face18
from models.syncnet import SyncNetV2, load_syncnet

MANIFESTS = Path(__file__).parent / "manifests"
# (manifest, model factory, a few keys checked by hand against the reference code)
CASES = {
    "resnet_face18": (ResNetFace18, {"conv1.weight": [64, 1, 3, 3], "layer1.0.bn0.weight": [64],
                                     "layer2.0.conv1.weight": [64, 64, 3, 3], "layer2.0.conv2.weight": [128, 64, 3, 3],
                                     "layer2.0.downsample.0.weight": [128, 64, 1, 1], "prelu.weight": [1],
                                     "fc5.weight": [512, 32768], "bn5.running_var": [512]}),
    "efficientface_affectnet7": (EfficientFace, {"conv1.0.weight": [29, 3, 3, 3], "local.conv1_1.weight": [116, 1, 3, 3],
                                                 "modulator.channel_att.gate_c.gate_c_fc_0.weight": [7, 116],
                                                 "modulator.spatial_att.gate_s.gate_s_conv_final.weight": [1, 7, 1, 1],
                                                 "stage2.0.branch1.0.weight": [29, 1, 3, 3], "conv5.0.weight": [1024, 464, 1, 1],
                                                 "fc.weight": [7, 1024]}),
    "syncnet_v2": (SyncNetV2, {"netcnnaud.0.weight": [64, 1, 3, 3], "netcnnaud.4.weight": [192, 64, 3, 3],
                               "netcnnaud.18.weight": [512, 256, 5, 4], "netcnnlip.0.weight": [96, 3, 5, 7, 7],
                               "netcnnlip.18.weight": [512, 256, 1, 6, 6], "netfclip.3.weight": [1024, 512],
                               "netfcaud.1.running_mean": [512]}),
}


def _manifest(name: str) -> dict[str, list[int]]:
    return json.loads((MANIFESTS / f"{name}.json").read_text())


def _state_from_manifest(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {k: (torch.rand(shape, generator=gen) + 0.5) for k, shape in _manifest(name).items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_model_keys_match_the_manifest(name):
    factory, spot = CASES[name]
    manifest = _manifest(name)
    for key, shape in spot.items():
        assert manifest[key] == shape
    own = {k: list(v.shape) for k, v in factory().state_dict().items() if not k.endswith("num_batches_tracked")}
    assert own == manifest


def test_syncnet_parameter_bytes_fit_the_published_file_size():
    # syncnet_v2.model is 54,573,114 bytes: float32 tensors plus a few kB of pickle framing.
    tensor_bytes = 4 * sum(torch.Size(s).numel() for s in _manifest("syncnet_v2").values())
    assert 0 < 54_573_114 - tensor_bytes < 64_000


def test_published_layouts_load(tmp_path):
    # resnet18_110.pth: DataParallel state dict ("module." keys)
    state = _state_from_manifest("resnet_face18")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "resnet18_110.pth")
    model = load_resnet_face18(tmp_path / "resnet18_110.pth")
    assert torch.equal(model.state_dict()["fc5.weight"], state["fc5.weight"])
    assert model(torch.zeros(2, 1, 128, 128)).shape == (2, 512)
    # EfficientFace: training checkpoint with 'state_dict' of "module." keys plus bookkeeping
    state = _state_from_manifest("efficientface_affectnet7")
    torch.save({"epoch": 10, "best_acc": torch.tensor(63.7), "state_dict": {f"module.{k}": v for k, v in state.items()}},
               tmp_path / "EfficientFace_Trained_on_AffectNet7.pth.tar")
    model = load_efficientface(tmp_path / "EfficientFace_Trained_on_AffectNet7.pth.tar")
    assert torch.equal(model.state_dict()["fc.weight"], state["fc.weight"])
    assert model.features(torch.zeros(1, 3, 224, 224)).shape == (1, 1024)
    # syncnet_v2.model: bare state dict without BatchNorm step counters, in the pre-1.6 (non-zip) format
    state = _state_from_manifest("syncnet_v2")
    torch.save(state, tmp_path / "syncnet_v2.model", _use_new_zipfile_serialization=False)
    model = load_syncnet(tmp_path / "syncnet_v2.model")
    assert torch.equal(model.state_dict()["netcnnlip.0.weight"], state["netcnnlip.0.weight"])
    assert model.forward_aud(torch.zeros(2, 1, 13, 20)).shape == (2, 1024)


def test_wrong_layout_is_refused(tmp_path):
    state = _state_from_manifest("syncnet_v2")
    del state["netfcaud.3.weight"]
    torch.save(state, tmp_path / "bad.model")
    with pytest.raises(RuntimeError, match="netfcaud.3.weight"):
        load_syncnet(tmp_path / "bad.model")
