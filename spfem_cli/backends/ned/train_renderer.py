"""Per-actor fine-tuning of NED's neural renderer from the meta-renderer, with the STCCL term.

NED's recipe (renderer/train.py, train_options.py): batch 1 sequence; frames are generated one after
the other, each fed the two previous *generated* frames, detached (``n_frames_backpropagate = 1``);
every 4 generated frames (``max_frames_per_gpu``) one G step and one D step; losses LSGAN (image
PatchGAN, 2 scales, and the mouth PatchGAN on 72×72 crops), feature matching ×10, VGG19 ×10; Adam
2e-4, betas (0.5, 0.999), constant rate for 20 epochs (``niter`` 20, ``niter_decay`` 0). Data (renderer/data/,
preprocess.sh): the clip is cut into 50-frame sub-sequences; an epoch takes one random window from each; the
generated frames per window (``n_frames_total``) start at 12 and double every 5 epochs (``niter_step``) up to 48
(12, 24, 48, 48 over epochs 1–5, 6–10, 11–15, 16–20); every NMFC / gaze / shape input image is jittered on its
own (±1 % shift and scale, gaze pupils ±2 px), targets, masks and mouth centres are not. Added (ASCCL/STCCL
paper): ``+ 0.3 · metric(generated, real)`` in the G loss, with the gradient on the generated side (the reference
code detached it — defect 2 in reference-facts §2). 0.3 is the reference's effective weight: its hook adds the
metric with weight 1, but the reference metric returns 0.3·Σ over the stages where spfem's returns Σ
(:data:`spfem_cli.train.metric_config.RENDERER_STCCL_WEIGHT`).

Why the generator runs twice per 4 frames: because the previous outputs are detached, the gradient of
each frame does not depend on how its inputs were produced. So the 4 frames are first generated
sequentially without a graph (batched conditioning encoder, :func:`spfem_cli.backends.ned.neural_render.generate`)
and then re-run as *one* batch of 4 with the graph. The values are the same as NED's sequential
pass; the G cost is +1 forward (~+15 % of a step) but the graph pass is batched (GPU-friendly) and each
module sees one forward per backward, which is what DDP requires.

Training data is an "actor folder" of memory-mapped ``.npy`` arrays (:func:`save_actor_data`), so
minutes of 256² video do not need to fit in RAM.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from models.ned_renderer import (
    N_FRAMES_G,
    MultiscaleDiscriminator,
    NedGenerator,
    crop_rois,
    feature_matching_loss,
    find_ned_file,
    load_ned_state,
    lsgan_loss,
    roi_size_for,
)
from models.vgg19 import VGG19Features, VGGPerceptualLoss
from spfem_cli.backends.ned.neural_render import generate, pack_conditioning, temporal_windows
from spfem_cli.backends.ned.renderer_data import ACTOR_ARRAYS
from spfem_cli.errors import SpfemError
from spfem_cli.train.loop import ResumableSampler
from spfem_cli.train.metric_config import RENDERER_STCCL_WEIGHT

NED_FILES = {"G": "latest_net_G.pth", "D": "latest_net_D.pth", "Dm": "latest_net_Dm.pth"}


class PairMetric(Protocol):
    """The STCCL metric (:class:`models.stccl.STCCL`): ``metric(generated, target)``, B×3×H×W RGB in [-1, 1].

    An object with a ``loss(generated, target)`` method is accepted too.
    """

    def __call__(self, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...


def metric_value(metric: PairMetric, generated: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``metric.loss(g, t)`` when defined, else ``metric(g, t)``; gradient flows through ``generated``."""
    fn = getattr(metric, "loss", None)
    return fn(generated, target) if callable(fn) else metric(generated, target)


