"""Settings of `spfem train-metric` and `spfem analyze-metric`: the single source of their defaults.

Torch-free on purpose: the CLI reads these defaults at import time and `spfem --help` must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The ASCCL/STCCL renderer hook adds the metric with weight 1, but the reference metric returns 0.3·Σ over
# the stages while spfem's STCCL returns Σ: 0.3 here gives the reference's effective weight.
RENDERER_STCCL_WEIGHT = 0.3


@dataclass
class MetricTrainConfig:
    """Every setting of a metric run (paper defaults: Adam 1e-3, batch 8, τ 0.07, 224² crops)."""

    dataset: Literal["mead", "ravdess"] = "mead"
    root: str = ""
    out: str = "runs/stccl"
    mode: Literal["spatial", "temporal", "joint"] = "joint"
    steps: int = 20000
    batch: int = 8
    lr: float = 1e-3
    tau: float = 0.07
    # n: windows of 2n+1 frames. 4 (9 frames) as the release trains (TemporalDataloader n=4) and as the
    # translator uses the metric (9 rendered frames); 2 (5 frames) costs 5/9 of the backbone work per step.
    context: int = 4
    temporal_pairs: Literal["all", "adjacent"] = "all"
    daas: bool = True
    # row: the paper's weight per disparity row before the mean (target side, detached); released: the
    # release's per-element weight on the generated side, collapsed to its mean, none on the temporal term
    daas_variant: Literal["row", "released"] = "row"
    # central: distinct positions in the central square; whole: the release's draw with replacement over H×W
    # (93 % of its per-stage draws repeat a position, whose rows then have a "negative" equal to the positive)
    temporal_positions: Literal["central", "whole"] = "central"
    arch: str = "r50"
    input_size: int = 224
    backbone_weights: str = "auto"     # auto: registry 'arcface_r50' for r50 | none | a file path
    crops: Literal["tracked", "centre"] = "tracked"
    pose_align: bool = False
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    ckpt_every: int = 1000
    log_every: int = 20
    num_workers: int = 0
    cache_dir: str | None = None       # pair lists and aligned crops; default <out>/cache


@dataclass
class AnalysisConfig:
    """Settings of one analysis run (saved into the JSON report)."""

    dataset: str = "mead"
    root: str = ""
    metric: str = "stccl_metric"      # registry name or a file
    split: str = "val"
    frames: int = 64                  # frame pairs per emotion
    batch: int = 16
    crops: str = "tracked"
    out: str = "metric_analysis"
    device: str = "auto"
    seed: int = 0
    untrained_backbone: str = "auto"  # auto: ArcFace r50 from the registry when the metric is r50, else random


CHOICES = {
    "dataset": ("mead", "ravdess"),
    "mode": ("spatial", "temporal", "joint"),
    "temporal_pairs": ("all", "adjacent"),
    "daas_variant": ("row", "released"),
    "temporal_positions": ("central", "whole"),
    "arch": ("r18", "r34", "r50", "r100"),
    "crops": ("tracked", "centre"),
    "split": ("val", "train", "all"),
}
