"""CSIM (emotion similarity, not identity): cosine similarity of EfficientFace features.

Protocol of CDRL's ``metrics/csim.py`` (the published SPFEM numbers), run once per protocol and
emotion: Python's ``random.seed(1)`` once, then actor by actor (in the data set's test-actor order)
``random.sample(sorted paths, 100)`` of the real frames, then of the generated ones, all from that
one stream (a set of at most 100 frames is kept whole and draws nothing); per actor the mean of the
full real×generated cosine matrix; CSIM = the mean over actors.

"Sorted paths" here: rows in clip order (sorted by clip key) then time, which is how NED-style
frame folders sort; callers pass the rows in that order. ``random.sample`` picks positions from the
length alone, so sampling ``range(n)`` selects what sampling the path list would.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import numpy as np

MAX_FRAMES = 100
SEED = 1


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` cosines between the rows of ``a`` and of ``b``."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def sample_index(n: int, rng: random.Random, limit: int = MAX_FRAMES) -> list[int]:
    """CDRL's draw: ``rng.sample`` of ``limit`` positions out of ``n`` (in draw order), or all of them
    without touching the stream when ``n ≤ limit``."""
    return rng.sample(range(n), limit) if n > limit else list(range(n))


def csim_actor(real: np.ndarray, generated: np.ndarray) -> float:
    """Mean of the full cosine matrix between (already sampled) real and generated frames of one actor."""
    if len(real) == 0 or len(generated) == 0:
        raise ValueError("CSIM needs at least one real and one generated frame")
    return float(cosine_matrix(real, generated).mean())


def csim(per_actor: Mapping[str, tuple[np.ndarray, np.ndarray]], *, limit: int = MAX_FRAMES, seed: int = SEED) -> float:
    """CSIM of one (protocol, emotion): ``per_actor[actor] = (real rows, generated rows)`` in draw order."""
    if not per_actor:
        raise ValueError("CSIM needs at least one actor")
    rng = random.Random(seed)
    values = []
    for real, generated in per_actor.values():
        real = np.asarray(real)[sample_index(len(real), rng, limit)]
        generated = np.asarray(generated)[sample_index(len(generated), rng, limit)]
        values.append(csim_actor(real, generated))
    return float(np.mean(values))
