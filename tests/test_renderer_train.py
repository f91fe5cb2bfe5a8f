"""Renderer fine-tuning on CPU: losses go down, the STCCL term's gradient reaches G, NED-layout export, inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.ned_renderer import MultiscaleDiscriminator, NedGenerator, load_ned_state, roi_size_for
from models.vgg19 import VGG19Features, VGGPerceptualLoss
from spfem_cli.neural_render import NeuralRenderer, generate, pack_conditioning, temporal_windows, to_uint8
from spfem_cli.train.renderer import (
    RendererStep,
    RendererTrainConfig,
    SequenceWindows,
    fine_tune,
    load_actor_data,
    save_actor_data,
)

SIZE = 64


class StandInPairMetric(torch.nn.Module):
    """TEST STAND-IN for models/stccl.py (not the STCCL metric): a frozen random conv feature distance."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3, 2, 1))
        self.requires_grad_(False)

    def forward(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (self.net(generated) - self.net(target)).abs().mean()


def astronaut_actor(n: int = 10, size: int = SIZE) -> dict[str, np.ndarray]:
    """A small "actor clip" from skimage's astronaut photo: the face crop drifts, the conditioning follows it."""
    import cv2
    from skimage import data

    photo = data.astronaut()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    frames, nmfc, gaze, shape, mask, mouth = [], [], [], [], [], []
    for t in range(n):
        dx, dy = int(3 * np.sin(t / 2)), int(2 * np.cos(t / 3))
        crop = photo[20 + dy:220 + dy, 150 + dx:350 + dx]
        img = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        frames.append(img)
        sx, sy = -dx * size / 200, -dy * size / 200          # the face moves opposite to the crop window
        ell = (((xx - 0.5 - sx / size) / 0.33) ** 2 + ((yy - 0.5 - sy / size) / 0.42) ** 2) <= 1
        mask.append(ell.astype(np.uint8))
        coords = np.stack([xx - sx / size, yy - sy / size, 0.5 + 0.5 * np.sin(6 * xx)], -1)
        nmfc.append((np.clip(coords, 0, 1) * 255 * ell[..., None]).astype(np.uint8))
        grey = cv2.GaussianBlur(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), (5, 5), 0)
        shape.append(np.repeat((grey * ell)[..., None], 3, -1).astype(np.uint8))
        g = np.zeros((size, size, 3), np.uint8)
        for ex in (0.38, 0.62):
            cv2.circle(g, (int(ex * size + sx), int(0.42 * size + sy)), 2, (255, 255, 255), -1)
        gaze.append(g)
        mouth.append([int(0.5 * size + sx), int(0.72 * size + sy)])
    return {"frames": np.stack(frames), "nmfc": np.stack(nmfc), "gaze": np.stack(gaze), "shape": np.stack(shape),
            "mask": np.stack(mask), "mouth": np.array(mouth, np.int64)}


def tiny_cfg(**kw) -> RendererTrainConfig:
    base = dict(seq_len=4, frames_per_step=2, ngf=16, n_blocks=3, ndf=16, sample_every=5)
    base.update(kw)
    return RendererTrainConfig(**base)


def _recon(g: NedGenerator, data, vgg_loss) -> tuple[float, float]:
    cond = pack_conditioning(data["nmfc"], data["gaze"], data["shape"], data["mask"])
    real = torch.from_numpy(np.array(data["frames"])).permute(0, 3, 1, 2).float() / 127.5 - 1
    real = real * cond[:, 9:10] - (1 - cond[:, 9:10])  # the training target: the masked face
    with torch.no_grad():
        fake = generate(g, temporal_windows(cond), torch.zeros(2, 3, SIZE, SIZE))
        return float((fake - real).abs().mean()), float(vgg_loss(fake, real))


@pytest.fixture(scope="module")
def actor(tmp_path_factory):
    folder = tmp_path_factory.mktemp("actor")
    save_actor_data(folder, **astronaut_actor())
    return folder


def test_actor_folder_roundtrip_and_windows(actor):
    data = load_actor_data(actor)
    assert isinstance(data["frames"], np.memmap)
    ds = SequenceWindows(data, 6)
    item = ds[0]
    assert item["cond"].shape == (6, 10, SIZE, SIZE) and item["real"].shape == (6, 3, SIZE, SIZE)
    assert set(torch.unique(item["cond"][:, 9]).tolist()) <= {0.0, 1.0}
    assert -1 <= item["real"].min() and item["real"].max() <= 1
    outside = (item["cond"][:, 9:10] == 0).expand_as(item["real"])
    assert outside.any() and torch.all(item["real"][outside] == -1)  # target masked like G's output


