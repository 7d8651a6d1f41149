"""Atomic outputs: write beside the target, fsync, rename; a crash leaves no half file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def temp_path(path: str | Path) -> Path:
    """A sibling path for writing `path` before it is published."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def fsync_file(path: str | Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def publish(temp: str | Path, path: str | Path) -> None:
    """fsync a finished temp file and rename it into place (atomic on one filesystem)."""
    fsync_file(temp)
    os.replace(temp, path)
    directory = os.open(Path(path).parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_json(path: str | Path, data: Any, sync: bool = True) -> None:
    """Write JSON atomically (``sync=False``: renamed into place, not synced to disk)."""
    temp = temp_path(path)
    temp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    if sync:
        publish(temp, path)
    else:
        os.replace(temp, path)
