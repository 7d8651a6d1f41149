"""Where training metrics go: console, a JSONL file and TensorBoard.

Only the main rank writes. On a terminal a progress bar runs below the log lines; in a piped
log (a Slurm job's) there is no bar, whose carriage returns would garble it, and every line
says the step of how many and the time left. On resume the JSONL keeps the records up to the
resumed step and drops the ones a killed run wrote after its last checkpoint, so the file is
one curve.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tqdm import tqdm

log = logging.getLogger(__name__)


class MetricsSink:
    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        start_step: int,
        enabled: bool,
        tensorboard: bool = True,
        progress: bool = True,
        end_step: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        """``total_steps`` is the run's length, ``end_step`` where this process stops (a
        segment's end; the run's by default): the time left is estimated up to it."""
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._tb = None
        self._bar = None
        self._total = total_steps
        self._eta = Eta(start_step, end_step or total_steps, clock)
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self._truncate_after(start_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
        if progress and sys.stderr.isatty():
            self._bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step")

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]
        self.path.write_text("".join(line + "\n" for line in kept))

    def advance(self, postfix: dict[str, Any] | None = None) -> None:
        """One step done; ``postfix`` (its loss, say) is shown with it on the bar."""
        self._eta.advance()
        if self._bar is not None:
            if postfix:  # before the update, which draws the bar: it shows this step's
                self._bar.set_postfix(postfix, refresh=False)
            self._bar.update(1)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:  # reopened per record: what is logged survives a kill
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            step = record["step"]
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, step)
        if self._bar is not None:  # the bar shows the time left
            self._bar.write(self.line(record))
        else:
            log.info("%s  %s", self.line(record), self._eta.left())

    def line(self, record: dict[str, Any]) -> str:
        """``step 40/200  loss=3.217  lr=0.0003 ...``: a record as a console line."""
        fields = (f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                  for k, v in record.items() if k != "step")  # fmt: skip
        return "  ".join((f"step {record['step']}/{self._total}", *fields))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._bar is not None:
            self._bar.close()


class Eta:
    """Time left to ``end_step`` at the pace of the steps so far in this process (their
    evaluations and saves included, as the wait for the end includes them)."""

    def __init__(self, start_step: int, end_step: int, clock: Callable[[], float]):
        self._clock = clock
        self._start = clock()
        self._steps = 0
        self._left = end_step - start_step

    def advance(self) -> None:
        self._steps += 1
        self._left -= 1

    def left(self) -> str:
        if self._left <= 0:
            return "done"
        if not self._steps:
            return "eta ?"
        seconds = (self._clock() - self._start) / self._steps * self._left
        return f"eta {format_duration(seconds)}"


def format_duration(seconds: float) -> str:
    """``45s``, ``2m05s``, ``3h07m``."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Throughput:
    """Tokens per second of training between log steps: only the time inside :meth:`step`
    counts, together with the tokens of those steps, so that the evaluations and saves in
    between count neither."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._tokens = 0
        self._seconds = 0.0

    @contextmanager
    def step(self, tokens: int) -> Iterator[None]:
        """Time one training step of ``tokens`` tokens."""
        start = self._clock()
        yield
        self._seconds += self._clock() - start
        self._tokens += tokens

    def take(self) -> float:
        """Tokens per second of the steps timed since the last call, which starts afresh."""
        rate = self._tokens / max(self._seconds, 1e-9)
        self._tokens, self._seconds = 0, 0.0
        return rate
