"""STCCL correlation metric (ASCCL CVPR 2024 §4 + the STCCL temporal term) as a loss module.

``loss = STCCL(cfg); value = loss(generated, target)``

Inputs: ``generated`` and ``target`` are ``B×3×H×W`` images or ``B×T×3×H×W`` clips of T = 2n+1
time-aligned frames, **RGB in [-1, 1]** (the ArcFace convention). Any size: the module resizes to
``input_size`` (224) itself, so callers never resize after normalising (reference defect 4).

Spatial term, per backbone stage l (IResNet stage outputs φˡ, C = 64/128/256/512):
  * ``n_l`` centres (default 32/16/8/4) are drawn without replacement from the *central square* of
    the H×W map, shared by both images and the whole batch. The paper's square has side
    ``H//2 + 0.45·H`` (≈ 0.95·H: 106 of 112, 13 of 14), i.e. it only trims a thin border; at the
    14² stage its margin is 0, so the reference's neighbours fall off the map and wrap around
    (defect 3). We keep the paper's side but clamp it to ``H−2`` and centre it with a margin of at
    least 1, so every centre's 8 neighbours are inside the map: no wrap-around, no padding.
  * disparity of centre i and neighbour j: ``d = φ(i) − φ(j)`` (C-dim), projected by the stage's
    ``Linear(C,C)-ReLU-Linear(C,C/4)`` and L2-normalised → 8·n rows per image.
  * InfoNCE (τ = 0.07): query = generated row s, positive = the target's row s (same centre and
    neighbour), negatives = the target's other rows t ≠ s of the same image; cross-entropy over
    [positive, negatives] per row.
Temporal term (clips only): for frame pairs (a, b) of the clip (all pairs or adjacent pairs),
``d = φ_a(p) − φ_b(p)`` at 8·n_l positions p of the central square, the same projection (or a
separate one, ``share_projection=False``) and the same InfoNCE, negatives = other positions of the
same frame pair of the target clip.

DAAS (disparity-aware adaptive strategy, paper eq. 6/7): every row's cross-entropy is weighted
*before* the mean (reference defect 1 weighted the mean, i.e. one scalar) by
``w = λ · sigmoid(x)^r`` (λ = r = 2) where **x is the RMS magnitude of the target's raw backbone
disparity**, ``x = ‖d_target‖₂ / √C`` (before projection), detached. Target side, because the weight
should mark regions that move a lot in real faces (the mouth) and must not give the generator a way
to lower the loss by shrinking its own disparities; RMS (not the plain norm) keeps x on the scale of
one activation so the sigmoid does not saturate for wide stages. Since x ≥ 0, w ∈ [λ/2^r, λ) = [0.5, 2).

Gradients: ``grad="generated"`` (default, for using the metric as a loss) computes the target side
under ``no_grad``; ``grad="both"`` lets both sides carry gradient (metric pre-training).

Reproduction switches (what the released code, jianmanlincjx/STCCL ``model/spatial_temproal_coherent_model.py``
and ASCCL's loss, does differently from the paper; the defaults are the paper's method as described above):
  * ``daas_variant="released"``: the spatial weight is per *element* of the generated (first-argument) side's
    raw disparity, ``t = sigmoid(|d|)``, ``w = λ·t^r`` where ``t > 0.8`` else 1, and the stage term is
    ``mean(CE) · mean(w)`` (the release multiplies the batch-mean cross-entropy by the weight tensor, so the
    weights only act through their mean); the weight keeps its gradient, as in the release. No weight on the
    temporal term (the release passes τ in the weight's place there). ``"row"`` (default): per-row weights
    before the mean (above).
  * ``temporal_positions="whole"``: the temporal term's 8·n_l positions are drawn *with replacement* over the
    whole H×W map (the release's ``torch.randint(0, H·W, (N,))``); ``"central"`` (default): distinct positions
    in the central square, like the spatial centres.
Not reproduced: the release's temporal branch runs the sampled features through per-stage transformers held
in a plain list (never trained or saved: defect 5), so no released checkpoint carries them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from models.iresnet import IResNet

NEIGHBOURS = ((-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1))
FILE_FORMAT = "spfem-stccl-v1"
RELEASED_DAAS_THRESHOLD = 0.8   # the release weights only elements with sigmoid(|d|) > 0.8


@dataclass
class STCCLConfig:
    """Every hyper-parameter of the metric; saved inside the metric file."""

    arch: str = "r50"
    input_size: int = 224
    samples: tuple[int, ...] = (32, 16, 8, 4)     # centres per stage
    tau: float = 0.07
    mode: Literal["spatial", "temporal", "joint"] = "joint"
    temporal_pairs: Literal["all", "adjacent"] = "all"
    daas: bool = True
    daas_variant: Literal["row", "released"] = "row"
    daas_lambda: float = 2.0
    daas_r: float = 2.0
    temporal_positions: Literal["central", "whole"] = "central"
    spatial_weight: float = 1.0
    temporal_weight: float = 1.0
    share_projection: bool = True
    grad: Literal["generated", "both"] = "generated"
    extra: dict = field(default_factory=dict)


@dataclass
class STCCLTerms:
    """The loss and its parts (for logs and analysis)."""

    total: torch.Tensor
    spatial: torch.Tensor
    temporal: torch.Tensor
    per_stage: dict[str, float]


def central_range(size: int) -> tuple[int, int]:
    """[start, stop) of centre coordinates along one axis: side min(size//2 + 0.45·size, size−2), margin ≥ 1."""
    side = min(int(size // 2 + 0.45 * size), size - 2)
    if side < 1:
        raise ValueError(f"feature map of size {size} is too small for 8-neighbour disparities (need ≥ 3)")
    start = max(1, (size - side) // 2)
    return start, min(start + side, size - 1)


def sample_centres(h: int, w: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` distinct (y, x) centres in the central square (fewer if the square is smaller), long (n, 2)."""
    y0, y1 = central_range(h)
    x0, x1 = central_range(w)
    cells = (y1 - y0) * (x1 - x0)
    pick = torch.randperm(cells, generator=generator)[: min(n, cells)]
    return torch.stack([pick // (x1 - x0) + y0, pick % (x1 - x0) + x0], dim=1)


def neighbour_pairs(centres: torch.Tensor, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat indices (y·W + x) of every centre repeated 8× and of its 8 neighbours (row-major, no wrap)."""
    offsets = torch.tensor(NEIGHBOURS, dtype=torch.long)
    nb = centres[:, None, :] + offsets[None]                     # n × 8 × 2
    c = centres[:, None, :].expand_as(nb)
    return (c[..., 0] * w + c[..., 1]).reshape(-1), (nb[..., 0] * w + nb[..., 1]).reshape(-1)


def projection(c: int) -> nn.Sequential:
    """f(·) of paper eq. 3: Linear(C,C)-ReLU-Linear(C,C/4)."""
    return nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, c // 4))


def info_nce_rows(q: torch.Tensor, k: torch.Tensor, tau: float) -> torch.Tensor:
    """Per-row InfoNCE of L2-normalised ``q``, ``k`` (G×S×D): row s's positive is k[s], negatives k[t≠s]."""
    # fp32 even under autocast: logits reach 1/τ ≈ 14, where bf16 steps are 0.06.
    with torch.autocast(q.device.type, enabled=False):
        logits = torch.bmm(q.float(), k.float().transpose(1, 2)) / tau   # G × S × S; diagonal = positives
    labels = torch.arange(q.shape[1], device=q.device).expand(q.shape[0], -1)
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(q.shape[:2])


class STCCL(nn.Module):
    """The spatial-temporal coherent correlation metric; ``forward(generated, target)`` → scalar loss."""

    def __init__(self, config: STCCLConfig | None = None):
        super().__init__()
        self.config = config or STCCLConfig()
        self.backbone = IResNet(self.config.arch)
        chans = self.backbone.channels
        if len(self.config.samples) != len(chans):
            raise ValueError(f"samples needs one count per stage ({len(chans)}), got {self.config.samples}")
        self.spatial_proj = nn.ModuleList(projection(c) for c in chans)
        # Registered ModuleList (reference defect 5 kept temporal modules in a plain list).
        self.temporal_proj = None if self.config.share_projection else nn.ModuleList(projection(c) for c in chans)
        self.last_parts: dict[str, float] = {}    # parts of the latest loss, for training logs

    # ------------------------------------------------------------------ features
    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """φ¹…φ⁴ of ``images`` (N×3×H×W, RGB, [-1, 1]), resized to ``input_size`` first when needed."""
        size = self.config.input_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return self.backbone(images)

    def daas_weight(self, raw_target: torch.Tensor) -> torch.Tensor:
        """w = λ·sigmoid(x)^r per row, x = RMS of the target's raw disparity (…×C → …); ones when off."""
        if not self.config.daas:
            return torch.ones(raw_target.shape[:-1], device=raw_target.device, dtype=raw_target.dtype)
        x = raw_target.detach().float().norm(dim=-1) / raw_target.shape[-1] ** 0.5
        return self.config.daas_lambda * torch.sigmoid(x) ** self.config.daas_r

    def released_daas_weight(self, raw_generated: torch.Tensor) -> torch.Tensor:
        """The release's per-element weight (…×C → …×C): ``λ·t^r`` where ``t = sigmoid(|d|) > 0.8``, else 1.

        Computed on the generated side's raw disparity and not detached, as in the release.
        """
        t = torch.sigmoid(raw_generated.float().abs())
        return torch.where(t > RELEASED_DAAS_THRESHOLD, self.config.daas_lambda * t ** self.config.daas_r,
                           torch.ones_like(t))

    def weighted_mean(self, rows: torch.Tensor, raw_generated: torch.Tensor, raw_target: torch.Tensor, *,
                      temporal: bool) -> torch.Tensor:
        """One stage's term from its per-row InfoNCE ``rows`` (G×S) and raw disparities (G×S×C) of both sides."""
        cfg = self.config
        if not cfg.daas:
            return rows.mean()
        if cfg.daas_variant == "released":
            return rows.mean() if temporal else rows.mean() * self.released_daas_weight(raw_generated).mean()
        return (self.daas_weight(raw_target) * rows).mean()

    def draw_temporal_positions(self, h: int, w: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """Flat positions (y·W + x) of the temporal term: central square, or the release's draw with replacement."""
        if self.config.temporal_positions == "whole":
            return torch.randint(0, h * w, (n,), generator=generator)
        pos = sample_centres(h, w, n, generator)
        return pos[:, 0] * w + pos[:, 1]

    def _project(self, stage: int, d: torch.Tensor, temporal: bool) -> torch.Tensor:
        heads = self.temporal_proj if temporal and self.temporal_proj is not None else self.spatial_proj
        return F.normalize(heads[stage](d), dim=-1)

    def spatial_disparities(self, feat: torch.Tensor, stage: int, idx: tuple[torch.Tensor, torch.Tensor]
                            ) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw B×S×C, projected+normalised B×S×C/4) disparities at the given (centre, neighbour) indices."""
        flat = feat.flatten(2)                                    # B × C × HW
        raw = (flat[:, :, idx[0]] - flat[:, :, idx[1]]).transpose(1, 2)
        return raw, self._project(stage, raw, temporal=False)

    def frame_pairs(self, t: int) -> torch.Tensor:
        """(P, 2) frame index pairs of a T-frame clip: all a<b, or adjacent (a, a+1)."""
        if self.config.temporal_pairs == "adjacent":
            return torch.stack([torch.arange(t - 1), torch.arange(1, t)], dim=1)
        return torch.combinations(torch.arange(t), r=2)

    def temporal_disparities(self, feat: torch.Tensor, stage: int, positions: torch.Tensor, pairs: torch.Tensor
                             ) -> tuple[torch.Tensor, torch.Tensor]:
        """For clip features B×T×C×H×W: (raw, projected) of φ_a(p) − φ_b(p), shape (B·P)×S×C[/4]."""
        b, t, c = feat.shape[:3]
        flat = feat.flatten(3)[..., positions]                    # B × T × C × S
        raw = (flat[:, pairs[:, 0]] - flat[:, pairs[:, 1]])       # B × P × C × S
        raw = raw.transpose(2, 3).reshape(b * len(pairs), len(positions), c)
        return raw, self._project(stage, raw, temporal=True)

    # ------------------------------------------------------------------ loss
    def terms(self, generated: torch.Tensor, target: torch.Tensor, *,
              generator: torch.Generator | None = None) -> STCCLTerms:
        """The loss and its parts; ``generator`` fixes the random centres (else torch's global RNG)."""
        if generated.shape != target.shape:
            raise ValueError(f"generated {tuple(generated.shape)} and target {tuple(target.shape)} differ in shape")
        clip = generated.dim() == 5
        if not clip and generated.dim() != 4:
            raise ValueError("expected B×3×H×W images or B×T×3×H×W clips")
        if self.config.mode == "temporal" and not clip:
            raise ValueError("the temporal term needs clips (B×T×3×H×W with T ≥ 2)")
        frames = generated.shape[1] if clip else 0
        gen_feats = self.features(generated.flatten(0, 1) if clip else generated)
        if self.config.grad == "both":
            tgt_feats = self.features(target.flatten(0, 1) if clip else target)
        else:
            with torch.no_grad():
                tgt_feats = self.features(target.flatten(0, 1) if clip else target)
        return self.terms_from_features(gen_feats, tgt_feats, frames=frames, generator=generator)

    def terms_from_features(self, gen_feats: list[torch.Tensor], tgt_feats: list[torch.Tensor], *, frames: int = 0,
                            generator: torch.Generator | None = None) -> STCCLTerms:
        """The loss from backbone features ((B·T)×C×H×W per stage; ``frames`` = T for clips, 0 for images).

        Split from :meth:`terms` so callers that already hold features (or train only the heads)
        do not run the backbone again.
        """
        cfg = self.config
        t = max(frames, 1)
        b = gen_feats[0].shape[0] // t
        zero = gen_feats[0].new_zeros(())
        spatial, temporal = zero, zero
        per_stage: dict[str, float] = {}
        for s, (fg, ft) in enumerate(zip(gen_feats, tgt_feats, strict=True)):
            h, w = fg.shape[-2:]
            centres = sample_centres(h, w, cfg.samples[s], generator)
            if cfg.mode in ("spatial", "joint"):
                idx = neighbour_pairs(centres, w)
                idx = (idx[0].to(fg.device), idx[1].to(fg.device))
                raw_q, q = self.spatial_disparities(fg, s, idx)
                raw_k, k = self.spatial_disparities(ft, s, idx)
                term = self.weighted_mean(info_nce_rows(q, k, cfg.tau), raw_q, raw_k, temporal=False)
                spatial = spatial + term
                per_stage[f"spatial{s + 1}"] = float(term.detach())
            if t > 1 and cfg.mode in ("temporal", "joint"):
                pos = self.draw_temporal_positions(h, w, 8 * cfg.samples[s], generator).to(fg.device)
                pairs = self.frame_pairs(t).to(fg.device)
                raw_q, q = self.temporal_disparities(fg.unflatten(0, (b, t)), s, pos, pairs)
                raw_k, k = self.temporal_disparities(ft.unflatten(0, (b, t)), s, pos, pairs)
                term = self.weighted_mean(info_nce_rows(q, k, cfg.tau), raw_q, raw_k, temporal=True)
                temporal = temporal + term
                per_stage[f"temporal{s + 1}"] = float(term.detach())
        total = cfg.spatial_weight * spatial + cfg.temporal_weight * temporal
        self.last_parts = {"spatial": float(spatial.detach()), "temporal": float(temporal.detach()), **per_stage}
        return STCCLTerms(total, spatial, temporal, per_stage)

    def forward(self, generated: torch.Tensor, target: torch.Tensor, *,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return self.terms(generated, target, generator=generator).total

    def loss(self, generated: torch.Tensor, target: torch.Tensor, *,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """Alias of ``forward``: the metric used as a training loss."""
        return self(generated, target, generator=generator)

    # ------------------------------------------------------------------ files
    def save(self, path: Path | str) -> Path:
        """The metric file behind the registry name ``stccl_metric`` (config + state dict)."""
        cfg = asdict(self.config)
        cfg["samples"] = list(cfg["samples"])
        torch.save({"format": FILE_FORMAT, "config": cfg, "state_dict": self.state_dict()}, path)
        return Path(path)

    @classmethod
    def load(cls, path: Path | str, **overrides: object) -> STCCL:
        """Rebuild a metric saved by :meth:`save` (``overrides`` change e.g. ``grad`` or ``daas``)."""
        blob = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(blob, dict) or blob.get("format") != FILE_FORMAT:
            raise ValueError(f"{path} is not an spfem STCCL metric file (format {FILE_FORMAT})")
        cfg = dict(blob["config"], **overrides)
        cfg["samples"] = tuple(cfg["samples"])
        model = cls(STCCLConfig(**cfg))
        model.load_state_dict(blob["state_dict"], strict=True)
        return model


def load_metric(path: Path | str, device: torch.device | str = "cpu", *, grad: str = "generated") -> STCCL:
    """A trained metric ready to be used as a frozen loss: eval mode (BN statistics fixed), no parameter
    gradients, gradient flowing into the generated side only (``grad="both"`` to change that)."""
    metric = STCCL.load(path, grad=grad).to(device).eval()
    for p in metric.parameters():
        p.requires_grad_(False)
    return metric
