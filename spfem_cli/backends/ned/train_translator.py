"""Train / fine-tune the NED expression translator, optionally with the STCCL term.

NED's recipe (``foivospar/NED manipulator/train.py``): per step two discriminator updates (latent-
and reference-guided fakes) and two generator updates — the latent-guided one steps G, F and E, the
reference-guided one steps G only. LSGAN; style reconstruction L1 (λ 1); cycle L1 (λ 1); mouth loss
−(Pearson(jaw real, jaw fake) + Pearson(jaw fake, jaw cycle)) (λ 1). Adam lr 1e-4, betas (0, 0.99),
batch 64, Kaiming init, LR decaying linearly to 0 over the last ``niter_decay`` epochs.

STCCL: in the reference-guided generator step the source window and the generated window are
rendered on a fixed template identity and ``metric(render(fake), render(source))`` is added with
weight 0.1. Unlike the reference code (defect #2), the generated render carries the gradient and the
source render is the detached target.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from models.ned_translator import NET_NAMES, NedTranslator, TranslatorConfig, he_init, infer_config
from spfem_cli.errors import SpfemError

Renderer = Callable[[Tensor], Tensor]          # N×51 coefficients -> N×3×H×W images
Metric = Callable[[Tensor, Tensor], Tensor]    # (generated, target) -> scalar loss


@dataclass
class TranslatorTrainConfig:
    """NED's training hyper-parameters (``train_options.py`` / ``base_options.py``) plus the STCCL switch."""

    lr: float = 1e-4
    f_lr: float = 1e-4              # mapping network
    d_lr: float | None = None       # discriminator; None = lr (NED)
    betas: tuple[float, float] = (0.0, 0.99)
    batch_size: int = 64
    seq_len: int = 10
    niter: int = 10                 # epochs
    niter_decay: int = 10           # epochs of linear LR decay at the end
    lambda_sty: float = 1.0
    lambda_cyc: float = 1.0
    lambda_mouth: float = 1.0
    stccl: bool = False             # ablation switch for the STCCL term
    lambda_stccl: float = 0.1
    stccl_frames: int = 9           # consecutive frames (2n+1, n = 4) of each window rendered for STCCL
    pearson_eps: float = 1e-6       # NED divides by the jaw std with no epsilon (NaN on a still jaw)
    model: TranslatorConfig = field(default_factory=TranslatorConfig)


# --------------------------------------------------------------------------- losses
def adv_loss(logits: Tensor, target: float) -> Tensor:
    """LSGAN: mean squared distance of D's logits to 1 (real) or 0 (fake)."""
    return torch.mean((logits - target) ** 2)


def pearson_time(a: Tensor, b: Tensor, eps: float = 1e-6) -> Tensor:
    """Mean over the batch of the Pearson correlation over time of two ``B×T`` signals (NED's mouth term)."""
    a, b = a.float(), b.float()             # correlation in fp32 even under bf16/fp16 autocast
    va = a - a.mean(dim=1, keepdim=True)
    vb = b - b.mean(dim=1, keepdim=True)
    cov = (va * vb).mean(dim=1)
    return torch.mean(cov * torch.rsqrt((va**2).mean(dim=1) + eps) * torch.rsqrt((vb**2).mean(dim=1) + eps))


