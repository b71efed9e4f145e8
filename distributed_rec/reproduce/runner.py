"""Run a study's rows through the ordinary pipeline stages, sharing every stage rows have in common.

Layout under the study root (e.g. runs/reproduce/scientific):

    stages/<stage>-<hash>/        one directory per distinct (prepare|embed|tokenize|train) output;
                                  <hash> covers the config of that stage and of every stage before it
    stages/<stage>-<hash>.tensorboard/
    rows/<kind>-<hash>/           one run directory per distinct row config: its shared stages are
                                  symlinks into stages/, evaluate/ and baselines/ are its own
    study.json                    every row's status, metrics, wall time and config hash

A row therefore costs only the stages it changes (the decoding rows reuse the main model), and
running the study again skips every finished stage (the pipeline's own stage markers). Existing
run directories can be adopted (`adopt_dirs`): a stage whose marker key equals the key the row
would compute is copied (hard links) instead of recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed_rec.artifacts import RunPaths, stage_is_current, stage_marker, write_json_atomic
from distributed_rec.config import JobConfig, config_from_dict
from distributed_rec.pipeline import (
    STAGE_CONFIG_KEYS,
    raw_input_digest,
    run_stage,
    stage_config_values,
    stage_key,
)
from distributed_rec.reproduce.study import Row, Study

log = logging.getLogger(__name__)

SHARED_STAGES = ("prepare", "embed", "tokenize", "train")
STAGE_CHAINS = {
    "llada": ("prepare", "embed", "tokenize", "train", "evaluate"),
    "sasrec": ("prepare", "baseline"),
    "tiger": ("prepare", "embed", "tokenize", "baseline"),
}
# What decides a shared stage's output besides the stages before it.
_UPSTREAM = {
    "prepare": ("prepare",),
    "embed": ("prepare", "embed"),
    "tokenize": ("prepare", "embed", "tokenize"),
    "train": ("prepare", "embed", "tokenize", "train"),
}


def _digest(payload: Any) -> str:
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def stage_group_hash(stage: str, config: JobConfig) -> str:
    """Hash of the config that decides `stage`'s output, through the whole chain before it."""
    payload = {s: stage_config_values(config, STAGE_CONFIG_KEYS[s]) for s in _UPSTREAM[stage]}
    payload["raw"] = raw_input_digest(config)
    return _digest(payload)


def row_hash(row: Row) -> str:
    """Hash of everything that decides a row's result (its configuration hash in reports)."""
    chain = STAGE_CHAINS[row.kind]
    payload = {s: stage_config_values(row.config, STAGE_CONFIG_KEYS[s]) for s in chain}
    payload["raw"] = raw_input_digest(row.config)
    payload["kind"] = row.kind
    return _digest(payload)


@dataclass
class RowResult:
    """What the report needs of one row (JSON-able)."""

    table: str
    label: str
    kind: str
    status: str  # "done", "failed: <message>", "not run: time budget spent"
    config_hash: str
    row_dir: str
    overrides: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] | None = None
    popularity: dict[str, float] | None = None
    users: int | None = None
    wall_seconds: float | None = None
    stage_seconds: dict[str, float | None] = field(default_factory=dict)
    stage_dirs: dict[str, str] = field(default_factory=dict)  # resolved: shared ones coincide
    train: dict[str, Any] | None = None
    users_per_s: float | None = None


