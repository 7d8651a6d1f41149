"""argparse types for the `msplit data` commands: a value out of range is a usage error
(``error: argument --k: ...``, exit 2), not a traceback deep in the run."""

from __future__ import annotations

import argparse
import math


def positive_int(text: str) -> int:
    return _int_at_least(text, 1)


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0)


def positive_float(text: str) -> float:
    value = _parsed(float, text)
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
    return value


def _int_at_least(text: str, least: int) -> int:
    value = _parsed(int, text)
    if value < least:
        raise argparse.ArgumentTypeError(f"must be an integer >= {least}, not {text}")
    return value


def _parsed(kind: type[int] | type[float], text: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}") from None