# --------------------------------------------------------------------------- data
def save_actor_data(folder: Path | str, *, frames: np.ndarray, nmfc: np.ndarray, gaze: np.ndarray, shape: np.ndarray,
                    mask: np.ndarray, mouth: np.ndarray) -> Path:
    """Write one actor's aligned frames and conditioning: uint8 T×H×W×3 (mask T×H×W), mouth centres T×2 (x, y)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"frames": frames, "nmfc": nmfc, "gaze": gaze, "shape": shape, "mask": mask, "mouth": mouth}
    n = frames.shape[0]
    for name, arr in arrays.items():
        if arr.shape[0] != n:
            raise ValueError(f"{name} has {arr.shape[0]} frames, frames has {n}")
        np.save(folder / f"{name}.npy", np.ascontiguousarray(arr))
    (folder / "actor.json").write_text(json.dumps({"frames": int(n), "size": list(frames.shape[1:3])}))
    return folder


def load_actor_data(folder: Path | str) -> dict[str, np.ndarray]:
    """Memory-mapped arrays of an actor folder (see :func:`save_actor_data`)."""
    folder = Path(folder)
    missing = [n for n in ACTOR_ARRAYS if not (folder / f"{n}.npy").is_file()]
    if missing:
        raise SpfemError(f"{folder} is not an actor data folder (missing {', '.join(missing)}.npy)")
    return {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in ACTOR_ARRAYS}


def sequence_length(epoch: int, n_frames_total: int, niter_step: int, cap: int) -> int:
    """NED's schedule: generated frames per sequence in (0-based) ``epoch``.

    ``n_frames_total`` doubles every ``niter_step`` epochs, never above ``cap`` (the sub-sequence length
    minus the two past frames): NED's ``update_sequence_length(epoch // niter_step)`` at the end of each
    epoch sets ``min(max_seq_len, n_frames_total · 2^ratio)`` — 12, 24, 48, 48 for epochs 1–5, 6–10, 11–15, 16–20.
    """
    ratio = max(0, epoch) // max(1, niter_step)
    return max(1, min(cap, n_frames_total * 2 ** min(ratio, 30)))


def affine_jitter(img: np.ndarray, rng: np.random.Generator, translate: float = 0.01,
                  scale: tuple[float, float] = (0.99, 1.01)) -> np.ndarray:
    """NED's input augmentation of one conditioning image (H×W×C uint8), a fresh draw per call.

    Same as NED's ``transforms.RandomAffine(degrees=0, translate=(0.01, 0.01), scale=(0.99, 1.01))``:
    an integer shift ``round(U(−0.01·W, 0.01·W))`` (±3 px at 256²) per axis and a scale U(0.99, 1.01) about
    the image centre, nearest-neighbour, black outside.
    """
    import cv2

    h, w = img.shape[:2]
    tx = int(round(rng.uniform(-translate * w, translate * w)))
    ty = int(round(rng.uniform(-translate * h, translate * h)))
    s = float(rng.uniform(*scale))
    cx, cy = (w - 1) / 2, (h - 1) / 2
    m = np.array([[s, 0.0, cx - s * cx + tx], [0.0, s, cy - s * cy + ty]], np.float64)
    out = cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_NEAREST,
                         borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return out.reshape(img.shape)


def jitter_pupils(gaze: np.ndarray, rng: np.random.Generator, sigma: float = 2.0) -> np.ndarray:
    """NED's eye-gaze noise (``create_eyes_image(add_noise=True)``) on a drawn gaze image (H×W×3 uint8).

    NED moves each eye's points horizontally by N(0, 2²) px before drawing and truncates to int; here each
    drawn pupil disk (a connected component) moves by ``floor(N(0, σ²))`` px along x, clipped to the image.
    NED's 2 % scale noise of the eye points is left out: it changes the disk radius and position by ~0.1 px.
    """
    import cv2

    on = (gaze.max(axis=-1) > 0).astype(np.uint8)
    n, labels = cv2.connectedComponents(on, connectivity=8)
    out = np.zeros_like(gaze)
    w = gaze.shape[1]
    for c in range(1, n):
        yy, xx = np.nonzero(labels == c)
        dx = int(np.floor(sigma * rng.standard_normal()))
        out[yy, np.clip(xx + dx, 0, w - 1)] = gaze[yy, xx]
    return out


def augment_conditioning(nmfc: np.ndarray, gaze: np.ndarray, shape: np.ndarray,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NED's training augmentation (video_dataset.py): every NMFC, eye-gaze and shape image of every frame gets
    its *own* :func:`affine_jitter` draw (gaze images first their pupil noise, :func:`jitter_pupils`).

    The target frames, the masks and the mouth centres are not touched (NED's RGB and mask transforms have no
    augmentation): the generator learns to tolerate few-pixel misregistration of its conditioning.
    """
    out_n, out_g, out_s = (np.empty_like(np.asarray(a)) for a in (nmfc, gaze, shape))
    for t in range(len(out_n)):
        out_n[t] = affine_jitter(np.asarray(nmfc[t]), rng)
        out_s[t] = affine_jitter(np.asarray(shape[t]), rng)
        out_g[t] = affine_jitter(jitter_pupils(np.asarray(gaze[t]), rng), rng)
    return out_n, out_g, out_s


