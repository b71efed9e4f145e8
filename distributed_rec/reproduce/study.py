"""Study files: named tables of rows, each row a recipe plus overrides (distributed_rec/studies/).

A study file is TOML:

    name = "paper"
    [reduced]                      # a named budget: overrides for every row of tables using it
    "train.max_epochs" = 2
    [[tables]]
    id = "loss"
    title = "Training objectives"
    budget = "reduced"             # optional
    plot = { x = "model.history_loss_weight", xlabel = "lambda" }   # optional: metric vs x
    rows = [{ label = "without L_his", overrides = { "model.history_loss_weight" = 0.0 } }]

A row with `baseline = "sasrec" | "tiger"` trains and evaluates that baseline instead of the mask
predictor. Every row's config is built (and so validated) when the study is loaded, so a typo in a
key or value fails before any work starts, naming the study, table and row.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distributed_rec.config import (
    BASELINE_MODELS,
    ConfigError,
    JobConfig,
    load_layered_config,
    nest_dotted,
    parse_overrides,
    resolve_named_file,
)

STUDY_DIR = Path(__file__).resolve().parent.parent / "studies"
_TABLE_KEYS = {"id", "title", "budget", "plot", "rows"}
_ROW_KEYS = {"label", "baseline", "overrides"}


@dataclass(frozen=True)
class Row:
    """One measured configuration: `config` is the recipe + budget + row overrides."""

    table: str
    label: str
    baseline: str | None
    overrides: dict[str, Any]
    config: JobConfig

    @property
    def kind(self) -> str:
        return self.baseline or "llada"


@dataclass(frozen=True)
class Table:
    id: str
    title: str
    budget: str | None
    rows: list[Row]
    plot_x: str | None = None
    plot_xlabel: str | None = None


@dataclass(frozen=True)
class Study:
    name: str
    description: str
    path: Path
    budgets: dict[str, dict[str, Any]]
    tables: list[Table] = field(default_factory=list)

    @property
    def rows(self) -> list[Row]:
        return [row for table in self.tables for row in table.rows]


def resolve_study(name_or_path: str) -> Path:
    """A study name ('paper') or a path to a TOML file."""
    return resolve_named_file(name_or_path, STUDY_DIR, "--study")


def _check_keys(where: str, values: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(allowed)}")


def _require(where: str, values: dict[str, Any], key: str, kind: type) -> Any:
    if key not in values:
        raise ConfigError(f"{where}: missing {key!r}")
    if not isinstance(values[key], kind):
        raise ConfigError(f"{where}: {key!r} must be a {kind.__name__}, got {values[key]!r}")
    return values[key]


def load_study(
    name_or_path: str, recipe: str | None, cli_overrides: list[str] | None = None
) -> Study:
    """Parse a study and build every row's JobConfig.

    Layers, later winning: config defaults, `recipe`, `cli_overrides` (they change the recipe
    every row starts from), the table's budget, the row's own overrides.
    """
    path = resolve_study(name_or_path)
    cli_layer = parse_overrides(cli_overrides or [])
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: cannot parse study: {err}") from None
    tables_raw = raw.get("tables")
    if not isinstance(tables_raw, list) or not tables_raw:
        raise ConfigError(f"{path}: a study needs at least one [[tables]] entry")
    budgets = {key: value for key, value in raw.items() if isinstance(value, dict)}
    tables, seen = [], set()
    for number, table_raw in enumerate(tables_raw, start=1):
        where = f"{path.name}: table {number}"
        _check_keys(where, table_raw, _TABLE_KEYS)
        table_id = _require(where, table_raw, "id", str)
        if table_id in seen:
            raise ConfigError(f"{where}: duplicate table id {table_id!r}")
        seen.add(table_id)
        where = f"{path.name}: table {table_id!r}"
        budget = table_raw.get("budget")
        if budget is not None and budget not in budgets:
            raise ConfigError(f"{where}: budget {budget!r} is not defined ({sorted(budgets)})")
        budget_layer = nest_dotted(budgets.get(budget, {}), f"{path.name} [{budget}]")
        rows = []
        for row_number, row_raw in enumerate(_require(where, table_raw, "rows", list), 1):
            row_where = f"{where} row {row_number}"
            _check_keys(row_where, row_raw, _ROW_KEYS)
            label = _require(row_where, row_raw, "label", str)
            baseline = row_raw.get("baseline")
            if baseline is not None and baseline not in BASELINE_MODELS:
                raise ConfigError(f"{row_where}: baseline {baseline!r} not in {BASELINE_MODELS}")
            overrides = dict(row_raw.get("overrides", {}))
            if baseline is not None:
                overrides["baseline.model"] = baseline
            try:
                config = load_layered_config(
                    recipe, [cli_layer, budget_layer, nest_dotted(overrides, row_where)]
                )
            except ConfigError as err:
                raise ConfigError(f"{row_where} ({label!r}): {err}") from None
            rows.append(Row(table_id, label, baseline, overrides, config))
        plot = table_raw.get("plot") or {}
        tables.append(
            Table(
                id=table_id,
                title=str(table_raw.get("title", table_id)),
                budget=budget,
                rows=rows,
                plot_x=plot.get("x"),
                plot_xlabel=plot.get("xlabel", plot.get("x")),
            )
        )
    return Study(
        name=str(raw.get("name", path.stem)),
        description=str(raw.get("description", "")),
        path=path,
        budgets=budgets,
        tables=tables,
    )
