"""Mirror parts of a run directory between an object store and its local staging folder.

`fetch(rel)` makes the local copy of `rel` (a file or a folder) equal the remote one, `publish(rel)`
the remote equal the local one; both delete what the other side does not have. A file is
transferred only when it differs by the quick check of rsync: size and modification time. After
each transfer the local file's mtime is set to the object's Last-Modified, floored to the second
(the resolution of S3); a file written locally since has a fractional mtime and is sent again.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from distributed_rec.storage.uri import RemoteRoot, StorageError, filesystem, where

THREADS = 8
_CHUNK = 8 << 20
_SECOND = 1_000_000_000


def _is_partial(name: str) -> bool:
    """Temporary files of atomic writes (ours and the stages'): never transferred."""
    return name.startswith(".") and (".tmp" in name or ".part-" in name)


class Mirror:
    """The object-store side (`remote`) and the local side (`local`) of one run directory."""

    def __init__(self, remote: RemoteRoot, local: Path) -> None:
        self.remote, self.local = remote, local
        self.fs = filesystem()

    # listings -------------------------------------------------------------------------------
    def _remote_files(self, relative: str) -> tuple[str, dict[str, Any]]:
        """("file" | "dir" | "", {relative name inside -> FileInfo}) of the remote side."""
        from pyarrow import fs

        base = self.remote.child(relative)
        info = self._call(f"list {self._uri(relative)}", self.fs.get_file_info, base)
        if info.type == fs.FileType.File:
            return "file", {"": info}
        if info.type != fs.FileType.Directory:
            return "", {}
        selector = fs.FileSelector(base, recursive=True, allow_not_found=True)
        infos = self._call(f"list {self._uri(relative)}", self.fs.get_file_info, selector)
        files = {
            i.path[len(base) + 1 :]: i
            for i in infos
            if i.type == fs.FileType.File and not _is_partial(i.base_name)
        }
        return "dir", files

    @staticmethod
    def _local_files(path: Path) -> tuple[str, dict[str, os.stat_result]]:
        if path.is_file():
            return "file", {"": path.stat()}
        if not path.is_dir():
            return "", {}
        files = {
            p.relative_to(path).as_posix(): p.stat()
            for p in path.rglob("*")
            if p.is_file() and not _is_partial(p.name)
        }
        return "dir", files

    # the two directions ---------------------------------------------------------------------
    def fetch(self, relative: str) -> int:
        """Make local `relative` equal the remote one; returns the number of files downloaded."""
        kind, remote = self._remote_files(relative)
        target = self.local / relative
        local_kind, local = self._local_files(target)
        if kind != local_kind and local_kind:
            _remove_local(target)
            local = {}
        for name in set(local) - set(remote):
            (target / name).unlink(missing_ok=True)
        wanted = [n for n, info in remote.items() if not _same(local.get(n), info)]
        self._parallel(lambda n: self._download(relative, n, remote[n]), wanted)
        return len(wanted)

    def publish(self, relative: str, delete: bool = True) -> int:
        """Make remote `relative` equal the local one; returns the number of files uploaded.

        `delete=False` only adds and replaces files (several machines writing parts of one
        folder, e.g. the ZeRO shards of a checkpoint)."""
        kind, remote = self._remote_files(relative)
        source = self.local / relative
        local_kind, local = self._local_files(source)
        base = self.remote.child(relative)
        if delete and kind == "file" and local_kind != "file":
            self._call(f"delete {self._uri(relative)}", self.fs.delete_file, base)
            remote = {}
        elif delete and kind == "dir" and local_kind != "dir":
            self._call(f"delete {self._uri(relative)}", self.fs.delete_dir, base)
            remote = {}
        if delete:
            stale = _deletions(source, set(remote) - set(local))
            self._parallel(lambda n: self._delete(relative, n), stale)
        wanted = [n for n, st in local.items() if not _same(st, remote.get(n))]
        self._parallel(lambda n: self._upload(relative, n, local[n], remote.get(n)), wanted)
        return len(wanted)

    def prune(self, relative: str) -> list[str]:
        """Delete the remote entries directly inside folder `relative` that are absent locally
        (old checkpoints); returns their names."""
        from pyarrow import fs

        base = self.remote.child(relative)
        selector = fs.FileSelector(base, recursive=False, allow_not_found=True)
        infos = self._call(f"list {self._uri(relative)}", self.fs.get_file_info, selector)
        gone = []
        for info in infos:
            if _is_partial(info.base_name) or (self.local / relative / info.base_name).exists():
                continue
            remove = (
                self.fs.delete_dir if info.type == fs.FileType.Directory else self.fs.delete_file
            )
            self._call(f"delete {self._uri(relative, info.base_name)}", remove, info.path)
            gone.append(info.base_name)
        return gone

    # one file -------------------------------------------------------------------------------
    def _download(self, relative: str, name: str, info: Any) -> None:
        target = _join(self.local / relative, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.part-{os.getpid()}-{id(info)}")
        try:
            with (
                self._call(
                    f"read {self._uri(relative, name)}", self.fs.open_input_stream, info.path
                ) as source,
                tmp.open("wb") as sink,
            ):
                self._call(
                    f"read {self._uri(relative, name)}", shutil.copyfileobj, source, sink, _CHUNK
                )
            os.utime(tmp, ns=(_remote_ns(info), _remote_ns(info)))
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)

    def _upload(
        self, relative: str, name: str, before: os.stat_result, previous: Any = None
    ) -> None:
        """Send one file. A new version must not carry the previous one's Last-Modified second
        (a mirror holding that version would take it for unchanged): sent again a second later."""
        source = _join(self.local / relative, name)
        path = _join_remote(self.remote.child(relative), name)
        what = f"write {self._uri(relative, name)}"
        for _ in range(3):
            with (
                source.open("rb") as handle,
                self._call(what, self.fs.open_output_stream, path) as sink,
            ):
                self._call(what, shutil.copyfileobj, handle, sink, _CHUNK)
            info = self._call(what, self.fs.get_file_info, path)
            if previous is None or _remote_ns(info) != _remote_ns(previous):
                break
            time.sleep(1.0)
        after = source.stat()
        if (after.st_ino, after.st_size, after.st_mtime_ns) == (
            before.st_ino,
            before.st_size,
            before.st_mtime_ns,
        ):  # unchanged while it was sent: mark it as in sync
            os.utime(source, ns=(after.st_atime_ns, _remote_ns(info)))

    def _delete(self, relative: str, name: str) -> None:
        """Delete a file, or a whole folder (`name` ending in "/")."""
        path = _join_remote(self.remote.child(relative), name.rstrip("/"))
        remove = self.fs.delete_dir if name.endswith("/") else self.fs.delete_file
        self._call(f"delete {self._uri(relative, name)}", remove, path)

    # helpers --------------------------------------------------------------------------------
    def _uri(self, relative: str, name: str = "") -> str:
        return "/".join(p for p in (self.remote.uri, relative, name) if p not in ("", "."))

    @staticmethod
    def _call(what: str, function: Callable[..., Any], *args: Any) -> Any:
        try:
            return function(*args)
        except OSError as err:
            text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise StorageError(f"cannot {what} on {where()}: {text}") from None

    @staticmethod
    def _parallel(function: Callable[[str], None], names: Iterable[str]) -> None:
        names = sorted(names)
        if len(names) <= 1:
            for name in names:
                function(name)
            return
        with ThreadPoolExecutor(max_workers=min(THREADS, len(names))) as pool:
            for future in [pool.submit(function, n) for n in names]:
                future.result()


def _deletions(source: Path, stale: set[str]) -> list[str]:
    """What to delete remotely for the `stale` files: a file whose folder still exists locally,
    else the topmost folder gone locally (as "name/"), in one request. pyarrow leaves a
    zero-byte folder marker ("prefix/") beside what it deletes; listings skip those."""
    deletions: set[str] = set()
    for name in stale:
        parts = name.split("/")
        gone = next(
            (i for i in range(1, len(parts)) if not (source / "/".join(parts[:i])).is_dir()), None
        )
        deletions.add(name if gone is None else "/".join(parts[:gone]) + "/")
    return sorted(deletions)


def _remote_ns(info: Any) -> int:
    """The object's Last-Modified in ns, floored to the second (listing and HEAD agree there)."""
    return info.mtime_ns // _SECOND * _SECOND


def _same(local: os.stat_result | None, remote: Any) -> bool:
    return (
        local is not None
        and remote is not None
        and local.st_size == remote.size
        and local.st_mtime_ns == _remote_ns(remote)
    )


def _join(base: Path, name: str) -> Path:
    return base / name if name else base


def _join_remote(base: str, name: str) -> str:
    return f"{base}/{name}" if name else base


def _remove_local(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
