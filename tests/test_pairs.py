"""Paired data: pairing rules, MFCC-per-frame DTW recovering a known time warp, JSON cache, crops, pose switch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from spfem_cli.datasets import pairs as pairs_mod
from spfem_cli.datasets.align_time import dtw_path, mfcc_per_frame
from spfem_cli.datasets.mead import MeadClip
from spfem_cli.datasets.pairs import (
    CentreCropSource,
    build_pairs,
    mead_candidates,
    pose_align_frames,
    ravdess_candidates,
)
from spfem_cli.datasets.pairs_synthetic import write_synthetic_mead
from spfem_cli.datasets.ravdess import parse_name
from spfem_cli.errors import SpfemError


@pytest.fixture(scope="module")
def mead_tree(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mead")
    truths = write_synthetic_mead(root, actors=("M001", "W021"), emotions=("happy",), n_frames=45, size=48)
    write_synthetic_mead(root, actors=("M003",), emotions=("happy",), n_frames=12, size=48)   # a test actor
    return root, truths


def _clip(actor: str, emotion: str, level: int, clip: str) -> MeadClip:
    return MeadClip(actor, emotion, level, clip, Path(f"/{actor}/{emotion}/{level}/{clip}.mp4"), None)


def test_mead_rule_levels_clips_disgusted_and_split() -> None:
    clips = [_clip(a, "neutral", 1, n) for a in ("M001", "W021", "M009") for n in ("001", "002", "003", "004")]
    clips += [_clip(a, "happy", lvl, n) for a in ("M001", "W021", "M009") for lvl in (1, 3) for n in ("001", "002")]
    clips += [_clip("M001", "disgusted", 3, n) for n in ("001", "028", "029", "030")]
    clips += [_clip("W021", "disgusted", 3, "002")]                  # no 028-030: falls back to 001-003
    train = {p.key for p in mead_candidates(clips, "train")}
    assert train == {"M001/happy/001_001", "M001/happy/002_002", "M001/disgusted/001_028",
                     "M001/disgusted/002_029", "M001/disgusted/003_030"}
    val = {p.key for p in mead_candidates(clips, "val")}
    assert val == {"W021/happy/001_001", "W021/happy/002_002", "W021/disgusted/002_002"}
    assert not any(p.actor == "M009" for p in mead_candidates(clips, "all"))    # test actor never paired


def test_ravdess_rule_same_actor_statement_repetition() -> None:
    names = ["01-01-01-01-01-01-07", "01-01-03-02-01-01-07", "01-01-03-01-01-01-07",   # happy strong / normal
             "01-01-05-02-01-02-07", "01-01-02-02-01-01-07",                           # angry rep 2 (no neutral)
             "01-01-01-01-02-01-07", "01-01-04-02-02-01-07",                           # calm left out
             "01-01-01-01-01-01-03", "01-01-03-02-01-01-03",                           # test actor 03
             "01-01-01-01-01-01-24", "01-01-07-02-01-01-24"]                           # held-out actor 24
    clips = [parse_name(Path(f"/Actor/{n}.mp4")) for n in names]
    train = {p.key for p in ravdess_candidates(clips, "train")}
    assert train == {"Actor_07/happy/01-01-01-01-01-01-07_01-01-03-02-01-01-07",
                     "Actor_07/sad/01-01-01-01-02-01-07_01-01-04-02-02-01-07"}
    assert {p.emotion_b for p in ravdess_candidates(clips, "val")} == {"disgusted"}


def test_mfcc_one_row_per_frame() -> None:
    rate, fps = 16000, 30
    t = np.arange(rate) / rate
    audio = np.sin(2 * np.pi * 440 * t) * (t > 0.5)
    m = mfcc_per_frame(audio, rate, 40, fps)                     # more frames than audio: padded silence
    assert m.shape == (40, 13) and np.isfinite(m).all()
    assert m[20:28, 0].mean() > m[:12, 0].mean() + 5             # energy rises where the tone starts


def test_dtw_recovers_a_known_repeat() -> None:
    a = np.cumsum(np.random.default_rng(0).standard_normal((20, 3)), axis=0)
    b = np.repeat(a, 2, axis=0)                                  # b is a played at half speed
    ia, ib = dtw_path(a, b)
    assert ia[0] == ib[0] == 0 and ia[-1] == 19 and ib[-1] == 39
    assert (np.diff(ia) >= 0).all() and (np.diff(ib) >= 0).all()
    assert np.array_equal(ia, ib // 2)


def test_build_pairs_aligns_by_audio_and_caches(mead_tree, tmp_path: Path, monkeypatch) -> None:
    root, truths = mead_tree
    pairs = build_pairs("mead", root, split="train", cache_dir=tmp_path)
    assert [p.key for p in pairs] == ["M001/happy/001_001"]
    pair = pairs[0]
    truth = truths["M001/happy/001"]
    ia, ib = np.array(pair.path_a), np.array(pair.path_b)
    assert ia[-1] == 44 and ib[-1] == len(truth) - 1
    err = np.abs(ia - truth[ib])
    assert np.median(err) <= 1.0 and np.mean(err) < 2.5          # DTW on MFCCs follows the known warp
    assert len(list(tmp_path.glob("pairs_mead_train_*.json"))) == 1
    assert [p.actor for p in build_pairs("mead", root, split="val", cache_dir=tmp_path)] == ["W021"]
    monkeypatch.setattr(pairs_mod, "align_pair", lambda p: (_ for _ in ()).throw(AssertionError("not cached")))
    assert build_pairs("mead", root, split="train", cache_dir=tmp_path) == pairs


def test_build_pairs_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(SpfemError, match="no MEAD clips"):
        build_pairs("mead", tmp_path)


def test_window_dataset_and_pose_switch(mead_tree, tmp_path: Path) -> None:
    from spfem_cli.train.metric import PairWindowDataset

    root, _ = mead_tree
    pairs = build_pairs("mead", root, split="train", cache_dir=tmp_path)
    ds = PairWindowDataset(pairs, CentreCropSource(32), context=2)
    item = ds[0]
    assert item["generated"].shape == item["target"].shape == (5, 3, 32, 32)
    assert -1.0 <= float(item["target"].min()) and float(item["target"].max()) <= 1.0
    assert len(ds) == len(pairs[0].path_a) - 4
    single = PairWindowDataset(pairs, CentreCropSource(32), context=2, single_frame=True)[0]
    assert single["generated"].shape == (3, 32, 32)
    with pytest.raises(SpfemError, match="needs landmarks"):
        PairWindowDataset(pairs, CentreCropSource(32), pose_align=True)[0]


def test_pose_align_frames_undoes_a_known_shift() -> None:
    from spfem_cli.datasets.pairs_synthetic import face_frame
    from spfem_cli.face.align import TEMPLATE_68

    a = face_frame(128, 0.3)[None]
    shift = np.float32([[1, 0, 5], [0, 1, -3]])
    import cv2

    b = cv2.warpAffine(a[0], shift, (128, 128), borderMode=cv2.BORDER_REPLICATE)[None]
    marks_a = TEMPLATE_68[None] * 0.5
    marks_b = marks_a + np.array([5.0, -3.0])
    aligned = pose_align_frames(b, marks_b, marks_a)
    inner = (slice(None), slice(10, 118), slice(10, 118))
    before = np.abs(b[inner].astype(int) - a[inner]).mean()
    after = np.abs(aligned[inner].astype(int) - a[inner]).mean()
    assert after < 0.2 * before


def test_tracked_crop_source_aligns_faces_and_feeds_pose_alignment(tmp_path: Path) -> None:
    from spfem_cli.datasets.pairs import ClipPair, TrackedCropSource
    from spfem_cli.datasets.pairs_synthetic import face_frame
    from spfem_cli.train.metric import PairWindowDataset
    from spfem_cli.video import write_video

    frames = np.stack([np.pad(face_frame(200, m), ((40, 40), (60, 60), (0, 0)), mode="edge")
                       for m in np.linspace(0, 1, 6)])
    video = tmp_path / "face.mp4"
    write_video(video, frames, 30)
    source = TrackedCropSource(tmp_path / "crops", size=64)
    crops = source.frames(str(video), [0, 5])
    marks = source.landmarks(str(video), [0, 5])
    assert crops.shape == (2, 64, 64, 3) and marks.shape == (2, 68, 2) and not np.isnan(marks).any()
    # aligned space: nose tip near the centre column, chin in the lower part of the crop
    assert abs(marks[0, 30, 0] - 32) < 4 and 44 < marks[0, 8, 1] < 62
    assert marks[1, 57, 1] > marks[0, 57, 1] + 1                 # the lower lip moved down with the opening
    assert len(list((tmp_path / "crops").glob("*.mp4"))) == 1     # tracked once, cached
    pair = ClipPair("x/happy/001_001", "x", "neutral", "happy", str(video), str(video), None, None,
                    (0, 1, 2), (0, 1, 2))
    item = PairWindowDataset([pair], source, context=1, pose_align=True)[0]
    assert item["generated"].shape == (3, 3, 64, 64)
    assert torch_allclose(item["generated"], item["target"])      # same clip: pose alignment is ~identity


def torch_allclose(a, b) -> bool:
    return float((a - b).abs().mean()) < 0.02