def _link(link: Path, target: Path) -> None:
    """Make `link` a relative symlink to `target` (replacing a stale link)."""
    target.mkdir(parents=True, exist_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    relative = os.path.relpath(target, link.parent)
    if link.is_symlink():
        if os.readlink(link) == relative:
            return
        link.unlink()
    elif link.exists():
        raise FileExistsError(f"{link} exists and is not a link into the study's stages/")
    link.symlink_to(relative, target_is_directory=True)


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a finished stage directory, by hard links where the file system allows."""
    if target.exists():
        shutil.rmtree(target)
    try:
        shutil.copytree(source, target, copy_function=os.link)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


def _adopt(stage: str, row: Row, config: JobConfig, adopt_dirs: Sequence[Path]) -> Path | None:
    """Copy `stage` from the first adopted run directory whose marker key matches; its source."""
    paths = RunPaths(Path(config.run_dir))
    key = stage_key(stage, config)
    if stage_is_current(paths, stage, key):
        return None
    for source_root in adopt_dirs:
        source = RunPaths(source_root)
        marker = stage_marker(source, stage)
        if marker is None or marker.get("key") != key:
            continue
        if stage == "baseline":
            model = row.config.baseline.model
            outputs = source_root / "baselines" / model
            if not (outputs / "metrics.json").exists():
                continue
            _copy_tree(outputs, paths.root / "baselines" / model)
        for name in os.listdir(source.stage_dir(stage)):
            item, into = source.stage_dir(stage) / name, paths.stage_dir(stage) / name
            if item.is_dir():
                _copy_tree(item, into)
            else:
                into.parent.mkdir(parents=True, exist_ok=True)
                into.unlink(missing_ok=True)
                shutil.copy2(item, into)
        events = source.tensorboard(stage)
        if events.is_dir():
            for name in os.listdir(events):
                into = paths.tensorboard(stage) / name
                into.parent.mkdir(parents=True, exist_ok=True)
                if not into.exists():
                    shutil.copy2(events / name, into)
        log.info("%s / %s: %s adopted from %s", row.table, row.label, stage, source_root)
        return source_root
    return None


class StudyRunner:
    """Runs rows in order under a time budget and records their results in study.json."""

    def __init__(
        self,
        study: Study,
        root: Path,
        budget_seconds: float | None = None,
        adopt_dirs: Sequence[Path] = (),
    ) -> None:
        self.study = study
        self.root = root
        self.budget_seconds = budget_seconds
        self.adopt_dirs = [Path(d) for d in adopt_dirs]
        self.started = time.perf_counter()

    def row_dir(self, row: Row) -> Path:
        return self.root / "rows" / f"{row.kind}-{row_hash(row)}"

    def row_config(self, row: Row) -> JobConfig:
        values = row.config.to_dict()
        values["run_dir"] = str(self.row_dir(row))
        return config_from_dict(values)

    def _prepare_links(self, row: Row, config: JobConfig) -> None:
        paths = RunPaths(Path(config.run_dir))
        for stage in STAGE_CHAINS[row.kind]:
            if stage not in SHARED_STAGES:
                continue
            group = self.root / "stages" / f"{stage}-{stage_group_hash(stage, config)}"
            _link(paths.stage_dir(stage), group)
            _link(paths.tensorboard(stage), group.with_name(group.name + ".tensorboard"))

    def is_complete(self, row: Row) -> bool:
        """True when every stage of the row is already current (costs nothing to 'run')."""
        config = self.row_config(row)
        paths = RunPaths(Path(config.run_dir))
        if not paths.root.exists():
            return False
        return all(
            stage_is_current(paths, stage, stage_key(stage, config))
            for stage in STAGE_CHAINS[row.kind]
        )

    def budget_left(self) -> bool:
        if self.budget_seconds is None:
            return True
        return time.perf_counter() - self.started < self.budget_seconds

    def adopt_row(self, row: Row) -> None:
        """Link the row's shared stages and copy every adoptable finished stage (no compute)."""
        config = self.row_config(row)
        self._prepare_links(row, config)
        if self.adopt_dirs:
            for stage in STAGE_CHAINS[row.kind]:
                _adopt(stage, row, config, self.adopt_dirs)

    def run_row(self, row: Row) -> RowResult:
        config = self.row_config(row)
        self._prepare_links(row, config)
        for stage in STAGE_CHAINS[row.kind]:  # a recomputed stage may let a later one be adopted
            if self.adopt_dirs:
                _adopt(stage, row, config, self.adopt_dirs)
            run_stage(stage, config)
        return collect_result(row, config, row_hash(row))

    def run(self, table_ids: Sequence[str] | None = None) -> list[RowResult]:
        """Every row of the chosen tables (all by default); study.json is rewritten after each."""
        results: list[RowResult] = []
        for table in self.study.tables:
            if table_ids and table.id not in table_ids:
                continue
            for row in table.rows:
                results.append(self._run_or_skip(row))
                self.save(results)
        return results

    def _run_or_skip(self, row: Row) -> RowResult:
        config = self.row_config(row)
        if not self.budget_left() and self.adopt_dirs:
            self.adopt_row(row)  # adopted stages cost nothing, so they count even without budget
        if not self.budget_left() and not self.is_complete(row):
            log.warning("%s / %s: not run, the time budget is spent", row.table, row.label)
            return _empty_result(row, config, "not run: time budget spent")
        log.info("%s / %s: running in %s", row.table, row.label, config.run_dir)
        try:
            return self.run_row(row)
        except Exception as err:  # one failed row must not lose the rest of a multi-hour study
            log.exception("%s / %s failed", row.table, row.label)
            return _empty_result(row, config, f"failed: {type(err).__name__}: {err}")

    def save(self, results: list[RowResult]) -> None:
        """Rewrite study.json: this invocation's rows replace earlier results of the same rows;
        rows of tables not run this time keep their earlier results (in study order)."""
        path = self.root / "study.json"
        earlier = json.loads(path.read_text()).get("rows", []) if path.exists() else []
        by_row = {(r["table"], r["label"]): r for r in earlier}
        by_row.update({(r.table, r.label): vars(r) for r in results})
        order = [(row.table, row.label) for row in self.study.rows]
        write_json_atomic(
            path,
            {
                "study": self.study.name,
                "study_file": str(self.study.path),
                "elapsed_seconds": time.perf_counter() - self.started,
                "budget_seconds": self.budget_seconds,
                "rows": [by_row[key] for key in order if key in by_row],
            },
        )


def _empty_result(row: Row, config: JobConfig, status: str) -> RowResult:
    return RowResult(
        table=row.table,
        label=row.label,
        kind=row.kind,
        status=status,
        config_hash=row_hash(row),
        row_dir=config.run_dir,
        overrides=row.overrides,
    )


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _stage_seconds(paths: RunPaths, stage: str) -> float | None:
    """How long the stage took when it ran (its marker; older runs: the stage's own metrics)."""
    marker = stage_marker(paths, stage) or {}
    if marker.get("seconds") is not None:
        return float(marker["seconds"])
    fallbacks = {
        "train": (paths.train_metrics, "seconds"),
        "evaluate": (paths.eval_metrics, "decode_seconds"),
        "prepare": (paths.prepare_stats, "seconds"),
        "tokenize": (paths.tokenizer_metrics, "seconds"),
    }
    if stage in fallbacks:
        payload = _read_json(fallbacks[stage][0]) or {}
        value = payload.get(fallbacks[stage][1])
        return float(value) if value is not None else None
    return None


def collect_result(row: Row, config: JobConfig, config_hash: str) -> RowResult:
    """Metrics of a finished row from its run directory."""
    paths = RunPaths(Path(config.run_dir))
    result = _empty_result(row, config, "done")
    result.config_hash = config_hash
    chain = STAGE_CHAINS[row.kind]
    result.stage_seconds = {stage: _stage_seconds(paths, stage) for stage in chain}
    result.stage_dirs = {stage: str(paths.stage_dir(stage).resolve()) for stage in chain}
    known = [s for s in result.stage_seconds.values() if s is not None]
    result.wall_seconds = sum(known) if len(known) == len(chain) else None
    if row.kind == "llada":
        metrics = _read_json(paths.eval_metrics) or {}
        train = _read_json(paths.train_metrics) or {}
        result.train = {
            key: train.get(key)
            for key in ("epochs_run", "best_epoch", "stopped_early", "samples_per_s", "seconds")
        }
        result.popularity = metrics.get("popularity")
        result.users_per_s = metrics.get("users_per_s")
    else:
        metrics = _read_json(paths.root / "baselines" / row.kind / "metrics.json") or {}
        result.train = {
            key: metrics.get(key) for key in ("epochs_run", "best_epoch", "train_seconds")
        }
    result.metrics = metrics.get("test")
    result.users = (metrics.get("users") or {}).get("test")
    if result.metrics is None:
        result.status = "failed: no test metrics were written"
    return result
