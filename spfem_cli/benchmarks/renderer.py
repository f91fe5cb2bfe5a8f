"""Renderer benchmarks: inference ms/frame at 256², FLOPs per frame and per training update, update time.

Run on CPU by ``make bench`` (``python -m spfem_cli.benchmarks.runner renderer``); on a GPU machine the same command
times the GPU (``SPFEM_BENCH_DEVICE=cuda python -m spfem_cli.benchmarks.runner renderer``). Random weights in the
published layouts (the timing does not depend on the values). The training update is NED's: 4 frames,
one G step + one D step, VGG19, image and mouth discriminators, and the STCCL metric (IResNet-50, 224²).
"""

from __future__ import annotations

import os

import torch
from torch.utils.flop_counter import FlopCounterMode

from spfem_cli.benchmarks.runner import BenchRow, timeit

SIZE = 256
FRAMES_PER_UPDATE = 4
# The written estimate of a 20-epoch actor fine-tune (issue: vs NED's reported 17 h on 2×11 GB, NED issue #6).
NED_HOURS = 17.0
NED_SUSTAINED_TFLOPS = 4.5          # 2× GTX 1080 Ti (11.3 TFLOP/s fp32 peak each) at ~20 % utilisation
H100_BF16_PEAK_TFLOPS = 989.0       # dense bf16, SXM
H100_UTILISATION = (0.10, 0.25)     # batch-1 256² conv GAN training: well below large-batch utilisation


def _cond(n: int, size: int = SIZE) -> torch.Tensor:
    cond = torch.rand(n, 10, size, size)
    cond[:, 9] = (cond[:, 9] > 0.3).float()
    return cond


