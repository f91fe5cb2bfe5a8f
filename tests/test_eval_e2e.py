"""`spfem eval` end to end on tiny fake MEAD and RAVDESS trees in their real layouts.

Clips are frames of the real-face sample (skimage's astronaut photo with a moving mouth) with speech-
like audio. The evaluator weights are made by the test in the published file layouts (random values),
so the numbers mean nothing, but every stage runs: protocol, per-video features, FAD, CSIM, LSE with
the real SyncNet architecture, the table, JSON, CSV and the plot, and the resumable cache.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from spfem_cli.app import app
from spfem_cli.errors import SpfemError
from spfem_cli.evaluate import run as run_mod
from spfem_cli.evaluate.protocol import build_plan
from spfem_cli.video import write_audio, write_video

FPS = 30
N_FRAMES = 9


@pytest.fixture(scope="module")
def frame_bank():
    from spfem_cli.demo.sample import render_frame

    amounts = np.linspace(0, 1, 6)
    return np.stack([render_frame(float(a), i / FPS, size=(128, 128), face_scale=0.55) for i, a in enumerate(amounts)])


def _clip_frames(bank: np.ndarray, seed: int, tint: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(bank), N_FRAMES)
    frames = bank[idx].astype(int) + tint + rng.integers(-3, 4, (N_FRAMES, 1, 1, 3))
    return np.clip(frames, 0, 255).astype(np.uint8)


def _write_clip(path: Path, frames: np.ndarray, tmp: Path, seed: int) -> None:
    from spfem_cli.demo.sample import speech_like_audio

    path.parent.mkdir(parents=True, exist_ok=True)
    wav = write_audio(tmp / f"a{seed}.wav", speech_like_audio(np.linspace(0, 1, N_FRAMES), FPS, seed=seed), 16000)
    write_video(path, frames, FPS, audio_from=wav, overwrite=True)


@pytest.fixture(scope="module")
def mead_root(tmp_path_factory, frame_bank):
    root = tmp_path_factory.mktemp("MEAD")
    tmp = tmp_path_factory.mktemp("mead_audio")
    seed = 0
    for actor in ("M003", "M009", "W015", "M005"):
        for emotion, level, tint in (("neutral", 1, 0), ("happy", 3, 12), ("contempt", 3, -12)):
            for clip in ("001", "002"):
                seed += 1
                video = root / actor / "video" / "front" / emotion / f"level_{level}" / f"{clip}.mp4"
                _write_clip(video, _clip_frames(frame_bank, seed, tint), tmp, seed)
                if actor == "M003":
                    audio = root / actor / "audio" / emotion / f"level_{level}" / f"{clip}.m4a"
                    audio.parent.mkdir(parents=True, exist_ok=True)
                    write_audio(audio, np.zeros(4800, np.float32), 16000)
    return root


@pytest.fixture(scope="module")
def ravdess_root(tmp_path_factory, frame_bank):
    root = tmp_path_factory.mktemp("RAVDESS")
    tmp = tmp_path_factory.mktemp("rav_audio")
    seed = 100
    for actor in (1, 2, 6):
        for emo, tint in ((1, 0), (3, 12), (2, -12)):           # neutral, happy, calm (calm is not evaluated)
            for statement in (1, 2):
                seed += 1
                name = f"01-01-{emo:02d}-01-{statement:02d}-01-{actor:02d}.mp4"
                _write_clip(root / f"Actor_{actor:02d}" / name, _clip_frames(frame_bank, seed, tint), tmp, seed)
        _write_clip(root / f"Actor_{actor:02d}" / f"02-01-01-01-01-01-{actor:02d}.mp4",   # video-only: ignored
                    _clip_frames(frame_bank, seed + 50, 0), tmp, seed + 50)
    return root


@pytest.fixture(scope="module")
def eval_weights(tmp_path_factory):
    """The three evaluator files in their published layouts, from randomly initialised networks."""
    from models.efficientface import EfficientFace
    from models.resnet_face import ResNetFace18
    from models.syncnet import SyncNetV2

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("weights")
    files = {
        "ARCFACE_RESNET18_FAD": folder / "resnet18_110.pth",
        "EFFICIENTFACE_AFFECTNET7": folder / "EfficientFace_Trained_on_AffectNet7.pth.tar",
        "SYNCNET_V2": folder / "syncnet_v2.model",
    }
    torch.save({f"module.{k}": v for k, v in ResNetFace18().state_dict().items()}, files["ARCFACE_RESNET18_FAD"])
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in EfficientFace().state_dict().items()}},
               files["EFFICIENTFACE_AFFECTNET7"])
    torch.save({k: v for k, v in SyncNetV2().state_dict().items() if not k.endswith("num_batches_tracked")},
               files["SYNCNET_V2"])
    return files


def _make_generated(dataset: str, root: Path, out: Path, actors: tuple[str, ...]) -> int:
    """Stand-in edits in the documented layout: the source frames, slightly changed, with the source audio
    (except the first, which has none)."""
    from spfem_cli.video import read_frames

    plan = build_plan(dataset, root, actors=actors)
    for i, job in enumerate(plan.jobs):
        frames, _ = read_frames(job.source.video)
        shift = 8 if job.protocol == "inter-id" else 20
        edited = np.clip(frames.astype(int) + shift, 0, 255).astype(np.uint8)
        target = out / job.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        # the first edit is written without sound: LSE must fall back to the source's audio
        write_video(target, edited, FPS, audio_from=None if i == 0 else job.source.video)
    return len(plan.jobs)


@pytest.mark.parametrize("dataset, actors, preset", [("mead", ("M003", "M009"), "spfem-ned"),
                                                     ("ravdess", ("Actor_02",), "wav2lip")])
def test_eval_end_to_end(dataset, actors, preset, mead_root, ravdess_root, eval_weights, tmp_path, monkeypatch):
    for name, path in eval_weights.items():
        monkeypatch.setenv(f"SPFEM_WEIGHT_{name}", str(path))
    root = mead_root if dataset == "mead" else ravdess_root
    generated = tmp_path / "generated"
    n_jobs = _make_generated(dataset, root, generated, actors)
    assert n_jobs == 4 * len(actors)          # per actor: 2 test clips × 1 other emotion × 2 protocols
    out = tmp_path / "report"
    args = ["eval", "--dataset", dataset, "--root", str(root), "--generated", str(generated), "--out", str(out),
            "--crop", "none", "--lse-preset", preset, "--device", "cpu", "--actors", ",".join(actors)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)

    stem = out / f"eval_{dataset}"
    data = json.loads(stem.with_suffix(".json").read_text())
    assert set(data["protocols"]) == {"inter-id", "cross-id"}
    assert data["counts"] == {"real_videos": 2 * len(actors), "generated_videos": n_jobs, "jobs": n_jobs}
    for block in data["protocols"].values():
        assert set(block["per_emotion"]) == {"neutral", "happy"}
        for metrics in [*block["per_emotion"].values(), block["avg"]]:
            for key in ("fad", "lse_d", "csim", "lse_c"):
                assert np.isfinite(metrics[key]), (key, metrics)
        assert block["avg"]["fad"] == pytest.approx(np.mean([m["fad"] for m in block["per_emotion"].values()]))
        # spfem-ned scores generated frames from source frame 2 on, as CDRL's NED frame folders hold them
        per_video = N_FRAMES - {"spfem-ned": 2, "wav2lip": 0}[preset]
        assert all(m["n_generated_frames"] == len(actors) * per_video for m in block["per_emotion"].values())
    # cross-ID edits were changed more than inter-ID ones, and FAD sees it
    assert data["protocols"]["cross-id"]["avg"]["fad"] > data["protocols"]["inter-id"]["avg"]["fad"]
    table = stem.with_suffix(".md").read_text()
    assert "| Neutral |" in table and "| Happy |" in table and "| Avg. |" in table
    assert "Inter-ID FAD↓" in table and "Cross-ID LSE-C↑" in table
    csv_lines = stem.with_suffix(".csv").read_text().strip().splitlines()
    assert csv_lines[0].startswith("protocol,emotion,fad,lse_d,csim,lse_c") and len(csv_lines) == 1 + 2 * 3
    assert stem.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Resumable: a second run reads every video from the cache (decoding is forbidden) and agrees.
    assert len(list((out / "cache").glob("*.npz"))) == 6 * len(actors)
    monkeypatch.setattr(run_mod, "face_chunks", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output + repr(again.exception)
    assert json.loads(stem.with_suffix(".json").read_text())["protocols"] == data["protocols"]


def test_missing_weights_name_the_fetch_command(mead_root, tmp_path):
    generated = tmp_path / "generated"
    _make_generated("mead", mead_root, generated, ("M003",))
    cfg = run_mod.EvalConfig("mead", mead_root, tmp_path / "out", generated=generated, crop="none", device="cpu",
                             actors=("M003",))
    with pytest.raises(SpfemError) as info:
        run_mod.evaluate_dataset(cfg, progress=False)
    message = str(info.value)
    assert "\n" not in message and "arcface_resnet18_fad" in message and "spfem weights fetch" in message


def test_protocol_plan_follows_the_real_layouts(mead_root, ravdess_root):
    plan = build_plan("mead", mead_root)
    assert plan.actors == ["M003", "M009", "W015"]               # M005 is not a test actor
    assert plan.emotions == ["neutral", "happy"]                 # contempt is not one of NED's 7
    cross = [j for j in plan.jobs if j.protocol == "cross-id" and j.actor == "M003"]
    assert cross and all(j.reference.actor == "W015" for j in cross)
    inter = [j for j in plan.jobs if j.protocol == "inter-id"]
    assert all(j.reference.actor == j.actor and j.reference not in plan.real[(j.actor, j.target)] for j in inter)
    assert any("W029" in n for n in plan.notes)                  # absent test actors are reported
    assert str(plan.jobs[0].relpath).count("/") == 3
    rav = build_plan("ravdess", ravdess_root, actors=("Actor_02",))
    assert {j.reference.actor for j in rav.jobs if j.protocol == "cross-id"} == {"Actor_01"}
    assert all(c.key.startswith("01-01-") for clips in rav.real.values() for c in clips)


def test_generation_without_a_backend_module_is_a_clear_error(mead_root, tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("spfem_cli.edit"):
            raise ImportError("not built")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    plan = build_plan("mead", mead_root, actors=("M003",))
    with pytest.raises(SpfemError, match="--generated DIR"):
        run_mod.generate_missing(plan, tmp_path, "warp")


def test_pair_mode_on_identical_videos(mead_root, eval_weights, monkeypatch):
    from spfem_cli.evaluate.pair import evaluate_pair

    monkeypatch.setenv("SPFEM_WEIGHT_SYNCNET_V2", str(eval_weights["SYNCNET_V2"]))
    clip = mead_root / "M003" / "video" / "front" / "happy" / "level_3" / "001.mp4"
    result = evaluate_pair(clip, clip, crop="none", device="cpu")
    assert result["source"] == result["edited"] and result["source"]["n_windows"] == N_FRAMES - 2 - 5
    assert result["psnr"] == float("inf") and result["ssim"] == pytest.approx(1.0)


def test_ned_generation_needs_a_renderer_per_actor_before_any_edit(mead_root, tmp_path):
    import torch

    from models.ned_renderer import NedGenerator

    plan = build_plan("mead", mead_root, actors=("M003",))
    with pytest.raises(SpfemError, match="--renderers DIR"):
        run_mod.generate_missing(plan, tmp_path / "gen", "ned")
    with pytest.raises(SpfemError, match="M003"):
        run_mod.generate_missing(plan, tmp_path / "gen", "ned", renderers=tmp_path / "renderers")
    assert not (tmp_path / "gen").exists()
    (tmp_path / "renderers" / "M003").mkdir(parents=True)
    torch.save(NedGenerator(ngf=4, n_blocks=2).state_dict(), tmp_path / "renderers" / "M003" / "latest_net_G.pth")
    assert run_mod.actor_renderers(plan, tmp_path / "renderers") == {"M003": tmp_path / "renderers" / "M003"}
