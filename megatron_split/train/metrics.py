"""Where training metrics go: console (with a progress bar), a JSONL file and TensorBoard.

Only the main rank writes. On resume the JSONL keeps the records up to the resumed step and
drops the ones a killed run wrote after its last checkpoint, so the file is one curve.
"""

from __future__ import annotations

import json
import logging
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
    ):
        self.enabled = enabled
        self.path = run_dir / "metrics.jsonl"
        self._tb = None
        self._bar = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self._truncate_after(start_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
        if progress:
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
        if self._bar is not None:
            self._bar.update(1)
            if postfix:
                self._bar.set_postfix(postfix, refresh=False)

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
        text = "  ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()
        )
        if self._bar is not None:
            self._bar.write(text)
        else:
            log.info(text)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._bar is not None:
            self._bar.close()


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
