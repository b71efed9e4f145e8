"""Stage skipping: a stage re-runs only when its config keys or input artifacts change."""

import json
import sys
import types
from pathlib import Path

import pytest

from distributed_rec import pipeline
from distributed_rec.artifacts import RunPaths
from distributed_rec.config import ConfigError, load_config
from distributed_rec.errors import StageUnavailableError

CALLS: list[str] = []


def _fake_embed(config):
    CALLS.append(config.embed.model)
    paths = RunPaths(Path(config.run_dir))
    paths.item_embeddings.parent.mkdir(parents=True, exist_ok=True)
    paths.item_embeddings.write_text("vectors")
    return {"items": 3}


@pytest.fixture
def fake_stage(monkeypatch):
    module = types.ModuleType("fake_stage_module")
    module.run = _fake_embed
    monkeypatch.setitem(sys.modules, "fake_stage_module", module)
    monkeypatch.setitem(pipeline.STAGE_ENTRY_POINTS, "embed", "fake_stage_module:run")
    CALLS.clear()
    return CALLS


def _write_items(config, text):
    paths = RunPaths(Path(config.run_dir))
    paths.items.parent.mkdir(parents=True, exist_ok=True)
    paths.items.write_text(text)


def test_unchanged_stage_is_skipped_and_changes_rerun_it(tmp_path, fake_stage):
    config = load_config(None, [f"--run_dir={tmp_path}"])
    _write_items(config, "a")
    first = pipeline.run_stage("embed", config)
    second = pipeline.run_stage("embed", config)
    assert (first["skipped"], second["skipped"]) == (False, True)
    assert fake_stage == ["all-MiniLM-L6-v2"]

    _write_items(config, "b")  # input content changed
    assert pipeline.run_stage("embed", config)["skipped"] is False

    changed = load_config(None, [f"--run_dir={tmp_path}", "--embed.model=/models/other"])
    assert pipeline.run_stage("embed", changed)["skipped"] is False
    assert pipeline.run_stage("embed", changed, force=True)["skipped"] is False
    assert fake_stage == ["all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "/models/other", "/models/other"]

    # unrelated sections do not invalidate the stage
    unrelated = load_config(
        None, [f"--run_dir={tmp_path}", "--embed.model=/models/other", "--train.lr=0.1"]
    )
    assert pipeline.run_stage("embed", unrelated)["skipped"] is True
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["train"]["lr"] == 0.1


def test_missing_stage_module_is_reported_as_unavailable(monkeypatch):
    monkeypatch.setitem(pipeline.STAGE_ENTRY_POINTS, "embed", "distributed_rec.no_such_module:run")
    with pytest.raises(StageUnavailableError, match="stage 'embed' is not available yet"):
        pipeline.load_stage("embed")


def test_stage_key_ignores_keys_without_effect(tmp_path):
    base = load_config(None, [f"--run_dir={tmp_path}"])
    resumed = load_config(None, [f"--run_dir={tmp_path}", "--train.resume=true"])
    other_lr = load_config(None, [f"--run_dir={tmp_path}", "--train.lr=0.5"])
    assert pipeline.stage_key("train", base) == pipeline.stage_key("train", resumed)
    assert pipeline.stage_key("train", base) != pipeline.stage_key("train", other_lr)
    # the validation ranking selects the best epoch, so it is part of the train stage's key
    dense = [f"--run_dir={tmp_path}", "--model.dense_loss_weight=1"]
    by_mode = {
        mode: pipeline.stage_key("train", load_config(None, [*dense, f"--decode.ranking={mode}"]))
        for mode in ("generative", "dense", "hybrid")
    }
    assert len(set(by_mode.values())) == 3
    pinned = load_config(None, [*dense, "--decode.ranking=hybrid", "--decode.valid_ranking=dense"])
    assert pipeline.stage_key("train", pinned) != by_mode["hybrid"]


def test_validation_decoding_is_part_of_the_train_key_resolved(tmp_path):
    """Validation decodes with decode.steps and decode.order unless decode.valid_steps /
    decode.valid_order pin them: a test-time change keeps the model only when they are pinned."""

    def train_key(*overrides: str) -> str:
        config = load_config(None, [f"--run_dir={tmp_path}", "--tokenize.num_heads=4", *overrides])
        return pipeline.stage_key("train", config)

    assert train_key("--decode.steps=1") != train_key("--decode.steps=4")
    assert train_key("--decode.order=l2r") != train_key("--decode.order=adaptive")
    pinned = ["--decode.valid_steps=4", "--decode.valid_order=adaptive"]
    assert train_key("--decode.steps=1", "--decode.order=l2r", *pinned) == train_key(
        "--decode.steps=4", "--decode.order=adaptive"
    )
    with pytest.raises(ConfigError, match="decode.valid_steps=3 must divide tokenize.num_heads=4"):
        load_config(None, ["--tokenize.num_heads=4", "--decode.valid_steps=3"])


def test_dense_head_makes_the_embeddings_an_input_of_train_and_evaluate(tmp_path):
    from distributed_rec.artifacts import RunPaths
    from distributed_rec.config import load_config
    from distributed_rec.pipeline import _stage_inputs

    paths = RunPaths(tmp_path)
    plain = load_config(None, [f"--run_dir={tmp_path}"])
    dense = load_config(None, [f"--run_dir={tmp_path}", "--model.dense_loss_weight=1"])
    reported = load_config(None, [f"--run_dir={tmp_path}", "--train.report_test=true"])
    for stage in ("train", "evaluate"):
        assert paths.item_embeddings not in _stage_inputs(stage, paths, plain)
        assert paths.item_embeddings in _stage_inputs(stage, paths, dense)
    assert paths.eval_split("test") not in _stage_inputs("train", paths, plain)
    assert paths.eval_split("test") in _stage_inputs("train", paths, reported)
