"""NED renderer: checkpoint layout (key manifest written from NED's renderer/models/networks.py), shapes, masking."""

from __future__ import annotations

import pytest
import torch

from models.ned_renderer import (
    MultiscaleDiscriminator,
    NedGenerator,
    crop_rois,
    feature_matching_loss,
    load_ned_state,
    lsgan_loss,
    roi_size_for,
)

NORM = {"running_mean": None, "running_var": None, "num_batches_tracked": ()}


def _conv(prefix: str, cout: int, cin: int, k: int, out: dict, transposed: bool = False) -> None:
    out[f"{prefix}.weight"] = (cin, cout, k, k) if transposed else (cout, cin, k, k)
    out[f"{prefix}.bias"] = (cout,)


def _norm(prefix: str, c: int, out: dict) -> None:
    out[f"{prefix}.running_mean"] = (c,)
    out[f"{prefix}.running_var"] = (c,)
    out[f"{prefix}.num_batches_tracked"] = ()


def _resblock(prefix: str, c: int, out: dict) -> None:
    for name in ("resnetblock_sequential", "conv_block"):  # NED registers the same stack twice
        _conv(f"{prefix}.{name}.1", c, c, 3, out)
        _norm(f"{prefix}.{name}.2", c, out)
        _conv(f"{prefix}.{name}.5", c, c, 3, out)
        _norm(f"{prefix}.{name}.6", c, out)


def _encoder(prefix: str, cin: int, out: dict) -> None:
    # ReflectionPad(0) Conv7(1) IN(2) ReLU(3); 3× [conv s2, IN, ReLU] at 4..12; 5 ResBlocks at 13..17
    _conv(f"{prefix}.1", 64, cin, 7, out)
    _norm(f"{prefix}.2", 64, out)
    for i, (a, b) in enumerate([(64, 128), (128, 256), (256, 512)]):
        _conv(f"{prefix}.{4 + 3 * i}", b, a, 3, out)
        _norm(f"{prefix}.{5 + 3 * i}", b, out)
    for i in range(5):
        _resblock(f"{prefix}.{13 + i}", 512, out)


def generator_manifest() -> dict[str, tuple]:
    """Expected keys/shapes of NED's ``latest_net_G.pth`` (input_nc 9 × n_frames_G 3, ngf 64, 3 downs, 9 blocks)."""
    out: dict[str, tuple] = {}
    _encoder("model_down_seg", 27, out)
    _encoder("model_down_img", 6, out)
    for i in range(4):
        _resblock(f"model_res_img.{i}", 512, out)
    for i, (a, b) in enumerate([(512, 256), (256, 128), (128, 64)]):
        _conv(f"model_up_img.{3 * i}", b, a, 3, out, transposed=True)
        _norm(f"model_up_img.{3 * i + 1}", b, out)
    _conv("model_final_img.1", 3, 64, 7, out)
    return out


def discriminator_manifest() -> dict[str, tuple]:
    """Expected keys/shapes of NED's ``latest_net_D.pth`` / ``latest_net_Dm.pth`` (12 input ch, 2 scales, 3 layers)."""
    out: dict[str, tuple] = {}
    for s in range(2):
        _conv(f"scale{s}_layer0.0", 64, 12, 4, out)
        for j, (a, b) in enumerate([(64, 128), (128, 256), (256, 512)], start=1):
            _conv(f"scale{s}_layer{j}.0", b, a, 4, out)
            _norm(f"scale{s}_layer{j}.1", b, out)
        _conv(f"scale{s}_layer4.0", 1, 512, 4, out)
    return out


