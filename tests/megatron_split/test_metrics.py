"""Throughput (tokens per second of training only, whatever runs between the log steps) and
the console lines: the step of how many and the time left."""

import io
import itertools
import logging
import sys
from functools import partial

import pytest

from megatron_split import train_cli
from megatron_split.train import loop
from megatron_split.train.metrics import Eta, MetricsSink, Throughput, format_duration
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


def test_time_left_is_the_pace_so_far_times_the_steps_left():
    now = [100.0]
    eta = Eta(start_step=10, end_step=20, clock=lambda: now[0])  # a resumed run
    assert eta.left() == "eta ?"  # no step yet
    for _ in range(2):
        now[0] += 30.0
        eta.advance()
    assert eta.left() == "eta 4m00s"  # 8 steps left at 30 s each
    for _ in range(8):
        eta.advance()
    assert eta.left() == "done"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0.4, "0s"), (59.6, "1m00s"), (125, "2m05s"), (11220, "3h07m")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_a_piped_log_gets_lines_with_step_of_total_and_time_left(tmp_path, caplog):
    now = [0.0]
    sink = MetricsSink(tmp_path, total_steps=200, start_step=0, enabled=True,
                       tensorboard=False, end_step=100, clock=lambda: now[0])  # fmt: skip
    assert sink._bar is None  # stderr under pytest is not a terminal
    for _ in range(40):
        now[0] += 1.5
        sink.advance({"loss": "3.2"})
    with caplog.at_level(logging.INFO, logger="megatron_split.train.metrics"):
        sink.write({"step": 40, "loss": 3.21734, "lr": 3e-4})
    sink.close()
    # up to this segment's end (step 100): 60 steps at 1.5 s
    assert caplog.messages == ["step 40/200  loss=3.217  lr=0.0003  eta 1m30s"]
    assert (tmp_path / "metrics.jsonl").read_text().startswith('{"step": 40, "loss": 3.21734')


@pytest.mark.slow
def test_evaluations_and_saves_between_log_steps_leave_tokens_per_s_alone(
    shards, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(loop, "Throughput", partial(Throughput, clock=ticking_clock()))
    overrides = {"train.steps": 4, "train.log_every": 2, "train.eval_every": 1,
                 "train.eval_batches": 1, "checkpoint.every": 1}  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert train_cli.main(tiny_overrides(tmp_path, shards, **overrides)) == 0
    tokens_per_step = 8 * 64  # global batch x sequence length
    assert metrics(tmp_path, "tokens_per_s") == {2: tokens_per_step, 4: tokens_per_step}
    assert len(metrics(tmp_path, "val_loss")) == 4  # an evaluation and a save at every step
    lines = [m for m in caplog.messages if m.startswith("step ")]
    assert lines[0].startswith("step 1/4  val_loss=") and " eta " in lines[0]
    assert lines[-1].startswith("step 4/4  val_loss=") and lines[-1].endswith("  done")
    assert any(m.startswith("step 2/4  loss=") and "tokens_per_s=512" in m for m in lines)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_bar_on_a_terminal_shows_the_step_just_done(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "stderr", terminal := _Terminal())
    sink = MetricsSink(tmp_path, total_steps=10, start_step=0, enabled=True, tensorboard=False)
    assert sink._bar is not None
    sink._bar.mininterval = 0  # every update is drawn
    sink.advance({"loss": "3.2000"})
    drawn = terminal.getvalue().split("\r")[-1]
    assert "1/10" in drawn and "loss=3.2000" in drawn
    sink.close()
