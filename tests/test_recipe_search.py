"""The recipe search's mechanics on a known objective: it climbs, keeps to the bounds and restores facs."""

from __future__ import annotations

import pytest

from spfem_cli.backends.warp import facs
from spfem_cli.benchmarks import recipe_search as rs


def test_search_climbs_to_the_best_weights_within_bounds_and_leaves_the_recipes_alone(monkeypatch):
    target = {"AU1": 1.2, "AU4": 0.0, "AU15": 1.8}          # AU15's optimum sits on the upper bound

    def fake_judge(emotion, weights, clips, backend, recognizer):
        miss = sum((weights.get(u, 0.0) - w) ** 2 for u, w in target.items())
        return -miss, 0

    monkeypatch.setattr(rs, "judge", fake_judge)
    before = dict(facs.EMOTION_AUS["sad"])
    best = rs.search("sad", ["AU1", "AU4", "AU15"], clips=[], backend=None, recognizer=None, passes=8, log=lambda *_: None)
    assert best["AU1"] == pytest.approx(1.2, abs=0.1) and best["AU15"] == pytest.approx(1.8, abs=0.1)   # the search keeps a move worth > 0.005
    assert "AU4" not in best and all(0 < w <= rs.MAX_WEIGHT for w in best.values())
    assert facs.EMOTION_AUS["sad"] == before


def test_a_recipe_is_in_force_only_inside_its_context():
    before = dict(facs.EMOTION_AUS["fear"])
    with rs.recipe("fear", {"AU5": 1.0}):
        assert facs.EMOTION_AUS["fear"] == {"AU5": 1.0}
    assert facs.EMOTION_AUS["fear"] == before
