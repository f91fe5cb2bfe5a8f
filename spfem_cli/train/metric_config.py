"""Settings of `spfem train-metric` and `spfem analyze-metric`: the single source of their defaults.

Torch-free on purpose: the CLI reads these defaults at import time and `spfem --help` must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


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
    context: int = 2                   # n: windows of 2n+1 frames
    temporal_pairs: Literal["all", "adjacent"] = "all"
    daas: bool = True
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
    "arch": ("r18", "r34", "r50", "r100"),
    "crops": ("tracked", "centre"),
    "split": ("val", "train", "all"),
}
