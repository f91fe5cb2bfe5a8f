"""Import the published STCCL checkpoint into spfem's metric file (`spfem weights fetch stccl_metric --from FILE`).

The STCCL project page links "Pretrained Models" (a Drive file). The release's metric classes
(jianmanlincjx/STCCL ``model/spatial_coherent_model.py`` and ``model/spatial_temproal_coherent_model.py``, both
``Spatial_Coherent_Correlation_Learning``; ASCCL's ``Temporal_Context_Loss`` has the same parameters) register:

* ``resnet50.*``: insightface IResNet-50 (``conv1/bn1/prelu``, ``layer1..4``, ``bn2``; no ``fc``/``features``);
* ``mlp.{3s}``, ``mlp.{3s+2}`` (``weight``, ``bias``) for stage s = 0..3: one ``nn.ModuleList`` of
  ``Linear(C,C), ReLU, Linear(C,C/4)`` per stage, C = 64/128/256/512 (the ReLUs at 3s+1 hold no parameters).

Their trainers save ``torch.save(model.state_dict(), …)``: a bare state dict. Also accepted: ``{'state_dict': …}``
or ``{'model': …}`` around it, and ``module.``-prefixed keys (DataParallel/DDP). Mapping into
:class:`models.stccl.STCCL`: ``resnet50.X → backbone.X``; ``mlp.{3s} → spatial_proj.{s}.0``,
``mlp.{3s+2} → spatial_proj.{s}.2``. No counterpart: ``resnet50.bn2`` (the embedding head's BatchNorm, which the
metric's forward never runs) and the temporal transformers (held in a plain list by the release, so never
saved; ``time_models.*`` keys are dropped if a patched release saved them). Anything else is refused with
one line. Note: ``spatial_coherent_model.py``'s forward skips ``mlp`` (the lines are commented out), so a
checkpoint trained with that file carries untrained projections; the keys cannot tell which file wrote it, so
the note says when every projection weight still lies in ``nn.Linear``'s initial range.
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from models.iresnet import ARCH_LAYERS
from models.stccl import FILE_FORMAT, STCCL, STCCLConfig
from spfem_cli.errors import SpfemError

STAGES = 4
BACKBONE = "resnet50."
UNUSED_PREFIXES = ("resnet50.bn2.", "time_models.")   # no counterpart in spfem's metric
_MLP = re.compile(r"mlp\.(\d+)\.(weight|bias)")
_BLOCK = re.compile(r"resnet50\.layer(\d)\.(\d+)\.")


class ReleaseFormatError(SpfemError):
    """The file is neither an spfem metric file nor the STCCL release's state dict."""


def _load(path: Path) -> object:
    """``torch.load`` (weights only) with a one-line error for archives, pickled modules and foreign files."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        if not any(n.endswith("data.pkl") for n in names):   # a zip of files, not a torch.save archive
            inside = [n for n in names if n.endswith((".pth", ".pt", ".ckpt", ".tar"))]
            listed = ", ".join(inside[:4]) + (" …" if len(inside) > 4 else "")
            raise ReleaseFormatError(f"{path} is a zip archive ({listed or 'no checkpoint inside'}): "
                                     "unzip it and pass one checkpoint file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for foreign files
        if m := re.search(r"Unsupported global: GLOBAL (\S+)", str(exc)):
            raise ReleaseFormatError(f"{path} holds a pickled object ({m[1]}), not a state dict: load it with the "
                                     "release's code and save model.state_dict()") from exc
        text = str(exc).strip()
        detail = f"{type(exc).__name__}: {text.splitlines()[0][:80]}" if text else type(exc).__name__
        raise ReleaseFormatError(f"{path} is not a PyTorch checkpoint (torch.load: {detail})") from exc


def _is_state(blob: object) -> bool:
    return isinstance(blob, Mapping) and bool(blob) and all(isinstance(v, torch.Tensor) for v in blob.values())


def unwrap_state(blob: object) -> dict[str, torch.Tensor] | None:
    """The state dict in a release container (bare, or under 'state_dict' / 'model'), ``module.`` stripped; else None."""
    if isinstance(blob, Mapping) and not _is_state(blob):
        blob = next((blob[k] for k in ("state_dict", "model") if _is_state(blob.get(k))), None)
    if not _is_state(blob):
        return None
    return {str(k).removeprefix("module."): v for k, v in blob.items()}


def is_release_state(state: Mapping[str, torch.Tensor]) -> bool:
    """Does this look like the release's metric (an IResNet under ``resnet50.`` and the stage projections)?"""
    return "resnet50.conv1.weight" in state and "mlp.0.weight" in state


def release_arch(state: Mapping[str, torch.Tensor]) -> str:
    """IResNet depth from the block counts of ``layer1..4`` (the release: r50 = 3, 4, 14, 3)."""
    blocks = [0] * STAGES
    for key in state:
        if m := _BLOCK.match(key):
            layer, index = int(m[1]) - 1, int(m[2])
            blocks[layer] = max(blocks[layer], index + 1)
    for arch, layers in ARCH_LAYERS.items():
        if tuple(blocks) == layers:
            return arch
    raise ReleaseFormatError(f"the release backbone has {blocks} blocks per stage, not an IResNet of "
                             f"{', '.join(ARCH_LAYERS)}")


