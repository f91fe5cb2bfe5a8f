"""Progress and messages on stderr, the same for every stage (tracking, crops, rendering, training).

On a terminal: a rich bar that disappears when done. Piped or redirected (logs, CI, job schedulers):
plain lines, one per ~10 % of the work, never more often than every :data:`PLAIN_EVERY_S` seconds,
so a short run prints nothing and a long one shows it is alive. ``--quiet`` silences both. Messages
never wrap (a wrapped path cannot be copied); a table takes the width it needs when piped.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

PLAIN_EVERY_S = float(os.environ.get("SPFEM_PROGRESS_EVERY", "10"))   # min seconds between plain lines
_quiet = False


def set_quiet(quiet: bool) -> None:
    """``--quiet``: no progress and no informational messages (errors still print)."""
    global _quiet
    _quiet = quiet


def is_quiet() -> bool:
    return _quiet


def stderr_is_terminal() -> bool:
    return sys.stderr is not None and sys.stderr.isatty()


def console(*, stderr: bool = True) -> Console:
    """A rich console that never wraps messages; when not a terminal, wide enough that tables do not fold."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream is not None and stream.isatty() else 1000
    return Console(stderr=stderr, soft_wrap=True, highlight=False, width=width)


def say(message: str) -> None:
    """An informational line on stderr (suppressed by ``--quiet``)."""
    if not _quiet:
        console().print(message)


class _PlainProgress:
    """Plain ``label: 40 % (120/300)`` lines at 10 % steps, at most one per ``every`` seconds."""

    def __init__(self, label: str, total: int | None, every: float):
        self.label, self.total, self.every = label, total, every
        self.done = 0
        self.last_line = time.monotonic()
        self.next_step = 10

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last_line < self.every:
            return
        if self.total:
            percent = 100 * self.done // self.total
            if percent < self.next_step or self.done >= self.total:
                return
            self.next_step = (percent // 10 + 1) * 10
            line = f"{self.label}: {percent} % ({self.done}/{self.total})"
        else:
            line = f"{self.label}: {self.done} done"
        self.last_line = now
        print(line, file=sys.stderr, flush=True)


@contextlib.contextmanager
def frame_progress(enabled: bool, total: int | None, label: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``: a rich bar on a terminal, plain throttled lines otherwise, nothing when
    disabled or ``--quiet``. The bar stops on exit."""
    if not enabled or _quiet:
        yield lambda n: None
        return
    if not stderr_is_terminal():
        yield _PlainProgress(label, total, PLAIN_EVERY_S).advance
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress("[bold]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console(), transient=True) as bar:
        task = bar.add_task(label, total=total or None)
        yield lambda n: bar.update(task, advance=n)


_said: set[str] = set()


def say_once(message: str) -> None:
    """:func:`say`, but a message already said in this process is not repeated (batch runs)."""
    if message not in _said:
        _said.add(message)
        say(message)
