"""GPU-only checks (skipped on CPU machines; run by benchmarks/gpu_check.sh)."""

import shutil

import pytest
import torch

from megatron_split.model import ModelConfig
from megatron_split.runtime import cpu_compat, init_distributed, seed_everything
from tests.megatron_split.runs import metrics, tiny_overrides, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def runtime():
    return init_distributed()


def test_cpu_layer_stays_off_with_cuda(runtime):
    assert runtime.backend == "nccl"
    assert not cpu_compat.is_active()


def test_sdpa_matches_local_spec_in_bf16_on_gpu(runtime):
    outputs, state = {}, None
    for attention in ("local", "sdpa"):
        cfg = ModelConfig(
            vocab_size=1000,
            hidden_size=256,
            num_attention_heads=8,
            num_query_groups=4,
            seq_length=512,
            attention=attention,
            params_dtype="bf16",
        )
        seed_everything(0)
        model = cfg.build().cuda()
        if state is None:
            state = model.state_dict()
        else:
            model.load_state_dict(state)
        torch.manual_seed(1)
        tokens = torch.randint(0, 1000, (2, 512), device="cuda")
        positions = torch.arange(512, device="cuda").expand(2, -1)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            outputs[attention] = model(tokens, positions, None).float()
    torch.testing.assert_close(outputs["sdpa"], outputs["local"], rtol=0.05, atol=0.05)


def test_training_on_gpu_learns_and_resumes(shards, tmp_path):
    overrides = tiny_overrides(
        tmp_path,
        shards,
        **{"train.steps": 20, "checkpoint.every": 10, "model.params_dtype": "bf16"},
    )
    train(overrides)
    losses = metrics(tmp_path)
    assert losses[20] < losses[1]
    resumed = tmp_path.parent / (tmp_path.name + "_resumed")
    resumed.mkdir()
    shutil.copytree(
        tmp_path / "checkpoints" / "step_0000010", resumed / "checkpoints" / "step_0000010"
    )
    (resumed / "checkpoints" / "latest").write_text("step_0000010")
    train([o if not o.startswith("run_dir=") else f"run_dir={resumed}" for o in overrides])
    again = metrics(resumed)
    assert min(again) == 11
    for step in range(11, 21):
        assert again[step] == pytest.approx(losses[step], rel=2e-2)


def test_async_checkpoints_on_gpu_are_the_synchronous_ones(shards, tmp_path):
    """Background writes from CUDA tensors (staged to the host, then a forked writer)."""
    runs = {}
    for mode in ("sync", "async"):
        run_dir = tmp_path / mode
        extra = {"train.steps": 20, "checkpoint.every": 5, "checkpoint.async_save": mode == "async"}
        train(tiny_overrides(run_dir, shards, **extra))
        runs[mode] = run_dir
    want = metrics(runs["sync"])  # GPU kernels need not be bitwise deterministic run to run
    assert metrics(runs["async"]) == pytest.approx(want, rel=2e-2)
    names = [sorted(p.name for p in (run / "checkpoints").iterdir()) for run in runs.values()]
    assert names[0] == names[1] and "step_0000020" in names[0]
