"""The benchmark runner behind `make bench`: run every benchmark module and rewrite BENCHMARKS.md with the measured rows.

Each module in :mod:`spfem_cli.benchmarks` exposes ``run() -> list[BenchRow]``; nothing is timed
here that a module did not actually run. ``python -m spfem_cli.benchmarks [AREA ...]`` runs a subset and
keeps the other areas' rows from the existing file.
"""

from __future__ import annotations

import importlib
import pkgutil
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from spfem_cli.errors import SpfemError

BENCH_FILE = Path(__file__).resolve().parents[2] / "BENCHMARKS.md"
COMMAND = "make bench"


@dataclass
class BenchRow:
    area: str
    what: str
    value: float
    unit: str
    note: str = ""


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB) since it started.

    Read from VmHWM, which belongs to the process image: ``ru_maxrss`` survives ``execve`` on Linux,
    so a fresh child started by a big parent would report the parent's peak instead of its own.
    """
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timeit(fn, *, repeat: int = 5, warmup: int = 1, clock=time.perf_counter) -> float:
    """Median seconds of ``fn()`` over ``repeat`` runs after ``warmup`` runs.

    ``clock=time.process_time`` measures CPU seconds of all threads (robust on a shared machine).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = clock()
        fn()
        times.append(clock() - start)
    return sorted(times)[len(times) // 2]


# The floor first, then the product path, then the rest alphabetically.
FIRST = ("video", "edit", "tracking")
NOT_AREAS = ("runner", "__main__", "emotion_sheets", "recipe_search")   # modules here that are not row-producing areas


def _modules() -> list[str]:
    import spfem_cli.benchmarks as pkg

    names = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if m.name not in NOT_AREAS)
    return [n for n in FIRST if n in names] + [n for n in names if n not in FIRST]


def _parse_existing() -> dict[str, list[str]]:
    rows: dict[str, list[str]] = {}
    if BENCH_FILE.is_file():
        for line in BENCH_FILE.read_text().splitlines():
            if line.startswith("| ") and not line.startswith("| area") and not line.startswith("|---"):
                rows.setdefault(line.split("|")[1].strip(), []).append(line)
    return rows


def _notes_after_table() -> str:
    """Free text after the table (pictures, prose sections starting with '## '), kept across re-runs."""
    if not BENCH_FILE.is_file():
        return ""
    text = BENCH_FILE.read_text()
    start = text.find("\n## ")
    return text[start:] if start >= 0 else ""


def main(argv: list[str] | None = None) -> None:
    areas = argv if argv is not None else sys.argv[1:]
    names = [m for m in _modules() if not areas or m in areas]
    kept = {k: v for k, v in _parse_existing().items() if k not in names}
    torch.set_num_threads(max(1, torch.get_num_threads()))
    fresh: dict[str, list[str]] = {}
    for name in names:
        print(f"bench: {name}", flush=True)
        module = importlib.import_module(f"spfem_cli.benchmarks.{name}")
        try:
            rows = module.run()
        except SpfemError as e:            # a missing weight or a bad setting: one line, BENCHMARKS.md untouched
            raise SystemExit(f"bench {name}: {e}") from None
        for row in rows:
            line = f"| {row.area} | {row.what} | {row.value:.4g} | {row.unit} | {row.note} |"
            print(line, flush=True)
            fresh.setdefault(row.area, []).append(line)
    rows_by_area = {**kept, **fresh}
    order = [a for a in _modules() if a in rows_by_area] + sorted(a for a in rows_by_area if a not in _modules())
    lines = [line for area in order for line in rows_by_area[area]]
    header = [
        "# Benchmarks",
        "",
        f"Produced by `{COMMAND}` (`python -m spfem_cli.benchmarks [AREA ...]` for a subset) on: "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"Python {platform.python_version()}, torch {torch.__version__}, no GPU unless noted.",
        "Medians of repeated runs after a warm-up. Rows of areas not re-run are kept from the previous run.",
        "",
        "| area | what | value | unit | note |",
        "|---|---|---|---|---|",
    ]
    notes = _notes_after_table()
    BENCH_FILE.write_text("\n".join(header + lines) + "\n" + notes)
    print(f"wrote {BENCH_FILE}")


if __name__ == "__main__":
    main()
