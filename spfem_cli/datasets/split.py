"""The papers' random 90/10 train/test split of videos, reproducible by seed."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def split_train_test(items: Sequence[T], *, test_fraction: float = 0.1, seed: int = 0) -> tuple[list[T], list[T]]:
    """Shuffle a copy with a fixed seed; the last ``test_fraction`` (at least one item) is the test set."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError("test_fraction must be in (0, 1)")
    order = list(items)
    random.Random(seed).shuffle(order)
    n_test = max(1, round(len(order) * test_fraction)) if order else 0
    return order[: len(order) - n_test], order[len(order) - n_test:]
