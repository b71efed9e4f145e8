"""`python tests/run_suite.py [pytest arguments]`: the suite as `make test` runs it.

pytest.main, then end_process with pytest's status: the in-process tests leave the native
threads behind that `distributed_rec.distributed.process_exit` explains (seen in CI: "414
passed", then SIGSEGV). The product's entry points end the same way, and the tests that run
them as subprocesses check their statuses.
"""

from __future__ import annotations

import sys

import pytest

from distributed_rec.distributed.process_exit import end_process

if __name__ == "__main__":
    end_process(int(pytest.main(sys.argv[1:])))
