"""Run megatron.core on a CPU-only torch build.

megatron.core assumes CUDA in a few dozen places: ``device="cuda"`` allocations,
``torch.cuda.current_device()``, CUDA RNG state for its model-parallel RNG tracker,
``.cuda()`` moves and ``Tensor.type() == 'torch.cuda.FloatTensor'`` checks. This module
maps each of those onto the CPU so that the very same model, optimizer, pipeline schedules
and checkpoints run on gloo. It is one switch, :func:`install`, and it does nothing on a
machine where CUDA is available: GPU runs never go through it.

Install it after the process group exists and before megatron.core builds anything.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_CPU = torch.device("cpu")
_installed = False


def _is_cuda(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # A bare integer device index means a CUDA ordinal in torch.
    return isinstance(device, int) and not isinstance(device, bool)


def _to_cpu(value: Any) -> Any:
    return _CPU if _is_cuda(value) else value


class _CudaAsCpuMode(TorchFunctionMode):
    """Rewrites CUDA device arguments of every torch call to the CPU and drops pin_memory."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = dict(kwargs or {})
        if "device" in kwargs:
            kwargs["device"] = _to_cpu(kwargs["device"])
        if kwargs.get("pin_memory"):
            kwargs["pin_memory"] = False
        if func in (torch.Tensor.to, torch.Tensor.cuda) and args:
            # tensor.to("cuda"), tensor.to(0), tensor.cuda(): the device may be positional.
            if func is torch.Tensor.cuda:
                return args[0]
            args = (
                args[0],
                *(_to_cpu(a) if not isinstance(a, torch.Tensor) else a for a in args[1:]),
            )
        return func(*args, **kwargs)


def _cuda_type_name(original):
    @functools.wraps(original)
    def type_(self, *args, **kwargs):
        if args or kwargs:
            return original(self, *args, **kwargs)
        # megatron asserts e.g. grad.type() == 'torch.cuda.FloatTensor' before clipping.
        name = original(self)
        return name if ".cuda." in name else name.replace("torch.", "torch.cuda.", 1)

    return type_


def _get_rng_state(*_args, **_kwargs) -> torch.Tensor:
    return torch.get_rng_state()


def _set_rng_state(state: torch.Tensor, *_args, **_kwargs) -> None:
    torch.set_rng_state(state)


def _manual_seed(seed: int) -> None:
    # The default generator itself: torch.manual_seed would call back into cuda.manual_seed_all.
    torch.default_generator.manual_seed(seed)


def is_active() -> bool:
    return _installed


def install() -> bool:
    """Install the CPU layer if CUDA is unavailable. Returns whether it is active. Idempotent."""
    global _installed
    if _installed or torch.cuda.is_available():
        return _installed

    cuda = torch.cuda
    cuda.current_device = lambda: 0
    cuda.synchronize = lambda *_a, **_k: None
    cuda.get_rng_state = _get_rng_state
    cuda.set_rng_state = _set_rng_state
    cuda.manual_seed = _manual_seed
    cuda.manual_seed_all = _manual_seed
    cuda.set_device = lambda *_a, **_k: None
    torch.Tensor.type = _cuda_type_name(torch.Tensor.type)
    torch.nn.Module.cuda = lambda self, *_a, **_k: self

    # The model-parallel RNG tracker reads and writes "CUDA" RNG state through these two.
    from megatron.core.tensor_parallel import random as mcore_random

    mcore_random._get_cuda_rng_state = _get_rng_state
    mcore_random._set_cuda_rng_state = _set_rng_state

    _CudaAsCpuMode().__enter__()  # process-wide for the rest of the run
    _installed = True
    return True
