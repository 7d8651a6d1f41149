import os
from pathlib import Path

import pytest

# Tests share two cores with each other's subprocesses: one thread per process keeps
# multi-process runs from oversubscribing, and makes CPU math deterministic.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def demo_family(tmp_path_factory) -> Path:
    """A whole small split family on disk (corpus, shards, clusters, trunk, branches, eval),
    made once per session by `msplit demo`."""
    from tests.demo_family import run_demo

    out = tmp_path_factory.mktemp("demo") / "demo"
    run_demo(out)
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A byte-level BPE trained here, saved as transformers saves a model's tokenizer."""
    from tests.megatron_split.hf_models import write_tokenizer_dir

    return write_tokenizer_dir(tmp_path_factory.mktemp("tokenizer"))
