"""Translator training: a tiny CPU run learns a synthetic emotion while keeping the jaw signal; the STCCL
term's gradient reaches the generator; coefficient data caches."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from models.ned_translator import NedTranslator, TranslatorConfig, he_init
from spfem_cli.backends.ned.coeffs import CoeffWindows, build_actor_cache, load_clips, read_actor_cache
from spfem_cli.backends.ned.train_translator import (
    StcclTerm,
    TemplateShapeRenderer,
    TranslatorLosses,
    TranslatorRun,
    TranslatorTrainConfig,
    build_optimizers,
    lr_factor,
    ned_step,
    pearson_time,
    train_translator,
)
from spfem_cli.backends.ned.translate import ExpressionSeq, translate

PATTERN = np.zeros(51, np.float32)
PATTERN[1:7] = [1.0, -0.8, 0.6, 1.2, -0.5, 0.9]   # the synthetic "angry" offset on 6 expression channels


def _synthetic_clip(rng: np.random.Generator, label: int, t: int = 40) -> np.ndarray:
    """Speech = a jaw sinusoid of random rate and phase; emotion = PATTERN added for label 1."""
    c = rng.normal(0, 0.05, (t, 51)).astype(np.float32)
    c[:, 0] = 0.2 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.08, 0.2) * np.arange(t) + rng.uniform(0, 2 * np.pi))
    return c + PATTERN if label == 1 else c


def _tiny_cfg(**kw) -> TranslatorTrainConfig:
    model = TranslatorConfig(n_emotions=2, gen_hidden=32, enc_lstm=16, mapping_hidden=16)
    return TranslatorTrainConfig(model=model, **kw)


class _LinearRenderer:
    """Stand-in for the FLAME template renderer: a fixed random linear map of the 51 coefficients to a
    3×16×16 image, tanh to [-1, 1]. Differentiable, like the real one."""

    def __init__(self, seed: int = 0):
        self.w = torch.randn(51, 3 * 16 * 16, generator=torch.Generator().manual_seed(seed)) * 0.3

    def __call__(self, coeffs: torch.Tensor) -> torch.Tensor:
        return torch.tanh(coeffs @ self.w).view(-1, 3, 16, 16)


def test_tiny_training_moves_emotion_channels_and_keeps_jaw(tmp_path):
    rng = np.random.default_rng(0)
    clips = [(_synthetic_clip(rng, label), label) for label in (0, 1) for _ in range(24)]
    data = CoeffWindows(clips, seed=0)
    # NED's losses and Adam betas; higher LRs (G faster than D) and no decay only to finish in seconds
    cfg = _tiny_cfg(lr=2e-3, f_lr=2e-3, d_lr=1e-3, batch_size=32, niter=100, niter_decay=0)
    run = TranslatorRun(out_dir=tmp_path / "run", max_steps=150, device="cpu", seed=0, ckpt_every=10_000,
                        log_every=50, amp=False, progress=False)
    out = train_translator(data, cfg, run)
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert logs[-1]["step"] == 150 and "G/ref_mouth" in logs[-1] and "G/ref_stccl" not in logs[-1]

    test_rng = np.random.default_rng(123)
    moves, others, corrs = [], [], []
    for _ in range(8):
        src = ExpressionSeq(_synthetic_clip(test_rng, 0, t=60))
        fake = translate(src, "angry", 1.0, out, seed=int(test_rng.integers(1000)))  # index 1 = the trained emotion
        delta = (fake.coeffs - src.coeffs).mean(0)
        moves.append(delta[1:7] @ PATTERN[1:7] / (PATTERN[1:7] @ PATTERN[1:7]))
        others.append(np.abs(delta[7:]).mean())
        corrs.append(np.corrcoef(src.jaw, fake.jaw)[0, 1])
    assert 0.6 < np.mean(moves) < 1.4, moves        # the emotion pattern appeared (1 = exactly the offset)
    assert np.mean(others) < 0.15, others            # the other channels stayed put
    assert min(corrs) >= 0.95, corrs                 # speech (jaw motion) kept


def test_stccl_term_alone_reaches_the_generator_and_not_the_source():
    from models.stccl import STCCL, STCCLConfig

    torch.manual_seed(0)
    metric = STCCL(STCCLConfig(arch="r18", input_size=64, samples=(4, 4, 2, 1))).eval().requires_grad_(False)
    cfg = _tiny_cfg(stccl=True, stccl_frames=3)
    nets = NedTranslator(cfg.model)
    nets.apply(he_init)
    renders: list[torch.Tensor] = []
    base = _LinearRenderer()

    def render(c: torch.Tensor) -> torch.Tensor:
        img = base(c)
        renders.append(img)
        return img

    term = StcclTerm(render, metric.loss, weight=cfg.lambda_stccl, frames=cfg.stccl_frames)
    x_src = torch.randn(2, 10, 51, requires_grad=True)
    x_ref = torch.randn(2, 10, 51)
    x_fake = nets.generator(x_src, nets.style_encoder(x_ref))
    loss = term(x_fake, x_src)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() != 0
    grads = [p.grad for p in nets.generator.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    # the source render is the detached target (defect #2 fixed: not the generated one)
    assert not renders[0].requires_grad and renders[1].requires_grad
    assert renders[0].shape == (6, 3, 16, 16)
    assert all(p.grad is None for p in metric.parameters())


def test_stccl_is_only_in_the_reference_guided_generator_step_and_switchable():
    calls = []

    def metric(gen, tgt):
        calls.append(gen.shape)
        return (gen - tgt).abs().mean()

    torch.manual_seed(0)
    for on in (True, False):
        calls.clear()
        cfg = _tiny_cfg(stccl=on, batch_size=4, stccl_frames=5)
        nets = NedTranslator(cfg.model)
        losses = TranslatorLosses(nets, cfg, StcclTerm(_LinearRenderer(), metric, frames=5) if on else None)
        batch = (torch.randn(4, 10, 51), torch.randint(0, 2, (4,)), torch.randn(4, 10, 51), torch.randint(0, 2, (4,)))
        logs = ned_step(losses, build_optimizers(nets, cfg), batch, latent_dim=4)
        assert ("G/ref_stccl" in logs) == on and "G/latent_stccl" not in logs
        assert len(calls) == (1 if on else 0)
        if on:
            assert calls[0] == (4, 5, 3, 16, 16)     # clips of 5 consecutive frames per window
        assert {"D/latent_real", "D/ref_fake", "G/latent_adv", "G/latent_sty", "G/latent_cyc", "G/ref_mouth"} <= set(logs)


def test_template_renderer_is_differentiable_in_the_coefficients():
    from models.flame import FLAME, synthetic_flame
    from spfem_cli.face.align import TEMPLATE_68

    flame = FLAME(*synthetic_flame(TEMPLATE_68, grid=21))
    render = TemplateShapeRenderer(flame, size=48, cam=(5.0, 0.0, 0.0))
    coeffs = torch.zeros(2, 51)
    coeffs[1, 0] = 0.3                           # open jaw
    coeffs.requires_grad_(True)
    img = render(coeffs)
    assert img.shape == (2, 3, 48, 48) and img.min() >= -1 and img.max() <= 1
    assert (img[0] > -1).float().mean() > 0.1   # the face covers the picture
    assert not torch.allclose(img[0], img[1])   # the jaw changes the render
    img.sum().backward()
    assert coeffs.grad[:, 0].abs().sum() > 0


def test_mouth_loss_is_pearson_and_lr_schedule_is_neds():
    a = torch.randn(3, 10)
    b = 2 * a + 1
    assert abs(pearson_time(a, b).item() - 1) < 1e-4
    assert abs(pearson_time(a, -a).item() + 1) < 1e-4
    ref = np.mean([np.corrcoef(x, y)[0, 1] for x, y in zip(a.numpy(), torch.randn(3, 10).numpy(), strict=True)])
    assert np.isfinite(ref)
    cfg = TranslatorTrainConfig()                     # niter 10, niter_decay 10: NED decays from epoch 1
    assert [round(lr_factor(e, cfg), 3) for e in range(3)] == [1.0, 0.9, 0.8]
    assert lr_factor(9, cfg) == pytest.approx(0.1)
    assert pearson_time(torch.zeros(2, 10), torch.randn(2, 10)).isfinite().all()  # a still jaw: no NaN


def test_coefficient_cache_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    for emo, clip in (("angry", "001"), ("neutral", "002"), ("contempt", "003")):
        d = tmp_path / "M005" / emo / "level_1"
        d.mkdir(parents=True, exist_ok=True)
        np.save(d / f"{clip}.npy", rng.normal(size=(15, 51)).astype(np.float32))
    bad = np.full((12, 51), np.nan, np.float32)
    np.save(tmp_path / "M005" / "neutral" / "level_1" / "004.npy", bad)
    path = build_actor_cache(tmp_path, "M005")
    assert {c.key for c in read_actor_cache(path)} == {"angry/level_1/001", "neutral/level_1/002",
                                                       "contempt/level_1/003", "neutral/level_1/004"}
    clips = load_clips(tmp_path)                     # contempt is not one of NED's 7 classes
    assert sorted(c.emotion for c in clips) == ["angry", "neutral", "neutral"]
    ds = CoeffWindows(clips)
    assert len(ds) == 12                             # 6 windows per 15-frame clip; the NaN clip gives none
    x, y, xr, yr = ds[0]
    assert x.shape == (10, 51) and y.dtype == torch.int64 and xr.shape == (10, 51)


def test_finetune_starts_from_a_ned_checkpoint_without_discriminator(tmp_path):
    from spfem_cli.backends.ned.train_translator import init_nets

    cfg = _tiny_cfg()
    torch.manual_seed(1)
    src = NedTranslator(cfg.model, with_discriminator=False)
    path = tmp_path / "20_nets_finetuned.pth"
    torch.save(src.ned_state_dict(), path)
    nets = init_nets(TranslatorTrainConfig(), path)      # sizes come from the file, not the default config
    assert nets.cfg == cfg.model and nets.discriminator is not None
    for name in ("generator", "mapping_network", "style_encoder"):
        for k, v in getattr(src, name).state_dict().items():
            assert torch.equal(getattr(nets, name).state_dict()[k], v)
    bad = tmp_path / "bad.pth"
    torch.save({"weights": torch.zeros(1)}, bad)
    from spfem_cli.errors import SpfemError

    with pytest.raises(SpfemError):
        init_nets(cfg, bad)


def test_one_ned_step_with_the_real_term_parts():
    """The shipped composition: FLAME template renders (synthetic FLAME layout) + the STCCL metric module."""
    from models.flame import FLAME, synthetic_flame
    from models.stccl import STCCL, STCCLConfig
    from spfem_cli.face.align import TEMPLATE_68

    torch.manual_seed(0)
    metric = STCCL(STCCLConfig(arch="r18", input_size=64, samples=(4, 4, 2, 1))).eval().requires_grad_(False)
    render = TemplateShapeRenderer(FLAME(*synthetic_flame(TEMPLATE_68, grid=21)), size=48, cam=(5.0, 0.0, 0.0))
    cfg = _tiny_cfg(stccl=True, stccl_frames=3, batch_size=2)
    nets = NedTranslator(cfg.model)
    losses = TranslatorLosses(nets, cfg, StcclTerm(render, metric.loss, weight=0.1, frames=3))
    before = [p.detach().clone() for p in nets.generator.parameters()]
    batch = (torch.randn(2, 10, 51) * 0.3, torch.tensor([0, 1]), torch.randn(2, 10, 51) * 0.3, torch.tensor([1, 0]))
    logs = ned_step(losses, build_optimizers(nets, cfg), batch, latent_dim=4)
    assert np.isfinite(logs["G/ref_stccl"]) and logs["G/ref_stccl"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, nets.generator.parameters(), strict=True))


def test_extract_mead_coeffs_uses_the_reconstruct_stage(tmp_path, monkeypatch):
    """Plumbing only (DECA is gated): tracking and reconstruction are replaced by fakes that write a real
    Reconstruction file; the per-clip arrays, the NaN rows and the actor cache must come out right."""
    from fractions import Fraction

    import spfem_cli.backends.ned.reconstruct as reconstruct
    import spfem_cli.face.preprocess as preprocess
    from spfem_cli.backends.ned.coeffs import extract_mead_coeffs, is_mead_video_root

    mead = tmp_path / "MEAD"
    for emo, lvl in (("happy", 3), ("contempt", 3), ("neutral", 1)):
        d = mead / "M005" / "video" / "front" / emo / f"level_{lvl}"
        d.mkdir(parents=True)
        (d / "001.mp4").write_bytes(b"not decoded by the fakes")
    assert is_mead_video_root(mead) and not is_mead_video_root(tmp_path)
    calls = []

    def fake_reconstruct(video, track, out_dir, device, **kw):
        calls.append(video)
        codes = np.random.default_rng(len(calls)).normal(size=(20, 364)).astype(np.float32)
        codes[3] = np.nan
        valid = np.isfinite(codes).all(1)
        return reconstruct.Reconstruction(codes, valid, np.zeros((20, 2, 3)), Fraction(30)).save(
            tmp_path / f"r{len(calls)}.npz")

    monkeypatch.setattr(preprocess, "cached_track", lambda video, tracker="fan", progress=False: object())
    monkeypatch.setattr(reconstruct, "reconstruct_video", fake_reconstruct)
    out = tmp_path / "coeffs"
    assert extract_mead_coeffs(mead, out, device="cpu") == ["M005"]
    assert len(calls) == 2                                   # contempt is not a NED class: skipped
    clips = load_clips(out)
    assert sorted(c.key for c in clips) == ["happy/level_3/001", "neutral/level_1/001"]
    assert all(c.coeffs.shape == (20, 51) and np.isnan(c.coeffs[3]).all() for c in clips)
    extract_mead_coeffs(mead, out, device="cpu")             # second run: cached, nothing reconstructed
    assert len(calls) == 2
    assert len(CoeffWindows(clips)) == 2 * 7                 # windows touching the NaN frame are dropped