def _fake_checkpoint(manifest: dict[str, tuple], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in manifest.items():
        if k.endswith("num_batches_tracked"):
            state[k] = torch.tensor(7, dtype=torch.long)
        else:
            state[k] = torch.randn(shape, generator=gen) * 0.02
    # the duplicated residual stacks are one tensor in NED's files
    for k in list(state):
        if ".resnetblock_sequential." in k:
            state[k.replace(".resnetblock_sequential.", ".conv_block.")] = state[k]
    return state


def test_generator_keys_match_ned_manifest(tmp_path):
    manifest = generator_manifest()
    model = NedGenerator()
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == manifest
    path = tmp_path / "latest_net_G.pth"
    ckpt = _fake_checkpoint(manifest, 0)
    torch.save(ckpt, path)
    load_ned_state(model, path)
    assert torch.equal(model.state_dict()["model_final_img.1.weight"], ckpt["model_final_img.1.weight"])


def test_discriminator_keys_match_ned_manifest(tmp_path):
    manifest = discriminator_manifest()
    for name in ("D", "Dm"):
        model = MultiscaleDiscriminator()
        assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == manifest
        path = tmp_path / f"latest_net_{name}.pth"
        ckpt = _fake_checkpoint(manifest, 1)
        torch.save({f"module.{k}": v for k, v in ckpt.items()}, path)  # DataParallel prefix is stripped
        load_ned_state(model, path)
        assert torch.equal(model.scale1_layer4[0].weight, ckpt["scale1_layer4.0.weight"])


def test_generator_output_is_masked_and_in_range():
    torch.manual_seed(0)
    g = NedGenerator(ngf=8, n_blocks=3)
    cond = torch.rand(2, 30, 32, 32)
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    cond[:, 29:30] = mask  # mask of the current frame is the last channel
    out = g(cond, torch.zeros(2, 6, 32, 32))
    assert out.shape == (2, 3, 32, 32)
    assert out.min() >= -1 and out.max() <= 1
    assert torch.all(out[:, :, :8] == -1) and torch.all(out[:, :, 24:] == -1)
    assert out[:, :, 8:24, 8:24].std() > 0


def test_instance_norm_ignores_running_stats_in_eval():
    """NED never calls eval(): output must not depend on the (possibly stale) running buffers."""
    torch.manual_seed(0)
    g = NedGenerator(ngf=8, n_blocks=3)
    cond, prev = torch.rand(1, 30, 32, 32), torch.rand(1, 6, 32, 32) * 2 - 1
    a = g.train()(cond, prev)
    for m in g.modules():
        if hasattr(m, "running_mean") and m.running_mean is not None:
            m.running_mean.fill_(5.0)
    b = g.eval()(cond, prev)
    assert torch.allclose(a, b, atol=1e-6)


def test_batched_conditioning_encoder_equals_per_frame():
    """Inference batches model_down_seg over frames; per-sample norms make that exact."""
    torch.manual_seed(0)
    g = NedGenerator(ngf=8, n_blocks=3)
    cond9 = torch.rand(4, 27, 32, 32)
    batched = g.encode_conditioning(cond9)
    single = torch.cat([g.encode_conditioning(cond9[i:i + 1]) for i in range(4)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_discriminator_scales_and_losses():
    torch.manual_seed(0)
    d = MultiscaleDiscriminator()
    cond, img = torch.rand(1, 10, 72, 72), torch.rand(1, 3, 72, 72) * 2 - 1
    preds = d(cond, img)
    assert len(preds) == 2 and len(preds[0]) == 5
    assert preds[0][0].shape[-1] == 37 and preds[1][0].shape[-1] == 19  # full res first, then /2
    real = lsgan_loss(preds, True)
    fake = lsgan_loss(preds, False)
    logits = [p[-1] for p in preds]
    assert torch.isclose(real, sum(((x - 1) ** 2).mean() for x in logits))
    assert torch.isclose(fake, sum((x ** 2).mean() for x in logits))
    assert feature_matching_loss(preds, preds).item() == 0.0


def test_mouth_roi_is_clamped_inside_frame():
    imgs = torch.arange(2 * 3 * 64 * 64, dtype=torch.float32).view(2, 3, 64, 64)
    size = roi_size_for(64)
    assert size == 18 and roi_size_for(256) == 72
    crops = crop_rois(imgs, torch.tensor([[0, 0], [40, 30]]), size)
    assert crops.shape == (2, 3, 18, 18)
    assert torch.equal(crops[0], imgs[0, :, :18, :18])
    assert torch.equal(crops[1], imgs[1, :, 21:39, 31:49])


@pytest.mark.parametrize("kwargs", [{}, {"ngf": 8, "n_blocks": 3}, {"ngf": 16, "n_blocks": 4, "n_downsampling": 2}])
def test_generator_config_is_read_off_the_checkpoint(tmp_path, kwargs):
    """NED's published G (64 / 9 blocks) and smaller trained configurations load from the weights alone."""
    from models.ned_renderer import generator_config, load_ned_generator

    model = NedGenerator(**kwargs)
    path = tmp_path / "latest_net_G.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)  # DataParallel-saved
    expected = {"cond_nc": 9, "output_nc": 3, "n_frames": 3, "ngf": 64, "n_downsampling": 3, "n_blocks": 9, **kwargs}
    assert generator_config(model.state_dict()) == expected
    loaded = load_ned_generator(path)
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True))


def test_renderer_folder_with_a_foreign_file_is_a_one_line_error(tmp_path):
    from spfem_cli.backends.ned.neural_render import NeuralRenderer
    from spfem_cli.errors import SpfemError

    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "latest_net_G.pth")
    with pytest.raises(SpfemError, match="not a NED renderer generator"):
        NeuralRenderer.from_dir(tmp_path)
