import pytest

from megatron_split.optim import ScheduleConfig, lr_at


def test_warmup_then_cosine_to_min():
    cfg = ScheduleConfig(kind="cosine", warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, 1.0, 100, cfg) == pytest.approx(0.1)
    assert lr_at(9, 1.0, 100, cfg) == pytest.approx(1.0)  # the last warmup step: the peak
    assert lr_at(10, 1.0, 100, cfg) < 1.0  # the cosine starts
    assert lr_at(54, 1.0, 100, cfg) == pytest.approx(0.55)  # halfway down the cosine
    assert lr_at(99, 1.0, 100, cfg) == pytest.approx(0.1)  # the last step ends at the minimum
    lrs = [lr_at(s, 1.0, 100, cfg) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(lrs[:-1], lrs[1:], strict=True))


def test_warmup_stable_decay():
    cfg = ScheduleConfig(
        kind="wsd", warmup_steps=5, decay_fraction=0.2, decay_shape="linear", min_lr_ratio=0.0
    )
    assert lr_at(50, 2.0, 100, cfg) == pytest.approx(2.0)
    assert lr_at(79, 2.0, 100, cfg) == pytest.approx(2.0)  # the last stable step
    assert lr_at(80, 2.0, 100, cfg) == pytest.approx(1.9)  # the first of 20 decay steps
    assert lr_at(89, 2.0, 100, cfg) == pytest.approx(1.0)
    assert lr_at(99, 2.0, 100, cfg) == pytest.approx(0.0)  # the last step ends the decay


def test_constant_and_rewarming_from_a_given_lr():
    cfg = ScheduleConfig(kind="constant", warmup_steps=4, start_lr=0.5)
    assert lr_at(0, 1.0, 10, cfg) == pytest.approx(0.625)
    assert lr_at(3, 1.0, 10, cfg) == pytest.approx(1.0)
    assert lr_at(9, 1.0, 10, cfg) == pytest.approx(1.0)
