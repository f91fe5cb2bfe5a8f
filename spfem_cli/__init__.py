"""spfem: speech-preserving facial expression manipulation — the public Python API.

The CLI (:mod:`spfem_cli.app`) is one user of these names; scripts use them the same way::

    from spfem_cli import EditRequest, EditTarget, edit_video
    result = edit_video(EditRequest(Path("talk.mp4"), Path("talk.happy.mp4"), EditTarget(emotion="happy")))

Names are resolved lazily so that ``import spfem_cli`` (and ``spfem --help``) loads nothing heavy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name -> module that defines it
_API = {
    "EditRequest": "spfem_cli.edit.pipeline",
    "EditResult": "spfem_cli.edit.pipeline",
    "edit_video": "spfem_cli.edit.pipeline",
    "EditTarget": "spfem_cli.edit.targets",
    "parse_timeline": "spfem_cli.edit.targets",
    "evaluate_pair": "spfem_cli.evaluate.pair",
    "EvalConfig": "spfem_cli.evaluate.run",
    "evaluate_dataset": "spfem_cli.evaluate.run",
    "PreprocessConfig": "spfem_cli.face.preprocess",
    "preprocess": "spfem_cli.face.preprocess",
    "cached_track": "spfem_cli.face.preprocess",
    "FaceTrack": "spfem_cli.face.tracking.base",
    "track_video": "spfem_cli.face.tracking.track",
    "SpfemError": "spfem_cli.errors",
    "EMOTIONS": "spfem_cli.emotions",
}

__all__ = sorted(_API) + ["__version__"]

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from spfem_cli.edit.pipeline import EditRequest, EditResult, edit_video  # noqa: F401
    from spfem_cli.edit.targets import EditTarget, parse_timeline  # noqa: F401
    from spfem_cli.emotions import EMOTIONS  # noqa: F401
    from spfem_cli.errors import SpfemError  # noqa: F401
    from spfem_cli.evaluate.pair import evaluate_pair  # noqa: F401
    from spfem_cli.evaluate.run import EvalConfig, evaluate_dataset  # noqa: F401
    from spfem_cli.face.preprocess import PreprocessConfig, cached_track, preprocess  # noqa: F401
    from spfem_cli.face.tracking.base import FaceTrack  # noqa: F401
    from spfem_cli.face.tracking.track import track_video  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'spfem_cli' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
