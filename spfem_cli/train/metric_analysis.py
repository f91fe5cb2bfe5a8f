"""`spfem analyze-metric`: does a metric tell corresponding disparities from non-corresponding ones?

The paper's Figure 2 (untrained) / Figure 6 (trained) analysis: for frame pairs of the same speaker
and sentence (neutral vs emotion e, DTW-matched), take the projected spatial disparities of both
frames at shared (centre, neighbour) positions and report, per emotion pair,
  * mean cosine similarity of *positive* rows (same position in both frames) and of *negative*
    rows (different positions), and
  * mean Pearson correlation of the same row pairs (cosine after removing each vector's mean).
A trained metric should raise the positives and keep the negatives near 0. Output: JSON + PNG bars.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.stccl import STCCL, neighbour_pairs, sample_centres
from spfem_cli.errors import SpfemError
from spfem_cli.train.metric_config import AnalysisConfig

STATS = ("pos_cos", "neg_cos", "pos_r", "neg_r")


@torch.no_grad()
def separation_stats(metric: STCCL, generated: torch.Tensor, target: torch.Tensor, *,
                     generator: torch.Generator | None = None) -> dict[str, dict[str, float]]:
    """Per stage (and ``"all"``, the mean over stages): positive/negative cosine and Pearson of
    projected disparities. Inputs B×3×H×W, RGB in [-1, 1]."""
    fg, ft = metric.features(generated), metric.features(target)
    out: dict[str, dict[str, float]] = {}
    for s, (a, b) in enumerate(zip(fg, ft, strict=True)):
        h, w = a.shape[-2:]
        idx = neighbour_pairs(sample_centres(h, w, metric.config.samples[s], generator), w)
        idx = (idx[0].to(a.device), idx[1].to(a.device))
        _, q = metric.spatial_disparities(a, s, idx)
        _, k = metric.spatial_disparities(b, s, idx)
        row: dict[str, float] = {}
        for name, (qq, kk) in {"cos": (q, k), "r": (q - q.mean(-1, keepdim=True), k - k.mean(-1, keepdim=True))}.items():
            qq, kk = F.normalize(qq, dim=-1), F.normalize(kk, dim=-1)
            sim = torch.bmm(qq, kk.transpose(1, 2))                 # B × S × S
            eye = torch.eye(sim.shape[-1], dtype=torch.bool, device=sim.device)
            row[f"pos_{name}"] = float(sim[:, eye].mean())
            row[f"neg_{name}"] = float(sim[:, ~eye].mean())
        out[f"stage{s + 1}"] = row
    out["all"] = {k: float(np.mean([out[s][k] for s in out])) for k in STATS}
    return out


def _metric_path(name: str) -> Path:
    path = Path(name)
    if path.is_file():
        return path
    from spfem_cli.weights import resolve

    return resolve(name)


def untrained_like(metric: STCCL, backbone: str = "auto") -> STCCL:
    """The same architecture before metric training: ArcFace backbone (when available) + random heads."""
    from models.iresnet import load_arcface_backbone

    torch.manual_seed(0)
    fresh = STCCL(metric.config)
    name = backbone
    if name == "auto":
        name = "arcface_r50" if metric.config.arch == "r50" else "none"
    if name != "none":
        try:
            load_arcface_backbone(fresh.backbone, _metric_path(name))
        except SpfemError:
            if backbone != "auto":
                raise
    return fresh


def _batches(dataset, indices: Sequence[int], batch: int):
    for start in range(0, len(indices), batch):
        items = [dataset[i] for i in indices[start:start + batch]]
        yield torch.stack([it["generated"] for it in items]), torch.stack([it["target"] for it in items])


def analyze(metrics: dict[str, STCCL], dataset, *, frames: int, batch: int, seed: int,
            device: torch.device) -> dict[str, dict[str, dict]]:
    """Stats per emotion pair and per metric over up to ``frames`` windows per emotion of ``dataset``."""
    by_emotion: dict[str, list[int]] = {}
    for i, (p, _) in enumerate(dataset.index):
        by_emotion.setdefault(dataset.pairs[p].emotion_b, []).append(i)
    results: dict[str, dict[str, dict]] = {}
    for emotion in sorted(by_emotion):
        chosen = sorted(random.Random(seed).sample(by_emotion[emotion], min(frames, len(by_emotion[emotion]))))
        results[emotion] = {}
        for name, metric in metrics.items():
            metric.to(device).eval()
            acc: dict[str, list[float]] = {}
            weights = []
            for b, (g, t) in enumerate(_batches(dataset, chosen, batch)):
                gen = torch.Generator().manual_seed(seed * 7919 + b)
                stats = separation_stats(metric, g.to(device), t.to(device), generator=gen)
                for stage, row in stats.items():
                    for key, value in row.items():
                        acc.setdefault(f"{stage}/{key}", []).append(value)
                weights.append(len(g))
            results[emotion][name] = {k: float(np.average(v, weights=weights)) for k, v in acc.items()}
            results[emotion][name]["frames"] = len(chosen)
    return results


def plot(results: dict[str, dict[str, dict]], path: Path) -> Path:
    """Bar plot like the paper's Figure 2/6: cosine (left) and Pearson (right), per emotion pair."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    emotions = sorted(results)
    names = list(next(iter(results.values())))
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 2.2 * len(emotions) + 2), 3.6))
    width = 0.8 / (2 * len(names))
    x = np.arange(len(emotions))
    colours = {"untrained": ("#9ecae1", "#fdae6b"), "trained": ("#3182bd", "#e6550d")}
    for ax, stat, title in ((axes[0], "cos", "mean cosine similarity"), (axes[1], "r", "mean Pearson correlation")):
        for n, name in enumerate(names):
            pos_c, neg_c = colours.get(name, ("#555555", "#aaaaaa"))
            for j, (kind, colour) in enumerate((("pos", pos_c), ("neg", neg_c))):
                values = [results[e][name][f"all/{kind}_{stat}"] for e in emotions]
                ax.bar(x + (2 * n + j - len(names) + 0.5) * width, values, width, color=colour,
                       label=f"{name} {'positive' if kind == 'pos' else 'negative'}")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_xticks(x, [f"neutral→{e}" for e in emotions], rotation=20, fontsize=8)
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    from spfem_cli.video import AtomicOutput

    with AtomicOutput(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def analyze_metric(cfg: AnalysisConfig, *, source=None, metric: STCCL | None = None) -> dict:
    """Load the metric and the pairs, compare with its untrained twin, write JSON + PNG; returns the report."""
    from spfem_cli.datasets.pairs import CentreCropSource, TrackedCropSource, build_pairs
    from spfem_cli.device import pick_device
    from spfem_cli.train.metric import PairWindowDataset

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    trained = metric if metric is not None else STCCL.load(_metric_path(cfg.metric))
    size = trained.config.input_size
    pairs = build_pairs(cfg.dataset, Path(cfg.root), split=cfg.split, cache_dir=out / "cache")
    if source is None:
        source = CentreCropSource(size) if cfg.crops == "centre" else TrackedCropSource(out / "cache" / "crops", size)
    dataset = PairWindowDataset(pairs, source, context=0, single_frame=True)
    metrics = {"untrained": untrained_like(trained, cfg.untrained_backbone), "trained": trained}
    results = analyze(metrics, dataset, frames=cfg.frames, batch=cfg.batch, seed=cfg.seed,
                      device=pick_device(cfg.device))
    report = {"config": cfg.__dict__, "metric_config": {k: v for k, v in trained.config.__dict__.items()},
              "emotions": results,
              "summary": {name: {"gap_cos": float(np.mean([r[name]["all/pos_cos"] - r[name]["all/neg_cos"]
                                                           for r in results.values()])),
                                 "gap_r": float(np.mean([r[name]["all/pos_r"] - r[name]["all/neg_r"]
                                                         for r in results.values()]))}
                          for name in metrics}}
    from spfem_cli.video import AtomicOutput

    with AtomicOutput(out / "metric_analysis.json") as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2, default=str) + "\n")
    plot(results, out / "metric_analysis.png")
    return report
