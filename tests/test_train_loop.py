"""The training loop in one process: exact resume, safe checkpoints, metrics, early stopping."""

from __future__ import annotations

import json
import os

import pytest
import torch
from train_support import make_tiny_run, tiny_config

from distributed_rec.artifacts import RunPaths
from distributed_rec.errors import ArtifactError
from distributed_rec.model.weights import load_best_model
from distributed_rec.train.checkpoint import MARKER
from distributed_rec.train.loop import train_worker

os.environ.setdefault("OMP_NUM_THREADS", "1")


def final_weights(paths: RunPaths) -> dict[str, torch.Tensor]:
    tag = json.loads((paths.checkpoints / MARKER).read_text())["tag"]
    state = torch.load(paths.checkpoints / tag / "mp_rank_00_model_states.pt", weights_only=True)
    return state["module"]


@pytest.mark.timeout(120)
def test_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path):
    overrides = ("--train.max_steps=12", "--model.dropout=0.1", "--train.checkpoint_every_steps=3")
    straight = make_tiny_run(tmp_path / "straight")  # 92 samples: 5 steps per epoch
    summary = train_worker(tiny_config(straight.root, *overrides))
    assert summary["steps"] == 12 and summary["epochs_run"] == 2

    killed = make_tiny_run(tmp_path / "killed")
    assert train_worker(tiny_config(killed.root, *overrides), stop_after_step=7) == {
        "stopped_at_step": 7
    }
    resumed = train_worker(tiny_config(killed.root, *overrides, "--train.resume=true"))
    assert resumed["steps"] == 12
    assert resumed["last_loss"] == summary["last_loss"]
    expected, actual = final_weights(straight), final_weights(killed)
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    # the best model (never validated: the final weights) loads weights-only in eval mode
    model = load_best_model(tiny_config(killed.root))
    assert not model.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, actual[f"model.{name}"]), name


@pytest.mark.timeout(120)
def test_whole_sequence_resume_after_a_kill_equals_an_uninterrupted_run(tmp_path):
    overrides = (
        "--model.attention=inter_item_causal",  # whole-sequence training by default
        "--train.global_batch_size=8",
        "--train.micro_batch_size=2",
        "--train.max_steps=7",
        "--model.dropout=0.1",
        "--train.checkpoint_every_steps=2",
    )
    straight = make_tiny_run(tmp_path / "straight")  # 24 windows: 3 steps per epoch
    summary = train_worker(tiny_config(straight.root, *overrides))
    assert summary["whole_sequence"] and summary["steps"] == 7 and summary["epochs_run"] == 2
    assert summary["targets_per_s"] > summary["samples_per_s"]  # several targets per window
    killed = make_tiny_run(tmp_path / "killed")
    train_worker(tiny_config(killed.root, *overrides), stop_after_step=4)
    resumed = train_worker(tiny_config(killed.root, *overrides, "--train.resume=true"))
    assert resumed["last_loss"] == summary["last_loss"]
    expected, actual = final_weights(straight), final_weights(killed)
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


@pytest.mark.timeout(120)
def test_whole_sequence_needs_the_windows_of_prepare(tmp_path):
    import shutil

    paths = make_tiny_run(tmp_path)
    shutil.rmtree(paths.train_windows)
    config = tiny_config(paths.root, "--model.attention=inter_item_causal", "--train.max_steps=1")
    with pytest.raises(ArtifactError, match="prepare --force.*whole_sequence=false"):
        train_worker(config)
    no_windows = tiny_config(
        paths.root,
        "--model.attention=inter_item_causal",
        "--train.whole_sequence=false",
        "--train.max_steps=1",
    )
    assert not train_worker(no_windows)["whole_sequence"]


