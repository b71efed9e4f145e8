"""The same config run twice on one machine gives identical metrics: tokenize (with
collaborative features), training with the dense head, the three ranking modes and the SASRec
baseline of `run`, from the same prepared and embedded data."""

from __future__ import annotations

import json
import shutil

import pytest

from distributed_rec.artifacts import RunPaths
from distributed_rec.config import load_config
from distributed_rec.distributed.ray_runtime import start_local_ray
from distributed_rec.pipeline import run_all, run_stage
from distributed_rec.report import write_results

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.timeout(600)]

RUN = (
    "--tokenize.features=text+collaborative",
    "--tokenize.collaborative_dim=8",
    "--tokenize.max_epochs=30",
    "--model.attention=inter_item_causal",
    "--model.dense_loss_weight=1",
    "--model.dense_learned_keys=true",
    "--decode.ranking=hybrid",
    "--decode.valid_beam_size=4",
    "--train.max_epochs=2",
    "--evaluate.use_ray=false",
    "--baseline.in_run=sasrec",
    "--baseline.max_epochs=2",
)
"""The debug recipe's data and model, with this project's best mode on it."""

TIMINGS = {"seconds", "wall_seconds", "decode_seconds", "users_per_s", "shard_seconds"}
MEASURED = (
    "_per_s",
    "_per_worker_s",
    "_seconds",
    "_per_cpu_s",
    "peak_rss_mb",
    "peak_rss_mb_rank0",
    "shard_nodes",
)


def without_timings(value):
    """`value` with every timing (and anything else that varies between equal runs) removed."""
    if isinstance(value, dict):
        return {
            key: without_timings(item)
            for key, item in value.items()
            if key not in TIMINGS and not key.endswith(MEASURED)
        }
    if isinstance(value, list):
        return [without_timings(item) for item in value]
    return value


def test_the_same_config_twice_gives_identical_metrics(tmp_path):
    import ray

    base = tmp_path / "base"
    config = load_config("debug", [f"--run_dir={base}", *RUN])
    start_local_ray(num_cpus=2, log_to_driver=False)
    try:
        for stage in ("prepare", "embed"):
            run_stage(stage, config)
    finally:
        ray.shutdown()

    results = []
    for name in ("first", "second"):
        shutil.copytree(base, tmp_path / name)
        run_config = load_config("debug", [f"--run_dir={tmp_path / name}", *RUN])
        summaries = run_all(run_config)
        assert [s["stage"] for s in summaries if s.get("skipped")] == ["prepare", "embed"]
        assert summaries[-1]["stage"] == "baseline (sasrec)"
        results.append(write_results(run_config, summaries))

    first, second = results
    assert set(first["evaluate"]["ranking"]["modes"]) == {"generative", "dense", "hybrid"}
    assert first["baselines"]["sasrec"]["test"]["ndcg@10"] >= 0
    for key in ("tokenize", "train", "evaluate", "baselines"):
        assert without_timings(first[key]) == without_timings(second[key]), key
    codes = [RunPaths(tmp_path / n).semantic_ids.read_bytes() for n in ("first", "second")]
    assert codes[0] == codes[1]

    table = (tmp_path / "first" / "results.md").read_text()
    for row in ("test (generative)", "test (dense)", "test (hybrid)", "test (sasrec)"):
        assert row in table
    assert "sasrec / popularity: recall@10 x" in table
    assert json.loads((tmp_path / "first" / "results.json").read_text())["sasrec_vs_popularity"]
