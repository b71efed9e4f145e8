"""Entry point of `python -m distributed_rec` and of the `distributed-rec` script."""

from typing import NoReturn

from distributed_rec.cli import main
from distributed_rec.distributed.process_exit import end_process


def run() -> NoReturn:
    """The CLI's status, without interpreter finalization (see `process_exit`)."""
    end_process(main())


if __name__ == "__main__":
    run()
