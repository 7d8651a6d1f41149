"""Learning-rate schedules as plain functions of the step.

The LR is recomputed from (config, step) every step, so a resumed run cannot drift from an
uninterrupted one: the only scheduler state is the step itself. For continued pretraining a
schedule is just another schedule whose warmup starts from ``start_lr`` (rewarming) and
whose step counter starts at 0 for the branch: nothing is inherited from the trunk's
schedule unless asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from megatron_split.config import ConfigError


@dataclass
class ScheduleConfig:
    kind: Literal["cosine", "wsd", "constant"] = "cosine"
    warmup_steps: int = 0
    start_lr: float = 0.0  # LR at step 0; warmup goes linearly from here to the peak
    min_lr_ratio: float = 0.1  # final LR = peak x this (cosine and wsd)
    decay_fraction: float = 0.2  # wsd: share of the steps spent decaying at the end
    decay_shape: Literal["linear", "cosine", "sqrt"] = "sqrt"  # wsd decay

    def validate(self, total_steps: int) -> None:
        if self.warmup_steps < 0 or self.warmup_steps > total_steps:
            raise ConfigError(
                f"optim.schedule.warmup_steps={self.warmup_steps} must be in [0, "
                f"train.steps={total_steps}]"
            )
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError("optim.schedule.min_lr_ratio must be in [0, 1]")
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ConfigError("optim.schedule.decay_fraction must be in (0, 1]")


def _decay(progress: float, shape: str) -> float:
    """1 -> 0 as progress goes 0 -> 1."""
    progress = min(max(progress, 0.0), 1.0)
    if shape == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if shape == "sqrt":
        return 1.0 - math.sqrt(progress)
    return 1.0 - progress


def lr_at(step: int, peak_lr: float, total_steps: int, cfg: ScheduleConfig) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``total_steps``.

    Each phase is measured at the end of the step, so warmup reaches the peak on its last
    step and a decay reaches the final LR on the run's last step (step total_steps - 1)."""
    done = step + 1
    if step < cfg.warmup_steps:
        return cfg.start_lr + (peak_lr - cfg.start_lr) * done / cfg.warmup_steps
    if cfg.kind == "constant":
        return peak_lr
    min_lr = peak_lr * cfg.min_lr_ratio
    if cfg.kind == "cosine":
        span = max(total_steps - cfg.warmup_steps, 1)
        return min_lr + (peak_lr - min_lr) * _decay((done - cfg.warmup_steps) / span, "cosine")
    decay_steps = max(round(cfg.decay_fraction * total_steps), 1)
    decay_start = total_steps - decay_steps
    if step < decay_start:
        return peak_lr
    return min_lr + (peak_lr - min_lr) * _decay((done - decay_start) / decay_steps, cfg.decay_shape)
