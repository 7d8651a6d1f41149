"""TP=2, PP=2 and DP=2 under torchrun reproduce the single-process loss curve."""

import pytest

from tests.megatron_split.runs import metrics, tiny_overrides, train

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    train(tiny_overrides(run_dir, shards))
    return metrics(run_dir)


@pytest.mark.parametrize(
    ("layout", "tolerance"),
    [
        (["parallel.tensor=2"], 1e-5),
        (["parallel.pipeline=2"], 1e-5),
        ([], 1e-5),  # two processes and no model parallelism: DP=2
    ],
    ids=["tp2", "pp2", "dp2"],
)
def test_two_process_layouts_match_single_process(shards, tmp_path, reference, layout, tolerance):
    train(tiny_overrides(tmp_path, shards) + layout, nproc=2)
    losses = metrics(tmp_path)
    assert sorted(losses) == sorted(reference) == list(range(1, 11))
    for step, loss in reference.items():
        assert losses[step] == pytest.approx(loss, rel=tolerance), f"step {step}"
    assert reference[10] < reference[1]  # and it learns
