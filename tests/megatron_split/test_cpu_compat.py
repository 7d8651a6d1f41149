import subprocess
import sys

import pytest
import torch

from megatron_split.runtime import cpu_compat, init_distributed

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the layer is off with CUDA")


@pytest.fixture(scope="module", autouse=True)
def runtime():
    return init_distributed()


def test_installed_and_idempotent():
    assert cpu_compat.is_active()
    assert cpu_compat.install() is True


def test_cuda_allocations_land_on_cpu():
    assert torch.empty(3, device="cuda").device.type == "cpu"
    assert torch.zeros(2, device=torch.cuda.current_device()).device.type == "cpu"
    assert torch.ones(2, device=torch.device("cuda", 0)).device.type == "cpu"
    assert torch.tensor([1.0], device="cuda", pin_memory=True).device.type == "cpu"
    x = torch.arange(4.0)
    assert x.cuda().device.type == "cpu"
    assert x.to("cuda").device.type == "cpu"
    assert x.to("cuda", torch.float64).dtype == torch.float64
    assert x.to(torch.int32).dtype == torch.int32  # non-device .to untouched


def test_type_names_match_megatron_checks():
    assert torch.zeros(1).type() == "torch.cuda.FloatTensor"
    assert torch.zeros(1, dtype=torch.bfloat16).type() == "torch.cuda.BFloat16Tensor"
    assert torch.zeros(1).type(torch.float64).dtype == torch.float64


def test_model_parallel_rng_tracker_forks_a_separate_stream():
    from megatron.core import tensor_parallel

    from megatron_split.runtime import seed_everything

    seed_everything(7)
    tracker = tensor_parallel.get_cuda_rng_tracker()
    before = torch.get_rng_state()
    with tracker.fork():
        forked = torch.rand(4)
    assert torch.equal(torch.get_rng_state(), before)  # the default stream is untouched
    seed_everything(7)  # a fresh tracker, seeded alike
    with tensor_parallel.get_cuda_rng_tracker().fork():
        again = torch.rand(4)
    assert torch.equal(forked, again)
    assert not torch.equal(forked, torch.rand(4))


def test_noop_when_cuda_is_available():
    code = (
        "import torch\n"
        "torch.cuda.is_available = lambda: True\n"
        "original = torch.cuda.current_device\n"
        "from megatron_split.runtime import cpu_compat\n"
        "assert cpu_compat.install() is False and not cpu_compat.is_active()\n"
        "assert torch.cuda.current_device is original\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
