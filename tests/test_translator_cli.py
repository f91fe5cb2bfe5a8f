"""`spfem train-translator` end to end on a tiny coefficient root (NED sizes, 2 steps), and its errors."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from spfem_cli.app import app
from spfem_cli.backends.ned.translate import ExpressionSeq, translate


def _root(tmp_path):
    rng = np.random.default_rng(0)
    for actor in ("M005", "W010"):
        for emo in ("neutral", "happy"):
            d = tmp_path / "coeffs" / actor / emo / "level_1"
            d.mkdir(parents=True)
            np.save(d / "001.npy", rng.normal(0, 0.3, (14, 51)).astype(np.float32))
    return tmp_path / "coeffs"


def test_train_translator_command_plain_ned_run(tmp_path, monkeypatch):
    monkeypatch.setenv("SPFEM_HOME", str(tmp_path / "home"))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["train-translator", "--root", str(_root(tmp_path)), "--out", str(out),
                                   "--no-stccl", "--steps", "2", "--batch", "4", "--device", "cpu", "--actor", "M005"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((out / "translator_config.json").read_text())
    assert cfg["stccl"] is False and cfg["train"]["batch_size"] == 4
    assert [json.loads(x)["step"] for x in (out / "log.jsonl").read_text().splitlines()][-1] == 2
    seq = ExpressionSeq(np.zeros((12, 51), np.float32))
    assert translate(seq, "happy", checkpoint=out / "translator.pth").coeffs.shape == (12, 51)


def test_train_translator_stccl_without_metric_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SPFEM_HOME", str(tmp_path / "home"))
    res = CliRunner().invoke(app, ["train-translator", "--root", str(_root(tmp_path)), "--out", str(tmp_path / "r"),
                                   "--stccl", "--metric", str(tmp_path / "missing.pt"), "--steps", "1", "--device", "cpu"])
    from spfem_cli.errors import SpfemError

    assert res.exit_code != 0 and isinstance(res.exception, SpfemError)
    # one message, before any work, names everything missing: the gated FLAME files and the metric file
    message = str(res.exception)
    assert "missing.pt" in message and "flame_generic" in message and "flame_landmark_embedding" in message
    assert not (tmp_path / "r").exists()


def test_cli_defaults_are_neds_config_defaults():
    """The command may not import torch at `--help` time, so it repeats the defaults: keep them equal."""
    import typer

    from spfem_cli.backends.ned.train_translator import TranslatorRun, TranslatorTrainConfig

    cmd = typer.main.get_command(app).commands["train-translator"]
    d = {p.name: p.default for p in cmd.params}
    cfg, run = TranslatorTrainConfig(), TranslatorRun(out_dir=".")
    assert (d["lr"], d["batch"], d["epochs"], d["decay_epochs"]) == (cfg.lr, cfg.batch_size, cfg.niter, cfg.niter_decay)
    assert cfg.lr == cfg.f_lr and cfg.d_lr is None and cfg.betas == (0.0, 0.99)
    assert (d["stccl_weight"], d["stccl_frames"]) == (cfg.lambda_stccl, cfg.stccl_frames)
    assert (d["seed"], d["ckpt_every"], d["device"], d["amp"], d["resume"]) == (
        run.seed, run.ckpt_every, run.device, run.amp, run.resume)
