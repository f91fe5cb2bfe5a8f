"""The shared Trainer: resume after a kill reproduces an uninterrupted run; checkpoints; DDP on gloo."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from spfem_cli.train.loop import ResumableSampler, TrainConfig, Trainer, checkpoint_paths, load_checkpoint


def _dataset(n: int = 40) -> TensorDataset:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=gen)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1
    return TensorDataset(x, y)


class _Killed(RuntimeError):
    pass


def _run(out: Path, *, max_steps: int = 12, kill_at: int | None = None, keep_last: int = 3,
         slow_after: int | None = None) -> Trainer:
    cfg = TrainConfig(out_dir=out, max_steps=max_steps, ckpt_every=4, log_every=2, keep_last=keep_last,
                      seed=3, device="cpu", progress=False)
    trainer = Trainer(cfg, run_config={"lr": 0.05})
    torch.manual_seed(0)
    model = trainer.add_module("net", nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1)))
    trainer.add_optimizer("adam", torch.optim.Adam(trainer.raw("net").parameters(), lr=0.05))
    loader = trainer.make_loader(_dataset(), batch_size=8)   # 5 batches per epoch: resume crosses epochs

    def step(batch, tr: Trainer) -> dict[str, float]:
        if kill_at is not None and tr.step == kill_at:
            raise _Killed("simulated kill")
        if slow_after is not None and tr.step >= slow_after:
            time.sleep(0.5)                      # leaves time for the test to SIGKILL this process
        x, y = tr.to_device(batch)
        loss = nn.functional.mse_loss(model(x), y)
        tr.backward_step(loss, "adam")
        return {"loss": loss.item()}

    trainer.fit(step, loader)
    return trainer


def test_resume_after_kill_matches_uninterrupted_run(tmp_path: Path) -> None:
    full = _run(tmp_path / "full")
    with pytest.raises(_Killed):
        _run(tmp_path / "killed", kill_at=6)            # dies after the step-4 checkpoint
    assert [p.name for p in checkpoint_paths(tmp_path / "killed")] == ["step_00000004.pt"]
    resumed = _run(tmp_path / "killed")
    assert resumed.step == full.step == 12
    for (name, a), b in zip(full.raw("net").state_dict().items(), resumed.raw("net").state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    # optimiser state restored, not restarted: Adam's step counter and moments agree too
    sa, sb = full.optimizers["adam"].state_dict()["state"], resumed.optimizers["adam"].state_dict()["state"]
    for key in sa:
        assert float(sa[key]["step"]) == float(sb[key]["step"]) == 12
        assert torch.equal(sa[key]["exp_avg"], sb[key]["exp_avg"])
    log = [json.loads(line) for line in (tmp_path / "killed" / "log.jsonl").read_text().splitlines()]
    assert any(r.get("event") == "resumed from step_00000004.pt" for r in log)


def _killable(out: str) -> None:
    torch.set_num_threads(1)
    _run(Path(out), slow_after=4)


def test_sigkill_mid_run_then_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    proc = multiprocessing.get_context("spawn").Process(target=_killable, args=(str(tmp_path / "killed"),))
    proc.start()
    deadline = time.time() + 60
    while not checkpoint_paths(tmp_path / "killed") and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()                                          # SIGKILL: no handler, no final save
    proc.join()
    assert proc.exitcode == -9
    assert [p.name for p in checkpoint_paths(tmp_path / "killed")] == ["step_00000004.pt"]
    resumed = _run(tmp_path / "killed")
    full = _run(tmp_path / "full")
    assert resumed.step == 12
    for a, b in zip(full.raw("net").state_dict().values(), resumed.raw("net").state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_checkpoint_contents_and_retention(tmp_path: Path) -> None:
    _run(tmp_path, max_steps=16, keep_last=2)
    paths = checkpoint_paths(tmp_path)
    assert [p.name for p in paths] == ["step_00000012.pt", "step_00000016.pt"]
    assert not list((tmp_path / "checkpoints").glob("*.tmp"))
    state = load_checkpoint(paths[-1])
    assert state["step"] == 16
    assert json.loads(state["run_config"]) == {"lr": 0.05}
    assert json.loads(state["train_config"])["max_steps"] == 16
    assert state["git_revision"] and "torch" in state["versions"]
    assert set(state["modules"]["net"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(2, 17, 2)) and all("loss" in r for r in log)


def test_torn_newest_checkpoint_falls_back(tmp_path: Path) -> None:
    _run(tmp_path, max_steps=8)
    newest = checkpoint_paths(tmp_path)[-1]
    newest.write_bytes(b"torn")                      # e.g. a disk that filled up mid-write elsewhere
    trainer = Trainer(TrainConfig(out_dir=tmp_path, max_steps=8, device="cpu", progress=False))
    trainer.add_module("net", nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 1)))
    assert trainer.try_resume() == checkpoint_paths(tmp_path)[0] and trainer.step == 4


def test_resumable_sampler_shards_and_skips() -> None:
    a = ResumableSampler(10, seed=1, rank=0, world=2)
    b = ResumableSampler(10, seed=1, rank=1, world=2)
    a.set_epoch(2)
    b.set_epoch(2)
    assert sorted(list(a) + list(b)) == list(range(10))
    full = list(a)
    a.set_epoch(2, start=3)
    assert list(a) == full[3:]
    a.set_epoch(3)
    assert list(a) != full                             # reshuffled per epoch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    trainer = Trainer(TrainConfig(out_dir=Path(out), max_steps=6, ckpt_every=3, log_every=3, device="cpu",
                                  progress=False))
    torch.manual_seed(0)
    model = trainer.add_module("net", nn.Linear(4, 1))
    trainer.add_optimizer("sgd", torch.optim.SGD(trainer.raw("net").parameters(), lr=0.05))

    def step(batch, tr: Trainer) -> dict[str, float]:
        x, y = tr.to_device(batch)
        loss = nn.functional.mse_loss(model(x), y)
        tr.backward_step(loss, "sgd")
        return {"loss": loss.item()}

    trainer.fit(step, trainer.make_loader(_dataset(), batch_size=4))
    torch.save(trainer.raw("net").state_dict(), Path(out) / f"rank{rank}.pt")
    trainer.close()


def test_ddp_two_ranks_gloo(tmp_path: Path) -> None:
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)           # gradients were all-reduced
    assert [p.name for p in checkpoint_paths(tmp_path)] == ["step_00000003.pt", "step_00000006.pt"]
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6]                  # only rank 0 wrote


def test_interrupt_saves_the_last_completed_step(tmp_path: Path) -> None:
    cfg = TrainConfig(out_dir=tmp_path, max_steps=10, ckpt_every=100, device="cpu", progress=False)
    trainer = Trainer(cfg)
    model = trainer.add_module("net", nn.Linear(4, 1))
    trainer.add_optimizer("sgd", torch.optim.SGD(trainer.raw("net").parameters(), lr=0.1))

    def step(batch, tr: Trainer) -> dict[str, float]:
        if tr.step == 3:
            raise KeyboardInterrupt
        x, y = batch
        loss = nn.functional.mse_loss(model(x), y)
        tr.backward_step(loss, "sgd")
        return {"loss": loss.item()}

    with pytest.raises(KeyboardInterrupt):
        trainer.fit(step, trainer.make_loader(_dataset(), batch_size=8))
    assert [p.name for p in checkpoint_paths(tmp_path)] == ["step_00000003.pt"]


def _clip_and_schedule_run(out: Path, max_steps: int, grad_clip: float | None) -> tuple[Trainer, list[float]]:
    cfg = TrainConfig(out_dir=out, max_steps=max_steps, ckpt_every=2, device="cpu", progress=False,
                      grad_clip=grad_clip)
    trainer = Trainer(cfg)
    torch.manual_seed(0)
    model = trainer.add_module("net", nn.Linear(4, 1))
    opt = torch.optim.SGD(trainer.raw("net").parameters(), lr=0.1)
    trainer.add_optimizer("sgd", opt, scheduler=torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5))
    norms: list[float] = []

    def step(batch, tr: Trainer) -> dict[str, float]:
        x, y = batch
        loss = nn.functional.mse_loss(model(x), y)
        norm = tr.backward_step(loss, "sgd")
        if norm is not None:
            norms.append(norm)
        return {"loss": loss.item()}

    trainer.fit(step, trainer.make_loader(_dataset(), batch_size=8))
    return trainer, norms


def test_grad_clip_and_scheduler_state_resume(tmp_path: Path) -> None:
    clipped, norms = _clip_and_schedule_run(tmp_path / "a", 4, grad_clip=1e-3)
    free, _ = _clip_and_schedule_run(tmp_path / "b", 4, grad_clip=None)
    assert len(norms) == 4 and norms[0] > 1e-3                       # pre-clip norm is reported
    w_clip, w_free = clipped.raw("net").weight, free.raw("net").weight
    assert not torch.allclose(w_clip, w_free)
    assert clipped.optimizers["sgd"].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**4)
    resumed, _ = _clip_and_schedule_run(tmp_path / "a", 6, grad_clip=1e-3)   # resumes at step 4
    assert resumed.schedulers["sgd"].last_epoch == 6
    assert resumed.optimizers["sgd"].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**6)
