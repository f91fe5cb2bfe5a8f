"""Per-actor fine-tuning of NED's neural renderer from the meta-renderer, with the STCCL term.

NED's recipe (renderer/train.py, train_options.py): batch 1 sequence; frames are generated one after
the other, each fed the two previous *generated* frames, detached (``n_frames_backpropagate = 1``);
every 4 generated frames (``max_frames_per_gpu``) one G step and one D step; losses LSGAN (image
PatchGAN, 2 scales, and the mouth PatchGAN on 72×72 crops), feature matching ×10, VGG19 ×10; Adam
2e-4, betas (0.5, 0.999), constant rate for 20 epochs. Added (ASCCL/STCCL paper): ``+ 1 · metric(
generated, real)`` in the G loss, with the gradient on the generated side (the reference code detached
it — defect 2 in reference-facts §2).

Why the generator runs twice per 4 frames: because the previous outputs are detached, the gradient of
each frame does not depend on how its inputs were produced. So the 4 frames are first generated
sequentially without a graph (batched conditioning encoder, :func:`spfem_cli.neural_render.generate`)
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
from spfem_cli.errors import SpfemError
from spfem_cli.neural_render import generate, pack_conditioning, temporal_windows

ACTOR_ARRAYS = ("frames", "nmfc", "gaze", "shape", "mask", "mouth")
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


class SequenceWindows(Dataset):
    """Item i: ``length`` consecutive frames starting near ``i·length`` (random jitter, like NED's random start).

    The trainer asks for ``seq_len + 2`` frames: the first two are the past context of the first generated one.

    Returns ``cond`` L×10×H×W in [0, 1], ``real`` L×3×H×W in [-1, 1] (masked: -1 outside the face mask, as
    NED's segmented ``faces``) and ``mouth`` L×2 (x, y).
    """

    def __init__(self, data: Mapping[str, np.ndarray], length: int) -> None:
        self.data = data
        self.n = int(data["frames"].shape[0])
        if self.n < 1:
            raise SpfemError("the actor data has no frames")
        self.length = min(length, self.n)
        self.count = max(1, self.n // self.length)  # NED: one random window per sequence per epoch

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        base = i * self.length
        jitter = int(np.random.randint(0, self.length)) if self.n > (i + 1) * self.length else 0
        start = min(base + jitter, self.n - self.length)
        sl = slice(start, start + self.length)
        d = self.data
        cond = pack_conditioning(d["nmfc"][sl], d["gaze"][sl], d["shape"][sl], d["mask"][sl])
        real = torch.from_numpy(np.array(d["frames"][sl])).permute(0, 3, 1, 2).float() / 127.5 - 1
        mask = cond[:, 9:10]
        real = real * mask - (1 - mask)  # NED trains on segmented faces: black outside the mask, like G's output
        mouth = torch.from_numpy(np.array(d["mouth"][sl])).long()
        return {"cond": cond, "real": real, "mouth": mouth}


# --------------------------------------------------------------------------- config and models
@dataclass
class RendererTrainConfig:
    """NED renderer hyper-parameters (defaults = NED's train_options) plus the STCCL weight."""

    seq_len: int = 12               # n_frames_total: generated frames per sequence (one trainer step)
    frames_per_step: int = 4        # max_frames_per_gpu: frames per G/D update
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lambda_feat: float = 10.0       # feature matching and VGG weight
    stccl_weight: float = 1.0
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
        return {k: v / max(n_updates, 1) for k, v in logs.items()}


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


def steps_for_epochs(n_frames: int, epochs: float, seq_len: int) -> int:
    """Trainer steps (sequences) so that every frame is generated ``epochs`` times on average."""
    return max(1, int(round(epochs * max(1, n_frames // max(1, seq_len)))))


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
    loader = trainer.make_loader(SequenceWindows(data, cfg.seq_len + N_FRAMES_G - 1), batch_size=1)
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
                   cfg: RendererTrainConfig | None = None, tracker: str = "fan", device: str = "auto", amp: bool = True,
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
        from spfem_cli.train.renderer_data import prepare_actor_data

        data = out / "actor"
        if not (data / "actor.json").is_file():
            prepare_actor_data(Path(video), data, tracker=tracker, device=device)
    arrays = load_actor_data(data)
    n_frames = int(arrays["frames"].shape[0])
    max_steps = steps if steps is not None else steps_for_epochs(n_frames, epochs, cfg.seq_len)
    return fine_tune(arrays, out, cfg=cfg, max_steps=max_steps, meta=meta_path, metric=metric_model, vgg=vgg,
                     device=device, amp=amp, resume=resume, ckpt_every=ckpt_every, log_every=log_every, seed=seed)