def count_flops(fn) -> int:
    """FLOPs (2·MACs, torch's convention) of everything ``fn`` runs, forward and backward."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


class _Update:
    """One NED training update on synthetic 256² data, reusing the real step code."""

    def __init__(self, device: torch.device, stccl: bool = True) -> None:
        from models.stccl import STCCL, STCCLConfig
        from models.vgg19 import VGG19Features, VGGPerceptualLoss
        from spfem_cli.backends.ned.train_renderer import RendererStep, RendererTrainConfig, build_networks

        self.cfg = RendererTrainConfig(seq_len=FRAMES_PER_UPDATE, frames_per_step=FRAMES_PER_UPDATE, sample_every=0)
        g, d, dm = build_networks(self.cfg)
        self.nets = {"G": g.to(device), "D": d.to(device), "Dm": dm.to(device)}
        metric = STCCL(STCCLConfig(mode="spatial")).to(device).eval().requires_grad_(False) if stccl else None
        self.step = RendererStep(self.cfg, VGGPerceptualLoss(VGG19Features()).to(device), metric)
        self.opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(list(d.parameters()) + list(dm.parameters()), lr=2e-4, betas=(0.5, 0.999))
        n = FRAMES_PER_UPDATE + 2
        self.batch = {"cond": _cond(n)[None].to(device), "real": (torch.rand(1, n, 3, SIZE, SIZE) * 2 - 1).to(device),
                      "mouth": torch.full((1, n, 2), SIZE // 2, dtype=torch.long, device=device)}
        self.device = device

    def __call__(self) -> None:
        self.step(self.batch, _MiniTrainer(self))
        if self.device.type == "cuda":
            torch.cuda.synchronize()


class _MiniTrainer:
    """The few Trainer methods the step uses (no checkpoints / logs in a benchmark)."""

    def __init__(self, up: _Update) -> None:
        self.up, self.device, self.is_main, self.step = up, up.device, False, 0

    def to_device(self, batch):
        return batch

    def raw(self, name: str):
        return self.up.nets[name]

    module = raw

    def autocast(self):
        from spfem_cli.device import autocast_dtype

        dtype = autocast_dtype(self.device)
        return torch.autocast(self.device.type, dtype=dtype) if dtype else torch.autocast("cpu", enabled=False)

    def backward_step(self, loss: torch.Tensor, name: str) -> None:
        opt = self.up.opt_g if name == "G" else self.up.opt_d
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


def run() -> list[BenchRow]:
    from models.ned_renderer import NedGenerator
    from spfem_cli.backends.ned.neural_render import NeuralRenderer
    from spfem_cli.device import pick_device

    device = pick_device(os.environ.get("SPFEM_BENCH_DEVICE", "cpu"))
    where = f"{device.type}, {torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name()
    rows: list[BenchRow] = []
    torch.manual_seed(0)
    g = NedGenerator()
    n_frames = 8
    cond = _cond(n_frames)
    renderer = NeuralRenderer(g, device, batch_frames=n_frames)

    def infer() -> None:
        renderer.reset()
        renderer.render(cond)

    sec = timeit(infer, repeat=3 if device.type == "cpu" else 10)
    rows.append(BenchRow("renderer", f"NED generator inference 256² ({where})", 1000 * sec / n_frames, "ms/frame",
                         f"{n_frames}-frame chunk, conditioning encoder batched, image branch sequential"))
    with torch.no_grad():
        flops_fwd = count_flops(lambda: g(cond[:3].reshape(1, 30, SIZE, SIZE), torch.zeros(1, 6, SIZE, SIZE)))
        flops_seg = count_flops(lambda: g.encode_conditioning(torch.zeros(1, 27, SIZE, SIZE)))
    rows.append(BenchRow("renderer", "NED generator forward FLOPs per 256² frame", flops_fwd / 1e9, "GFLOP",
                         f"{100 * flops_seg / flops_fwd:.0f} % in the batchable conditioning encoder"))
    update = _Update(device)
    flops_update = count_flops(update)  # also the warm-up of the timed runs below
    rows.append(BenchRow("renderer", "training update FLOPs (4 frames, G+D step, VGG19, mouth D, STCCL r50)",
                         flops_update / 1e9, "GFLOP", f"{flops_update / FRAMES_PER_UPDATE / 1e9:.0f} GFLOP per frame"))
    fake = torch.rand(FRAMES_PER_UPDATE, 3, SIZE, SIZE, device=device, requires_grad=True)
    real = torch.rand(FRAMES_PER_UPDATE, 3, SIZE, SIZE, device=device)
    flops_stccl = count_flops(lambda: update.step.metric(fake * 2 - 1, real * 2 - 1).backward())
    plain = flops_update - flops_stccl - FRAMES_PER_UPDATE * flops_fwd
    rows.append(BenchRow("renderer", "  of which STCCL term (IResNet-50 at 224², fwd both + bwd generated)",
                         flops_stccl / 1e9, "GFLOP", ""))
    rows.append(BenchRow("renderer", "  NED-equivalent update (no STCCL, no graph-free recompute pass)", plain / 1e9,
                         "GFLOP", f"{plain / FRAMES_PER_UPDATE / 1e9:.0f} GFLOP per frame"))
    sec = timeit(update, repeat=1 if device.type == "cpu" else 10, warmup=0)
    rows.append(BenchRow("renderer", f"training update time ({where})", sec, "s/update",
                         f"4 frames at 256², fp32 on CPU / bf16 autocast on GPU; {flops_update / sec / 1e12:.3g} TFLOP/s"))
    return rows + finetune_estimate(flops_update / FRAMES_PER_UPDATE, plain / FRAMES_PER_UPDATE, sec / FRAMES_PER_UPDATE,
                                    where)


def finetune_estimate(flops_frame: float, flops_frame_ned: float, sec_frame: float, where: str) -> list[BenchRow]:
    """How long NED's 20-epoch actor fine-tune takes with our update, from the measured FLOPs and step time.

    NED's 17 h gives the workload: frames = 17 h · sustained FLOP/s / NED's FLOPs per frame. The same frames
    with our update (STCCL term included) on one H100 at an assumed utilisation, and on the machine measured.
    """
    frames = NED_HOURS * 3600 * NED_SUSTAINED_TFLOPS * 1e12 / flops_frame_ned
    rows = [BenchRow("renderer", "20-epoch fine-tune workload implied by NED's 17 h on 2×11 GB", frames / 1e3,
                     "k frames", f"at {NED_SUSTAINED_TFLOPS} TFLOP/s sustained, {flops_frame_ned / 1e9:.0f} GFLOP/frame")]
    for util in H100_UTILISATION:
        hours = frames * flops_frame / (H100_BF16_PEAK_TFLOPS * 1e12 * util) / 3600
        rows.append(BenchRow("renderer", f"estimate: same fine-tune with STCCL, one H100 bf16 at {util:.0%} of peak",
                             hours, "h", f"{flops_frame / 1e9:.0f} GFLOP/frame; GPU run: "
                             "SPFEM_BENCH_DEVICE=cuda python -m spfem_cli.benchmarks.runner renderer"))
    rows.append(BenchRow("renderer", f"estimate: same fine-tune, measured update time ({where})",
                         frames * sec_frame / 86400, "days", "from the timed update above"))
    return rows