@pytest.mark.timeout(120)
def test_damaged_or_unsafe_checkpoints_are_refused(tmp_path):
    paths = make_tiny_run(tmp_path)
    config = tiny_config(paths.root, "--train.max_steps=2")
    train_worker(config)
    resume = tiny_config(paths.root, "--train.max_steps=4", "--train.resume=true")
    tag_dir = paths.checkpoints / json.loads((paths.checkpoints / MARKER).read_text())["tag"]

    model_file = tag_dir / "mp_rank_00_model_states.pt"
    original = model_file.read_bytes()
    witness = tmp_path / "pwned"
    torch.save({"module": {}, "payload": Exploit(str(witness))}, model_file)
    with pytest.raises(ArtifactError, match="damaged or incompatible checkpoint"):
        train_worker(resume)
    assert not witness.exists()

    model_file.write_bytes(original[: len(original) // 2])
    with pytest.raises(ArtifactError, match=f"{tag_dir.name}: damaged"):
        train_worker(resume)

    (paths.checkpoints / MARKER).write_text("{not json")
    with pytest.raises(ArtifactError, match="latest.json is damaged"):
        train_worker(resume)


class Exploit:
    """Unpickling this would create a file: a weights-only load must refuse it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_best_model_errors(tmp_path):
    paths = make_tiny_run(tmp_path)
    config = tiny_config(paths.root)
    with pytest.raises(ArtifactError, match="model.pt is missing: run the train stage"):
        load_best_model(config)
    paths.best_model.parent.mkdir(parents=True)
    paths.best_model.write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="model.pt is damaged"):
        load_best_model(config)
    torch.save({"something": torch.zeros(1)}, paths.best_model)
    with pytest.raises(ArtifactError, match="does not match the configured model"):
        load_best_model(config)


@pytest.mark.timeout(120)
def test_validation_early_stopping_metrics_and_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    paths = make_tiny_run(tmp_path)
    config = tiny_config(
        paths.root,
        "--train.lr=1e-9",  # nothing improves: patience 1 stops after the 2nd validation
        "--train.max_epochs=5",
        "--train.eval_every_epochs=1",
        "--train.patience=1",
    )
    summary = train_worker(config)
    saved = json.loads(paths.train_metrics.read_text())
    assert saved["epochs_run"] == 2 and saved["stopped_early"] is True
    assert saved["best_epoch"] == 1 and saved["steps"] == 10
    assert set(saved["best_metrics"]) == {"recall@1", "recall@5", "recall@10", "ndcg@5", "ndcg@10"}
    for key in ("tokens_per_s", "samples_per_s", "peak_rss_mb", "seconds", "num_parameters"):
        assert saved[key] > 0, key
    assert summary["best_metrics"] == saved["best_metrics"]
    assert paths.best_model.exists()
    events = EventAccumulator(str(paths.tensorboard("train")))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    expected = {"train/loss", "train/item", "train/history", "train/lr", "train/grad_norm"}
    expected |= {"perf/tokens_per_s", "perf/samples_per_s", "valid/ndcg@10", "valid/recall@10"}
    assert expected <= tags, expected - tags
    assert len(events.Scalars("train/loss")) == 10

    # resuming a finished run trains no further and reports the same result
    again = train_worker(tiny_config(paths.root, "--train.resume=true"))
    assert again["steps"] == 10 and again["best_metrics"] == saved["best_metrics"]


def test_cli_train_stage_and_bad_batch_size(tmp_path, capsys):
    from distributed_rec.cli import main

    paths = make_tiny_run(tmp_path)
    args = _tiny_cli_args(paths.root)
    assert main(["train", *args, "--train.max_steps=2"]) == 0
    out = capsys.readouterr().out  # DeepSpeed prints its own lines before the summary
    printed = json.loads(out[out.index("[\n") :])
    assert printed[0]["stage"] == "train" and printed[0]["steps"] == 2
    assert json.loads(paths.train_metrics.read_text())["steps"] == 2
    assert main(["train", *args, "--train.global_batch_size=15", "--force"]) == 2
    assert "global_batch_size=15 is not a multiple" in capsys.readouterr().err


def _tiny_cli_args(run_dir) -> list[str]:
    config = tiny_config(run_dir)
    return [
        f"--run_dir={run_dir}",
        "--device=cpu",
        f"--tokenize.codebook_size={config.tokenize.codebook_size}",
        f"--data.max_history={config.data.max_history}",
        f"--model.d_model={config.model.d_model}",
        f"--model.num_layers={config.model.num_layers}",
        f"--model.num_attention_heads={config.model.num_attention_heads}",
        f"--model.ffn_dim={config.model.ffn_dim}",
        "--train.global_batch_size=16",
        "--train.micro_batch_size=4",
        "--train.eval_every_epochs=1000",
    ]


def test_bf16_autocast_on_cpu_trains(tmp_path):
    paths = make_tiny_run(tmp_path)
    summary = train_worker(tiny_config(paths.root, "--train.max_steps=2", "--train.precision=bf16"))
    reference = train_worker(
        tiny_config(make_tiny_run(tmp_path / "fp32").root, "--train.max_steps=2")
    )
    # same batches and masks; bf16 matmuls only perturb the loss slightly
    assert summary["last_loss"] == pytest.approx(reference["last_loss"], rel=0.05)
    assert summary["last_loss"] != reference["last_loss"]
