"""Files are never lost or half-written: atomic writes, no silent overwrites, exclusive folders.
Standard library only (the runtime and every command use it).

The rule every command follows: a command never deletes or replaces a user's file it did not
create in this run unless ``--force`` is given; writes are atomic (temp file in the same folder,
then ``os.replace``); run folders are created exclusively.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = ["ExistsError", "atomic_write_bytes", "atomic_write_text", "atomic_writer", "exclusive_dir",
           "file_sha256", "refuse_existing"]


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, read in 1 MiB chunks (hashlib only: callable before torch is imported)."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class ExistsError(FileExistsError):
    """The output exists and ``--force`` was not given (the message says what to do)."""


def refuse_existing(path: str | Path, force: bool, what: str = "output", flag: str = "--force") -> Path:
    """``path`` as a Path; :class:`ExistsError` if it exists and ``force`` is False."""
    p = Path(path)
    if p.exists() and not force:
        raise ExistsError(f"{p}: {what} already exists; choose another path or pass {flag} to replace it")
    return p


@contextmanager
def atomic_writer(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file next to ``path``; on success it replaces ``path`` in one step, on any
    error (or interrupt) it is removed and ``path`` is untouched."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_writer(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_writer(path, "w") as fh:
        fh.write(text)
    return Path(path)


def write_table_and_json(out: str | Path | None, text: str, data: Any) -> None:
    """A benchmark's output: print the Markdown ``text``; with ``out``, write it there and ``data`` as JSON beside it
    (``.json``), each atomically."""
    print(text)
    if out:
        atomic_write_text(Path(out), text)
        atomic_write_text(Path(out).with_suffix(".json"), json.dumps(data, indent=1))


def exclusive_dir(parent: str | Path, name: str, suffix: Callable[[int], str] = lambda k: f"-{k}") -> Path:
    """Create ``parent/name`` exclusively (``mkdir`` without ``exist_ok``); if it exists, the first
    free ``name + suffix(k)``, k = 2, 3, …. Two processes can never get the same folder."""
    parent = Path(parent)
    parent.mkdir(parents=True, exist_ok=True)
    k = 1
    while True:
        p = parent / (name if k == 1 else name + suffix(k))
        try:
            p.mkdir()
            return p
        except FileExistsError:
            k += 1
