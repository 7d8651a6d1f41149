"""The megatron.core optimizer (Adam/AdamW with clipping and weight-decay groups) from a config."""

from __future__ import annotations

from dataclasses import dataclass, field

from megatron_split.config import ConfigError
from megatron_split.optim.schedule import ScheduleConfig, lr_at


@dataclass
class OptimConfig:
    lr: float = 1e-3  # peak
    weight_decay: float = 0.1  # decoupled (AdamW); never applied to biases and norms
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    clip_grad: float = 1.0
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def validate(self, total_steps: int) -> None:
        if self.lr <= 0:
            raise ConfigError(f"optim.lr must be positive, got {self.lr}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("optim.beta1 and optim.beta2 must be in [0, 1)")
        self.schedule.validate(total_steps)

    def build(self, model_chunks: list, bf16: bool, distributed_optimizer: bool):
        import torch
        from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer

        config = OptimizerConfig(
            optimizer="adam",
            lr=self.lr,
            min_lr=self.lr * self.schedule.min_lr_ratio,
            weight_decay=self.weight_decay,
            adam_beta1=self.beta1,
            adam_beta2=self.beta2,
            adam_eps=self.eps,
            clip_grad=self.clip_grad,
            bf16=bf16,
            params_dtype=torch.bfloat16 if bf16 else torch.float32,
            use_distributed_optimizer=distributed_optimizer,
        )
        return get_megatron_optimizer(config, model_chunks)

    def apply(self, optimizer, step: int, total_steps: int) -> float:
        """Set this step's LR and weight decay on every param group; returns the LR."""
        lr = lr_at(step, self.lr, total_steps, self.schedule)
        for group in optimizer.param_groups:
            group["lr"] = lr * group.get("lr_mult", 1.0)
            group["weight_decay"] = self.weight_decay * group.get("wd_mult", 1.0)
        return lr
