"""Own VGG19 trunk: loads a torchvision-layout ImageNet file (features.N keys) strictly; perceptual loss behaviour."""

from __future__ import annotations

import torch

from models.vgg19 import VGG19Features, VGGPerceptualLoss

# torchvision vgg19 conv layers in ``features``: index -> (out, in)
VGG19_CONVS = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256), 14: (256, 256),
               16: (256, 256), 19: (512, 256), 21: (512, 512), 23: (512, 512), 25: (512, 512), 28: (512, 512),
               30: (512, 512), 32: (512, 512), 34: (512, 512)}


def _torchvision_layout_file(path) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    state = {}
    for idx, (cout, cin) in VGG19_CONVS.items():
        state[f"features.{idx}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * 0.05
        state[f"features.{idx}.bias"] = torch.zeros(cout)
    # the real file also has the classifier; small stand-ins keep the test light — they must be skipped
    for idx, shape in {0: (8, 4), 3: (8, 8), 6: (10, 8)}.items():
        state[f"classifier.{idx}.weight"] = torch.zeros(shape)
        state[f"classifier.{idx}.bias"] = torch.zeros(shape[0])
    torch.save(state, path)
    return state


def test_vgg19_loads_imagenet_layout_via_registry(tmp_path, monkeypatch):
    path = tmp_path / "vgg19-dcbb9e9d.pth"
    state = _torchvision_layout_file(path)
    monkeypatch.setenv("SPFEM_WEIGHT_VGG19_IMAGENET", str(path))
    monkeypatch.setenv("SPFEM_HOME", str(tmp_path / "home"))
    vgg = VGG19Features()
    assert {k: tuple(v.shape) for k, v in vgg.state_dict().items()} == {
        k: tuple(v.shape) for k, v in state.items() if k.startswith("features.")}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unverified user file warning: expected here
        vgg.load_imagenet()
    assert torch.equal(vgg.features[34].weight, state["features.34.weight"])
    feats = vgg(torch.rand(1, 3, 32, 32))
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512, 512]
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]


def test_perceptual_loss_zero_on_equal_and_grad_only_to_first_argument():
    torch.manual_seed(0)
    loss_fn = VGGPerceptualLoss(VGG19Features())
    y = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loss_fn(y, y).item() == 0.0
    x = (y + 0.3 * torch.randn_like(y)).requires_grad_(True)
    yy = y.clone().requires_grad_(True)
    loss = loss_fn(x, yy)
    loss.backward()
    assert loss.item() > 0 and x.grad.abs().sum() > 0 and yy.grad is None
    assert all(not p.requires_grad for p in loss_fn.parameters())
