"""`python -m distributed_rec.reproduce`: run a named study on a dataset and write its report.

    python -m distributed_rec.reproduce --study=paper --config=scientific_small \\
        --dataset=scientific [--budget_minutes=180] [--tables=main,steps] \\
        [--root=runs/reproduce/scientific] [--output=docs/results] [--adopt=RUN_DIR ...] \\
        [--notes=FILE] [--report_only | --collect_only] [--section.key=value ...]

Writes ROOT/study.json, OUTPUT/<dataset>.md and OUTPUT/<dataset>/*.png. Running it again skips
every stage already finished; `--report_only` rewrites the report from ROOT/study.json;
`--collect_only` starts nothing new: finished rows are collected, the others reported as not run.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path

from distributed_rec.artifacts import write_json_atomic
from distributed_rec.cli import configure_logging
from distributed_rec.config import ConfigError
from distributed_rec.distributed.process_exit import end_process
from distributed_rec.errors import DistributedRecError

log = logging.getLogger("distributed_rec.reproduce")

_OPTIONS = {
    "study",
    "config",
    "dataset",
    "budget_minutes",
    "tables",
    "root",
    "output",
    "adopt",
    "notes",
}


@dataclass
class Arguments:
    study: str = "paper"
    config: str | None = None
    dataset: str = ""
    budget_minutes: float | None = None
    tables: list[str] = field(default_factory=list)
    root: Path | None = None
    output: Path = Path("docs/results")
    adopt: list[Path] = field(default_factory=list)
    notes: Path | None = None
    report_only: bool = False
    collect_only: bool = False
    overrides: list[str] = field(default_factory=list)


def parse_arguments(argv: list[str]) -> Arguments:
    """Launcher options (--name=value); anything else is a config override for every row."""
    args = Arguments()
    for arg in argv:
        if arg in ("-h", "--help"):
            raise SystemExit(__doc__)
        if arg in ("--report_only", "--collect_only"):
            setattr(args, arg[2:], True)
            continue
        name, _, value = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if name not in _OPTIONS:
            args.overrides.append(arg)
            continue
        if not value:
            raise ConfigError(f"--{name} needs a value: --{name}=VALUE")
        if name == "budget_minutes":
            try:
                args.budget_minutes = float(value)
            except ValueError:
                raise ConfigError(f"--budget_minutes expects minutes, got {value!r}") from None
            if args.budget_minutes <= 0:
                raise ConfigError(f"--budget_minutes must be > 0, got {value!r}")
        elif name == "tables":
            args.tables = [t for t in value.split(",") if t]
        elif name == "adopt":
            args.adopt.append(Path(value))
        elif name in ("root", "output", "notes"):
            if "://" in value:  # rows link and copy stage folders: local storage only
                raise ConfigError(f"--{name}={value!r}: studies need a local folder")
            setattr(args, name, Path(value))
        else:
            setattr(args, name, value)
    if not args.config:
        raise ConfigError(
            "--config=RECIPE is required (the dataset's recipe, e.g. scientific_small)"
        )
    if not args.dataset:
        raise ConfigError("--dataset=NAME is required (names the report: OUTPUT/NAME.md)")
    return args


def study_command(args: Arguments) -> str:
    """The command that runs the whole study as reported (options that only steer one
    invocation - --tables, --adopt, --report_only, --root, --output, --notes - left out)."""
    parts = [f"--study={args.study}", f"--config={args.config}", f"--dataset={args.dataset}"]
    if args.budget_minutes is not None:
        parts.append(f"--budget_minutes={args.budget_minutes:g}")
    return "python -m distributed_rec.reproduce " + shlex.join([*parts, *args.overrides])


def main(argv: list[str] | None = None) -> int:
    from distributed_rec.reproduce.plots import write_plots
    from distributed_rec.reproduce.report import (
        machine_description,
        software_versions,
        write_report,
    )
    from distributed_rec.reproduce.runner import StudyRunner
    from distributed_rec.reproduce.study import load_study

    configure_logging()
    argv = sys.argv[1:] if argv is None else argv
    try:
        args = parse_arguments(argv)
        study = load_study(args.study, args.config, args.overrides)
        known = {t.id for t in study.tables}
        unknown = sorted(set(args.tables) - known)
        if unknown:
            raise ConfigError(
                f"--tables: unknown table(s) {unknown}; the study has {sorted(known)}"
            )
        root = args.root or Path("runs") / "reproduce" / args.dataset
        for adopted in args.adopt:
            if not adopted.is_dir():
                raise ConfigError(f"--adopt={adopted}: not a directory")
        if args.report_only:
            results_path = root / "study.json"
            if not results_path.exists():
                raise DistributedRecError(f"{results_path} does not exist: run the study first")
            results = json.loads(results_path.read_text())
        else:
            budget = None if args.budget_minutes is None else args.budget_minutes * 60
            if args.collect_only:
                budget = 0.0
            runner = StudyRunner(study, root, budget, args.adopt)
            runner.run(args.tables or None)
            results = json.loads((root / "study.json").read_text())
            results["versions"] = software_versions()
            results["machine"] = machine_description()
            write_json_atomic(root / "study.json", results)
        notes = args.notes.read_text() if args.notes else ""
        plots = write_plots(study, results, args.dataset, args.output)
        command = study_command(args)
        report = write_report(
            study, results, args.dataset, args.output, command, args.config, plots, notes
        )
    except (DistributedRecError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    failed = [r for r in results["rows"] if r["status"].startswith("failed")]
    log.info("report: %s (%d rows, %d failed)", report, len(results["rows"]), len(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    end_process(main())
