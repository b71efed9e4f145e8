"""An S3 server for the tests: moto's server mode in a thread of the test process, listening on
127.0.0.1 only, with made-up credentials in the environment the stages read them from."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCESS_KEY = "AKIATESTONLY" + "X" * 8
SECRET_KEY = "secret-" + uuid.uuid4().hex  # grepped for in every artifact


@dataclass
class S3Server:
    endpoint: str

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
        )

    def create_bucket(self) -> str:
        name = f"runs-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def objects(self, bucket: str, prefix: str = "") -> dict[str, bytes]:
        """Every object under `prefix`: key relative to it -> content. The zero-byte folder
        markers pyarrow leaves where it deleted (keys ending in "/") are left out."""
        client = self.client()
        found: dict[str, bytes] = {}
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for entry in page.get("Contents", []):
                if entry["Key"].endswith("/"):
                    continue
                body = client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
                found[entry["Key"][len(prefix) :].lstrip("/")] = body
        return found


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """moto's ThreadedMotoServer on a free loopback port, stopped on exit."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        assert host == "127.0.0.1"
        yield S3Server(f"http://{host}:{port}")
    finally:
        server.stop()


def use_server(monkeypatch: pytest.MonkeyPatch, server: S3Server, staging: Path) -> None:
    """The environment a stage reads: endpoint, region, credentials, staging folder."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", server.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setenv("DISTRIBUTED_REC_STAGING_DIR", str(staging))
