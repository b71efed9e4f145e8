"""A build of DeepSpeed's shared-memory op killed half-way leaves torch's `lock` file behind; the
next run must proceed (stale lock removed) or fail fast naming the file (lock held by a live
process), never wait forever in deepspeed.initialize."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from distributed_rec.errors import DistributedRecError
from distributed_rec.train.ds_ops import build_lock, holders

# what torch's FileBaton.try_acquire does, then what a build does: keep it open for a while
TAKE_TORCH_LOCK = "import os, sys, time; os.open(sys.argv[1], os.O_CREAT | os.O_EXCL); "
TAKE_FLOCK = "import fcntl, sys, time; f = open(sys.argv[1], 'a'); fcntl.flock(f, fcntl.LOCK_EX); "


def holding(code: str, path: Path) -> subprocess.Popen:
    """A process that takes a lock on `path` with `code`, says so, then sleeps (a build)."""
    script = code + "print('held', flush=True); time.sleep(120)"
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline() == "held\n"
    return child


def kill(child: subprocess.Popen) -> None:
    child.kill()  # SIGKILL: no cleanup, as when a run is killed while it builds
    child.wait(timeout=10)


def test_lock_left_by_a_killed_build_is_removed_and_the_next_run_proceeds(tmp_path, caplog):
    lock = tmp_path / "lock"
    child = holding(TAKE_TORCH_LOCK, lock)
    assert holders(lock) == [child.pid]
    kill(child)
    assert lock.exists() and holders(lock) == []  # what hung every later deepspeed.initialize
    started = time.monotonic()
    with caplog.at_level(logging.WARNING), build_lock(tmp_path, timeout=5):
        assert not lock.exists()
        fd = os.open(lock, os.O_CREAT | os.O_EXCL)  # torch's baton can be taken again
        os.close(fd)
        lock.unlink()
    assert time.monotonic() - started < 2
    assert f"removing {lock}: a stale lock left by a build that was killed" in caplog.text


def test_lock_held_by_a_live_build_fails_fast_naming_the_file_and_the_process(tmp_path):
    lock = tmp_path / "lock"
    child = holding(TAKE_TORCH_LOCK, lock)
    started = time.monotonic()
    with pytest.raises(DistributedRecError) as err, build_lock(tmp_path, timeout=1):
        pass
    assert time.monotonic() - started < 3
    assert str(err.value) == (
        f"{lock}: torch's extension build lock still held after 1 s by process(es) {child.pid}; "
        "if no build is running, stop those processes or delete the file, then start again"
    )
    assert lock.exists()  # a live build's lock is never removed
    kill(child)
    with build_lock(tmp_path, timeout=5):
        assert not lock.exists()


def test_project_lock_of_a_killed_process_is_released_by_the_kernel(tmp_path):
    flock = tmp_path / "lock.distributed_rec"
    child = holding(TAKE_FLOCK, flock)
    with pytest.raises(DistributedRecError) as err, build_lock(tmp_path, timeout=0.5):
        pass
    assert str(err.value).startswith(
        f"{flock}: the op build lock still held after 0.5 s by process(es) {child.pid}; "
    )
    kill(child)
    started = time.monotonic()
    with build_lock(tmp_path, timeout=5):
        pass
    assert time.monotonic() - started < 1


LOAD_WITH_A_STALE_LOCK = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    lock = Path(os.environ["TORCH_EXTENSIONS_DIR"]) / "deepspeed_shm_comm" / "lock"
    assert lock.exists()
    from distributed_rec.train.ds_ops import load_deepspeed_ops
    assert load_deepspeed_ops(timeout=30) == ["deepspeed_shm_comm"]
    # deepspeed.initialize builds its comm backend with build_shm_op(): it must reuse the op
    # loaded above, never wait on a lock file again
    os.close(os.open(lock, os.O_CREAT | os.O_EXCL))
    from deepspeed.comm.torch import build_shm_op
    assert build_shm_op() is not None
    print("loaded", flush=True)
    """
)


def test_deepspeed_op_loads_after_a_killed_build(tmp_path):
    """The real DeepSpeed op builder, in a fresh process, with a stale lock in its build folder
    (a copy of this machine's built op, so nothing is compiled and the real cache is untouched)."""
    from torch.utils.cpp_extension import _get_build_directory

    from distributed_rec.train.ds_ops import load_deepspeed_ops

    if not load_deepspeed_ops():  # builds the op in the real cache when absent (first run)
        pytest.skip("this DeepSpeed accelerator JIT-builds no shared-memory op")
    build = tmp_path / "extensions" / "deepspeed_shm_comm"
    source = Path(_get_build_directory("deepspeed_shm_comm", verbose=False))
    shutil.copytree(source, build, ignore=shutil.ignore_patterns("lock*"))
    child = holding(TAKE_TORCH_LOCK, build / "lock")
    kill(child)
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions")}
    result = subprocess.run(
        [sys.executable, "-c", LOAD_WITH_A_STALE_LOCK],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "loaded"
    assert "a stale lock left by a build that was killed" in result.stderr


def test_lock_whose_holders_cannot_be_known_is_never_removed(tmp_path, monkeypatch):
    from distributed_rec.train import ds_ops

    monkeypatch.setattr(ds_ops, "holders", lambda path: None)  # a system without /proc
    (tmp_path / "lock").touch()
    with pytest.raises(DistributedRecError) as err, build_lock(tmp_path, timeout=0.5):
        pass
    assert str(err.value).startswith(
        f"{tmp_path / 'lock'}: torch's extension build lock still held after 0.5 s by "
        "process(es) unknown; "
    )
    assert (tmp_path / "lock").exists()
