"""Throughput: tokens per second of training only, whatever runs between the log steps."""

import itertools
from functools import partial

import pytest

from megatron_split import train_cli
from megatron_split.train import loop
from megatron_split.train.metrics import Throughput
from tests.megatron_split.runs import metrics, tiny_overrides


def ticking_clock():
    """A clock one second later at every reading: each timed step takes exactly 1 s."""
    ticks = itertools.count()
    return lambda: float(next(ticks))


def test_only_timed_steps_count():
    now = [0.0]
    throughput = Throughput(clock=lambda: now[0])
    for step_seconds in (2.0, 3.0):
        with throughput.step(tokens=500):
            now[0] += step_seconds
        now[0] += 100.0  # an evaluation or a save: neither its time nor any tokens count
    assert throughput.take() == 1000 / 5.0
    with throughput.step(tokens=300):
        now[0] += 1.0
    assert throughput.take() == 300.0  # a new window


@pytest.mark.slow
def test_evaluations_and_saves_between_log_steps_leave_tokens_per_s_alone(
    shards, tmp_path, monkeypatch
):
    monkeypatch.setattr(loop, "Throughput", partial(Throughput, clock=ticking_clock()))
    overrides = {"train.steps": 4, "train.log_every": 2, "train.eval_every": 1,
                 "train.eval_batches": 1, "checkpoint.every": 1}  # fmt: skip
    assert train_cli.main(tiny_overrides(tmp_path, shards, **overrides)) == 0
    tokens_per_step = 8 * 64  # global batch x sequence length
    assert metrics(tmp_path, "tokens_per_s") == {2: tokens_per_step, 4: tokens_per_step}
    assert len(metrics(tmp_path, "val_loss")) == 4  # an evaluation and a save at every step
