"""NED translator speed on CPU: inference per 100 frames (NED sizes) and one training step at batch 64."""

from __future__ import annotations

import numpy as np
import torch

from spfem_cli.benchmarks.runner import BenchRow, timeit

AREA = "translator"


def run() -> list[BenchRow]:
    from models.ned_translator import NedTranslator, he_init
    from spfem_cli.backends.ned.train_translator import TranslatorLosses, TranslatorTrainConfig, build_optimizers, ned_step
    from spfem_cli.backends.ned.translate import ExpressionSeq, translate

    torch.manual_seed(0)
    rows = []
    model = NedTranslator(with_discriminator=False).eval()
    seq = ExpressionSeq(np.random.default_rng(0).normal(0, 0.3, (100, 51)).astype(np.float32))
    ref = ExpressionSeq(np.random.default_rng(1).normal(0, 0.3, (100, 51)).astype(np.float32))
    sec = timeit(lambda: translate(seq, "happy", 1.0, model), repeat=3)
    rows.append(BenchRow(AREA, "translate 100 frames, label style (91 windows, NED sizes), CPU", sec * 1000, "ms",
                         f"{torch.get_num_threads()} threads"))
    sec = timeit(lambda: translate(seq, ref, 1.0, model), repeat=3)
    rows.append(BenchRow(AREA, "translate 100 frames, 100-frame reference (geometric median of E), CPU", sec * 1000, "ms",
                         f"{torch.get_num_threads()} threads"))

    cfg = TranslatorTrainConfig()
    nets = NedTranslator(cfg.model)
    nets.apply(he_init)
    losses = TranslatorLosses(nets, cfg)
    optims = build_optimizers(nets, cfg)
    batch = (torch.randn(64, 10, 51), torch.randint(0, 7, (64,)), torch.randn(64, 10, 51), torch.randint(0, 7, (64,)))
    sec = timeit(lambda: ned_step(losses, optims, batch, latent_dim=4), repeat=3)
    rows.append(BenchRow(AREA, "training step (2 D + 2 G updates), batch 64, NED sizes, no STCCL, CPU", sec * 1000, "ms",
                         f"{torch.get_num_threads()} threads"))
    return rows
