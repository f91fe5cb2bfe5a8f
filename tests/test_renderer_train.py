"""Renderer fine-tuning on CPU: losses go down, the STCCL term's gradient reaches G, NED-layout export, inference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.ned_renderer import MultiscaleDiscriminator, NedGenerator, load_ned_state, roi_size_for
from models.vgg19 import VGG19Features, VGGPerceptualLoss
from spfem_cli.backends.ned.neural_render import NeuralRenderer, generate, pack_conditioning, temporal_windows, to_uint8
from spfem_cli.backends.ned.train_renderer import (
    EpochSampler,
    RendererStep,
    RendererTrainConfig,
    SequenceWindows,
    affine_jitter,
    fine_tune,
    jitter_pupils,
    load_actor_data,
    save_actor_data,
    steps_for_epochs,
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
    ds = SequenceWindows(data, n_frames_total=4)
    item = ds[0]
    assert item["cond"].shape == (6, 10, SIZE, SIZE) and item["real"].shape == (6, 3, SIZE, SIZE)
    assert set(torch.unique(item["cond"][:, 9]).tolist()) <= {0.0, 1.0}
    assert -1 <= item["real"].min() and item["real"].max() <= 1
    outside = (item["cond"][:, 9:10] == 0).expand_as(item["real"])
    assert outside.any() and torch.all(item["real"][outside] == -1)  # target masked like G's output


def test_tiny_finetune_lowers_reconstruction_losses(actor, tmp_path):
    torch.manual_seed(0)
    vgg = VGG19Features()
    cfg = tiny_cfg(seq_len=2)  # NED's schedule over 12 one-sequence epochs: 2 → 4 → 8 generated frames
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
    assert l1_after < 0.8 * l1_before, (l1_before, l1_after)  # measured: 0.233 -> 0.128 in 23 updates
    assert vgg_after < vgg_before, (vgg_before, vgg_after)
    # training-time logs carry every NED term plus STCCL, and a sample grid PNG was written
    import json

    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if "G_VGG" in line]
    assert {"G_VGG", "G_GAN", "G_GAN_Feat", "Gm_GAN", "Gm_GAN_Feat", "G_STCCL", "D", "L1"} <= set(records[-1])
    assert records[-1]["L1"] < records[0]["L1"]
    # one 10-frame sub-sequence = one step per epoch; n_frames_total doubles every niter_step = 5 epochs and
    # stops at 10 - 2 = 8 (the window must also hold the 2 past frames)
    assert [r["frames"] for r in records] == [2.0] * 5 + [4.0] * 5 + [8.0] * 2
    assert sorted(p.name for p in (out / "samples").glob("*.png")) == ["step_00000005.png", "step_00000010.png"]


def _initial_generator(cfg: RendererTrainConfig) -> NedGenerator:
    from spfem_cli.backends.ned.train_renderer import build_networks

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
    from spfem_cli.backends.ned.train_renderer import build_networks

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


# --------------------------------------------------------------------------- NED's schedule and augmentation
def indexed_actor(n: int, size: int = 8) -> dict[str, np.ndarray]:
    """Frame t is the constant image t (and mouth (t, t)), so a window says which frames it took."""
    frames = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None], size * size * 3).reshape(n, size, size, 3)
    cond = np.zeros((n, size, size, 3), np.uint8)
    return {"frames": frames, "nmfc": cond, "gaze": cond, "shape": cond, "mask": np.ones((n, size, size), np.uint8),
            "mouth": np.stack([np.arange(n), np.arange(n)], 1)}


def _frame_ids(item) -> list[int]:
    return torch.round((item["real"][:, 0, 0, 0] + 1) * 127.5).long().tolist()


def test_sequence_length_schedule_doubles_every_niter_step_and_caps():
    """NED defaults: 50-frame sub-sequences, n_frames_total 12 doubled every 5 epochs, at most 50 - 2."""
    ds = SequenceWindows(indexed_actor(120), **_ned_schedule())
    assert len(ds) == 2                                   # 120 // 50: the last 20 frames are dropped, as NED
    loaded = [ds[(0, epoch)]["cond"].shape[0] for epoch in range(20)]
    # generated 12 (epochs 1-5), 24 (6-10), 48 (11-20, capped), each window + 2 frames of past context
    assert loaded == [14] * 5 + [26] * 5 + [50] * 10
    for epoch in (0, 7, 12):
        for i in range(len(ds)):
            item = ds[(i, epoch)]
            ids = _frame_ids(item)
            assert ids == list(range(ids[0], ids[0] + len(ids)))           # consecutive frames
            assert 50 * i <= ids[0] and ids[-1] < 50 * (i + 1)              # inside sub-sequence i
            assert item["mouth"][:, 0].tolist() == ids                      # mouth centres travel with their frames
    # a clip shorter than a sub-sequence is one sub-sequence; the cap is its length minus the 2 past frames
    short = SequenceWindows(indexed_actor(30), **_ned_schedule())
    assert len(short) == 1 and [short[(0, e)]["cond"].shape[0] for e in (0, 5, 10, 19)] == [14, 26, 30, 30]
    # --epochs counts NED epochs: one step per sub-sequence (per rank under DDP)
    assert steps_for_epochs(120, 20, 50) == 40 and steps_for_epochs(120, 20, 50, world_size=2) == 20


def _ned_schedule() -> dict:
    cfg = RendererTrainConfig()
    return {"n_frames_total": cfg.seq_len, "niter_step": cfg.niter_step, "subseq_len": cfg.subseq_len}


def test_schedule_follows_trainer_epochs_and_resume(tmp_path):
    """Through the shared Trainer: the length follows the epoch, and a resumed run loads the same windows."""
    from spfem_cli.train.loop import TrainConfig, Trainer

    ds = SequenceWindows(indexed_actor(60), n_frames_total=3, niter_step=1, subseq_len=20, augment=False, seed=4)

    def run(out, max_steps, log):
        tr = Trainer(TrainConfig(out_dir=out, max_steps=max_steps, ckpt_every=1000, device="cpu", progress=False,
                                 tensorboard=False))
        tr.fit(lambda batch, t: log.append((t.step, t.epoch, tuple(_frame_ids({"real": batch["real"][0]})))) or {},
               tr.make_loader(ds, batch_size=1, sampler_cls=EpochSampler))

    full: list = []
    run(tmp_path / "a", 12, full)
    assert [len(ids) for _, _, ids in full] == [5] * 3 + [8] * 3 + [14] * 3 + [20] * 3   # 3, 6, 12, 18 (= cap) + 2
    assert [e for _, e, _ in full] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for e in range(4):                                   # every sub-sequence once per epoch
        assert sorted(ids[0] // 20 for _, ep, ids in full if ep == e) == [0, 1, 2]
    part: list = []
    run(tmp_path / "b", 5, part)
    run(tmp_path / "b", 12, part)
    assert part == full


def test_augmentation_jitters_conditioning_only(actor):
    """NED augments each NMFC / gaze / shape image on its own; frames, mask and mouth centres stay as they are."""
    data = load_actor_data(actor)
    plain = SequenceWindows(data, n_frames_total=8, augment=False, seed=2)[(0, 0)]
    aug = SequenceWindows(data, n_frames_total=8, augment=True, seed=2)[(0, 0)]
    assert torch.equal(plain["real"], aug["real"]) and torch.equal(plain["mouth"], aug["mouth"])
    assert torch.equal(plain["cond"][:, 9], aug["cond"][:, 9])                     # the mask channel
    shifts = []
    for t in range(plain["cond"].shape[0]):
        for c in (0, 6):                                                            # NMFC, shape
            src, dst = plain["cond"][t, c:c + 3], aug["cond"][t, c:c + 3]
            # best integer shift (±1 % of 64 px rounds to at most 1 px); the 1 % scale moves edges by < 0.4 px
            best = min(((dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1)),
                       key=lambda d: float((torch.roll(src, d[::-1], (1, 2)) != dst).float().mean()))
            moved = torch.roll(src, best[::-1], (1, 2))
            inner = (slice(None), slice(2, -2), slice(2, -2))
            assert float((moved[inner] != dst[inner]).float().mean()) < 0.03, (t, c, best)
            shifts.append(best)
    assert len(set(shifts)) > 1                          # independent draws per image, not one shift per window
    assert not torch.equal(plain["cond"][:, 3:6], aug["cond"][:, 3:6])              # gaze jittered too


def test_affine_jitter_ranges_match_ned():
    """±1 % integer shift and 0.99–1.01 scale about the centre (256²: shifts −3…3), measured on two dots."""
    img = np.zeros((256, 256, 3), np.uint8)
    img[126:130, 26:30] = img[126:130, 226:230] = 255      # dots 200 px apart, centred on the image
    rng = np.random.default_rng(0)
    mids, ratios = [], []
    for _ in range(300):
        out = affine_jitter(img, rng)[..., 0] > 0
        ys, xs = np.nonzero(out)
        left, right = xs < 128, xs >= 128
        mids.append(((xs[left].mean() + xs[right].mean()) / 2 - 127.5, ys.mean() - 127.5))
        ratios.append((xs[right].mean() - xs[left].mean()) / 200)
    mids = np.array(mids)
    assert np.abs(mids).max() <= 3.5 and set(np.round(mids[:, 0]).astype(int)) >= {-2, -1, 0, 1, 2}
    assert np.abs(mids - np.round(mids)).max() <= 0.5 + 1e-9
    assert 0.99 - 0.005 <= min(ratios) < 0.996 and 1.004 < max(ratios) <= 1.01 + 0.005


def test_pupil_noise_moves_disks_sideways():
    """NED's eye-gaze noise: each pupil disk shifts along x by floor(N(0, 2²)) px, independently, same shape."""
    import cv2

    img = np.zeros((64, 96, 3), np.uint8)
    cv2.circle(img, (30, 32), 4, (255, 0, 0), -1)
    cv2.circle(img, (66, 32), 4, (255, 0, 0), -1)
    rng = np.random.default_rng(1)
    shifts = []
    for _ in range(400):
        out = jitter_pupils(img, rng)
        assert out[..., 0].sum() == img[..., 0].sum() and out[..., 1:].max() == 0
        n, labels = cv2.connectedComponents((out[..., 0] > 0).astype(np.uint8))
        assert n == 3
        ys, xs = np.nonzero(out[..., 0])
        assert ys.mean() == 32
        d = [xs[xs < 48].mean() - 30, xs[xs >= 48].mean() - 66]
        assert all(float(v).is_integer() for v in d)
        shifts.append(d)
    shifts = np.array(shifts)
    assert 1.6 < shifts.std() < 2.4 and -0.8 < shifts.mean() < -0.2      # floor of N(0, 4): mean −0.5
    assert abs(np.corrcoef(shifts.T)[0, 1]) < 0.2
