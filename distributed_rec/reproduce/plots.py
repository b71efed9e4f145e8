"""PNG plots of a study: metric vs a swept setting (T, lambda) and training curves.

matplotlib is an optional dependency (`pip install .[plots]`); without it the report is written
without plots and says so.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from distributed_rec.reproduce.study import Study, Table

log = logging.getLogger(__name__)

PLOTTED_METRICS = ("recall@10", "ndcg@10")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _setting(values: dict[str, Any], dotted: str) -> Any:
    node: Any = values
    for part in dotted.split("."):
        node = node[part]
    return node


def sweep_points(
    table: Table, rows: list[dict[str, Any]], metric: str
) -> list[tuple[float, float]]:
    """(x, metric) of the table's finished rows, x read from each row's resolved config."""
    by_label = {r["label"]: r for r in rows if r["status"] == "done" and r.get("metrics")}
    points = []
    for row in table.rows:
        if row.label in by_label and table.plot_x:
            x = float(_setting(row.config.to_dict(), table.plot_x))
            points.append((x, float(by_label[row.label]["metrics"][metric])))
    return sorted(points)


def plot_sweep(table: Table, rows: list[dict[str, Any]], dataset: str, path: Path) -> Path | None:
    """Recall@10 and NDCG@10 against the table's swept setting; None with fewer than 2 points."""
    if len(sweep_points(table, rows, PLOTTED_METRICS[0])) < 2:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 3.5))
    for metric in PLOTTED_METRICS:
        xs, ys = zip(*sweep_points(table, rows, metric), strict=True)
        axis.plot(xs, ys, marker="o", label=metric)
    axis.set_xlabel(table.plot_xlabel or table.plot_x)
    axis.set_ylabel("test metric")
    axis.set_title(f"{dataset}: {table.title}", fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def read_scalars(event_dir: Path, tag: str) -> list[tuple[int, float]]:
    """(step, value) of one scalar tag from the TensorBoard event files in a directory."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    points: dict[int, float] = {}
    for events in sorted(event_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags().get("scalars", []):
            points.update({e.step: e.value for e in accumulator.Scalars(tag)})
    return sorted(points.items())


def plot_training_curves(curves: list[tuple[str, Path]], dataset: str, path: Path) -> Path | None:
    """Training loss and validation NDCG@10 against the optimiser step, one line per model.

    `curves` pairs a label with the model's TensorBoard directory (DIR/tensorboard/train).
    """
    series = [
        (label, read_scalars(d, "train/loss"), read_scalars(d, "valid/ndcg@10"))
        for label, d in curves
        if d.is_dir()
    ]
    series = [s for s in series if s[1] or s[2]]
    if not series:
        return None
    plt = _pyplot()
    figure, (loss_axis, valid_axis) = plt.subplots(1, 2, figsize=(10, 3.8))
    for label, loss, valid in series:
        if loss:
            loss_axis.plot(*zip(*loss, strict=True), label=label, linewidth=1)
        if valid:
            valid_axis.plot(*zip(*valid, strict=True), marker="o", label=label)
    loss_axis.set_xlabel("optimiser step")
    loss_axis.set_ylabel("training loss")
    valid_axis.set_xlabel("optimiser step")
    valid_axis.set_ylabel("validation NDCG@10")
    for axis in (loss_axis, valid_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"{dataset}: training curves", fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


CURVE_TABLES = ("main", "loss")


def write_plots(study: Study, results: dict[str, Any], dataset: str, output: Path) -> list[Path]:
    """Every plot the study's results allow, as output/<dataset>/<name>.png.

    Training curves are drawn for the models of the CURVE_TABLES tables (one line each).
    """
    try:
        _pyplot()
    except ImportError:
        log.warning("matplotlib is not installed (pip install .[plots]): no plots written")
        return []
    rows_by_table: dict[str, list[dict[str, Any]]] = {}
    for row in results["rows"]:
        rows_by_table.setdefault(row["table"], []).append(row)
    written = []
    for table in study.tables:
        if table.plot_x and table.id in rows_by_table:
            plot = plot_sweep(
                table, rows_by_table[table.id], dataset, output / dataset / f"{table.id}.png"
            )
            written.append(plot)
    curves, seen = [], set()
    for row in results["rows"]:
        if row["kind"] != "llada" or row["status"] != "done" or row["table"] not in CURVE_TABLES:
            continue
        events = (Path(row["row_dir"]) / "tensorboard" / "train").resolve()
        if events not in seen:
            seen.add(events)
            curves.append((f"{row['table']}: {row['label']}", events))
    written.append(plot_training_curves(curves, dataset, output / dataset / "training.png"))
    return [p for p in written if p is not None]
