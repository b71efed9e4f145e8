"""`python -m distributed_rec <stage> [--config FILE_OR_RECIPE] [--section.key=value ...]`."""

from __future__ import annotations

import json
import logging
import os
import sys

from distributed_rec.artifacts import STAGES
from distributed_rec.config import ConfigError, JobConfig, load_config
from distributed_rec.errors import DistributedRecError

USAGE = f"""usage: python -m distributed_rec <stage> [--config FILE_OR_RECIPE] [--run_dir=DIR]
                                  [--resume] [--force] [--section.key=value ...]

stages: {", ".join(STAGES)}, run (all in order)
        baseline (sasrec or tiger by --baseline.model, on the prepared splits; not part of run)
  --config=debug         a recipe by name (distributed_rec/recipes/*.toml) or a TOML/JSON file
  --run_dir=DIR          where artifacts go (default runs/default); s3://bucket/prefix too
  --resume               continue a killed training run (same as --train.resume=true)
  --force                re-run stages even when their inputs and config are unchanged
  --data.format=NAME     lcrec, amazon2023, amazon2023_benchmark, movielens, table, synthetic,
                         embedded (MovieLens 100K bundled with the install; the default)
  --data.path=PATH       raw data file or folder
"""


def split_arguments(argv: list[str]) -> tuple[str, str | None, bool, list[str]]:
    """(stage, recipe, force, overrides) from the raw argument list."""
    if not argv or argv[0] in ("-h", "--help"):
        raise SystemExit(USAGE)
    stage, rest = argv[0], argv[1:]
    if stage not in (*STAGES, "run", "baseline"):
        raise ConfigError(
            f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}, run, baseline"
        )
    recipe: str | None = None
    force = False
    overrides: list[str] = []
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg in ("-h", "--help"):
            raise SystemExit(USAGE)
        if arg == "--config" and i + 1 < len(rest):
            recipe = rest[i + 1]
            i += 2
            continue
        if arg.startswith("--config="):
            recipe = arg.split("=", 1)[1]
        elif arg == "--resume":
            overrides.append("--train.resume=true")
        elif arg == "--force":
            force = True
        else:
            overrides.append(arg)
        i += 1
    return stage, recipe, force, overrides


def configure_logging() -> None:
    level = os.environ.get("DISTRIBUTED_REC_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def execute(stage: str, config: JobConfig, force: bool = False) -> list[dict]:
    from distributed_rec import pipeline

    if stage == "run":
        summaries = pipeline.run_all(config, force=force)
        from distributed_rec.report import write_results

        write_results(config, summaries)
        return summaries
    return [pipeline.run_stage(stage, config, force=force)]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    configure_logging()
    try:
        stage, recipe, force, overrides = split_arguments(argv)
        config = load_config(recipe, overrides)
        summaries = execute(stage, config, force=force)
    except DistributedRecError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summaries, indent=2, default=str))
    return 0
