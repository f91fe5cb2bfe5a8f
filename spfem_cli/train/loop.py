"""The shared training loop: one ``Trainer`` class for the metric, the NED translator and the renderer.

Why a class and not a script: the loop owns everything a run must get right the same way in every
trainer — the device, AMP, ``torchrun`` DDP, atomic checkpoints with automatic resume after a kill,
the saved config / git revision / package versions, JSONL (and TensorBoard) logs, rich progress.
The user code owns the maths: a step function ``step(batch, trainer) -> dict[str, float]`` does its
own forward passes and calls :meth:`Trainer.backward_step` once per optimiser (a GAN steps several).

Reproducibility contract: at the start of step ``k`` the Python / NumPy / torch RNGs are reseeded from
``(seed, k, rank)``, and the data order is a function of ``(seed, epoch)`` (see
:class:`ResumableSampler`), so a run killed and resumed from a checkpoint ends with the same weights
as an uninterrupted run (on deterministic kernels; tested on CPU).

Typical use::

    trainer = Trainer(TrainConfig(out_dir=out, max_steps=1000), run_config=asdict(my_cfg))
    model = trainer.add_module("metric", MyModel())
    trainer.add_optimizer("adam", torch.optim.Adam(trainer.raw("metric").parameters(), 1e-3))
    loader = trainer.make_loader(dataset, batch_size=8)

    def step(batch, tr):
        with tr.autocast():
            loss = model(*tr.to_device(batch))
        tr.backward_step(loss, "adam")
        return {"loss": loss.item()}

    trainer.fit(step, loader)
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from spfem_cli.device import autocast_dtype, pick_device

CKPT_DIR = "checkpoints"
CKPT_GLOB = "step_*.pt"
LOG_FILE = "log.jsonl"

StepFn = Callable[[Any, "Trainer"], Mapping[str, float]]


@dataclass
class TrainConfig:
    """Loop settings (the model's own hyper-parameters travel separately as ``run_config``)."""

    out_dir: Path
    max_steps: int = 1000
    ckpt_every: int = 500          # also saved at the last step and on Ctrl-C
    log_every: int = 10
    keep_last: int = 3             # checkpoints kept on disk (newest K)
    seed: int = 0
    device: str = "auto"           # auto | cpu | cuda[:N]; under DDP on GPU: cuda:LOCAL_RANK
    amp: bool = True               # autocast (bf16, else fp16 + GradScaler) on GPU; no-op on CPU
    grad_clip: float | None = None  # max global L2 norm per optimiser, None = off
    resume: bool = True            # pick up the newest checkpoint in out_dir/checkpoints
    progress: bool = True          # rich progress bar on rank 0
    tensorboard: bool = True       # only used when the tensorboard package is importable


# --------------------------------------------------------------------------- distributed
def dist_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from the torchrun environment; (0, 0, 1) without it."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0")), world


def init_distributed(device: torch.device) -> bool:
    """Start the process group from env vars when WORLD_SIZE > 1: nccl on GPU, gloo on CPU."""
    _, _, world = dist_env()
    if world <= 1:
        return False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", init_method="env://")
    return True


