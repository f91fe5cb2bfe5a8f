"""One progress bar for every per-frame stage (tracking, crops, rendering)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def frame_progress(enabled: bool, total: int | None, label: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``; a rich bar on stderr when ``enabled``, a no-op otherwise. The bar stops on exit."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total or None)
        yield lambda n: bar.update(task, advance=n)
