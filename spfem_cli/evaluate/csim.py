"""CSIM (emotion similarity, not identity): cosine similarity of EfficientFace features.

Protocol of the SPFEM papers: per actor, at most 100 real and 100 generated frames drawn with a fixed
seed (1), the mean of the full real×generated cosine matrix, then the mean over actors.
"""

from __future__ import annotations

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


def sample_rows(features: np.ndarray, limit: int = MAX_FRAMES, seed: int = SEED) -> np.ndarray:
    """At most ``limit`` rows without replacement, reproducibly (all rows when there are fewer)."""
    if len(features) <= limit:
        return features
    idx = np.sort(np.random.default_rng(seed).choice(len(features), limit, replace=False))
    return features[idx]


def csim_actor(real: np.ndarray, generated: np.ndarray, *, limit: int = MAX_FRAMES, seed: int = SEED) -> float:
    """Mean of the full cosine matrix between sampled real and generated frames of one actor."""
    if len(real) == 0 or len(generated) == 0:
        raise ValueError("CSIM needs at least one real and one generated frame")
    return float(cosine_matrix(sample_rows(real, limit, seed), sample_rows(generated, limit, seed)).mean())


def csim(per_actor: Mapping[str, tuple[np.ndarray, np.ndarray]], *, limit: int = MAX_FRAMES, seed: int = SEED) -> float:
    """Mean over actors of :func:`csim_actor`; ``per_actor[actor] = (real features, generated features)``."""
    if not per_actor:
        raise ValueError("CSIM needs at least one actor")
    return float(np.mean([csim_actor(r, g, limit=limit, seed=seed) for r, g in per_actor.values()]))
