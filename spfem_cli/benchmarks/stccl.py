"""STCCL metric speed on CPU: the vectorised loss head vs a per-patch loop, and the whole metric.

Rows (batch 8, features of 224² inputs: 112²×64, 56²×128, 28²×256, 14²×512, n = 32/16/8/4):
  * loss head (sampling + projection + InfoNCE + DAAS) forward+backward, vectorised (models/stccl.py);
  * the same loss computed one patch row at a time (:func:`per_patch_loss`, kept here as the plain
    reference; the benchmark checks both give the same value);
  * the whole metric (IResNet-50 + head) forward+backward at 8×224² (joint off: images);
each with the peak resident memory of a fresh process running only that measurement.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch
import torch.nn.functional as F

from spfem_cli.benchmarks.runner import BenchRow, peak_rss_mib, timeit

AREA = "stccl"
STAGE_SHAPES = ((64, 112), (128, 56), (256, 28), (512, 14))


def per_patch_loss(metric, gen_feats: list[torch.Tensor], tgt_feats: list[torch.Tensor],
                   generator: torch.Generator) -> torch.Tensor:
    """Spatial STCCL loss written the plain way: one (centre, neighbour) row at a time, per image."""
    from models.stccl import neighbour_pairs, sample_centres

    cfg = metric.config
    total = gen_feats[0].new_zeros(())
    for s, (fg, ft) in enumerate(zip(gen_feats, tgt_feats, strict=True)):
        h, w = fg.shape[-2:]
        centre, nb = neighbour_pairs(sample_centres(h, w, cfg.samples[s], generator), w)
        head = metric.spatial_proj[s]
        stage = fg.new_zeros(())
        for b in range(fg.shape[0]):
            g, t = fg[b].flatten(1), ft[b].flatten(1)
            keys, weights = [], []
            for c, n in zip(centre.tolist(), nb.tolist(), strict=True):
                raw = t[:, c] - t[:, n]
                keys.append(F.normalize(head(raw), dim=0))
                weights.append(metric.daas_weight(raw[None])[0])
            keys_t = torch.stack(keys)
            for row, (c, n) in enumerate(zip(centre.tolist(), nb.tolist(), strict=True)):
                q = F.normalize(head(g[:, c] - g[:, n]), dim=0)
                logits = keys_t @ q / cfg.tau
                stage = stage + weights[row] * (torch.logsumexp(logits, 0) - logits[row])
        total = total + stage / (fg.shape[0] * len(centre))
    return total


def _features(batch: int, seed: int = 0) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    fg = [torch.randn(batch, c, s, s, generator=gen).requires_grad_(True) for c, s in STAGE_SHAPES]
    ft = [torch.randn(batch, c, s, s, generator=gen) for c, s in STAGE_SHAPES]
    return fg, ft


def measure(which: str, batch: int = 8, repeat: int = 3) -> dict[str, float]:
    """Median ms of forward+backward for one implementation, and this process's peak RSS (MiB)."""
    from models.stccl import STCCL, STCCLConfig

    torch.manual_seed(0)
    metric = STCCL(STCCLConfig(arch="r50", mode="spatial", grad="generated"))
    if which == "full":
        x = torch.rand(batch, 3, 224, 224) * 2 - 1
        y = torch.rand(batch, 3, 224, 224) * 2 - 1

        def step() -> None:
            xg = x.clone().requires_grad_(True)
            metric(xg, y, generator=torch.Generator().manual_seed(0)).backward()
    else:
        fg, ft = _features(batch)

        def step() -> None:
            gen = torch.Generator().manual_seed(0)
            if which == "vectorised":
                loss = metric.terms_from_features(fg, ft, generator=gen).total
            else:
                loss = per_patch_loss(metric, fg, ft, gen)
            loss.backward()
    sec = timeit(step, repeat=repeat, warmup=1)
    peak = peak_rss_mib()
    return {"ms": sec * 1000, "peak_mib": peak}


def _in_fresh_process(which: str, batch: int, repeat: int) -> dict[str, float]:
    code = (f"import json; from spfem_cli.benchmarks.stccl import measure; "
            f"print(json.dumps(measure({which!r}, {batch}, {repeat})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def check_agreement(batch: int = 2) -> float:
    """|vectorised − per-patch| on the same features and centres (must be ~0)."""
    from models.stccl import STCCL, STCCLConfig

    torch.manual_seed(0)
    metric = STCCL(STCCLConfig(arch="r18", mode="spatial"))
    fg, ft = _features(batch, seed=1)
    a = metric.terms_from_features(fg, ft, generator=torch.Generator().manual_seed(3)).total
    b = per_patch_loss(metric, fg, ft, torch.Generator().manual_seed(3))
    return float((a - b).abs().detach())


def run() -> list[BenchRow]:
    threads = f"{torch.get_num_threads()} threads"
    diff = check_agreement()
    rows = []
    for which, what, repeat in (("vectorised", "loss head fwd+bwd, batch 8, features of 224² (vectorised)", 5),
                                ("per_patch", "loss head fwd+bwd, batch 8, features of 224² (per-patch loop)", 1),
                                ("full", "whole metric fwd+bwd (IResNet-50 + head), batch 8×224², spatial", 1)):
        res = _in_fresh_process(which, 8, repeat)
        rows.append(BenchRow(AREA, what, res["ms"], "ms", f"{threads}; loop-vs-vectorised |Δloss| {diff:.1e}"))
        rows.append(BenchRow(AREA, f"peak RSS: {what}", res["peak_mib"], "MiB", "fresh process"))
    return rows
