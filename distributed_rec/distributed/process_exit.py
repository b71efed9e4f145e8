"""Ending a process once its work is written, without Python's interpreter finalization.

The native runtimes this project loads keep background threads that outlive the Python objects
driving them: gloo's per-group work loops (`ProcessGroupGloo::runLoop`), Arrow's thread pools
and S3 client, Ray's core-worker threads. When one of them still releases a Python object while
the interpreter finalizes, CPython ends that thread from inside C++ code that cannot unwind, and
the whole process aborts or segfaults *after* its work has succeeded. Seen on this project's
2-core machines: a DeepSpeed rank that had written its checkpoint aborted with "terminate called
without an active exception" (core dump: a gloo runLoop thread destroying a finished barrier's
work, holding tensors, while the main thread was in `Py_FinalizeEx`), and the test process
ended with SIGSEGV after "414 passed".

So the entry points (listed in docs/architecture.md, "How processes end") call
:func:`end_process` with their status once everything they produce is closed: buffered output
and log handlers are flushed and the process ends with `os._exit`, which skips finalization
(atexit handlers, module teardown, C++ static destructors). Callers must have closed their
files first; every stage writes its outputs with closed files or atomic renames before it
returns.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import NoReturn


def end_process(status: int) -> NoReturn:
    """Flush stdout, stderr and every logging handler, then end the process with `status`."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):  # closed, or a broken pipe
                stream.flush()
    os._exit(status)
