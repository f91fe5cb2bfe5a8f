"""NED edit backend (not wired yet): weight check for --backend auto, sequence runs of the renderer state."""

from __future__ import annotations

import numpy as np

from spfem_cli.edit.ned_backend import missing_weights, sequence_runs


def test_sequence_runs_reset_at_gaps_and_cuts():
    cuts = np.zeros(20, bool)
    cuts[12] = True
    sel = np.array([3, 4, 5, 8, 9, 10, 11, 12, 13])
    # continuing from frame 2 of the previous chunk: no reset at 3; gap 5→8 and the cut at 12 reset
    assert sequence_runs(sel, cuts, last_ok=2) == [(0, 3, False), (3, 7, True), (7, 9, True)]
    assert sequence_runs(sel[:3], cuts, last_ok=-2) == [(0, 3, True)]


def test_missing_weights_lists_renderer_and_gated_files(tmp_path, monkeypatch):
    monkeypatch.setenv("SPFEM_HOME", str(tmp_path / "home"))
    missing = missing_weights(tmp_path / "no_renderer")
    assert "ned_translator" in missing and "deca_model" in missing
    assert any("actor renderer" in m for m in missing)
