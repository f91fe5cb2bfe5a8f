"""`spfem preprocess` output folders as users give them: nested paths, existing results, the manifest."""

from __future__ import annotations

import json
import shutil


def test_nested_folder_created_existing_results_kept_manifest_names_the_input(spfem, small_clip, tmp_path):
    nested = tmp_path / "a" / "b" / "c"
    first = spfem("preprocess", small_clip.path, "-o", nested, "--json")
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["frames"] == 25
    assert json.loads((nested / "manifest.json").read_text())["video"] == str(small_clip.path)

    before = {p.name: p.stat().st_mtime_ns for p in nested.iterdir()}
    again = spfem("preprocess", small_clip.path, "-o", nested)
    assert again.returncode == 1 and "--overwrite" in again.stderr and "track.npz" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in nested.iterdir()} == before      # nothing replaced

    copy = tmp_path / "renamed.mp4"                  # same content: served from the cache of the first
    shutil.copyfile(small_clip.path, copy)
    replaced = spfem("preprocess", copy, "-o", nested, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert "cached" in replaced.stderr
    assert json.loads((nested / "manifest.json").read_text())["video"] == str(copy)


def test_output_under_a_file_is_refused_before_work(spfem, small_clip, tmp_path):
    (tmp_path / "file").write_text("")
    result = spfem("preprocess", small_clip.path, "-o", tmp_path / "file" / "out")
    assert result.returncode == 1 and "not a writable folder" in result.stderr