def test_tiny_finetune_lowers_reconstruction_losses(actor, tmp_path):
    torch.manual_seed(0)
    vgg = VGG19Features()
    cfg = tiny_cfg()
    metric = StandInPairMetric()
    out = fine_tune(actor, tmp_path / "run", cfg=cfg, max_steps=12, metric=metric, vgg=vgg, device="cpu",
                    ckpt_every=6, log_every=1, progress=False)
    # the NED-layout export loads strictly (here into the narrow test variants)
    g = load_ned_state(NedGenerator(ngf=16, n_blocks=3), out / "latest_net_G.pth")
    load_ned_state(MultiscaleDiscriminator(ndf=16), out / "latest_net_D.pth")
    load_ned_state(MultiscaleDiscriminator(ndf=16), out / "latest_net_Dm.pth")
    g_init = _initial_generator(cfg)
    data = load_actor_data(actor)
    vgg_loss = VGGPerceptualLoss(vgg)
    l1_before, vgg_before = _recon(g_init, data, vgg_loss)
    l1_after, vgg_after = _recon(g, data, vgg_loss)
    assert l1_after < 0.8 * l1_before, (l1_before, l1_after)  # measured: 0.233 -> 0.126 in 24 updates
    assert vgg_after < vgg_before, (vgg_before, vgg_after)
    # training-time logs carry every NED term plus STCCL, and a sample grid PNG was written
    import json

    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if "G_VGG" in line]
    assert {"G_VGG", "G_GAN", "G_GAN_Feat", "Gm_GAN", "Gm_GAN_Feat", "G_STCCL", "D", "L1"} <= set(records[-1])
    assert records[-1]["L1"] < records[0]["L1"]
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["step_00000005.png", "step_00000010.png"]


def _initial_generator(cfg: RendererTrainConfig) -> NedGenerator:
    from spfem_cli.train.renderer import build_networks

    torch.manual_seed(0)
    return build_networks(cfg)[0]


