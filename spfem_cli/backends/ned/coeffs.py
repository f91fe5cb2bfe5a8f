"""MEAD per-frame expression coefficients (jaw opening + 50 FLAME expression) for the translator.

Input: what the ``reconstruct`` stage writes. Until its cache format is fixed, two layouts are read:

- a tree ``<root>/<actor>/<emotion>/level_<k>/<clip>.npy`` of ``T×51`` float arrays;
- a per-actor cache ``<root>/<actor>.npz`` whose array names are ``<emotion>/level_<k>/<clip>``
  (written by :func:`build_actor_cache` from the tree: one file per actor loads fast).

Training items are NED's: every 10-frame window (hop 1) of every clip, labelled with the clip's
emotion in NED's class order; the reference window of item ``i`` is item ``perm[i]`` of one seeded
permutation (NED shuffles a second copy of the data set for references).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from spfem_cli.emotions import EMOTIONS
from spfem_cli.errors import SpfemError

NUM_COEFFS = 51
_KEY = re.compile(r"^(?P<emotion>[a-z]+)/level_(?P<level>\d+)/(?P<clip>[^/]+)$")


@dataclass(frozen=True)
class ClipCoeffs:
    actor: str
    emotion: str
    level: int
    clip: str
    coeffs: np.ndarray   # T×51 float32

    @property
    def key(self) -> str:
        return f"{self.emotion}/level_{self.level}/{self.clip}"


def _check(arr: np.ndarray, where: str) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim != 2 or arr.shape[1] != NUM_COEFFS:
        raise SpfemError(f"{where}: expected T×{NUM_COEFFS} coefficients (jaw + 50 FLAME), got {arr.shape}")
    return arr


def _parse_key(actor: str, key: str, arr: np.ndarray, where: str) -> ClipCoeffs:
    m = _KEY.match(key)
    if not m:
        raise SpfemError(f"{where}: entry '{key}' is not <emotion>/level_<k>/<clip>")
    return ClipCoeffs(actor, m["emotion"], int(m["level"]), m["clip"], _check(arr, f"{where}:{key}"))


def read_actor_tree(root: Path, actor: str) -> list[ClipCoeffs]:
    """Clips of ``root/actor/<emotion>/level_<k>/<clip>.npy``, sorted."""
    base = Path(root) / actor
    clips = []
    for f in sorted(base.glob("*/level_*/*.npy")):
        key = f"{f.parent.parent.name}/{f.parent.name}/{f.stem}"
        clips.append(_parse_key(actor, key, np.load(f, allow_pickle=False), str(f)))
    return clips


def build_actor_cache(root: Path, actor: str, out: Path | None = None) -> Path:
    """Pack an actor's ``.npy`` tree into ``<root>/<actor>.npz`` (atomic write); returns the path."""
    clips = read_actor_tree(root, actor)
    if not clips:
        raise SpfemError(f"no coefficient files under {Path(root) / actor}")
    out = Path(out) if out is not None else Path(root) / f"{actor}.npz"
    tmp = out.with_name(out.name + ".tmp.npz")
    np.savez(tmp, **{c.key: c.coeffs for c in clips})
    tmp.replace(out)
    return out


def read_actor_cache(path: Path) -> list[ClipCoeffs]:
    """Clips of one ``<actor>.npz`` cache."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as z:
        return [_parse_key(path.stem, k, z[k], str(path)) for k in sorted(z.files)]


def list_actors(root: Path) -> list[str]:
    """Actors present as ``<actor>.npz`` or ``<actor>/`` folders under ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise SpfemError(f"coefficient root not found: {root}")
    names = {p.stem for p in root.glob("*.npz")} | {p.name for p in root.iterdir() if p.is_dir()}
    return sorted(n for n in names if re.match(r"^[MW]\d{3}$", n))


def load_actor(root: Path, actor: str) -> list[ClipCoeffs]:
    """An actor's clips: the ``.npz`` cache if present (built from the tree on first use)."""
    cache = Path(root) / f"{actor}.npz"
    if not cache.is_file():
        if not (Path(root) / actor).is_dir():
            raise SpfemError(f"no coefficients for actor {actor} under {root}")
        build_actor_cache(root, actor)
    return read_actor_cache(cache)


