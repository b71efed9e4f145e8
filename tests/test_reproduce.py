"""The reproduce launcher: study parsing, stage sharing, a tiny study end to end, the report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from distributed_rec.config import ConfigError
from distributed_rec.reproduce.__main__ import main, parse_arguments, study_command
from distributed_rec.reproduce.plots import sweep_points
from distributed_rec.reproduce.report import results_table, study_compute_seconds
from distributed_rec.reproduce.runner import (
    StudyRunner,
    row_hash,
    stage_group_hash,
)
from distributed_rec.reproduce.study import load_study

TINY_OVERRIDES = [
    "--data.synthetic_users=120",
    "--data.synthetic_items=60",
    "--data.synthetic_interactions=1200",
    "--tokenize.max_epochs=20",
    "--tokenize.patience=5",
    "--model.d_model=16",
    "--model.num_layers=1",
    "--model.num_attention_heads=2",
    "--model.ffn_dim=32",
    "--evaluate.use_ray=false",
    "--baseline.max_epochs=1",
    "--baseline.d_model=16",
    "--ray.num_cpus=2",
]

TINY_STUDY = """
name = "tiny"
description = "a tiny study for tests"

[reduced]
"train.max_epochs" = 1

[[tables]]
id = "main"
title = "Overall"
rows = [{ label = "LLaDA-Rec" }, { label = "SASRec", baseline = "sasrec" }]

[[tables]]
id = "steps"
title = "Steps"
plot = { x = "decode.steps", xlabel = "T" }
rows = [
  { label = "T = 1", overrides = { "decode.steps" = 1, "decode.valid_steps" = 4 } },
  { label = "T = 4", overrides = { "decode.steps" = 4, "decode.valid_steps" = 4 } },
]

