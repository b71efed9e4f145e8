"""`--run_dir=s3://bucket/prefix`: every stage against a moto S3 server on 127.0.0.1.

The server runs in a thread of the test process; stages, Ray workers and DeepSpeed ranks reach
it through AWS_ENDPOINT_URL and read the made-up credentials from the environment, as on a
cluster. Each run directory is mirrored into a staging folder under tmp_path; a fresh staging
folder stands for another machine that has only the bucket.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch
from cluster_support import assert_same_weights, final_weights, launcher_env
from s3_support import ACCESS_KEY, SECRET_KEY, s3_server, use_server
from train_support import make_tiny_run, tiny_config

from distributed_rec import pipeline
from distributed_rec.artifacts import RunPaths
from distributed_rec.cli import main
from distributed_rec.storage.uri import STAGING_ENV, filesystem
from distributed_rec.train.checkpoint import MARKER
from distributed_rec.train.faults import KILL_RANK_ENV

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

TINY = [
    "--config=debug",
    "--data.synthetic_users=120",
    "--data.synthetic_items=60",
    "--data.synthetic_interactions=1200",
    "--tokenize.max_epochs=20",
    "--tokenize.patience=5",
    "--model.d_model=16",
    "--model.num_layers=1",
    "--model.num_attention_heads=2",
    "--model.ffn_dim=32",
    "--train.max_epochs=1",
    "--ray.num_cpus=2",
]
STEPS = ("--train.max_steps=8", "--train.zero_stage=2", "--train.checkpoint_every_steps=1")


@pytest.fixture(scope="module")
def server():
    with s3_server() as running:
        yield running


@pytest.fixture
def bucket(server, monkeypatch, tmp_path) -> str:
    use_server(monkeypatch, server, tmp_path / "staging")
    return server.create_bucket()


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _layout(names: set[str]) -> set[str]:
    """File names with TensorBoard's host/pid/time suffix normalised; training's local input
    cache (prepare/splits/.cache, written by the train stage beside its inputs) left out."""
    return {
        re.sub(r"events\.out\.tfevents\..*", "events.out.tfevents", n)
        for n in names
        if "/.cache/" not in n
    }


def _secret_free(blobs: dict[str, bytes]) -> None:
    for name, blob in blobs.items():
        assert SECRET_KEY.encode() not in blob, name
        assert ACCESS_KEY.encode() not in blob, name


@pytest.mark.timeout(900)
def test_debug_pipeline_on_s3_matches_a_local_run(server, bucket, tmp_path, monkeypatch, capfd):
    local = tmp_path / "local"
    assert main(["run", f"--run_dir={local}", *TINY]) == 0
    uri = f"s3://{bucket}/runs/debug"
    assert main(["run", f"--run_dir={uri}", *TINY]) == 0
    printed = capfd.readouterr()
    objects = server.objects(bucket, "runs/debug")
    expected, remote = (
        json.loads((local / "results.json").read_text()),
        json.loads(objects["results.json"]),
    )
    assert remote["run_dir"] == uri
    for split in ("valid", "test", "popularity"):
        assert remote["evaluate"][split] == expected["evaluate"][split], split
    assert remote["train"]["best_metrics"] == expected["train"]["best_metrics"]
    assert remote["tokenize"]["best_monitor"] == expected["tokenize"]["best_monitor"]
    assert json.loads(objects["config.json"])["run_dir"] == uri
    for stage in remote["stages"]:  # what the mirror cost around each stage (measured)
        assert stage["files_uploaded"] > 0, stage
        print(
            f"{stage['stage']}: {stage['seconds']:.1f} s, synced in {stage['sync_seconds']:.2f} s "
            f"({stage['files_downloaded']} files down, {stage['files_uploaded']} up)"
        )

    # the bucket holds exactly the files of the local run: every stage's artifacts, markers,
    # DeepSpeed checkpoints, best model, TensorBoard events, prediction shards, results
    assert _layout(set(objects)) == _layout(_files(local))
    for must in (
        "prepare/_DONE.json",
        "prepare/splits/train/part-00000.parquet",
        "embed/item_embeddings.parquet",
        "tokenize/tokenizer.pt",
        "train/checkpoints/latest.json",
        "train/best/model.pt",
        "evaluate/predictions/test/shard-00001.parquet",
        "evaluate/metrics.json",
        "results.md",
    ):
        assert must in objects, must
    assert any(n.startswith("tensorboard/train/events.out.tfevents") for n in objects)
    assert any(n.startswith("tensorboard/tokenize/events.out.tfevents") for n in objects)
    shard = "evaluate/predictions/test/shard-00000.parquet"  # Parquet read from the store
    assert pq.read_table(f"{bucket}/runs/debug/{shard}", filesystem=filesystem()).equals(
        pq.read_table(local / shard)
    )

    # no credential in any artifact, in the staging mirror or in what the run printed/logged
    _secret_free(objects)
    staging = tmp_path / "staging"
    _secret_free({p.as_posix(): p.read_bytes() for p in staging.rglob("*") if p.is_file()})
    _secret_free({"stdout": printed.out.encode(), "stderr": printed.err.encode()})

    # another machine, with only the bucket: every stage is current, the results are the same
    monkeypatch.setenv(STAGING_ENV, str(tmp_path / "staging-elsewhere"))
    assert main(["run", f"--run_dir={uri}", *TINY]) == 0
    again = json.loads(server.objects(bucket, "runs/debug")["results.json"])
    assert [s["skipped"] for s in again["stages"]] == [True] * 5
    assert again["evaluate"] == remote["evaluate"]


def _upload_tiny_run(uri: str, seed_root: Path) -> None:
    """A prepared and tokenized run directory (tests/train_support.py), put into the bucket."""
    seed = make_tiny_run(seed_root)
    RunPaths(seed.root, remote=uri).publish(seed.stage_dir("prepare"), seed.stage_dir("tokenize"))


def _bucket_weights(server, bucket: str, prefix: str) -> dict[str, torch.Tensor]:
    objects = server.objects(bucket, f"{prefix}/train/checkpoints")
    tag = json.loads(objects[MARKER])["tag"]
    blob = io.BytesIO(objects[f"{tag}/mp_rank_00_model_states.pt"])
    return torch.load(blob, weights_only=True)["module"]


@pytest.mark.timeout(600)
def test_training_killed_on_one_machine_resumes_from_s3_on_another(
    server, bucket, tmp_path, monkeypatch, capfd
):
    """DeepSpeed launcher, 2 processes, ZeRO-2, a checkpoint after every step: rank 1 is
    SIGKILLed before step 4; the checkpoints are in the bucket; a fresh staging folder (another
    machine) resumes from them and ends at the uninterrupted run's weights, bitwise."""
    launch = ("--train.launcher=deepspeed", "--train.num_procs=2")
    for key, value in launcher_env().items():
        monkeypatch.setenv(key, value)  # this venv's launcher, one thread per rank
    reference = make_tiny_run(tmp_path / "reference")
    summary = pipeline.run_stage("train", tiny_config(reference.root, *STEPS, *launch))
    assert summary["steps"] == 8

    uri = f"s3://{bucket}/runs/resume"
    _upload_tiny_run(uri, tmp_path / "seed")
    config = tiny_config(uri, *STEPS, *launch)  # type: ignore[arg-type]
    monkeypatch.setenv(KILL_RANK_ENV, "1:3")
    with pytest.raises(Exception, match=rf"step-00000003 in {uri}/train/checkpoints"):
        pipeline.run_stage("train", config)
    monkeypatch.delenv(KILL_RANK_ENV)
    checkpoints = server.objects(bucket, "runs/resume/train/checkpoints")
    assert json.loads(checkpoints[MARKER])["tag"] == "step-00000003"
    assert {n.split("/")[0] for n in checkpoints if n.startswith("step-")} == {
        "step-00000002",
        "step-00000003",
    }  # KEEP_LAST = 2: older ones were deleted from the bucket too
    assert "_DONE.json" not in server.objects(bucket, "runs/resume/train")

    monkeypatch.setenv(STAGING_ENV, str(tmp_path / "another-machine"))
    resumed = pipeline.run_stage("train", tiny_config(uri, *STEPS, *launch, "--train.resume=true"))  # type: ignore[arg-type]
    assert resumed["steps"] == 8 and resumed["resumed_from_world_size"] == 2
    assert resumed["last_loss"] == summary["last_loss"]
    assert_same_weights(_bucket_weights(server, bucket, "runs/resume"), final_weights(reference))
    train = server.objects(bucket, "runs/resume/train")
    assert "_DONE.json" in train and "checkpoints/zero_to_fp32.py" in train
    assert set(train) == _files(RunPaths.of(uri).stage_dir("train"))  # the mirror, exactly
    _secret_free(server.objects(bucket, "runs/resume"))
    printed = capfd.readouterr()  # the launcher's and both ranks' output included
    _secret_free({"stdout": printed.out.encode(), "stderr": printed.err.encode()})
