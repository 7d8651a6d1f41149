"""Ctrl-C stops a run like a preemption signal: noted, then a clean stop at a step boundary."""

import signal

import pytest

from megatron_split.train import signals
from megatron_split.train.signals import PreemptionFlag


@pytest.fixture
def flag():
    flag = PreemptionFlag()
    yield flag
    flag.restore()


def test_ctrl_c_is_noted_and_ends_the_run_as_interrupted(flag):
    signal.raise_signal(signal.SIGINT)
    signal.raise_signal(signal.SIGINT)  # at once: torchrun passing on the same Ctrl-C
    assert flag.received == signal.SIGINT
    assert flag.status == "interrupted"


def test_a_second_ctrl_c_stops_at_once(flag, monkeypatch):
    monkeypatch.setattr(signals, "REPEAT_S", 0.0)
    signal.raise_signal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)


def test_ctrl_c_is_not_handed_on_after_the_clean_stop(flag):
    signal.raise_signal(signal.SIGINT)
    flag.restore()
    flag.forward()  # Python's own handler would raise KeyboardInterrupt here


def test_a_preemption_signal_is_noted_and_ends_the_run_as_preempted(flag):
    signal.raise_signal(signal.SIGUSR2)
    assert flag.received == signal.SIGUSR2
    assert flag.status == "preempted"