def subsequence_count(n_frames: int, subseq_len: int) -> int:
    """NED's training items per epoch: whole ``subseq_len``-frame parts (a shorter clip is one part)."""
    return max(1, n_frames // max(1, min(subseq_len, n_frames)))


class SequenceWindows(Dataset):
    """NED's renderer training set for one actor: one random window per sub-sequence per epoch.

    NED trains on the actor's clip cut into sub-sequences of ``subseq_len`` = 50 frames
    (``preprocess.sh train`` → ``detect.py --split --seq_length 50``; the last, shorter part is dropped); a
    clip shorter than that is one sub-sequence. Its epoch is one pass over the sub-sequences; item ``i`` is
    ``n + 2`` consecutive frames at a uniformly random start inside sub-sequence ``i``: 2 frames of past
    context, then the ``n`` generated ones, ``n = sequence_length(epoch, …)`` (NED ``n_frames_total``, doubled
    every ``niter_step`` epochs). The epoch comes with the index: ``ds[(i, epoch)]`` (see
    :class:`EpochSampler`); ``ds[i]`` means epoch 0. The window start and the augmentation draw from an RNG
    seeded by ``(seed, epoch, i)``, so an item does not depend on global RNG state and a resumed run sees the
    same data as an uninterrupted one.

    Returns ``cond`` L×10×H×W in [0, 1] (NMFC, gaze, shape jittered by :func:`augment_conditioning` when
    ``augment``; mask channel untouched), ``real`` L×3×H×W in [-1, 1] (masked: -1 outside the face mask, as
    NED's segmented ``faces``) and ``mouth`` L×2 (x, y).
    """

    def __init__(self, data: Mapping[str, np.ndarray], *, n_frames_total: int = 12, niter_step: int = 5,
                 subseq_len: int = 50, augment: bool = False, seed: int = 0) -> None:
        self.data = data
        self.n = int(data["frames"].shape[0])
        if self.n < 1:
            raise SpfemError("the actor data has no frames")
        self.subseq_len = max(1, min(subseq_len, self.n))
        self.count = subsequence_count(self.n, self.subseq_len)
        self.n_frames_total, self.niter_step, self.augment, self.seed = n_frames_total, niter_step, augment, seed
        self.cap = max(1, self.subseq_len - (N_FRAMES_G - 1))

    def __len__(self) -> int:
        return self.count

    def frames_for_epoch(self, epoch: int) -> int:
        """Generated frames per sequence in ``epoch`` (the loaded window has 2 more, when the data allows)."""
        return sequence_length(epoch, self.n_frames_total, self.niter_step, self.cap)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor]:
        i, epoch = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), 0)
        rng = np.random.default_rng([self.seed % 2**32, max(epoch, 0), i])
        length = min(self.subseq_len, self.frames_for_epoch(epoch) + N_FRAMES_G - 1)
        start = i * self.subseq_len + int(rng.integers(0, self.subseq_len - length + 1))  # NED: uniform start
        sl = slice(start, start + length)
        d = self.data
        nmfc, gaze, shape = d["nmfc"][sl], d["gaze"][sl], d["shape"][sl]
        if self.augment:
            nmfc, gaze, shape = augment_conditioning(nmfc, gaze, shape, rng)
        cond = pack_conditioning(nmfc, gaze, shape, d["mask"][sl])
        real = torch.from_numpy(np.array(d["frames"][sl])).permute(0, 3, 1, 2).float() / 127.5 - 1
        mask = cond[:, 9:10]
        real = real * mask - (1 - mask)  # NED trains on segmented faces: black outside the mask, like G's output
        mouth = torch.from_numpy(np.array(d["mouth"][sl])).long()
        return {"cond": cond, "real": real, "mouth": mouth}


