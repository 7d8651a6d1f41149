"""Results tables: one row per (model size N, pretraining tokens D, specialisation tokens D').

Columns: ``N``, ``D``, ``D_prime`` (absent or empty = 0: plain pretraining), ``loss``, and
optionally ``domain`` (per-domain parameters) and ``run`` (bootstrap resamples whole runs).
Formats: CSV, Parquet, and JSONL with one object per row (the evaluation results table).
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REQUIRED = ("N", "D", "loss")
OPTIONAL_NUMERIC = ("D_prime",)
OPTIONAL_LABELS = ("domain", "run")
KNOWN = (*REQUIRED, *OPTIONAL_NUMERIC, *OPTIONAL_LABELS)  # every other column is not read
LOSS_UNIT = "nats/token"  # the loss column: mean cross-entropy per token, as msplit eval writes


class DataError(ValueError):
    """A results table that cannot be fitted; the message names file, row and column."""


class DataWarning(UserWarning):
    """A table that can be fitted but not as well as it looks: a design that leaves some
    parameters unidentified, or rows counted twice."""


@dataclass(frozen=True)
class Table:
    N: np.ndarray
    D: np.ndarray
    Dp: np.ndarray
    loss: np.ndarray
    domain: np.ndarray | None = None
    run: np.ndarray | None = None
    source: str = "<memory>"

    def __len__(self) -> int:
        return len(self.loss)

    @property
    def domains(self) -> list[str]:
        return [] if self.domain is None else sorted(set(self.domain.tolist()))

    def subset(self, index: np.ndarray) -> Table:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[index]

        return Table(
            self.N[index],
            self.D[index],
            self.Dp[index],
            self.loss[index],
            pick(self.domain),
            pick(self.run),
            self.source,
        )

    def run_ids(self) -> np.ndarray:
        """Group label per row for the bootstrap: the ``run`` column, else one run per row."""
        return self.run if self.run is not None else np.arange(len(self)).astype(str)

    @classmethod
    def from_arrays(
        cls,
        N,
        D,
        loss,
        Dp=None,
        domain=None,
        run=None,
        source: str = "<memory>",
    ) -> Table:
        columns: dict[str, list[Any]] = {"N": list(N), "D": list(D), "loss": list(loss)}
        if Dp is not None:
            columns["D_prime"] = list(Dp)
        if domain is not None:
            columns["domain"] = list(domain)
        if run is not None:
            columns["run"] = list(run)
        locations = [f"row {i + 1}" for i in range(len(columns["loss"]))]
        return _build(columns, locations, source)


def load_table(path: str | Path) -> Table:
    """A results table from a file, or from a directory: every ``law_points.jsonl`` under it
    (what ``msplit eval`` writes), e.g. all split points of all experiments of a ladder."""
    path = Path(path)
    if path.is_dir():
        return _build(*_read_law_points(path), str(path))
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        columns, locations = _read_csv(path)
    elif suffix in (".parquet", ".pq"):
        columns, locations = _read_parquet(path)
    elif suffix in (".jsonl", ".json", ".ndjson"):
        columns, locations = _read_jsonl(path)
    else:
        raise DataError(f"{path}: unknown table format {suffix!r} (use .csv, .parquet, .jsonl)")
    return _build(columns, locations, str(path))


def _read_law_points(directory: Path) -> tuple[dict[str, list[Any]], list[str]]:
    files = sorted(directory.rglob("law_points.jsonl"))
    if not files:
        raise DataError(f"{directory}: no law_points.jsonl under it (msplit eval writes them)")
    columns: dict[str, list[Any]] = {}
    locations: list[str] = []
    for file in files:
        more, where = _read_jsonl(file)
        for name in more.keys() - columns.keys():
            columns[name] = [None] * len(locations)
        for name in columns:
            columns[name] += more.get(name, [None] * len(where))
        locations += [f"{file.relative_to(directory)}, {w}" for w in where]
    return columns, locations


def _read_csv(path: Path) -> tuple[dict[str, list[Any]], list[str]]:
    # utf-8-sig drops the byte-order mark Excel writes, which would otherwise join the
    # first column's name.
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None:
            raise DataError(f"{path}: empty file (expected a header with {', '.join(REQUIRED)})")
        if len(reader.fieldnames) == 1 and ";" in reader.fieldnames[0]:
            raise DataError(
                f"{path}: the header {reader.fieldnames[0]!r} is one column: the file looks "
                "semicolon-separated; save it comma-separated (with '.' as decimal point)"
            )
        names = [n.strip() for n in reader.fieldnames]
        columns: dict[str, list[Any]] = {n: [] for n in names}
        locations = []
        for record in reader:
            locations.append(f"line {reader.line_num}")
            for raw_name, name in zip(reader.fieldnames, names, strict=True):
                value = record.get(raw_name)
                columns[name].append(None if value is None or value.strip() == "" else value)
    return columns, locations


def _read_parquet(path: Path) -> tuple[dict[str, list[Any]], list[str]]:
    import pyarrow.parquet as pq

    data = pq.read_table(path).to_pydict()
    n = len(next(iter(data.values()), []))
    return data, [f"row {i + 1}" for i in range(n)]


def _read_jsonl(path: Path) -> tuple[dict[str, list[Any]], list[str]]:
    records, locations = [], []
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}, line {line_no}: invalid JSON ({e.msg})") from e
            if not isinstance(record, dict):
                raise DataError(f"{path}, line {line_no}: expected a JSON object per line")
            records.append(record)
            locations.append(f"line {line_no}")
    names = list(dict.fromkeys(k for r in records for k in r))
    return {n: [r.get(n) for r in records] for n in names}, locations


def _near_misses(names: list[str]) -> dict[str, str]:
    """Columns that look like a known column misspelt (``Dprime``, ``domian``, ``d``): read
    as extra columns, they would be ignored and the fit would go on without them."""
    squashed = {name.lower().replace("_", ""): name for name in KNOWN}
    misses = {}
    for name in (n for n in names if n not in KNOWN):
        close = difflib.get_close_matches(name, KNOWN, n=1, cutoff=0.8)
        match = squashed.get(name.lower().replace("_", "").replace("'", "prime")) or (
            close[0] if close else None
        )
        if match is not None and match not in names:
            misses[name] = match
    return misses


def _build(columns: dict[str, list[Any]], locations: list[str], source: str) -> Table:
    misses = _near_misses(list(columns))
    if misses:
        name, known = next(iter(misses.items()))
        raise DataError(f"{source}: column {name!r} is not one of the table's columns; did you "
                        f"mean {known!r}? (rename it; read are {', '.join(KNOWN)})")  # fmt: skip
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        have = ", ".join(columns) or "none"
        raise DataError(f"{source}: missing column(s) {', '.join(missing)} (columns: {have})")
    if not locations:
        raise DataError(f"{source}: no data rows")

    def numeric(name: str, default: float | None) -> np.ndarray:
        out = np.empty(len(locations))
        for i, value in enumerate(columns.get(name, [None] * len(locations))):
            where = f"{source}, {locations[i]}, column {name!r}"
            if value is None:
                if default is None:
                    raise DataError(f"{where}: empty value")
                out[i] = default
                continue
            try:
                out[i] = float(value)
            except (TypeError, ValueError):
                raise DataError(f"{where}: {value!r} is not a number") from None
            if math.isnan(out[i]) or math.isinf(out[i]):
                raise DataError(f"{where}: {value!r} is not a finite number")
        return out

    N, D, loss = numeric("N", None), numeric("D", None), numeric("loss", None)
    Dp = numeric("D_prime", 0.0)
    checks = (
        ("N", N, N <= 0, "must be > 0"),
        ("D", D, D < 0, "must be >= 0"),
        ("D_prime", Dp, Dp < 0, "must be >= 0"),
        ("loss", loss, loss <= 0, "must be > 0 (the fit compares log losses)"),
        ("D", D, D + Dp <= 0, "D + D_prime must be > 0"),
    )
    for name, values, bad, rule in checks:
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{source}, {locations[i]}, column {name!r}: {values[i]:g} {rule}")

    def labels(name: str) -> np.ndarray | None:
        if name not in columns:
            return None
        values = columns[name]
        for i, value in enumerate(values):
            if value is None:
                raise DataError(f"{source}, {locations[i]}, column {name!r}: empty value")
        return np.array([str(v) for v in values], dtype=object)

    return Table(N, D, Dp, loss, labels("domain"), labels("run"), source)


def check_design(table: Table) -> list[str]:
    """Warn (and return the messages) when the design cannot identify every parameter of a
    size and data law, or when rows were recorded twice. Parameters that a particular form
    cannot identify on this table (those acting through D' alone, say) are checked per form:
    ``laws.fit.check_identified``."""
    messages = []
    log_ratio = np.log(table.D[table.D > 0] / table.N[table.D > 0])
    if len(np.unique(table.N)) == 1:
        messages.append(
            f"{table.source}: one model size (N = {table.N[0]:g}); N exponents are not identifiable"
        )
    elif log_ratio.size and np.ptp(log_ratio) < 1e-9:
        ratio = float(np.exp(log_ratio[0]))
        messages.append(
            f"{table.source}: every row has the same tokens-per-parameter ratio D/N = "
            f"{ratio:.4g}: N and D are collinear, so their exponents are not separately "
            "identifiable (add runs with other D/N)"
        )
    duplicates = _duplicate_rows(table)
    if duplicates:
        messages.append(
            f"{table.source}: {duplicates} row(s) repeat an earlier row (same N, D, D_prime, "
            "domain, run and loss): each copy weighs in the fit again; drop them if one "
            "evaluation was recorded twice"
        )
    for message in messages:
        warnings.warn(message, DataWarning, stacklevel=2)
    return messages


def _duplicate_rows(table: Table) -> int:
    """How many rows repeat an earlier row in every column."""
    labels = [table.domain, table.run]
    columns = [table.N, table.D, table.Dp, table.loss, *(c for c in labels if c is not None)]
    rows = list(zip(*(c.tolist() for c in columns), strict=True))
    return len(rows) - len(set(rows))
