"""Optimizer and learning-rate schedules."""

from megatron_split.optim.optimizer import OptimConfig
from megatron_split.optim.schedule import ScheduleConfig, lr_at

__all__ = ["OptimConfig", "ScheduleConfig", "lr_at"]
