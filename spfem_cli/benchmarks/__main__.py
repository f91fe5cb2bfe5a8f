"""`python -m spfem_cli.benchmarks [AREA ...]`: the entry point of `make bench`."""

from spfem_cli.benchmarks.runner import main
from spfem_cli.native_logs import native_logs_filtered

with native_logs_filtered():     # MediaPipe's C++ log lines stay off the bench's output
    main()