def load_clips(root: Path, actors: Sequence[str] | None = None, *, levels: Iterable[int] | None = None) -> list[ClipCoeffs]:
    """Clips of the chosen actors (default: all found), restricted to NED's 7 emotions and ``levels``."""
    actors = list(actors) if actors else list_actors(root)
    if not actors:
        raise SpfemError(f"no MEAD actors (M###/W###) under {root}")
    wanted = set(levels) if levels is not None else None
    out = []
    for actor in actors:
        for c in load_actor(root, actor):
            if c.emotion in EMOTIONS and (wanted is None or c.level in wanted):
                out.append(c)
    return out


class CoeffWindows(Dataset):
    """NED training items: ``(x_src 10×51, y_src, x_ref 10×51, y_ref)`` float32 / int64."""

    def __init__(self, clips: Sequence[tuple[np.ndarray, int]] | Sequence[ClipCoeffs], *, seq_len: int = 10,
                 hop: int = 1, seed: int = 0):
        seqs, labels = [], []
        for item in clips:
            coeffs, label = (item.coeffs, EMOTIONS.index(item.emotion)) if isinstance(item, ClipCoeffs) else item
            coeffs = _check(coeffs, "clip")
            n = (len(coeffs) - seq_len) // hop + 1
            if n <= 0:
                continue
            idx = np.arange(n)[:, None] * hop + np.arange(seq_len)[None]
            win = coeffs[idx]
            win = win[np.isfinite(win).all(axis=(1, 2))]   # frames without a face are NaN
            if not len(win):
                continue
            seqs.append(win)
            labels.append(np.full(len(win), label, np.int64))
        if not seqs:
            raise SpfemError(f"no clip has {seq_len} consecutive frames with a face")
        self.seqs = torch.from_numpy(np.concatenate(seqs))
        self.labels = torch.from_numpy(np.concatenate(labels))
        self.ref = torch.from_numpy(np.random.default_rng(seed).permutation(len(self.seqs)))

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i: int):
        j = int(self.ref[i])
        return self.seqs[i], self.labels[i], self.seqs[j], self.labels[j]


def is_mead_video_root(root: Path) -> bool:
    """True for a MEAD video tree (``<actor>/video/front/...``), False for a coefficient root."""
    return any(Path(root).glob("[MW][0-9][0-9][0-9]/video/front"))


def extract_mead_coeffs(mead_root: Path, out_root: Path, *, actors: Sequence[str] | None = None,
                        levels: Iterable[int] | None = None, tracker: str = "fan", device: str = "auto",
                        progress: bool = True) -> list[str]:
    """Track + reconstruct every wanted MEAD clip into ``out_root/<actor>/<emotion>/level_<k>/<clip>.npy``.

    Uses the ``reconstruct`` stage (DECA, gated weights; its own content-hash cache makes reruns cheap);
    frames without a face are NaN and never form a training window. Existing ``.npy`` files are kept.
    Returns the actors written (each also packed into ``<actor>.npz``).
    """
    from spfem_cli.backends.ned.reconstruct import Reconstruction, reconstruct_video
    from spfem_cli.datasets.mead import scan_mead
    from spfem_cli.face.preprocess import cached_track

    wanted_levels = set(levels) if levels is not None else None
    clips = [c for c in scan_mead(mead_root) if c.emotion in EMOTIONS
             and (not actors or c.actor in actors) and (wanted_levels is None or c.level in wanted_levels)]
    if not clips:
        raise SpfemError(f"no MEAD clips of the chosen actors/levels under {mead_root}")
    out_root = Path(out_root)
    done: set[str] = set()
    for clip in clips:
        dest = out_root / clip.actor / clip.emotion / f"level_{clip.level}" / f"{clip.clip}.npy"
        done.add(clip.actor)
        if dest.is_file():
            continue
        track = cached_track(clip.video, tracker=tracker, progress=False)
        npz = reconstruct_video(clip.video, track, out_root / ".reconstruct", device, progress=progress)
        seq = Reconstruction.load(npz).expression_sequence().astype(np.float32)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.stem + ".tmp.npy")
        np.save(tmp, seq)
        tmp.replace(dest)
    for actor in sorted(done):
        build_actor_cache(out_root, actor)
    return sorted(done)
