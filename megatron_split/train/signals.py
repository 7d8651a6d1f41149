"""Preemption: a signal asks for a checkpoint at the next step boundary all ranks agree on.

Slurm sends SIGTERM (or the signal given with ``--signal``, SIGUSR2 for submitit) some time
before it kills a job. The handler only sets a flag; after every step the ranks take the
MAX of their flags, so that they all save the same step and exit together, even when the
signal reached only some of them. Once the checkpoint is written, the signal is handed on
to whatever handler was there before (submitit's requeues the job), if any.

Ctrl-C (SIGINT) stops the same way, so that interrupting a run by hand loses no step; it is
not handed on. A second Ctrl-C stops at once (the last complete checkpoint stays valid); one
within a second of the first is taken for the same Ctrl-C, which torchrun passes on to its
workers after the terminal has sent it to them.
"""

from __future__ import annotations

import logging
import signal
import time

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)
REPEAT_S = 1.0  # a SIGINT this soon after the first is the same Ctrl-C, passed on


class PreemptionFlag:
    def __init__(self, signals: tuple[signal.Signals, ...] = PREEMPTION_SIGNALS):
        self.received: int | None = None  # the first signal
        self._interrupted_at: float | None = None  # when the first Ctrl-C came
        self._previous = {}
        for sig in (*signals, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        if signum == signal.SIGINT:
            self._interrupt()
        self.received = self.received or signum

    def _interrupt(self) -> None:
        now = time.monotonic()
        if self._interrupted_at is None:
            self._interrupted_at = now
            log.warning("interrupted: saving after this step (Ctrl-C again to stop at once)")
        elif now - self._interrupted_at >= REPEAT_S:
            raise KeyboardInterrupt

    @property
    def status(self) -> str:
        """How a run stopped by the signal received ends: interrupted by hand or preempted."""
        return "interrupted" if self.received == signal.SIGINT else "preempted"

    def agreed(self) -> bool:
        """True on every rank when any rank received a signal (a collective call)."""
        flag = torch.tensor([0 if self.received is None else 1], dtype=torch.int32)
        if torch.cuda.is_available():
            flag = flag.cuda()
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def forward(self) -> None:
        """Deliver the received signal to the handler installed before ours (call after
        ``restore``), when that handler is Python code such as submitit's requeue; never
        Ctrl-C, whose default handler would raise KeyboardInterrupt after the clean stop."""
        handler = self._previous.get(self.received)
        if self.received != signal.SIGINT and callable(handler):
            log.info("handing signal %s on to the launcher", signal.Signals(self.received).name)
            signal.raise_signal(self.received)