class EpochSampler(ResumableSampler):
    """:class:`ResumableSampler` that yields ``(index, epoch)``: NED's sequence length is a function of the epoch.

    The Trainer sets the epoch from the step count (also on resume), so the schedule needs no state of its own
    and works with loader workers and DDP.
    """

    def __iter__(self):
        epoch = self.epoch
        return iter([(i, epoch) for i in self.indices()[self.start:]])


# --------------------------------------------------------------------------- config and models
@dataclass
class RendererTrainConfig:
    """NED renderer hyper-parameters (defaults = NED's train_options) plus the STCCL weight."""

    seq_len: int = 12               # n_frames_total: generated frames per sequence (one trainer step) at the start
    niter_step: int = 5             # niter_step: seq_len doubles every 5 epochs (capped by subseq_len - 2)
    subseq_len: int = 50            # detect.py --seq_length: the clip is cut into 50-frame training sub-sequences
    augment: bool = True            # not --no_augment_input: jitter NMFC / gaze / shape images (augment_conditioning)
    frames_per_step: int = 4        # max_frames_per_gpu: frames per G/D update
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lambda_feat: float = 10.0       # feature matching and VGG weight
    stccl_weight: float = RENDERER_STCCL_WEIGHT   # the reference's 0.3·Σ stages (spfem's metric returns Σ)
    mouth_d: bool = True
    vgg_imagenet_norm: bool = False  # NED feeds [-1, 1] images to VGG unnormalised
    sample_every: int = 200          # PNG sample grid every N steps (0 = off)
    ngf: int = 64                   # the published checkpoints need 64 / 9; tests shrink them
    n_blocks: int = 9
    ndf: int = 64
    extra: dict = field(default_factory=dict)


def ned_weights_init(module: torch.nn.Module) -> None:
    """NED's init: conv weights N(0, 0.02) (biases keep PyTorch's default), as networks.weights_init."""
    for m in module.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            torch.nn.init.normal_(m.weight, 0.0, 0.02)


def build_networks(cfg: RendererTrainConfig, meta: Path | str | None = None,
                   warn: Callable[[str], None] = print) -> tuple[NedGenerator, MultiscaleDiscriminator,
                                                                  MultiscaleDiscriminator | None]:
    """G, D, Dm — from a meta-renderer (a NED checkpoint folder, or its G file with D/Dm beside it) or NED's init."""
    g = NedGenerator(ngf=cfg.ngf, n_blocks=cfg.n_blocks)
    d = MultiscaleDiscriminator(ndf=cfg.ndf)
    dm = MultiscaleDiscriminator(ndf=cfg.ndf) if cfg.mouth_d else None
    for net in (g, d, dm):
        if net is not None:
            ned_weights_init(net)
    if meta is None:
        return g, d, dm
    g_file = find_ned_file(meta, "G")
    if g_file is None:
        raise SpfemError(f"no meta-renderer generator (latest_net_G.pth or <epoch>_net_G.pth) at {meta}: "
                         "`spfem weights fetch ned_meta_renderer` says how to get it")
    load_ned_state(g, g_file)
    for key, net in (("D", d), ("Dm", dm)):
        if net is None:
            continue
        path = find_ned_file(g_file, key)
        if path is not None:
            load_ned_state(net, path)
        else:
            warn(f"no {key} file next to {g_file.name} (e.g. {g_file.name.replace('_net_G', '_net_' + key)}): "
                 f"discriminator {key} starts from NED's init")
    return g, d, dm


