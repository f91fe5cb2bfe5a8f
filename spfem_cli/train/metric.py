"""`spfem train-metric`: pre-train the STCCL metric on neutral/emotional clip pairs.

Paper defaults (ASCCL §5, reference facts §2): Adam 1e-3 on every parameter including the ArcFace
backbone, batch 8, τ = 0.07, 224² RGB crops in [-1, 1]. A sample is a window of 2n+1 DTW-matched
frames (n = ``context``): spatial mode uses its centre frame, temporal and joint modes the whole
window. The emotional clip is the "generated"/query side and the neutral clip the target (as in
use: metric(generated emotional frame, real neutral frame)); during pre-training both sides carry
gradient (``grad="both"``). The run is a :class:`~spfem_cli.train.loop.Trainer` (resume, AMP, DDP).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from models.stccl import STCCL, STCCLConfig
from spfem_cli.datasets.pairs import ClipPair, CropSource, PairsError, pose_align_frames
from spfem_cli.errors import SpfemError
from spfem_cli.train.metric_config import MetricTrainConfig

METRIC_FILE = "stccl_metric.pt"


def to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(k, S, S, 3) uint8 RGB → (k, 3, S, S) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


class PairWindowDataset(Dataset):
    """Every window of 2n+1 consecutive DTW-path positions of every pair.

    Item: ``{"generated": emotional frames, "target": neutral frames}``, each ``(2n+1)×3×S×S``
    (or ``3×S×S`` with ``single_frame``), RGB in [-1, 1].
    """

    def __init__(self, pairs: Sequence[ClipPair], source: CropSource, *, context: int = 2,
                 single_frame: bool = False, pose_align: bool = False):
        self.pairs, self.source, self.context = list(pairs), source, context
        self.single_frame, self.pose_align = single_frame, pose_align
        self.index = [(p, k) for p, pair in enumerate(self.pairs)
                      for k in range(context, len(pair.path_a) - context)]
        if not self.index:
            raise PairsError(f"no pair has a DTW path of at least {2 * context + 1} frames")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        p, k = self.index[i]
        pair = self.pairs[p]
        window = slice(k - self.context, k + self.context + 1)
        ia, ib = pair.path_a[window], pair.path_b[window]
        fa = self.source.frames(pair.video_a, ia)
        fb = self.source.frames(pair.video_b, ib)
        if self.pose_align:
            ma, mb = self.source.landmarks(pair.video_a, ia), self.source.landmarks(pair.video_b, ib)
            if ma is None or mb is None:
                raise SpfemError("--pose-align needs landmarks: use the tracked crop source (--crops tracked)")
            fb = pose_align_frames(fb, mb, ma)
        ta, tb = to_tensor(fa), to_tensor(fb)
        if self.single_frame:
            ta, tb = ta[self.context], tb[self.context]
        return {"generated": tb, "target": ta}


def build_metric(cfg: MetricTrainConfig) -> STCCL:
    """The metric to train, with the ArcFace backbone loaded when asked (``auto`` = r50 from the registry)."""
    model = STCCL(STCCLConfig(arch=cfg.arch, input_size=cfg.input_size, tau=cfg.tau, mode=cfg.mode,
                              temporal_pairs=cfg.temporal_pairs, daas=cfg.daas, daas_variant=cfg.daas_variant,
                              temporal_positions=cfg.temporal_positions, grad="both"))
    weights = cfg.backbone_weights
    if weights == "auto":
        weights = "arcface_r50" if cfg.arch == "r50" else "none"
    if weights != "none":
        from models.iresnet import load_arcface_backbone
        from spfem_cli.weights import resolve

        path = Path(weights) if Path(weights).is_file() else resolve(weights)
        load_arcface_backbone(model.backbone, path)
    return model


def make_source(cfg: MetricTrainConfig, cache: Path) -> CropSource:
    from spfem_cli.datasets.pairs import CentreCropSource, TrackedCropSource

    if cfg.crops == "centre":
        return CentreCropSource(cfg.input_size)
    return TrackedCropSource(cache / "crops", cfg.input_size)


def prepare_data(cfg: MetricTrainConfig, source: CropSource, *, progress: bool = True) -> list[ClipPair]:
    """Pairs (DTW, cached JSON) and, for the tracked source, every clip's aligned crops (cached).

    Run it once in a single process (``--prepare-only``) before a multi-GPU run: tracking all of MEAD
    takes far longer than a process-group barrier waits.
    """
    from spfem_cli.datasets.pairs import build_pairs

    cache = Path(cfg.cache_dir) if cfg.cache_dir else Path(cfg.out) / "cache"
    pairs = build_pairs(cfg.dataset, Path(cfg.root), split="train", cache_dir=cache, progress=progress)
    prepare = getattr(source, "prepare", None)
    if prepare is not None:
        videos = sorted({v for p in pairs for v in (p.video_a, p.video_b)})
        if progress:
            from rich.progress import track

            videos = track(videos, description="tracking + aligning faces")
        for video in videos:
            prepare(video)
    return pairs


def train_metric(cfg: MetricTrainConfig, *, source: CropSource | None = None, progress: bool = True,
                 prepare_only: bool = False) -> Path:
    """Run (or resume) a metric training; returns the path of the metric file written at the end
    (with ``prepare_only``: build the pair list and crop caches, then return the cache folder)."""
    import torch.distributed as dist

    from spfem_cli.train.loop import TrainConfig, Trainer

    out = Path(cfg.out)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out / "cache"
    source = source or make_source(cfg, cache)
    if prepare_only:
        prepare_data(cfg, source, progress=progress)
        return cache
    trainer = Trainer(TrainConfig(out_dir=out, max_steps=cfg.steps, ckpt_every=cfg.ckpt_every,
                                  log_every=cfg.log_every, seed=cfg.seed, device=cfg.device, amp=cfg.amp,
                                  progress=progress), run_config=asdict(cfg))
    # Rank 0 builds the caches first; the other ranks then read them instead of racing to write them.
    if trainer.is_main:
        pairs = prepare_data(cfg, source, progress=progress)
    if trainer.distributed:
        dist.barrier()
    if not trainer.is_main:
        pairs = prepare_data(cfg, source, progress=False)
    dataset = PairWindowDataset(pairs, source, context=cfg.context, single_frame=cfg.mode == "spatial",
                                pose_align=cfg.pose_align)
    model = trainer.add_module("metric", build_metric(cfg))
    trainer.add_optimizer("adam", torch.optim.Adam(trainer.raw("metric").parameters(), lr=cfg.lr))
    try:
        loader = trainer.make_loader(dataset, cfg.batch, num_workers=cfg.num_workers)
    except ValueError as exc:
        raise SpfemError(f"{exc}: use a smaller --batch or more pairs") from exc

    def step(batch: dict[str, torch.Tensor], tr: Trainer) -> dict[str, float]:
        batch = tr.to_device(batch)
        with tr.autocast():
            loss = model(batch["generated"], batch["target"])   # the DDP wrapper when distributed
        tr.backward_step(loss.float(), "adam")
        return {"loss": float(loss.detach()), **tr.raw("metric").last_parts}

    trainer.fit(step, loader)
    path = out / METRIC_FILE
    if trainer.is_main:
        from spfem_cli.video import AtomicOutput

        with AtomicOutput(path) as tmp:
            trainer.raw("metric").save(tmp)
    trainer.close()
    return path
