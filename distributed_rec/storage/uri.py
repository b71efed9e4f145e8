"""`s3://bucket/prefix` run directories: the pyarrow S3 filesystem, checked, and the local
staging folder that mirrors it.

Credentials are never passed around or stored: each process builds its own filesystem from the
environment (`AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN`, or the AWS
SDK's other default sources when those are unset). `AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`
points at another S3 server (MinIO, Ceph, a test server); `AWS_REGION` or `AWS_DEFAULT_REGION`
names the region (default us-east-1). Only the URI, never the filesystem object, goes into
configs, Ray tasks and launched processes.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from distributed_rec.errors import DistributedRecError

SCHEMES = ("s3",)
STAGING_ENV = "DISTRIBUTED_REC_STAGING_DIR"
"""Folder under which each remote run directory gets its local mirror (default
~/.cache/distributed_rec/staging)."""
_ENDPOINT_ENVS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
_REGION_ENVS = ("AWS_REGION", "AWS_DEFAULT_REGION")


class StorageError(DistributedRecError):
    """The object store cannot be reached, the bucket is missing, or a transfer failed."""


def is_remote(run_dir: str | os.PathLike[str]) -> bool:
    """True for `scheme://...` run directories (anything but a local path)."""
    return (
        isinstance(run_dir, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", run_dir) is not None
    )


@dataclass(frozen=True)
class RemoteRoot:
    """A parsed `s3://bucket/prefix`: `path` is "bucket/prefix" as pyarrow's S3 filesystem names it."""

    uri: str
    bucket: str
    prefix: str

    @property
    def path(self) -> str:
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    def child(self, relative: str) -> str:
        """The filesystem path of `relative` (a POSIX path inside the run directory)."""
        return f"{self.path}/{relative}" if relative not in ("", ".") else self.path


def parse_uri(uri: str) -> RemoteRoot:
    """`s3://bucket/some/prefix` -> RemoteRoot; other schemes and malformed URIs are errors."""
    parts = urlsplit(uri)
    if parts.scheme.lower() not in SCHEMES:
        raise StorageError(
            f"run_dir={uri!r}: scheme {parts.scheme!r} is not supported "
            f"(use a local path or {' / '.join(s + '://bucket/prefix' for s in SCHEMES)})"
        )
    if parts.query or parts.fragment or not parts.netloc:
        raise StorageError(f"run_dir={uri!r}: expected s3://bucket/prefix (no query, no fragment)")
    prefix = parts.path.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise StorageError(f"run_dir={uri!r}: the prefix has an empty, '.' or '..' component")
    return RemoteRoot(
        uri=f"s3://{parts.netloc}/{prefix}".rstrip("/"), bucket=parts.netloc, prefix=prefix
    )


def endpoint() -> str | None:
    """The S3 endpoint override from the environment (None: AWS itself)."""
    return next((os.environ[k] for k in _ENDPOINT_ENVS if os.environ.get(k)), None)


def filesystem() -> Any:
    """A pyarrow S3FileSystem configured from the environment (one per process and settings)."""
    settings = (
        endpoint(),
        next((os.environ[k] for k in _REGION_ENVS if os.environ.get(k)), "us-east-1"),
        os.environ.get("AWS_ACCESS_KEY_ID"),
        os.environ.get("AWS_SECRET_ACCESS_KEY"),
        os.environ.get("AWS_SESSION_TOKEN"),
    )
    return _filesystem(*settings)


@functools.lru_cache(maxsize=4)
def _filesystem(
    url: str | None,
    region: str,
    access_key: str | None,
    secret_key: str | None,
    session_token: str | None,
) -> Any:
    from pyarrow import fs

    options: dict[str, Any] = {"region": region}
    if url:
        split = urlsplit(url)
        options["endpoint_override"] = split.netloc or split.path
        options["scheme"] = split.scheme or "https"
    if access_key and secret_key:  # else the SDK's own chain (config files, instance roles)
        options.update(access_key=access_key, secret_key=secret_key, session_token=session_token)
    return fs.S3FileSystem(**options)


def where() -> str:
    """The server, for messages: the endpoint override or "AWS S3"."""
    return endpoint() or "AWS S3"


def check_bucket(root: RemoteRoot) -> None:
    """Fail early, naming the URI, when the bucket is missing or cannot be read."""
    from pyarrow import fs

    try:
        info = filesystem().get_file_info(root.bucket)
    except OSError as err:
        raise StorageError(
            f"run_dir={root.uri!r}: cannot reach {where()} ({_first_line(err)})"
        ) from None
    if info.type == fs.FileType.NotFound:
        raise StorageError(
            f"run_dir={root.uri!r}: bucket {root.bucket!r} does not exist on {where()}; "
            "create it first (the run never creates buckets)"
        )


def staging_dir(root: RemoteRoot) -> Path:
    """The local mirror of `root`: <staging>/<server>/<bucket>/<prefix>, the same path in every
    process of this machine (launched ranks and Ray workers inherit the environment)."""
    base = os.environ.get(STAGING_ENV) or Path.home() / ".cache" / "distributed_rec" / "staging"
    server = re.sub(r"[^A-Za-z0-9.-]+", "_", urlsplit(endpoint() or "").netloc or "aws")
    return Path(base).expanduser().absolute() / server / root.bucket / root.prefix


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
