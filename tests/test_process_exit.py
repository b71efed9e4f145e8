"""end_process: flushed output and logs, the given status, no interpreter finalization."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

SCRIPT = """
import atexit, logging, sys
from distributed_rec.distributed.process_exit import end_process

logging.basicConfig(filename=sys.argv[1], level=logging.INFO)
logging.getLogger("x").info("logged before the end")
atexit.register(lambda: open(sys.argv[2], "w").write("finalized"))
print("printed, unflushed", end="")
print("to stderr", end="", file=sys.stderr)
end_process(int(sys.argv[3]))
"""


def test_end_process_flushes_and_skips_finalization(tmp_path):
    log, marker = tmp_path / "log.txt", tmp_path / "atexit.txt"
    completed = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT), str(log), str(marker), "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 3
    assert completed.stdout == "printed, unflushed"  # a pipe: block-buffered until flushed
    assert completed.stderr == "to stderr"
    assert "logged before the end" in log.read_text()
    assert not marker.exists()  # atexit handlers, i.e. finalization, did not run


def test_cli_ends_with_its_status_through_end_process(tmp_path):
    """A bad recipe: status 2 and the error on stderr, from `-m` and the installed script."""
    script = Path(sys.executable).parent / "distributed-rec"  # pyproject's [project.scripts]
    for command in (
        [sys.executable, "-m", "distributed_rec", "prepare", "--config=no_such_recipe"],
        [str(script), "prepare", "--config=no_such_recipe"],
    ):
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
        )
        assert completed.returncode == 2, completed.stderr
        assert "no_such_recipe" in completed.stderr


def test_suite_runner_returns_pytest_status(tmp_path):
    """tests/run_suite.py passes pytest's status through, exit code 5 (no tests) included."""
    (tmp_path / "test_one.py").write_text("def test_fails():\n    assert False\n")
    (tmp_path / "empty").mkdir()
    runner = str(REPO_ROOT / "tests" / "run_suite.py")
    for target, status, summary in (("test_one.py", 1, "1 failed"), ("empty", 5, "no tests ran")):
        completed = subprocess.run(
            [sys.executable, runner, "-q", "-p", "no:cacheprovider", str(tmp_path / target)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            cwd=tmp_path,
        )
        assert completed.returncode == status, completed.stdout
        assert summary in completed.stdout  # the summary was flushed before the end