def test_stccl_term_alone_sends_gradient_to_generator():
    torch.manual_seed(0)
    cfg = tiny_cfg()
    g = NedGenerator(ngf=16, n_blocks=3)
    d, dm = MultiscaleDiscriminator(ndf=16), MultiscaleDiscriminator(ndf=16)
    step = RendererStep(cfg, VGGPerceptualLoss(VGG19Features()), StandInPairMetric())
    data = astronaut_actor(4)
    cond = pack_conditioning(data["nmfc"], data["gaze"], data["shape"], data["mask"])
    real = torch.from_numpy(data["frames"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    fake = g(temporal_windows(cond), torch.rand(4, 6, SIZE, SIZE) * 2 - 1)  # previous outputs
    losses = step.generator_losses(fake, real, cond, torch.from_numpy(data["mouth"]), d, dm, roi_size_for(SIZE))
    assert set(losses) == {"G_VGG", "G_GAN", "G_GAN_Feat", "Gm_GAN", "Gm_GAN_Feat", "G_STCCL"}
    losses["G_STCCL"].backward()
    for name in ("model_down_seg.1.weight", "model_down_img.1.weight", "model_final_img.1.weight"):
        grad = dict(g.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    # with weight 0 the term is absent, as in plain NED
    assert "G_STCCL" not in RendererStep(tiny_cfg(stccl_weight=0.0), step.vgg_loss, StandInPairMetric()).generator_losses(
        fake.detach(), real, cond, torch.from_numpy(data["mouth"]), d, dm, roi_size_for(SIZE))


def test_real_stccl_module_gradient_reaches_generator():
    """The project's STCCL module (small IResNet-18 variant, random weights) as the metric of the G step."""
    from models.stccl import STCCL, STCCLConfig

    torch.manual_seed(0)
    metric = STCCL(STCCLConfig(arch="r18", input_size=112, mode="spatial")).eval().requires_grad_(False)
    g = NedGenerator(ngf=8, n_blocks=3)
    step = RendererStep(tiny_cfg(), VGGPerceptualLoss(VGG19Features()), metric)
    data = astronaut_actor(2)
    cond = pack_conditioning(data["nmfc"], data["gaze"], data["shape"], data["mask"])
    real = torch.from_numpy(data["frames"]).permute(0, 3, 1, 2).float() / 127.5 - 1
    fake = g(temporal_windows(cond), torch.rand(2, 6, SIZE, SIZE) * 2 - 1)
    losses = step.generator_losses(fake, real, cond, torch.from_numpy(data["mouth"]),
                                   MultiscaleDiscriminator(ndf=8), None, roi_size_for(SIZE))
    losses["G_STCCL"].backward()
    grad = g.model_down_seg[1].weight.grad
    assert torch.isfinite(losses["G_STCCL"]) and grad is not None and grad.abs().sum() > 0


def test_streaming_inference_matches_sequential_reference():
    """NeuralRenderer in chunks of 3 == a plain per-frame loop feeding back the generated frames."""
    torch.manual_seed(0)
    g = NedGenerator(ngf=8, n_blocks=3).double()  # float64: the feedback loop amplifies rounding differences
    data = astronaut_actor(7, 32)
    cond = pack_conditioning(data["nmfc"], data["gaze"], data["shape"], data["mask"]).double()
    renderer = NeuralRenderer(g, "cpu", batch_frames=3)
    out = torch.cat([renderer.render(cond[:4]), renderer.render(cond[4:])])
    padded = torch.cat([cond[:1], cond[:1], cond])
    prev = [torch.zeros(3, 32, 32, dtype=torch.float64)] * 2
    ref = []
    with torch.no_grad():
        for t in range(7):
            x = g(padded[t:t + 3].reshape(1, 30, 32, 32), torch.cat(prev[-2:]).unsqueeze(0))[0]
            ref.append(x)
            prev.append(x)
    assert torch.allclose(out, torch.stack(ref).float(), atol=1e-5)
    frames = to_uint8(out)
    assert frames.shape == (7, 32, 32, 3) and frames.dtype == np.uint8


def test_train_renderer_command_names_missing_weights(actor, tmp_path, monkeypatch):
    """Without the meta-renderer the command stops at once with a one-line error naming the weight."""
    from typer.testing import CliRunner

    from spfem_cli.app import app
    from spfem_cli.weights import WeightsError

    monkeypatch.setenv("SPFEM_HOME", str(tmp_path / "home"))
    for name in ("NED_META_RENDERER", "STCCL_METRIC", "VGG19_IMAGENET"):
        monkeypatch.delenv(f"SPFEM_WEIGHT_{name}", raising=False)
    result = CliRunner().invoke(app, ["train-renderer", "--data", str(actor), "--out", str(tmp_path / "r")])
    assert isinstance(result.exception, WeightsError)
    assert "ned_meta_renderer" in str(result.exception) and "\n" not in str(result.exception)


def test_meta_renderer_folder_and_file_forms(tmp_path):
    """--meta accepts NED's checkpoint folder or its G file; missing D/Dm files are reported, not fatal."""
    from spfem_cli.train.renderer import build_networks

    cfg = tiny_cfg()
    torch.manual_seed(1)
    g, d, dm = NedGenerator(ngf=16, n_blocks=3), MultiscaleDiscriminator(ndf=16), MultiscaleDiscriminator(ndf=16)
    torch.save(g.state_dict(), tmp_path / "15_net_G.pth")  # the published meta-renderer's names (epoch 15)
    torch.save(d.state_dict(), tmp_path / "15_net_D.pth")
    torch.save(d.state_dict(), tmp_path / "5_net_G.pth")     # an older epoch: must not be picked
    notes: list[str] = []
    g2, d2, dm2 = build_networks(cfg, tmp_path, warn=notes.append)
    assert torch.equal(g2.model_final_img[1].weight, g.model_final_img[1].weight)
    assert torch.equal(d2.scale0_layer0[0].weight, d.scale0_layer0[0].weight)
    assert not torch.equal(dm2.scale0_layer0[0].weight, dm.scale0_layer0[0].weight)
    assert len(notes) == 1 and "15_net_Dm.pth" in notes[0]
    g3, _, _ = build_networks(cfg, tmp_path / "15_net_G.pth", warn=lambda msg: None)
    assert torch.equal(g3.model_down_img[1].weight, g.model_down_img[1].weight)
