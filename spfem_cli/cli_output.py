"""Machine-readable results: with ``--json`` each command prints one JSON document on stdout.

Human messages stay on stderr, so ``spfem --json edit a.mp4 -e happy | jq .`` works. Values are made
JSON-safe here (paths as strings, exact fractions as floats, NaN as null), so commands can hand over
their result dataclasses as they are.
"""

from __future__ import annotations

import dataclasses
import json
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

_json = False


def set_json(on: bool) -> None:
    global _json
    _json = on


def json_mode() -> bool:
    return _json


def jsonable(value: Any) -> Any:
    """``value`` with dataclasses, paths, fractions, numpy values and NaN turned into JSON types."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Fraction):
        return float(value)
    if hasattr(value, "tolist"):                 # numpy arrays and scalars
        return jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def emit(document: dict) -> None:
    """Print ``document`` as JSON on stdout when ``--json`` is on (a no-op otherwise)."""
    if _json:
        print(json.dumps(jsonable(document), indent=2), flush=True)
