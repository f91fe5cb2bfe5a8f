"""Metric training on real face pixels: the loss falls, the positive/negative gap widens; CLI run,
resume and analysis end to end on a tiny MEAD tree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from models.stccl import STCCL, STCCLConfig, load_metric
from spfem_cli.app import app
from spfem_cli.datasets.pairs_synthetic import synthetic_clip_pair, write_synthetic_mead
from spfem_cli.train.metric_analysis import separation_stats

SIZE = 48


def _pair(seed: int, emotion: str, n: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    """(emotional frames, DTW-truth-matched neutral frames), N×3×S×S in [-1, 1]."""
    fa, fb, _, _, truth = synthetic_clip_pair(n, SIZE, emotion, seed=seed)
    matched = fa[np.clip(np.round(truth).astype(int), 0, n - 1)]
    to_t = lambda f: torch.from_numpy(f).permute(0, 3, 1, 2).float() / 127.5 - 1  # noqa: E731
    return to_t(fb), to_t(matched)


def _block_shuffle(x: torch.Tensor, block: int = 8, seed: int = 0) -> torch.Tensor:
    b, c, h, w = x.shape
    tiles = x.unfold(2, block, block).unfold(3, block, block).reshape(b, c, -1, block, block)
    tiles = tiles[:, :, torch.randperm(tiles.shape[2], generator=torch.Generator().manual_seed(seed))]
    g = h // block
    return tiles.reshape(b, c, g, g, block, block).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w)


def test_a_few_hundred_steps_lower_the_loss_and_widen_the_gap() -> None:
    """Joint (spatial + temporal on 3-frame windows) head training on three emotion pairs; the gap is
    measured on a fourth, held-out pair and emotion."""
    torch.manual_seed(0)
    metric = STCCL(STCCLConfig(arch="r18", input_size=SIZE, mode="joint", grad="both")).eval()
    train = [_pair(s, e) for s, e in ((0, "happy"), (1, "sad"), (2, "angry"))]
    gen = torch.cat([g for g, _ in train])
    tgt = torch.cat([t for _, t in train])
    starts = torch.tensor([c * 30 + i for c in range(3) for i in range(28)])      # windows inside one clip
    val_g, val_t = _pair(9, "surprised")
    probe = torch.Generator
    before = separation_stats(metric, val_g, val_t, generator=probe().manual_seed(0))["all"]
    # Backbone frozen (features computed once) so a few hundred head steps fit in a CPU test.
    with torch.no_grad():
        fg, ft = metric.features(gen), metric.features(tgt)
    opt = torch.optim.Adam(metric.spatial_proj.parameters(), lr=1e-3)
    rng = torch.Generator().manual_seed(1)
    spatial, temporal = [], []
    for _ in range(300):
        idx = (starts[torch.randint(0, len(starts), (4,), generator=rng)][:, None] + torch.arange(3)).flatten()
        terms = metric.terms_from_features([f[idx] for f in fg], [f[idx] for f in ft], frames=3, generator=rng)
        opt.zero_grad()
        terms.total.backward()
        opt.step()
        spatial.append(float(terms.spatial.detach()))
        temporal.append(float(terms.temporal.detach()))
    assert np.mean(spatial[-30:]) < 0.5 * np.mean(spatial[:30])
    assert np.mean(temporal[-30:]) < 0.8 * np.mean(temporal[:30])
    after = separation_stats(metric, val_g, val_t, generator=probe().manual_seed(0))["all"]
    gap_before = before["pos_cos"] - before["neg_cos"]
    gap_after = after["pos_cos"] - after["neg_cos"]
    assert gap_after > gap_before + 0.1, (before, after)
    assert after["pos_r"] - after["neg_r"] > before["pos_r"] - before["neg_r"] + 0.1
    with torch.no_grad():
        matched = metric(val_g[:16], val_t[:16], generator=probe().manual_seed(2))
        shuffled = metric(val_g[:16], _block_shuffle(val_t[:16]), generator=probe().manual_seed(2))
    assert matched < shuffled


@pytest.fixture(scope="module")
def tiny_mead(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mead_cli")
    write_synthetic_mead(root, actors=("M001", "W021"), emotions=("happy",), n_frames=24, size=SIZE)
    return root


def test_train_metric_cli_resume_and_analyze(tiny_mead: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "run"
    args = ["train-metric", "--root", str(tiny_mead), "--out", str(out), "--batch", "2", "--arch", "r18",
            "--input-size", str(SIZE), "--crops", "centre", "--backbone-weights", "none", "--ckpt-every", "1",
            "--log-every", "1", "--device", "cpu", "--context", "1", "--mode", "joint"]
    prep = runner.invoke(app, [*args, "--prepare-only"])
    assert prep.exit_code == 0, prep.output
    assert len(list((out / "cache").glob("pairs_mead_train_*.json"))) == 1 and not (out / "checkpoints").exists()
    first = runner.invoke(app, [*args, "--steps", "2"])
    assert first.exit_code == 0, first.output
    metric_file = out / "stccl_metric.pt"
    assert STCCL.load(metric_file).config.mode == "joint"
    second = runner.invoke(app, [*args, "--steps", "3"])
    assert second.exit_code == 0, second.output
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    assert any(r.get("event") == "resumed from step_00000002.pt" for r in log)
    assert all(np.isfinite(r["loss"]) and "temporal" in r and "spatial" in r for r in log if "loss" in r)
    ckpt = torch.load(sorted((out / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)
    assert ckpt["step"] == 3 and json.loads(ckpt["run_config"])["mode"] == "joint"
    assert ckpt["optimizers"]["adam"]["state"]                      # optimiser state travels with it

    frozen = load_metric(metric_file)
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())

    report_dir = tmp_path / "analysis"
    res = runner.invoke(app, ["analyze-metric", "--root", str(tiny_mead), "--metric", str(metric_file),
                              "--crops", "centre", "--frames", "4", "--batch", "4", "--out", str(report_dir),
                              "--device", "cpu", "--split", "val"])
    assert res.exit_code == 0, res.output
    report = json.loads((report_dir / "metric_analysis.json").read_text())
    row = report["emotions"]["happy"]["trained"]
    assert set(report["emotions"]["happy"]) == {"untrained", "trained"} and row["frames"] == 4
    assert all(-1.0 <= row[f"all/{k}"] <= 1.0 for k in ("pos_cos", "neg_cos", "pos_r", "neg_r"))
    png = (report_dir / "metric_analysis.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_train_metric_cli_errors_are_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["train-metric", "--root", str(tmp_path), "--out", str(tmp_path / "o"),
                                   "--mode", "sideways"])
    assert res.exit_code != 0 and "--mode must be one of" in str(res.exception)
