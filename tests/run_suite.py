"""`python tests/run_suite.py [pytest arguments]`: the suite as `make test` runs it.

pytest.main, then the process ends with pytest's exit status without interpreter finalization
(`distributed_rec.distributed.process_exit`): in-process tests leave native runtimes behind
(gloo groups, Ray's core worker, Arrow's S3 client), and one of their threads can crash the
interpreter while it finalizes, after every test has passed (seen in CI: "414 passed", then
SIGSEGV, exit status 139). The product's own entry points end the same way, and the tests that
run them as subprocesses check their exit statuses.
"""

from __future__ import annotations

import sys

import pytest

from distributed_rec.distributed.process_exit import end_process

if __name__ == "__main__":
    end_process(int(pytest.main(sys.argv[1:])))
