"""Atomic file writing: the one way monai_das writes a report, a CSV, a JSON file or a picture."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_file", "write_text_atomic", "write_json_atomic", "file_digest"]


@contextmanager
def atomic_file(filepath: str | os.PathLike) -> Iterator[Path]:
    """
    A temporary path beside ``filepath`` (same folder, same suffix, so writers that pick the format by suffix still
    work) that replaces ``filepath`` in one ``os.replace`` when the block ends without an error; on an error it is
    deleted and ``filepath`` is left as it was. A reader never sees a half-written file, and a kill leaves at most a
    hidden ``.<name>.tmp<pid>`` file behind.
    """
    path = Path(filepath)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(text: str, filepath: str | os.PathLike, newline: str | None = None) -> str:
    """Write ``text`` to ``filepath`` atomically (:func:`atomic_file`), flushed to disk before the swap."""
    with atomic_file(filepath) as tmp, open(tmp, "w", newline=newline) as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return str(filepath)


def write_json_atomic(obj: Any, filepath: str | os.PathLike, indent: int = 2) -> str:
    """Write ``obj`` as JSON to ``filepath`` atomically."""
    return write_text_atomic(json.dumps(obj, indent=indent), filepath)


def file_digest(filepath: str | os.PathLike, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes (``hashlib`` ``algorithm``: ``sha256`` for provenance, ``md5`` where a published
    checksum is MD5), read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(filepath, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