# --------------------------------------------------------------------------- the step
class RendererStep:
    """One trainer step = one sequence: for every 4 frames, a G update then a D update (NED order)."""

    def __init__(self, cfg: RendererTrainConfig, vgg_loss: VGGPerceptualLoss, metric: PairMetric | None,
                 sample_dir: Path | None = None) -> None:
        self.cfg, self.vgg_loss, self.metric, self.sample_dir = cfg, vgg_loss, metric, sample_dir

    def _d_losses(self, net, cond, real, fake) -> torch.Tensor:
        """(D_real + D_fake)/2 with one forward of [real; fake] (one forward per backward, for DDP)."""
        preds = net(torch.cat([cond, cond]), torch.cat([real, fake.detach()]))
        n = real.shape[0]
        real_p = [[f[:n] for f in s] for s in preds]
        fake_p = [[f[n:] for f in s] for s in preds]
        return 0.5 * (lsgan_loss(real_p, True) + lsgan_loss(fake_p, False))

    def _g_adv(self, net, cond, real, fake) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            pred_real = net(cond, real)
        pred_fake = net(cond, fake)
        return lsgan_loss(pred_fake, True), feature_matching_loss(pred_fake, pred_real, lambda_feat=self.cfg.lambda_feat)

    def generator_losses(self, fake: torch.Tensor, real: torch.Tensor, cond: torch.Tensor, mouth: torch.Tensor,
                         d: MultiscaleDiscriminator, dm: MultiscaleDiscriminator | None,
                         roi: int) -> dict[str, torch.Tensor]:
        """NED's G terms (+ the STCCL term metric(generated, real), gradient through ``fake``), by name."""
        cfg = self.cfg
        losses = {"G_VGG": self.vgg_loss(fake, real) * cfg.lambda_feat}
        losses["G_GAN"], losses["G_GAN_Feat"] = self._g_adv(d, cond, real, fake)
        if dm is not None:
            crops = [crop_rois(x, mouth, roi) for x in (cond, real, fake)]
            losses["Gm_GAN"], losses["Gm_GAN_Feat"] = self._g_adv(dm, *crops)
        if self.metric is not None and cfg.stccl_weight:
            losses["G_STCCL"] = cfg.stccl_weight * metric_value(self.metric, fake, real.detach()).float()
        return losses

    def __call__(self, batch: Mapping[str, torch.Tensor], tr) -> dict[str, float]:
        cfg = self.cfg
        batch = tr.to_device(batch)
        cond_all, real_all, mouth_all = batch["cond"][0], batch["real"][0], batch["mouth"][0]
        g_raw: NedGenerator = tr.raw("G")
        g_ddp = tr.module("G")
        d_raw, d_ddp = tr.raw("D"), tr.module("D")
        dm_raw = tr.raw("Dm") if cfg.mouth_d else None
        dm_ddp = tr.module("Dm") if cfg.mouth_d else None
        # as NED: the first 2 frames of the window are past context only (padded from the first one if short)
        k = N_FRAMES_G - 1 if cond_all.shape[0] > N_FRAMES_G - 1 else 0
        windows_all = temporal_windows(cond_all[k:], cond_all[:k])
        cond_all, real_all, mouth_all = cond_all[k:], real_all[k:], mouth_all[k:]
        h = cond_all.shape[-2]
        roi = roi_size_for(h)
        prev = torch.zeros(N_FRAMES_G - 1, 3, *cond_all.shape[-2:], device=tr.device)
        logs: dict[str, float] = {}
        n_updates = 0
        for s in range(0, cond_all.shape[0], cfg.frames_per_step):
            win = windows_all[s:s + cfg.frames_per_step]
            cond, real, mouth = cond_all[s:s + cfg.frames_per_step], real_all[s:s + cfg.frames_per_step], \
                mouth_all[s:s + cfg.frames_per_step]
            with tr.autocast():
                seq = generate(g_raw, win, prev).float()          # sequential, no graph
            hist = torch.cat([prev, seq])                          # detached previous outputs of each frame
            prevs = torch.stack([hist[i:i + 2].reshape(-1, *hist.shape[-2:]) for i in range(win.shape[0])])
            prev = hist[-(N_FRAMES_G - 1):]
            # ---- generator update
            for p in list(d_raw.parameters()) + (list(dm_raw.parameters()) if dm_raw is not None else []):
                p.requires_grad_(False)
            with tr.autocast():
                fake = g_ddp(win, prevs).float()
                g_losses = self.generator_losses(fake, real, cond, mouth, d_raw, dm_raw, roi)
                loss_g = sum(g_losses.values())
            tr.backward_step(loss_g, "G")
            for p in list(d_raw.parameters()) + (list(dm_raw.parameters()) if dm_raw is not None else []):
                p.requires_grad_(True)
            # ---- discriminator update
            with tr.autocast():
                loss_d = self._d_losses(d_ddp, cond, real, fake)
                if dm_ddp is not None:
                    loss_d = loss_d + self._d_losses(dm_ddp, *[crop_rois(x, mouth, roi) for x in (cond, real, fake)])
            tr.backward_step(loss_d, "D")
            n_updates += 1
            with torch.no_grad():
                l1 = torch.nn.functional.l1_loss(fake, real)
            step_logs = {**g_losses, "D": loss_d, "L1": l1}
            for k, v in step_logs.items():
                logs[k] = logs.get(k, 0.0) + float(v.detach())
        if self.sample_dir is not None and cfg.sample_every and tr.is_main and (tr.step + 1) % cfg.sample_every == 0:
            save_sample_grid(self.sample_dir / f"step_{tr.step + 1:08d}.png", cond[-1], fake[-1].detach(), real[-1])
        return {**{k: v / max(n_updates, 1) for k, v in logs.items()}, "frames": float(cond_all.shape[0])}


