"""The object-store mirror of a run directory against a moto S3 server on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from s3_support import s3_server, use_server

from distributed_rec.artifacts import RunPaths
from distributed_rec.cli import main
from distributed_rec.storage.uri import StorageError, is_remote, parse_uri

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def server():
    with s3_server() as running:
        yield running


@pytest.fixture
def bucket(server, monkeypatch, tmp_path) -> str:
    use_server(monkeypatch, server, tmp_path / "staging")
    return server.create_bucket()


def test_uris_are_parsed_and_checked() -> None:
    assert is_remote("s3://b/p") and not is_remote("runs/x") and not is_remote("/abs/s3:/x")
    root = parse_uri("s3://bucket/a/b/")
    assert (root.bucket, root.prefix, root.uri, root.child("x/y")) == (
        "bucket",
        "a/b",
        "s3://bucket/a/b",
        "bucket/a/b/x/y",
    )
    for bad, message in [
        ("gs://b/p", "scheme 'gs' is not supported"),
        ("s3:///p", "expected s3://bucket/prefix"),
        ("s3://b/a/../c", "'..'"),
    ]:
        with pytest.raises(StorageError, match=message):
            parse_uri(bad)


def test_publish_and_fetch_mirror_both_ways(server, bucket, tmp_path) -> None:
    paths = RunPaths.of(f"s3://{bucket}/run")
    assert paths.remote == f"s3://{bucket}/run" and paths.root.is_relative_to(tmp_path / "staging")
    folder = paths.stage_dir("prepare")
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha")
    (folder / "sub" / "b.bin").write_bytes(os.urandom(3 << 20))
    (folder / ".x.json.tmp-12").write_text("partial")  # never sent
    paths.publish(folder)
    assert set(server.objects(bucket, "run")) == {"prepare/a.txt", "prepare/sub/b.bin"}

    # another machine: an empty mirror gets the same files, with the object's mtime
    other = RunPaths(tmp_path / "other", remote=paths.remote)
    other.fetch(other.stage_dir("prepare"))
    assert (other.stage_dir("prepare") / "sub" / "b.bin").read_bytes() == (
        folder / "sub" / "b.bin"
    ).read_bytes()

    # unchanged files are not sent again; a rewritten one is, a removed one is deleted remotely
    mirror = paths._mirrored((folder,))[0][0]
    assert mirror.publish("prepare") == 0
    (folder / "a.txt").write_text("ALPHA")  # same size, new content
    shutil.rmtree(folder / "sub")
    assert mirror.publish("prepare") == 1
    assert server.objects(bucket, "run") == {"prepare/a.txt": b"ALPHA"}

    # fetch replaces the changed file and deletes what the store no longer has
    assert other._mirrored((other.root,))[0][0].fetch("prepare") == 1
    files = sorted(p.relative_to(other.root).as_posix() for p in other.root.rglob("*"))
    assert [f for f in files if Path(other.root, f).is_file()] == ["prepare/a.txt"]
    assert (other.stage_dir("prepare") / "a.txt").read_text() == "ALPHA"

    # a path gone on both sides, and prune of entries removed locally
    (folder / "old").mkdir()
    (folder / "old" / "x").write_text("x")
    paths.publish(folder)
    (folder / "old" / "x").unlink()
    (folder / "old").rmdir()
    paths.prune(folder)
    assert set(server.objects(bucket, "run")) == {"prepare/a.txt"}
    paths.publish(paths.stage_dir("nothing"))
    other.fetch(other.stage_dir("prepare"))
    assert (other.stage_dir("prepare") / "a.txt").read_text() == "ALPHA"


def test_a_missing_bucket_is_named_and_nothing_is_written(bucket, tmp_path, capsys) -> None:
    uri = "s3://no-such-bucket-here/run"
    assert main(["prepare", "--config=debug", f"--run_dir={uri}"]) == 2
    err = capsys.readouterr().err
    assert f"run_dir='{uri}': bucket 'no-such-bucket-here' does not exist" in err
    assert not (tmp_path / "staging").exists()
    assert main(["prepare", "--config=debug", "--run_dir=gs://b/run"]) == 2
    assert "scheme 'gs' is not supported" in capsys.readouterr().err


def test_an_unreachable_server_is_a_clear_error(monkeypatch, tmp_path, capsys) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("DISTRIBUTED_REC_STAGING_DIR", str(tmp_path))
    assert main(["prepare", "--config=debug", "--run_dir=s3://b/run"]) == 2
    err = capsys.readouterr().err
    assert f"run_dir='s3://b/run': cannot reach http://127.0.0.1:{port}" in err
