"""Per-process entry point for launchers (`deepspeed --module distributed_rec.train.worker`,
torchrun): `[--job_config=PATH | --config=RECIPE] [--section.key=value ...] [--local_rank=N]`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from distributed_rec.cli import configure_logging, split_arguments
from distributed_rec.config import ConfigError, config_from_dict, load_config
from distributed_rec.distributed.env import shutdown_distributed
from distributed_rec.distributed.exits import recorded_exit
from distributed_rec.distributed.process_exit import end_process
from distributed_rec.distributed.watchdog import watch_driver
from distributed_rec.errors import DistributedRecError
from distributed_rec.train.loop import train_worker


def parse(argv: list[str]):
    """(JobConfig) from a resolved config file or from recipe + overrides; launcher args dropped."""
    job_config, rest = None, []
    for arg in argv:
        if arg.startswith("--local_rank"):
            continue  # the deepspeed launcher passes it; LOCAL_RANK is in the environment too
        if arg.startswith("--job_config="):
            job_config = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if job_config is not None:
        if rest:
            raise ConfigError(f"--job_config cannot be combined with {' '.join(rest)}")
        return config_from_dict(json.loads(Path(job_config).read_text()))
    _, recipe, _, overrides = split_arguments(["train", *rest])
    return load_config(recipe, overrides)


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    watch_driver()
    with recorded_exit() as exit_status:
        try:
            train_worker(parse(sys.argv[1:] if argv is None else argv))
        except (DistributedRecError, ConfigError) as err:
            print(f"error: {err}", file=sys.stderr)
            exit_status.status, exit_status.error = 2, str(err).splitlines()[0]
            return 2
        shutdown_distributed()
        return 0


if __name__ == "__main__":
    end_process(main())
