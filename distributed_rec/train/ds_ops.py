"""DeepSpeed's just-in-time built ops, loaded so that a build killed half-way cannot hang later runs.

On CPU, `deepspeed.initialize` builds (first use) or loads its shared-memory allreduce op with
torch.utils.cpp_extension, which guards the op's build folder with a `lock` file: created with
O_EXCL when a process starts building or checking the build, removed when it is done. A process
killed in between leaves the file, and every later load waits for it to vanish: forever, with no
message (torch's FileBaton has no timeout).

`load_deepspeed_ops` loads the op before `deepspeed.initialize`, which then reuses it
(DeepSpeed caches loaded ops per process), and first checks that lock:

- project processes serialise the check and the load with an flock(2) on
  `<build folder>/lock.distributed_rec`; the kernel drops an flock when its holder dies, so a
  killed build never leaves it held;
- a torch `lock` file that no process has open (the builder keeps it open while it builds;
  checked in /proc/<pid>/fd) is stale: it is removed, with a warning naming it;
- a `lock` (or flock) held by a live process, or a `lock` whose holders cannot be known (no
  /proc), is waited on for at most `timeout` seconds, then a DistributedRecError names the file
  and the process ids holding it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from distributed_rec.errors import DistributedRecError

log = logging.getLogger(__name__)

BUILD_WAIT_SECONDS = 600.0
"""How long to wait for a live process building an op (a first build takes about a minute)."""
_POLL_SECONDS = 0.2


def holders(path: Path) -> list[int] | None:
    """Ids of the other processes that have `path` open (Linux /proc; those this user may
    inspect); None where this cannot be known (no /proc)."""
    if not Path("/proc/self/fd").is_dir():
        return None
    target = os.path.realpath(path)
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:  # the process ended, or is not ours to inspect
            continue
        if target in links:
            found.append(int(entry.name))
    return found


def _held_error(path: Path, timeout: float, what: str) -> DistributedRecError:
    pids = ", ".join(str(p) for p in holders(path) or []) or "unknown"
    return DistributedRecError(
        f"{path}: {what} still held after {timeout:g} s by process(es) {pids}; if no "
        "build is running, stop those processes or delete the file, then start again"
    )


@contextmanager
def build_lock(build_dir: Path, timeout: float = BUILD_WAIT_SECONDS) -> Iterator[None]:
    """Hold the project's flock on `build_dir` with torch's `lock` file there known free:
    removed when stale, waited on (at most `timeout` s) while a live process holds it."""
    build_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    flock_path = build_dir / "lock.distributed_rec"
    with flock_path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise _held_error(flock_path, timeout, "the op build lock") from None
                time.sleep(_POLL_SECONDS)
        try:
            baton = build_dir / "lock"
            while baton.exists():
                if holders(baton) == []:  # None (unknown): wait, never remove
                    log.warning(
                        "removing %s: a stale lock left by a build that was killed (no process "
                        "has it open); the op is built again",
                        baton,
                    )
                    baton.unlink(missing_ok=True)
                    break
                if time.monotonic() > deadline:
                    raise _held_error(baton, timeout, "torch's extension build lock")
                time.sleep(_POLL_SECONDS)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def use_environment_ninja() -> None:
    """Put this environment's `ninja` first on PATH (when it has one).

    torch builds the op with the first `ninja` on PATH. A virtual environment's pip `ninja`
    (1.13) and the system's (1.11) hash build commands differently, so processes that find
    different ones (PATH with or without the venv's bin/) rebuilt the op for one to three
    minutes each time the other had built it last."""
    bin_dir = Path(sys.executable).parent
    path = os.environ.get("PATH", "")
    if (bin_dir / "ninja").exists() and path.split(os.pathsep)[0] != str(bin_dir):
        os.environ["PATH"] = os.pathsep.join([str(bin_dir), path]) if path else str(bin_dir)


def use_environment_build_root() -> None:
    """Build the ops in this virtual environment's own folder (`<venv>/torch_extensions`)
    unless TORCH_EXTENSIONS_DIR is set.

    torch's default, ~/.cache/torch_extensions, is one folder per user: the build commands name
    the environment's torch and deepspeed paths, so two checkouts with their own environments
    on one machine rebuilt the op (one to three minutes, under the build lock) each time the
    other had built it last."""
    if sys.prefix != sys.base_prefix and os.access(sys.prefix, os.W_OK):
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))


def load_deepspeed_ops(timeout: float = BUILD_WAIT_SECONDS) -> list[str]:
    """Build or load the ops `deepspeed.initialize` JIT-loads on this accelerator (the CPU
    shared-memory allreduce) under :func:`build_lock`; returns the names loaded."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator
    from torch.utils.cpp_extension import _get_build_directory

    use_environment_ninja()
    use_environment_build_root()
    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is None or not deepspeed.ops.__compatible_ops__.get(builder.NAME, False):
        return []
    with build_lock(Path(_get_build_directory(builder.name, verbose=False)), timeout):
        builder.load(verbose=False)
    return [builder.name]
