"""Benchmarks, one module per area; each exposes ``run() -> list[BenchRow]`` (see spfem_cli.benchmarks.runner)."""
