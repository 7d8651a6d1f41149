"""Progress bars that suit where stderr goes.

On a terminal, a tqdm bar. In a piped log (a Slurm job's output file), a bar's carriage
returns would pile every update onto one garbled line: there the same status is written as
a plain line, when the work starts, about every 30 s, and when it ends.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

LOG_LINE_SECONDS = 30.0
_LINE_FORMAT = ("{desc}: {n_fmt}/{total_fmt} {unit} ({percentage:.0f}%), {elapsed} elapsed, "
                "{remaining} left, {rate_fmt}{postfix}")  # fmt: skip
_OPEN_LINE_FORMAT = "{desc}: {n_fmt} {unit}, {elapsed} elapsed, {rate_fmt}{postfix}"


def progress_bar(iterable: Any = None, **options: Any) -> tqdm:
    """``tqdm(iterable, **options)`` on a terminal; status lines in a piped log."""
    if sys.stderr.isatty():
        return tqdm(iterable, **{"file": sys.stderr, **options})
    known_total = options.get("total") is not None or hasattr(iterable, "__len__")
    lines = {
        "file": _Lines(sys.stderr),
        "mininterval": LOG_LINE_SECONDS,  # whatever a terminal's bar would redraw at
        "bar_format": _LINE_FORMAT if known_total else _OPEN_LINE_FORMAT,
    }
    return tqdm(iterable, **{**options, **lines})


class _Lines:
    """A stream that turns each of tqdm's redraws into one line."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").strip()
        if line:
            self._stream.write(line + "\n")

    def flush(self) -> None:
        self._stream.flush()