[[tables]]
id = "lambda"
title = "Lambda"
budget = "reduced"
rows = [
  { label = "lambda = 3.5" },
  { label = "lambda = 0", overrides = { "model.history_loss_weight" = 0.0 } },
]
"""


def stage_dirs(root: Path, stage: str) -> list[Path]:
    return [p for p in (root / "stages").glob(f"{stage}-*") if not p.name.endswith(".tensorboard")]


def write_study(tmp_path: Path, text: str = TINY_STUDY) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return path


def test_paper_study_shares_every_common_stage() -> None:
    study = load_study("paper", "scientific_small")
    assert len(study.rows) == 27
    assert len({row_hash(r) for r in study.rows}) == 22  # identical rows run once
    llada = [r for r in study.rows if r.kind == "llada"]
    trained = {stage_group_hash("train", r.config) for r in llada}
    # the main model (reused by the 3 decoding tables) + 13 distinct reduced-budget models
    assert len(trained) == 14
    tokenized = {stage_group_hash("tokenize", r.config) for r in study.rows if r.kind != "sasrec"}
    assert len(tokenized) == 4  # mhvq, rqvae (shared by TIGER and the ablation), rqkmeans, opq
    assert len({stage_group_hash("prepare", r.config) for r in study.rows}) == 1
    office = load_study("paper", "office_small")
    assert office.rows[0].config.data.path.endswith("office")


def test_study_hashes_follow_raw_data_content_not_its_mtime(tmp_path: Path) -> None:
    """A fresh copy of the same data (new mtimes) must find the stages a study already stored;
    changed data must not."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "log.csv").write_text("user_id,item_id,timestamp\n1,2,3\n")
    study = load_study("paper", "debug", [f"--data.path={data}", "--data.format=table"])
    row = study.rows[0]
    before = (row_hash(row), stage_group_hash("train", row.config))
    os.utime(data / "log.csv", ns=(1, 1))
    assert (row_hash(row), stage_group_hash("train", row.config)) == before
    (data / "log.csv").write_text("user_id,item_id,timestamp\n1,2,4\n")
    assert row_hash(row) != before[0]
    assert stage_group_hash("train", row.config) != before[1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[tables]]\nid = "t"\nrows = [{ label = "x", overrides = { "model.d_modle" = 2 } }]',
            "table 't' row 1 ('x'): unknown config key 'model.d_modle'",
        ),
        ('[[tables]]\nid = "t"\nbudget = "fast"\nrows = []', "budget 'fast' is not defined"),
        (
            '[[tables]]\nid = "t"\nrows = [{ label = "x", baseline = "bert4rec" }]',
            "baseline 'bert4rec' not in",
        ),
        ('[[tables]]\nid = "t"\nrows = [{ name = "x" }]', "unknown key(s) ['name']"),
        ('name = "empty"', "at least one [[tables]]"),
        (
            '[[tables]]\nid = "t"\nrows = [{ label = "x", overrides = { "decode.order" = "up" } }]',
            "decode.order",
        ),
    ],
)
def test_bad_study_files_name_the_table_and_row(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_study(str(write_study(tmp_path, text)), "debug")
    assert message in str(error.value)


def test_launcher_arguments() -> None:
    args = parse_arguments(
        ["--config=debug", "--dataset=x", "--tables=main,steps", "--train.lr=1e-3", "--adopt=a"]
    )
    assert args.tables == ["main", "steps"] and args.overrides == ["--train.lr=1e-3"]
    assert args.adopt == [Path("a")] and not args.collect_only
    assert parse_arguments(["--config=debug", "--dataset=x", "--collect_only"]).collect_only
    assert study_command(args) == (
        "python -m distributed_rec.reproduce --study=paper --config=debug --dataset=x "
        "--train.lr=1e-3"
    )
    with pytest.raises(ConfigError, match="--config=RECIPE is required"):
        parse_arguments(["--dataset=x"])
    with pytest.raises(ConfigError, match="--budget_minutes expects minutes"):
        parse_arguments(["--config=debug", "--dataset=x", "--budget_minutes=soon"])


def test_results_table_marks_rows_not_run_and_adds_the_floor() -> None:
    metrics = {"recall@1": 0.1, "recall@5": 0.2, "recall@10": 0.3, "ndcg@5": 0.15, "ndcg@10": 0.2}
    rows = [
        {
            "label": "LLaDA-Rec",
            "kind": "llada",
            "status": "done",
            "metrics": metrics,
            "popularity": {k: v / 10 for k, v in metrics.items()},
            "users": 100,
            "train": {"epochs_run": 5, "best_epoch": 3},
            "stage_seconds": {"train": 90.0, "evaluate": None},
            "config_hash": "abc",
        },
        {
            "label": "SASRec",
            "kind": "sasrec",
            "status": "not run: time budget spent",
            "config_hash": "def",
        },
    ]
    lines = results_table(rows).splitlines()
    assert lines[2] == (
        "| LLaDA-Rec | LLaDA-Rec | 0.1000 | 0.2000 | 0.3000 | 0.1500 | 0.2000 | 100 "
        "| 5 (best 3) | 1.5 min+ | `abc` |"
    )
    assert lines[3].startswith("| SASRec (not run: time budget spent) | SASRec |  |")
    assert lines[4].startswith("| most popular (floor) | | 0.0100 | 0.0200 | 0.0300 |")


@pytest.mark.timeout(600)
def test_tiny_study_end_to_end(tmp_path: Path) -> None:
    study_file = write_study(tmp_path)
    root, output = tmp_path / "root", tmp_path / "docs"
    argv = [
        f"--study={study_file}",
        "--config=debug",
        "--dataset=tiny",
        f"--root={root}",
        f"--output={output}",
        *TINY_OVERRIDES,
    ]
    assert main(argv) == 0
    results = json.loads((root / "study.json").read_text())
    assert [r["status"] for r in results["rows"]] == ["done"] * 6
    assert all(
        set(r["metrics"]) == {"recall@1", "recall@5", "recall@10", "ndcg@5", "ndcg@10"}
        for r in results["rows"]
    )
    # 3 distinct models: main (shared by the steps rows), reduced lambda 3.5, reduced lambda 0
    assert len(stage_dirs(root, "train")) == 3
    assert len(stage_dirs(root, "prepare")) == 1
    # T = 4 is the main row's decoding, so it is the same row (same directory, same metrics)
    main_row, t4 = results["rows"][0], results["rows"][3]
    assert t4["row_dir"] == main_row["row_dir"] and t4["metrics"] == main_row["metrics"]

    report = (output / "tiny.md").read_text()
    for row in results["rows"]:
        assert f"`{row['config_hash']}`" in report
    assert "| most popular (floor) |" in report
    for plot in ("steps.png", "training.png"):
        assert (output / "tiny" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    study = load_study(str(study_file), "debug", TINY_OVERRIDES)
    steps_table = next(t for t in study.tables if t.id == "steps")
    assert [x for x, _ in sweep_points(steps_table, results["rows"][2:4], "ndcg@10")] == [1.0, 4.0]

    # a second run recomputes nothing: every stage marker is left as it was
    markers = {p: p.stat().st_mtime_ns for p in root.glob("stages/*/_DONE.json")}
    assert main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in root.glob("stages/*/_DONE.json")} == markers

    # with no budget left, finished rows still report and unfinished ones are not run; a run of
    # one table keeps the other tables' results in study.json
    assert all(r.status == "done" for r in StudyRunner(study, root, 0.0).run(["steps"]))
    kept = json.loads((root / "study.json").read_text())["rows"]
    assert [(r["table"], r["metrics"]) for r in kept] == [
        (r["table"], r["metrics"]) for r in results["rows"]
    ]
    fresh = StudyRunner(study, tmp_path / "fresh", 0.0).run(["main"])
    assert [r.status for r in fresh] == ["not run: time budget spent"] * 2

    # a new study root adopts the finished run directory instead of training again
    adopted_root = tmp_path / "adopted"
    sasrec_row = results["rows"][1]
    adopt = [Path(main_row["row_dir"]), Path(sasrec_row["row_dir"])]
    # with no budget left, adopting finished stages still completes the rows (nothing computed)
    adopted, adopted_sasrec = StudyRunner(study, adopted_root, 0.0, adopt).run(["main"])
    assert adopted.status == adopted_sasrec.status == "done"
    assert adopted.metrics == main_row["metrics"]
    assert adopted_sasrec.metrics == sasrec_row["metrics"]
    written = [
        json.loads((Path(d) / "baselines/sasrec/metrics.json").read_text())["wall_seconds"]
        for d in (sasrec_row["row_dir"], adopted_sasrec.row_dir)
    ]
    assert written[0] == written[1]  # copied, not trained again
    model = Path(main_row["row_dir"]) / "train" / "best" / "model.pt"
    copy = Path(adopted.row_dir) / "train" / "best" / "model.pt"
    assert copy.read_bytes() == model.read_bytes()


def test_study_compute_counts_each_shared_stage_once() -> None:
    rows = [
        {
            "row_dir": "r1",
            "stage_seconds": {"train": 100.0, "evaluate": 10.0},
            "stage_dirs": {"train": "/s/train-a", "evaluate": "/r1/evaluate"},
        },
        {
            "row_dir": "r2",
            "stage_seconds": {"train": 100.0, "evaluate": 5.0},
            "stage_dirs": {"train": "/s/train-a", "evaluate": "/r2/evaluate"},
        },
    ]
    assert study_compute_seconds(rows) == (115.0, False)
    rows[1]["stage_seconds"]["evaluate"] = None
    assert study_compute_seconds(rows) == (110.0, True)


def test_unknown_study_names_the_shipped_ones() -> None:
    with pytest.raises(
        ConfigError, match=r"--study='nope' is neither a file nor one of: data_efficiency, paper"
    ):
        load_study("nope", "debug")


def test_data_efficiency_study_shares_one_prepare_per_drop() -> None:
    study = load_study("data_efficiency", "default")
    assert len(study.rows) == 12
    drops = {r.config.data.train_item_drop for r in study.rows}
    assert drops == {0.0, 0.25, 0.5, 0.75}
    prepared = {stage_group_hash("prepare", r.config) for r in study.rows}
    assert len(prepared) == 4  # the three models of one drop train on the same prepared data
    assert [t.plot_x for t in study.tables] == ["data.train_item_drop"] * 3