def metric_key(release_key: str) -> str | None:
    """The :class:`STCCL` key of a release key; None when it has no counterpart; raises for unknown keys."""
    if release_key.startswith(UNUSED_PREFIXES):
        return None
    if release_key.startswith(BACKBONE):
        return "backbone." + release_key.removeprefix(BACKBONE)
    if (m := _MLP.fullmatch(release_key)) and int(m[1]) < 3 * STAGES and int(m[1]) % 3 != 1:
        stage, slot = divmod(int(m[1]), 3)
        return f"spatial_proj.{stage}.{slot}.{m[2]}"
    raise ReleaseFormatError(f"unexpected key for the STCCL release layout: {release_key}")


def released_config(arch: str) -> STCCLConfig:
    """The metric's settings as the release uses it (DAAS per element on the generated side, temporal positions
    with replacement over the whole map); the rest are the release's too (32/16/8/4 centres, τ 0.07, 224²)."""
    return STCCLConfig(arch=arch, daas_variant="released", temporal_positions="whole",
                       extra={"imported_from": "STCCL release (jianmanlincjx/STCCL)"})


def metric_from_release(state: Mapping[str, torch.Tensor]) -> tuple[STCCL, list[str]]:
    """An :class:`STCCL` holding the release's weights (strict key and shape check) and the dropped keys."""
    arch = release_arch(state)
    model = STCCL(released_config(arch))
    own = model.state_dict()
    converted, dropped = {}, []
    for key, value in state.items():
        target = metric_key(key)
        if target is None:
            dropped.append(key)
            continue
        if target not in own or tuple(value.shape) != tuple(own[target].shape):
            expected = tuple(own[target].shape) if target in own else "no such tensor"
            raise ReleaseFormatError(f"{key} has shape {tuple(value.shape)}; the metric needs {expected}")
        converted[target] = value.float() if value.is_floating_point() else value
    for key, value in own.items():           # some exports omit BatchNorm step counters (inference ignores them)
        if key.endswith("num_batches_tracked") and key not in converted:
            converted[key] = torch.zeros_like(value)
    missing = sorted(set(own) - set(converted))
    if missing:
        raise ReleaseFormatError(f"the release file lacks {len(missing)} tensors of the metric, e.g. "
                                 f"{', '.join(k.replace('backbone.', 'resnet50.') for k in missing[:3])}")
    model.load_state_dict(converted, strict=True)
    return model, dropped


def _unused_summary(dropped: list[str]) -> str:
    groups: dict[str, int] = {}
    for key in dropped:
        prefix = next(p for p in UNUSED_PREFIXES if key.startswith(p)).rstrip(".")
        groups[prefix] = groups.get(prefix, 0) + 1
    listed = [f"{p} ({n} tensors)" for p, n in groups.items()]
    if "time_models" not in groups:
        listed.append("the temporal transformers (the release never saves them)")
    return ", ".join(listed)


def projections_look_untrained(state: Mapping[str, torch.Tensor]) -> bool:
    """True when every ``mlp`` tensor lies inside ``nn.Linear``'s initial range ±1/√fan_in.

    ``spatial_coherent_model.py`` never runs ``mlp`` (the lines are commented out), so its checkpoints keep the
    initial draw; a trained projection leaves that range.
    """
    mlp = [(k, v) for k, v in state.items() if k.startswith("mlp.")]
    return bool(mlp) and all(
        float(v.abs().max()) <= state[k.rsplit(".", 1)[0] + ".weight"].shape[1] ** -0.5 for k, v in mlp)


def import_file(source: Path | str, dest: Path | str) -> str | None:
    """Write ``dest`` for the ``stccl_metric`` name from ``source``.

    An spfem metric file is left to the caller to copy (returns None); the release's layouts are converted
    (returns the one-line note naming what has no counterpart); anything else raises :class:`ReleaseFormatError`.
    """
    source = Path(source)
    blob = _load(source)
    if isinstance(blob, Mapping) and blob.get("format") == FILE_FORMAT:
        return None
    state = unwrap_state(blob)
    if state is None or not is_release_state(state):
        found = ", ".join(list(state)[:3]) if state else type(blob).__name__
        raise ReleaseFormatError(f"{source} is neither an spfem STCCL metric file nor the STCCL release's state dict "
                                 f"(resnet50.* + mlp.* keys); found: {found}")
    model, dropped = metric_from_release(state)
    model.save(dest)
    caveat = ("; the projections look untrained (inside nn.Linear's initial range), as spatial_coherent_model.py "
              "leaves them: its metric used none" if projections_look_untrained(state) else "")
    return (f"converted the STCCL release ({model.config.arch} backbone + {STAGES} stage projections; DAAS and "
            f"temporal positions as released); no counterpart: {_unused_summary(dropped)}{caveat}")
