"""Where batch files live: the local disk, or a file system pyarrow reaches (HDFS, S3, GCS,
Azure), named by URI.

A Spark job's tasks read their share of the input and write their part of the output
themselves, so every path they are given must name the same file on every machine: a shared
disk or one of those file systems.  Local paths keep plain file calls (the local engine's
speed); anything else goes through pyarrow's file system for its scheme.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..atomic import Staged

# Hadoop's names for S3 that pyarrow knows as s3://.
SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3"}
SUCCESS = "_SUCCESS"


class StorageError(OSError):
    """A location that cannot be reached or read; the message says which and why."""


def _is_local(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or len(scheme) == 1        # a one-letter scheme is a drive letter


@dataclass(frozen=True)
class Location:
    """A file or folder: `uri` as the user wrote it (what messages show), `path` within
    `filesystem` (None: the local disk)."""

    uri: str
    path: str
    filesystem: pafs.FileSystem | None = None

    @classmethod
    def of(cls, uri: str | Path) -> "Location":
        uri = str(uri)
        if _is_local(uri):                  # absolute: an executor's working folder is not the driver's
            return cls(uri, os.path.abspath(urlparse(uri).path if uri.startswith("file:") else uri))
        scheme = urlparse(uri).scheme
        known = SCHEME_ALIASES.get(scheme, scheme) + uri[len(scheme):]
        try:
            filesystem, path = pafs.FileSystem.from_uri(known)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise StorageError(f"{uri}: cannot reach its file system ({reason(exc)})") from None
        return cls(uri, path, filesystem)

    @property
    def local(self) -> bool:
        return self.filesystem is None

    @property
    def address(self) -> str:
        """What names this file in any process on any machine that sees it (a task's, say)."""
        return self.path if self.local else self.uri

    def __str__(self) -> str:
        return self.uri

    def child(self, name: str) -> "Location":
        return Location(f"{self.uri.rstrip('/')}/{name}", f"{self.path.rstrip('/')}/{name}", self.filesystem)

    def _info(self) -> pafs.FileInfo:
        return (self.filesystem or pafs.LocalFileSystem()).get_file_info(self.path)

    def is_dir(self) -> bool:
        return self._info().type == pafs.FileType.Directory

    def exists(self) -> bool:
        return self._info().type != pafs.FileType.NotFound

    def size(self) -> int:
        return self._info().size

    def files(self) -> list["Location"]:
        """The file itself, or a folder's files in name order (names starting with "_" or "."
        are a writer's markers and left out, as Hadoop does)."""
        info = self._info()
        if info.type == pafs.FileType.NotFound:
            raise StorageError(f"{self.uri}: does not exist")
        if info.type != pafs.FileType.Directory:
            return [self]
        listed = (self.filesystem or pafs.LocalFileSystem()).get_file_info(pafs.FileSelector(self.path))
        names = sorted(entry.base_name for entry in listed
                       if entry.type == pafs.FileType.File and not entry.base_name.startswith(("_", ".")))
        return [self.child(name) for name in names]

    def open(self):
        """The file for reading at any offset (`seek`, `readinto`, `read`)."""
        if self.local:
            return open(self.path, "rb", buffering=0)
        return self.filesystem.open_input_file(self.path)

    def first_line(self) -> bytes:
        return next(self.lines(), b"")

    def lines(self):
        """The file's lines, read in order (for finding the first line that is not UTF-8)."""
        if self.local:
            with open(self.path, "rb") as handle:
                yield from handle
            return
        with self.filesystem.open_input_stream(self.path) as raw:
            yield from io.BufferedReader(raw)

    def parquet(self, **options) -> pq.ParquetFile:
        return pq.ParquetFile(self.path if self.local else self.filesystem.open_input_file(self.path), **options)

    def beside(self, name: str) -> "Location":
        """Another file in the same folder."""
        parent_uri, parent_path = self.uri.rsplit("/", 1)[0], self.path.rsplit("/", 1)[0]
        return Location(f"{parent_uri}/{name}", f"{parent_path}/{name}", self.filesystem)

    def output_stream(self):
        return self.filesystem.open_output_stream(self.path)

    def move_to(self, other: "Location") -> None:
        self.filesystem.move(self.path, other.path)

    def delete(self) -> None:
        if self.exists():
            self.filesystem.delete_file(self.path)


class PartFolder:
    """A folder of Parquet part files that appears whole.  On the local disk it is staged beside
    the target and renamed into place (atomic.Staged); elsewhere the target is emptied first and
    a `_SUCCESS` file, as Hadoop's committers write, marks it complete.  Parts are written by
    files.Sink, under a name of their own until complete, so a task run twice leaves one part."""

    def __init__(self, target: Location) -> None:
        self.target = target
        self._staged = None
        if target.local:
            self._staged = Staged(Path(target.path), folder=True)
            Path(self._staged.path).mkdir()
            self.where = Location(str(self._staged.path), str(self._staged.path))
        else:
            filesystem = target.filesystem
            if target.exists():
                filesystem.delete_dir_contents(target.path) if target.is_dir() else filesystem.delete_file(target.path)
            filesystem.create_dir(target.path)
            self.where = target

    def commit(self) -> None:
        if self._staged is not None:
            self._staged.commit()
        else:
            with self.target.filesystem.open_output_stream(self.target.child(SUCCESS).path):
                pass

    def discard(self) -> None:
        if self._staged is not None:
            self._staged.discard()
        else:
            self.target.filesystem.delete_dir_contents(self.target.path, missing_dir_ok=True)


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def reason(exc: BaseException) -> str:
    """An error's first line, for a message of one line."""
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