class ResumableSampler(Sampler[int]):
    """Distributed, epoch-seeded shuffling sampler that can start part-way into an epoch.

    Each rank takes every ``world``-th index of one permutation (padded by wrapping so every rank
    gets the same count), like ``DistributedSampler``; ``set_epoch(epoch, start)`` skips the first
    ``start`` samples of this rank, so a resumed run does not load the batches it already used.
    """

    def __init__(self, n: int, *, shuffle: bool = True, seed: int = 0, rank: int = 0, world: int = 1):
        if n <= 0:
            raise ValueError("empty dataset")
        self.n, self.shuffle, self.seed, self.rank, self.world = n, shuffle, seed, rank, world
        self.per_rank = -(-n // world)
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=gen).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world
        order = (order * (-(-total // self.n)))[:total]
        return order[self.rank:total:self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start:])

    def __len__(self) -> int:
        return self.per_rank - self.start


# --------------------------------------------------------------------------- provenance
def git_revision(cwd: Path | None = None) -> str:
    """Commit hash of the source tree (+ '-dirty'), or 'unknown' outside git."""
    here = cwd or Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {}
    for pkg in ("torch", "numpy", "spfem"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def checkpoint_paths(out_dir: Path) -> list[Path]:
    """Checkpoints in ``out_dir``, oldest first (by the step number in the name)."""
    folder = Path(out_dir) / CKPT_DIR
    return sorted(folder.glob(CKPT_GLOB), key=lambda p: int(p.stem.split("_")[1]))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint written by :class:`Trainer` (plain tensors and builtins: weights_only is safe)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _sigterm_as_interrupt() -> Any:
    """Treat SIGTERM (schedulers, torchrun tearing down) like Ctrl-C so the last step is saved."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_interrupt)


# --------------------------------------------------------------------------- the trainer
@dataclass
class _Slot:
    module: nn.Module          # what the step function calls (DDP wrapper under DDP)
    raw: nn.Module             # the bare module: state dicts, saving


@dataclass
class _History:
    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0

    def add(self, values: Mapping[str, float]) -> None:
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.count += 1

    def mean(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}


class Trainer:
    """Runs ``step`` for ``max_steps`` steps with checkpoints, resume, AMP, DDP and logs."""

    def __init__(self, config: TrainConfig, *, run_config: Mapping[str, Any] | None = None):
        self.config = config
        self.run_config = dict(run_config or {})
        self.out_dir = Path(config.out_dir)
        self.rank, self.local_rank, self.world_size = dist_env()
        device = pick_device(config.device)
        if device.type == "cuda" and self.world_size > 1:
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        self.device = device
        self.distributed = init_distributed(device)
        self.is_main = self.rank == 0
        self.amp_dtype = autocast_dtype(device) if config.amp else None
        self.step = 0              # number of completed steps; the step function sees the 0-based index
        self.epoch = 0
        self.slots: dict[str, _Slot] = {}
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, Any] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self.extra_state: dict[str, Any] = {}   # user state saved with every checkpoint
        self._tb = None
        if self.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            (self.out_dir / CKPT_DIR).mkdir(exist_ok=True)

    # ----------------------------------------------------------------- registration
    def add_module(self, name: str, module: nn.Module, *, ddp: bool = True,
                   find_unused_parameters: bool = False) -> nn.Module:
        """Move to the device, wrap in DDP when distributed (and trainable), remember for checkpoints."""
        module = module.to(self.device)
        wrapped: nn.Module = module
        if self.distributed and ddp and any(p.requires_grad for p in module.parameters()):
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(module, device_ids=ids,
                                                          find_unused_parameters=find_unused_parameters)
        self.slots[name] = _Slot(wrapped, module)
        return wrapped

    def add_optimizer(self, name: str, optimizer: torch.optim.Optimizer, scheduler: Any | None = None) -> None:
        """Register an optimiser (and optional LR scheduler, stepped by :meth:`backward_step`)."""
        self.optimizers[name] = optimizer
        if scheduler is not None:
            self.schedulers[name] = scheduler
        # Loss scaling only for fp16; bf16 and fp32 do not underflow the way fp16 does.
        self.scalers[name] = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)

    def module(self, name: str) -> nn.Module:
        return self.slots[name].module

    def raw(self, name: str) -> nn.Module:
        """The bare module (no DDP wrapper): use it for parameters() and state_dict()."""
        return self.slots[name].raw

    # ----------------------------------------------------------------- step helpers
    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16/fp16 autocast on GPU when ``amp`` is on; a no-op elsewhere."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_device(self, batch: Any) -> Any:
        """Tensors of a (nested) batch to the trainer's device."""
        if isinstance(batch, torch.Tensor):
            return batch.to(self.device, non_blocking=True)
        if isinstance(batch, Mapping):
            return {k: self.to_device(v) for k, v in batch.items()}
        if isinstance(batch, (list, tuple)):
            return type(batch)(self.to_device(v) for v in batch)
        return batch

    def backward_step(self, loss: torch.Tensor, optimizer: str, *, retain_graph: bool = False,
                      zero_grad: bool = True) -> float | None:
        """zero_grad → backward (scaled under fp16) → clip → step → scheduler; returns the grad norm."""
        opt = self.optimizers[optimizer]
        scaler = self.scalers[optimizer]
        if zero_grad:
            opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward(retain_graph=retain_graph)
        norm = None
        if self.config.grad_clip is not None:
            scaler.unscale_(opt)
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            norm = float(torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip))
        scaler.step(opt)
        scaler.update()
        if optimizer in self.schedulers:
            self.schedulers[optimizer].step()
        return norm

    def make_loader(self, dataset: Dataset, batch_size: int, *, shuffle: bool = True, num_workers: int = 0,
                    collate_fn: Callable | None = None,
                    sampler_cls: type[ResumableSampler] | None = None) -> DataLoader:
        """A DataLoader over this rank's shard with a :class:`ResumableSampler` (or a subclass) (drop_last)."""
        sampler = (sampler_cls or ResumableSampler)(len(dataset), shuffle=shuffle, seed=self.config.seed,
                                                    rank=self.rank, world=self.world_size)
        if sampler.per_rank < batch_size:
            raise ValueError(f"{len(dataset)} samples over {self.world_size} rank(s) do not fill one batch of {batch_size}")
        return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers,
                          collate_fn=collate_fn, drop_last=True, pin_memory=self.device.type == "cuda")

    def _seed_step(self, step: int) -> None:
        seed = (self.config.seed * 1_000_003 + step * 8191 + self.rank) % (2**32)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    # ----------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "epoch": self.epoch,
            "modules": {n: s.raw.state_dict() for n, s in self.slots.items()},
            "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            "schedulers": {n: s.state_dict() for n, s in self.schedulers.items()},
            "scalers": {n: s.state_dict() for n, s in self.scalers.items()},
            "extra": self.extra_state,
            "train_config": json.dumps(_jsonable(asdict(self.config))),
            "run_config": json.dumps(_jsonable(self.run_config)),
            "git_revision": git_revision(),
            "versions": package_versions(),
            "world_size": self.world_size,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def save_checkpoint(self) -> Path | None:
        """Atomic write (temp file + rename) on rank 0, then keep the newest ``keep_last``."""
        if not self.is_main:
            return None
        folder = self.out_dir / CKPT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"step_{self.step:08d}.pt"
        tmp = folder / f".{path.name}.tmp"
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        for old in checkpoint_paths(self.out_dir)[:-max(self.config.keep_last, 1)]:
            old.unlink(missing_ok=True)
        (self.out_dir / "config.json").write_text(json.dumps(
            {"train": _jsonable(asdict(self.config)), "run": _jsonable(self.run_config),
             "git_revision": git_revision(), "versions": package_versions()}, indent=2))
        return path

    def load_state(self, state: Mapping[str, Any]) -> None:
        for name, sd in state["modules"].items():
            if name in self.slots:
                self.slots[name].raw.load_state_dict(sd)
        for name, sd in state["optimizers"].items():
            if name in self.optimizers:
                self.optimizers[name].load_state_dict(sd)
        for name, sd in state.get("schedulers", {}).items():
            if name in self.schedulers:
                self.schedulers[name].load_state_dict(sd)
        for name, sd in state.get("scalers", {}).items():
            if name in self.scalers and sd:
                self.scalers[name].load_state_dict(sd)
        self.extra_state = dict(state.get("extra", {}))
        self.step = int(state["step"])
        self.epoch = int(state.get("epoch", 0))

    def try_resume(self) -> Path | None:
        """Load the newest readable checkpoint (a torn file falls back to the one before)."""
        for path in reversed(checkpoint_paths(self.out_dir)):
            try:
                state = load_checkpoint(path)
            except Exception:  # noqa: BLE001 - a torn pickle raises almost anything; try the previous one
                continue
            self.load_state(state)
            return path
        return None

    # ----------------------------------------------------------------- logging
    def _log(self, record: dict[str, Any]) -> None:
        if not self.is_main:
            return
        with open(self.out_dir / LOG_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key not in ("step", "time", "epoch") and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, record["step"])

    def _open_tensorboard(self) -> None:
        if not (self.is_main and self.config.tensorboard):
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:      # tensorboard not installed: JSONL only
            return
        self._tb = SummaryWriter(str(self.out_dir / "tensorboard"))

    def _reduce(self, values: dict[str, float]) -> dict[str, float]:
        """Mean of the logged values over ranks (all ranks reach the same log steps)."""
        if not self.distributed or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64,
                         device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist(), strict=True)}

    # ----------------------------------------------------------------- the loop
    def _batches(self, data: Iterable) -> Iterator[Any]:
        """Endless batches from ``data``, starting where ``self.step`` left off.

        With a loader from :meth:`make_loader` the resume point is computed (no batch is loaded twice);
        any other iterable is re-iterated per epoch and already-used batches are skipped by reading them.
        """
        sampler = getattr(data, "sampler", None)
        per_epoch = len(data) if hasattr(data, "__len__") else None
        if isinstance(sampler, ResumableSampler) and per_epoch:
            batch_size = data.batch_size or 1
            full = sampler.per_rank // batch_size
            epoch, offset = divmod(self.step, full)
            while True:
                self.epoch = epoch
                sampler.set_epoch(epoch, offset * batch_size)
                yield from data
                epoch, offset = epoch + 1, 0
        skip = self.step
        epoch = 0
        while True:
            self.epoch = epoch
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            produced = False
            for batch in data:
                produced = True
                if skip:
                    skip -= 1
                    continue
                yield batch
            if not produced:
                raise ValueError("the data iterable yielded no batch")
            epoch += 1

    def fit(self, step_fn: StepFn, data: Iterable) -> int:
        """Run until ``max_steps`` (resuming first when allowed); returns the step count reached."""
        cfg = self.config
        resumed = self.try_resume() if cfg.resume else None
        if self.is_main and resumed is not None:
            self._log({"step": self.step, "time": time.time(), "event": f"resumed from {resumed.name}"})
        self._open_tensorboard()
        for slot in self.slots.values():
            slot.module.train()
        history = _History()
        progress = None
        if self.is_main and cfg.progress:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), TextColumn("{task.fields[info]}"), transient=False)
            progress.start()
            task = progress.add_task("train", total=cfg.max_steps, completed=self.step, info="")
        batches = self._batches(data)
        t0 = time.time()
        previous_term = _sigterm_as_interrupt()
        try:
            while self.step < cfg.max_steps:
                batch = next(batches)
                self._seed_step(self.step)
                values = dict(step_fn(batch, self))
                self.step += 1
                history.add(values)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    mean = self._reduce(history.mean())
                    now = time.time()
                    self._log({"step": self.step, "epoch": self.epoch, "time": now,
                               "sec_per_step": (now - t0) / max(history.count, 1), **mean})
                    if progress is not None:
                        progress.update(task, info="  ".join(f"{k} {v:.4g}" for k, v in mean.items()))
                    history, t0 = _History(), now
                if progress is not None:
                    progress.update(task, completed=self.step)
                if self.step % cfg.ckpt_every == 0 or self.step == cfg.max_steps:
                    self.save_checkpoint()
        except KeyboardInterrupt:
            # Ctrl-C / SIGTERM: keep the last completed step so the next run resumes there.
            if self.step and not checkpoint_paths(self.out_dir)[-1:] == [self._ckpt_name()]:
                self.save_checkpoint()
            raise
        finally:
            if previous_term is not None:
                signal.signal(signal.SIGTERM, previous_term)
            if progress is not None:
                progress.stop()
            if self._tb is not None:
                self._tb.close()
        if self.distributed:
            dist.barrier()
        return self.step

    def _ckpt_name(self) -> Path:
        return self.out_dir / CKPT_DIR / f"step_{self.step:08d}.pt"

    def close(self) -> None:
        """Leave the process group (call once at the end of a torchrun script). The ranks meet first: a rank
        that tore its group down while rank 0 was still writing its last checkpoint was seen to abort at exit
        ("terminate called without an active exception"; once, in a full-suite run of the 2-rank gloo test)."""
        if self.distributed and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
