"""Evaluation throughput on CPU: LSE (SyncNet v2 lip + audio towers) in video frames per second.

Random weights in the real SyncNet v2 architecture (timing does not depend on the values). The
clip is 3 s at 25 fps of 224² crops with 16 kHz audio, the `wav2lip` preset (one 5-frame window
per frame, 31 offsets). Also FAD/CSIM embedding frames per second on the real architectures.
"""

from __future__ import annotations

import numpy as np
import torch

from spfem_cli.benchmarks.runner import BenchRow, timeit


def run() -> list[BenchRow]:
    from models.efficientface import EfficientFace
    from models.resnet_face import ResNetFace18
    from models.syncnet import SyncNetV2
    from spfem_cli.evaluate import lse
    from spfem_cli.evaluate.embedders import Embedder

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    n = 75
    crops = rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8)
    audio = (0.1 * rng.standard_normal(n * 640)).astype(np.float32)
    model = SyncNetV2().eval()
    preset = lse.PRESETS["wav2lip"]
    seconds = timeit(lambda: lse.lse(model, [crops], audio, preset), repeat=3)
    threads = torch.get_num_threads()
    faces = rng.integers(0, 256, (32, 256, 256, 3), dtype=np.uint8)
    fad = Embedder(ResNetFace18().eval(), "fad")
    csim = Embedder(EfficientFace().eval(), "csim")
    fad_s = timeit(lambda: fad.embed(faces), repeat=3)
    csim_s = timeit(lambda: csim.embed(faces), repeat=3)
    note = f"CPU, {threads} torch threads, random weights (real architecture)"
    return [
        BenchRow("eval", "LSE-D/C (SyncNet v2, wav2lip preset, 224² crops)", n / seconds, "video frames/s", note),
        BenchRow("eval", "FAD embedding (ResNet-Face-18, 128² gray)", len(faces) / fad_s, "frames/s", note),
        BenchRow("eval", "CSIM embedding (EfficientFace, 224² RGB)", len(faces) / csim_s, "frames/s", note),
    ]
