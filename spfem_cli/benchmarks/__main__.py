"""`python -m spfem_cli.benchmarks [AREA ...]`: the entry point of `make bench`."""

from spfem_cli.benchmarks.runner import main

main()
