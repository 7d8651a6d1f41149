"""Process runtime: distributed init, the CPU compatibility layer, seeding."""

from megatron_split.runtime.distributed import (
    LaunchEnv,
    Runtime,
    check_world_size,
    destroy_distributed,
    detect_launch_env,
    init_distributed,
)
from megatron_split.runtime.rng import rng_state, seed_everything, set_rng_state

__all__ = [
    "LaunchEnv",
    "Runtime",
    "check_world_size",
    "destroy_distributed",
    "detect_launch_env",
    "init_distributed",
    "rng_state",
    "seed_everything",
    "set_rng_state",
]
