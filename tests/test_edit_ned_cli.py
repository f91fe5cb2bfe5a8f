"""`spfem edit` through the ned backend, end to end on CPU, with test-made weights in the published layouts.

Every weight comes from the registry (``SPFEM_WEIGHT_<NAME>`` points at files written here): a full-size DECA
``deca_model.tar`` (random, with a frontal camera head), a FLAME-layout model, DECA's detail assets, a NED-layout
translator checkpoint (small configuration) and an actor renderer folder (``latest_net_G.pth``, small
configuration). The weights are random, so the picture is not judged — the plumbing is: the right backend
runs, every frame is written with the source's timing and audio, the face region is replaced and the rest
of the frame is kept.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from fakes import frontal_deca, write_deca_model, write_detail_assets, write_flame_files

from models.flame import FLAME
from models.ned_renderer import NedGenerator
from models.ned_translator import NedTranslator, TranslatorConfig
from spfem_cli.video import probe, read_audio, read_frames


@pytest.fixture(scope="module")
def ned_files(tmp_path_factory):
    """name → path of every file the ned backend needs, plus the actor renderer folder under 'renderer'."""
    root = tmp_path_factory.mktemp("ned_weights")
    files = write_flame_files(root / "flame")
    flame = FLAME.from_files(files["flame_generic"], files["flame_landmark_embedding"])
    files |= write_detail_assets(root / "deca", flame.v_template.numpy(), flame.faces.numpy())
    files["deca_model"] = write_deca_model(root / "deca" / "deca_model.tar", frontal_deca())
    torch.manual_seed(0)
    translator = NedTranslator(TranslatorConfig(gen_hidden=16, enc_lstm=8, mapping_hidden=16))
    files["ned_translator"] = root / "ned_translator.pth"
    torch.save(translator.ned_state_dict(), files["ned_translator"])
    renderer = root / "actor_renderer"
    renderer.mkdir()
    torch.save(NedGenerator(ngf=8, n_blocks=3).state_dict(), renderer / "latest_net_G.pth")
    files["renderer"] = renderer
    return files


def _spfem(files, *args, skip=()):
    env = dict(os.environ)
    for name, path in files.items():
        if name != "renderer" and name not in skip:
            env[f"SPFEM_WEIGHT_{name.upper()}"] = str(path)
    return subprocess.run([sys.executable, "-m", "spfem_cli.app", *args], capture_output=True, text=True,
                          timeout=600, env=env)


@pytest.mark.slow
def test_default_backend_runs_ned_end_to_end(ned_files, short_clip, tmp_path):
    out, side = tmp_path / "edited.mp4", tmp_path / "side.mp4"
    result = _spfem(ned_files, "edit", str(short_clip.path), "--emotion", "happy", "--renderer",
                    str(ned_files["renderer"]), "--device", "cpu", "-o", str(out), "--side-by-side", str(side))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "backend ned (auto" in result.stderr + result.stdout   # the default is auto, and it says why
    src_info, out_info = probe(short_clip.path), probe(out)
    assert out_info.n_frames == src_info.n_frames and out_info.fps == src_info.fps
    assert abs(len(read_audio(out)) - len(read_audio(short_clip.path))) < 0.05 * 16000
    src, _ = read_frames(short_clip.path)
    got, _ = read_frames(out)
    diff = np.abs(got.astype(int) - src.astype(int)).mean(-1)
    h, w = diff.shape[1:]
    assert diff[:, :, : w // 8].mean() < 3        # far from the face: the frame itself (codec noise only)
    assert diff[:, h // 4: 3 * h // 4, w // 4: 3 * w // 4].max() > 40   # the rendered face was pasted in
    sbs = probe(side)
    assert (sbs.width, sbs.height) == (2 * src_info.width, src_info.height) and sbs.n_frames == src_info.n_frames


def test_missing_translator_names_it_and_writes_nothing(ned_files, short_clip, tmp_path):
    out = tmp_path / "o.mp4"
    result = _spfem(ned_files, "edit", str(short_clip.path), "--emotion", "happy", "--backend", "ned", "--renderer",
                    str(ned_files["renderer"]), "-o", str(out), skip=("ned_translator",))
    assert result.returncode == 1 and "ned_translator" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_auto_without_renderer_says_why_it_falls_back(ned_files, monkeypatch):
    from spfem_cli.edit.pipeline import EditRequest, choose_backend
    from spfem_cli.edit.targets import EditTarget

    for name, path in ned_files.items():
        if name != "renderer":
            monkeypatch.setenv(f"SPFEM_WEIGHT_{name.upper()}", str(path))
    req = EditRequest(ned_files["renderer"] / "x.mp4", ned_files["renderer"] / "y.mp4", EditTarget(emotion="happy"))
    backend, why = choose_backend(req)
    assert backend.name == "warp" and "actor renderer" in why
    req.renderer = ned_files["renderer"]
    backend, why = choose_backend(req)
    assert backend.name == "ned" and "auto" in why


def test_auto_tracker_is_fan_for_ned_only_when_its_weights_are_installed(tmp_path, monkeypatch):
    from spfem_cli.edit.pipeline import EditRequest, resolve_tracker
    from spfem_cli.edit.targets import EditTarget

    req = EditRequest(tmp_path / "x.mp4", tmp_path / "y.mp4", EditTarget(emotion="happy"))
    for name in ("FAN_2D68", "S3FD"):
        monkeypatch.delenv(f"SPFEM_WEIGHT_{name}", raising=False)
    assert resolve_tracker(req, "ned") == "mediapipe"
    for name in ("fan_2d68", "s3fd"):
        (tmp_path / name).write_bytes(b"w")
        monkeypatch.setenv(f"SPFEM_WEIGHT_{name.upper()}", str(tmp_path / name))
    assert (resolve_tracker(req, "ned"), resolve_tracker(req, "warp")) == ("fan", "mediapipe")
    (tmp_path / "renderer" / "actor").mkdir(parents=True)
    (tmp_path / "renderer" / "actor" / "actor.json").write_text('{"tracker": "mediapipe"}')
    req.renderer = tmp_path / "renderer"
    assert resolve_tracker(req, "ned") == "mediapipe"   # the landmarker the renderer was trained with
    req.renderer, req.tracker = None, "mediapipe"
    assert resolve_tracker(req, "ned") == "mediapipe"   # the user's choice stands


@pytest.mark.slow
def test_ned_reference_edit_passes_faceless_frames_through(ned_files, short_clip, tmp_path):
    """--reference through the ned backend (reference tracked and encoded by DECA, style = geometric median of the
    translator's style encoder), on a clip whose middle frames have no face: those frames come out unchanged."""
    from spfem_cli.video import write_video

    frames, info = read_frames(short_clip.path)
    frames[10:15] = 128
    clip = write_video(tmp_path / "gap.mp4", frames, info.fps, audio_from=short_clip.path)
    out = tmp_path / "ref.mp4"
    result = _spfem(ned_files, "edit", str(clip), "--reference", str(short_clip.path), "--intensity", "0.5",
                    "--backend", "ned", "--renderer", str(ned_files["renderer"]), "-o", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    src, _ = read_frames(clip)
    got, _ = read_frames(out)
    assert len(got) == len(src)
    diff = np.abs(got.astype(int) - src.astype(int)).mean(-1)
    assert diff[10:15].max() < 3                        # no face: the frame itself (codec noise only)
    assert diff[:10].max() > 40 and diff[15:].max() > 40  # faces on both sides of the gap were rendered
