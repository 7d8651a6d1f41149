"""Preemption: a signal asks for a checkpoint at the next step boundary all ranks agree on.

Slurm sends SIGTERM (or the signal given with ``--signal``, SIGUSR2 for submitit) some time
before it kills a job. The handler only sets a flag; after every step the ranks take the
MAX of their flags, so that they all save the same step and exit together, even when the
signal reached only some of them. Once the checkpoint is written, the signal is handed on
to whatever handler was there before (submitit's requeues the job), if any.
"""

from __future__ import annotations

import logging
import signal

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR2)


class PreemptionFlag:
    def __init__(self, signals: tuple[signal.Signals, ...] = PREEMPTION_SIGNALS):
        self.received: int | None = None
        self._previous = {}
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, _frame) -> None:
        self.received = signum

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
        ``restore``), when that handler is Python code such as submitit's requeue."""
        if self.received is not None and callable(self._previous.get(self.received)):
            log.info("handing signal %s on to the launcher", signal.Signals(self.received).name)
            signal.raise_signal(self.received)