def save_sample_grid(path: Path, cond: torch.Tensor, fake: torch.Tensor, real: torch.Tensor) -> Path:
    """One PNG row: NMFC | eye gaze | shape | generated | real (RGB, what the user watches during training)."""
    import cv2

    tiles = [cond[0:3], cond[3:6], cond[6:9], (fake.float() + 1) / 2, (real.float() + 1) / 2]
    row = torch.cat([t.clamp(0, 1) for t in tiles], 2)
    img = (row.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    tmp.replace(path)
    return path


# --------------------------------------------------------------------------- the run
def export_ned_checkpoint(tr, out_dir: Path) -> None:
    """Write ``latest_net_{G,D,Dm}.pth`` in NED's layout (loadable by NED and by ``--renderer DIR``)."""
    if not tr.is_main:
        return
    for key, name in NED_FILES.items():
        if key in tr.slots:
            tmp = out_dir / f".{name}.tmp"
            torch.save(tr.raw(key).state_dict(), tmp)
            tmp.replace(out_dir / name)


def steps_for_epochs(n_frames: int, epochs: float, subseq_len: int, world_size: int = 1) -> int:
    """Trainer steps for ``epochs`` NED epochs: one sequence per ``subseq_len``-frame sub-sequence per epoch.

    Under DDP every rank trains on its own sequence per step, so an epoch has ``ceil(count / world)`` steps.
    """
    count = subsequence_count(n_frames, subseq_len)
    return max(1, int(round(epochs * -(-count // max(1, world_size)))))


def fine_tune(data: Mapping[str, np.ndarray] | Path | str, out_dir: Path | str, *,
              cfg: RendererTrainConfig | None = None, max_steps: int = 1000, meta: Path | str | None = None,
              metric: PairMetric | None = None, vgg: VGG19Features | None = None, device: str = "auto",
              amp: bool = True, resume: bool = True, ckpt_every: int = 500, log_every: int = 10, seed: int = 0,
              progress: bool = True) -> Path:
    """Fine-tune a person-specific renderer; returns ``out_dir`` holding ``latest_net_{G,D,Dm}.pth``.

    ``vgg`` defaults to the ImageNet VGG19 from the registry (``vgg19_imagenet``); ``metric`` is the
    trained STCCL metric (None = plain NED).
    """
    from spfem_cli.train.loop import TrainConfig, Trainer

    cfg = cfg or RendererTrainConfig()
    out_dir = Path(out_dir)
    if not isinstance(data, Mapping):
        data = load_actor_data(data)
    if vgg is None:
        vgg = VGG19Features().load_imagenet()
    trainer = Trainer(TrainConfig(out_dir=out_dir, max_steps=max_steps, ckpt_every=ckpt_every, log_every=log_every,
                                  seed=seed, device=device, amp=amp, resume=resume, progress=progress,
                                  tensorboard=False),
                      run_config={"renderer": asdict(cfg), "meta": str(meta) if meta else None,
                                  "stccl": metric is not None, "frames": int(data["frames"].shape[0])})
    torch.manual_seed(seed)
    g, d, dm = build_networks(cfg, meta)
    trainer.add_module("G", g)
    trainer.add_module("D", d)
    if dm is not None:
        trainer.add_module("Dm", dm)
    trainer.add_optimizer("G", torch.optim.Adam(trainer.raw("G").parameters(), lr=cfg.lr, betas=cfg.betas))
    trainer.add_optimizer("D", torch.optim.Adam([p for n in ("D", "Dm") if n in trainer.slots
                                                 for p in trainer.raw(n).parameters()], lr=cfg.lr, betas=cfg.betas))
    vgg_loss = VGGPerceptualLoss(vgg, imagenet_norm=cfg.vgg_imagenet_norm).to(trainer.device)
    if isinstance(metric, torch.nn.Module):
        metric = metric.to(trainer.device).eval().requires_grad_(False)
    windows = SequenceWindows(data, n_frames_total=cfg.seq_len, niter_step=cfg.niter_step, subseq_len=cfg.subseq_len,
                              augment=cfg.augment, seed=seed)
    loader = trainer.make_loader(windows, batch_size=1, sampler_cls=EpochSampler)   # the sampler hands over the epoch
    step = RendererStep(cfg, vgg_loss, metric, sample_dir=out_dir / "samples")
    trainer.fit(step, loader)
    export_ned_checkpoint(trainer, out_dir)
    trainer.close()
    return out_dir


def _registry_or_path(value: str) -> Path:
    """A registry name (resolved, WeightsError with instructions if missing) or an existing path."""
    from spfem_cli import weights

    if value in weights.load_registry():
        return weights.resolve(value)
    path = Path(value).expanduser()
    if not path.exists():
        raise SpfemError(f"{value} is neither a weight name (`spfem weights list`) nor an existing path")
    return path


def train_renderer(video: Path | None, out: Path, *, data: Path | None = None, meta: str = "ned_meta_renderer",
                   metric: str | None = "stccl_metric", epochs: float = 20.0, steps: int | None = None,
                   cfg: RendererTrainConfig | None = None, tracker: str = "auto", device: str = "auto", amp: bool = True,
                   resume: bool = True, seed: int = 0, ckpt_every: int = 500, log_every: int = 10) -> Path:
    """`spfem train-renderer`: prepare (or reuse) the actor folder, then :func:`fine_tune` from the meta-renderer."""
    cfg = cfg or RendererTrainConfig()
    out = Path(out)
    meta_path = _registry_or_path(meta) if meta != "none" else None
    metric_model = None
    if metric and metric != "none":
        from models.stccl import STCCL

        metric_model = STCCL.load(_registry_or_path(metric), grad="generated")
    vgg = VGG19Features().load_imagenet()
    if data is None:
        if video is None:
            raise SpfemError("give a VIDEO of the actor or --data ACTOR_FOLDER")
        from spfem_cli.backends.ned.renderer_data import prepare_actor_data

        data = out / "actor"
        if not (data / "actor.json").is_file():
            if tracker == "auto":
                from spfem_cli.face.tracking.track import auto_tracker

                tracker = auto_tracker()
            prepare_actor_data(Path(video), data, tracker=tracker, device=device)
    arrays = load_actor_data(data)
    n_frames = int(arrays["frames"].shape[0])
    if steps is None:
        from spfem_cli.train.loop import dist_env

        steps = steps_for_epochs(n_frames, epochs, cfg.subseq_len, dist_env()[2])
    return fine_tune(arrays, out, cfg=cfg, max_steps=steps, meta=meta_path, metric=metric_model, vgg=vgg,
                     device=device, amp=amp, resume=resume, ckpt_every=ckpt_every, log_every=log_every, seed=seed)