class StcclTerm:
    """``weight · metric(render(fake), render(source))`` on ``frames`` consecutive frames of each window.

    The renders go to the metric as clips ``B×F×3×H×W`` (spatial + temporal STCCL terms) or, with
    ``clips=False``, as ``(B·F)×3×H×W`` images (spatial only). Not an ``nn.Module`` on purpose: the
    renderer and the metric are frozen, and keeping them out of the translator keeps its checkpoint
    in NED's layout. The source render is the detached target; the generated render keeps the graph
    to the generator (reference defect #2 passed it as the detached side).
    """

    def __init__(self, render: Renderer, metric: Metric, *, weight: float = 0.1, frames: int = 9,
                 clips: bool = True):
        self.render, self.metric, self.weight, self.frames, self.clips = render, metric, weight, frames, clips

    def _render(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        f = min(self.frames, t)
        start = (t - f) // 2
        img = self.render(x[:, start:start + f].reshape(b * f, c))
        return img.unflatten(0, (b, f)) if self.clips else img

    def __call__(self, x_fake: Tensor, x_src: Tensor) -> Tensor:
        with torch.no_grad():
            target = self._render(x_src)
        generated = self._render(x_fake)
        return self.weight * self.metric(generated, target)


class TranslatorLosses(nn.Module):
    """The four networks plus NED's loss computations, so one DDP wrapper covers every update."""

    def __init__(self, nets: NedTranslator, cfg: TranslatorTrainConfig, stccl: StcclTerm | None = None):
        super().__init__()
        if nets.discriminator is None:
            raise ValueError("training needs the discriminator")
        self.nets = nets
        self.cfg = cfg
        self.stccl = stccl

    def _style(self, z: Tensor | None, x_ref: Tensor | None, y_trg: Tensor) -> Tensor:
        return self.nets.mapping_network(z, y_trg) if z is not None else self.nets.style_encoder(x_ref)

    def d_loss(self, x_real: Tensor, y_org: Tensor, y_trg: Tensor, z: Tensor | None, x_ref: Tensor | None):
        out = self.nets.discriminator(x_real, y_org)
        loss_real = adv_loss(out, 1.0)
        with torch.no_grad():
            x_fake = self.nets.generator(x_real, self._style(z, x_ref, y_trg))
        loss_fake = adv_loss(self.nets.discriminator(x_fake, y_trg), 0.0)
        return loss_real + loss_fake, {"real": loss_real.detach(), "fake": loss_fake.detach()}

    def g_loss(self, x_real: Tensor, y_org: Tensor, y_trg: Tensor, z: Tensor | None, x_ref: Tensor | None):
        c = self.cfg
        s_trg = self._style(z, x_ref, y_trg)
        x_fake = self.nets.generator(x_real, s_trg)
        loss_adv = adv_loss(self.nets.discriminator(x_fake, y_trg), 1.0)
        loss_sty = torch.mean(torch.abs(self.nets.style_encoder(x_fake) - s_trg))
        s_org = self.nets.style_encoder(x_real)
        x_rec = self.nets.generator(x_fake, s_org)
        loss_cyc = torch.mean(torch.abs(x_rec - x_real))
        # channel 0 is the jaw opening: keep its motion correlated through fake and cycle
        loss_mouth = (pearson_time(x_real[:, :, 0], x_fake[:, :, 0], c.pearson_eps)
                      + pearson_time(x_fake[:, :, 0], x_rec[:, :, 0], c.pearson_eps))
        loss = loss_adv + c.lambda_sty * loss_sty + c.lambda_cyc * loss_cyc - c.lambda_mouth * loss_mouth
        logs = {"adv": loss_adv.detach(), "sty": loss_sty.detach(), "cyc": loss_cyc.detach(),
                "mouth": loss_mouth.detach()}
        if x_ref is not None and self.stccl is not None:
            loss_stccl = self.stccl(x_fake, x_real)
            loss = loss + loss_stccl
            logs["stccl"] = loss_stccl.detach()
        return loss, logs

    def forward(self, kind: str, x_real: Tensor, y_org: Tensor, y_trg: Tensor, z: Tensor | None = None,
                x_ref: Tensor | None = None):
        return (self.d_loss if kind == "d" else self.g_loss)(x_real, y_org, y_trg, z, x_ref)


# --------------------------------------------------------------------------- step
OPTIMIZERS = NET_NAMES  # one Adam per network, as NED


def build_optimizers(nets: NedTranslator, cfg: TranslatorTrainConfig) -> dict[str, torch.optim.Optimizer]:
    lrs = {"mapping_network": cfg.f_lr, "discriminator": cfg.lr if cfg.d_lr is None else cfg.d_lr}
    return {name: torch.optim.Adam(getattr(nets, name).parameters(), lr=lrs.get(name, cfg.lr), betas=cfg.betas)
            for name in OPTIMIZERS}


def lr_factor(epoch: int, cfg: TranslatorTrainConfig) -> float:
    """NED: after epoch e (0-based) the LR drops by lr/niter_decay once e+1 > niter − niter_decay."""
    decayed = max(0, epoch - (cfg.niter - cfg.niter_decay))
    return max(0.0, 1.0 - decayed / max(cfg.niter_decay, 1))


def _update(loss: Tensor, optims: dict[str, torch.optim.Optimizer], names: tuple[str, ...],
            scaler: torch.amp.GradScaler | None = None) -> None:
    """NED's reset_grad (every optimiser) -> backward -> step the named ones (one scaler covers all)."""
    for opt in optims.values():
        opt.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        for n in names:
            optims[n].step()
        return
    scaler.scale(loss).backward()
    for n in names:
        scaler.step(optims[n])
    scaler.update()


def ned_step(losses: nn.Module, optims: dict[str, torch.optim.Optimizer], batch, *, latent_dim: int,
             autocast=None, scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """One NED iteration: D(latent), D(ref), G+F+E(latent), G(ref). ``losses`` may be DDP-wrapped."""
    import contextlib

    x_real, y_org, x_ref, y_trg = batch
    z = torch.randn(x_real.shape[0], latent_dim, device=x_real.device)
    ctx = autocast if autocast is not None else contextlib.nullcontext
    logs: dict[str, float] = {}
    for prefix, kind, kwargs, names in (
        ("D/latent_", "d", {"z": z}, ("discriminator",)),
        ("D/ref_", "d", {"x_ref": x_ref}, ("discriminator",)),
        ("G/latent_", "g", {"z": z}, ("generator", "mapping_network", "style_encoder")),
        ("G/ref_", "g", {"x_ref": x_ref}, ("generator",)),
    ):
        with ctx():
            loss, parts = losses(kind, x_real, y_org, y_trg, **kwargs)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite {prefix} loss: {', '.join(f'{k}={float(v):.4g}' for k, v in parts.items())}")
        _update(loss, optims, names, scaler)
        logs.update({prefix + k: float(v) for k, v in parts.items()})
    return logs


# --------------------------------------------------------------------------- full run
@dataclass
class TranslatorRun:
    """What ``train-translator`` needs besides the data: where to write, from where to start."""

    out_dir: Path
    finetune: Path | None = None      # NED-layout checkpoint to start from (NED's --finetune)
    max_steps: int | None = None      # default: niter epochs
    device: str = "auto"
    seed: int = 777                   # NED's torch.manual_seed
    ckpt_every: int = 1000
    log_every: int = 10
    amp: bool = True
    resume: bool = True
    progress: bool = True


def init_nets(cfg: TranslatorTrainConfig, finetune: Path | None) -> NedTranslator:
    """Kaiming-initialised networks, overwritten by a NED checkpoint when fine-tuning."""
    if finetune is None:
        nets = NedTranslator(cfg.model)
        nets.apply(he_init)
        return nets
    ckpt = torch.load(finetune, map_location="cpu", weights_only=True)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("nets"), dict):
        ckpt = ckpt["nets"]
    if not isinstance(ckpt, dict) or "generator" not in ckpt:
        raise SpfemError(f"{finetune} is not a NED translator checkpoint (needs generator/mapping_network/style_encoder)")
    nets = NedTranslator(infer_config(ckpt))
    nets.apply(he_init)                       # the discriminator starts fresh if the file has none
    nets.load_ned_state_dict(ckpt)
    return nets


def train_translator(dataset, cfg: TranslatorTrainConfig, run: TranslatorRun,
                     stccl: StcclTerm | None = None) -> Path:
    """Run NED's schedule with the shared :class:`Trainer`; returns the NED-layout ``translator.pth``.

    ``dataset`` yields ``(x_src, y_src, x_ref, y_ref)`` windows (see ``spfem_cli.backends.ned.coeffs``).
    """
    from spfem_cli.train.loop import TrainConfig, Trainer, dist_env

    if cfg.stccl and stccl is None:
        raise SpfemError("--stccl needs the template renderer and the trained metric (or pass --no-stccl)")
    torch.manual_seed(run.seed)
    nets = init_nets(cfg, run.finetune)
    cfg.model = nets.cfg
    world = dist_env()[2]
    steps_per_epoch = max(1, -(-len(dataset) // world) // cfg.batch_size)   # per rank, drop_last
    max_steps = run.max_steps or cfg.niter * steps_per_epoch
    trainer = Trainer(TrainConfig(out_dir=run.out_dir, max_steps=max_steps, ckpt_every=run.ckpt_every,
                                  log_every=run.log_every, seed=run.seed, device=run.device, amp=run.amp,
                                  resume=run.resume, progress=run.progress),
                      run_config={"translator": asdict(cfg), "finetune": str(run.finetune),
                                  "steps_per_epoch": steps_per_epoch})
    losses = trainer.add_module("translator", TranslatorLosses(nets, cfg, stccl if cfg.stccl else None),
                                find_unused_parameters=True)
    optims = build_optimizers(nets, cfg)
    for name, opt in optims.items():
        trainer.add_optimizer(name, opt)
    loader = trainer.make_loader(dataset, cfg.batch_size)
    base = {n: [g["lr"] for g in o.param_groups] for n, o in optims.items()}

    def step(batch, tr) -> dict[str, float]:
        factor = lr_factor(tr.step // steps_per_epoch, cfg)
        for n, opt in optims.items():
            for g, lr0 in zip(opt.param_groups, base[n], strict=True):
                g["lr"] = lr0 * factor
        scaler = tr.scalers["generator"] if tr.scalers["generator"].is_enabled() else None
        logs = ned_step(losses, optims, tr.to_device(batch), latent_dim=cfg.model.latent_dim,
                        autocast=tr.autocast, scaler=scaler)
        logs["lr_factor"] = factor
        return logs

    trainer.fit(step, loader)
    out = Path(run.out_dir) / "translator.pth"
    if trainer.is_main:
        tmp = out.with_suffix(".pth.tmp")
        torch.save(nets.ned_state_dict(), tmp)
        tmp.replace(out)
        (Path(run.out_dir) / "translator_config.json").write_text(json.dumps(
            {"train": asdict(cfg), "stccl": cfg.stccl and stccl is not None}, indent=2, default=str))
    trainer.close()
    return out


class TemplateShapeRenderer:
    """DECA-style grey shape renders of NED coefficients on a fixed template identity.

    ``N×51`` (jaw opening + 50 expression) -> ``N×3×size×size`` RGB in [-1, 1] (the metric's input
    convention): FLAME with zero shape (the mean identity), zero global pose, the jaw opening as the
    first jaw axis-angle value, a fixed frontal orthographic camera. Differentiable in the
    coefficients through the vertex positions and normals (the rasteriser's face choice is discrete).
    Camera (s, tx, ty) = (6, 0, 0) and 224² as NED's own coefficient renders (``manipulator/util/
    visualization.py``, via DECA's decode).
    """

    def __init__(self, flame, *, size: int = 224, cam: tuple[float, float, float] = (6.0, 0.0, 0.0)):
        self.flame = flame
        self.size = size
        self.cam = torch.tensor([cam], dtype=torch.float32)

    def __call__(self, coeffs: Tensor) -> Tensor:
        from models.raster import ndc_to_pixels, orthographic, rasterize
        from spfem_cli.backends.ned.render3d import render_shape

        n = coeffs.shape[0]
        flame = self.flame.to(coeffs.device)
        pose = coeffs.new_zeros(n, 6)
        pose[:, 3] = coeffs[:, 0]
        shape = coeffs.new_zeros(n, flame.n_shape)
        verts = flame(shape, coeffs[:, 1:1 + flame.n_exp], pose).vertices
        cam = self.cam.to(coeffs).expand(n, -1)
        pix = ndc_to_pixels(orthographic(verts, cam), self.size)
        frags = rasterize(pix, flame.faces, self.size)
        return render_shape(frags, flame.faces, verts) * 2 - 1


def template_stccl_term(cfg: TranslatorTrainConfig, device: torch.device, metric_path: Path | None = None,
                        flame=None) -> StcclTerm:
    """The real STCCL term: FLAME template renders + our trained metric (gated FLAME file, trained metric)."""
    from models.flame import FLAME
    from models.stccl import load_metric
    from spfem_cli.weights import resolve

    flame = flame if flame is not None else FLAME.from_registry()
    metric = load_metric(metric_path or resolve("stccl_metric"), device)
    return StcclTerm(TemplateShapeRenderer(flame.to(device).eval()), metric.loss, weight=cfg.lambda_stccl,
                     frames=cfg.stccl_frames, clips=cfg.stccl_frames > 1)


def train_translator_on(root: Path, out: Path, cfg: TranslatorTrainConfig, run: TranslatorRun, *,
                        actors: list[str] | None = None, levels: list[int] | None = None,
                        coeffs_dir: Path | None = None, metric: str | None = "stccl_metric",
                        tracker: str = "fan") -> Path:
    """``spfem train-translator``: MEAD coefficients (extracted first when ``root`` is a video tree) -> run.

    With ``cfg.stccl`` the FLAME template renderer and the trained metric (``metric``: a registry name
    or a file) are loaded; without it the run is plain NED (the ablation). The run folder records which.
    """
    from spfem_cli.backends.ned.coeffs import CoeffWindows, extract_mead_coeffs, is_mead_video_root, load_clips
    from spfem_cli.device import pick_device

    root = Path(root)
    if is_mead_video_root(root):
        coeffs_dir = Path(coeffs_dir) if coeffs_dir is not None else Path(out) / "coeffs"
        extract_mead_coeffs(root, coeffs_dir, actors=actors, levels=levels, tracker=tracker, device=run.device)
        root = coeffs_dir
    data = CoeffWindows(load_clips(root, actors, levels=levels), seq_len=cfg.seq_len, seed=run.seed)
    term = None
    if cfg.stccl:
        term = template_stccl_term(cfg, pick_device(run.device), _metric_file(metric or "stccl_metric"))
    return train_translator(data, cfg, run, term)


def _metric_file(metric: str) -> Path:
    """A metric file path or registry name -> an existing file, or one clear error."""
    p = Path(metric)
    if p.is_file():
        return p
    if p.suffix or "/" in metric:
        raise SpfemError(f"STCCL metric file not found: {metric}; train one with `spfem train-metric` or pass --no-stccl")
    from spfem_cli.weights import resolve

    return resolve(metric)
