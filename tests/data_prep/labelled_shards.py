"""Real shards of a small corpus with known domains, for embedding and clustering tests.

Each domain draws its words from its own vocabulary (plus a few shared words), so the
domains are separable by content and the labels give the ground truth clustering.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from data_prep.train_tokenizer import TrainTokenizerConfig
from data_prep.writer import TokenizeConfig, tokenize

DOMAINS = {
    "law": "court contract plaintiff defendant statute appeal judge ruling liability tort "
    "verdict jury counsel damages evidence testimony",
    "code": "function return import class variable loop compile array pointer module "
    "integer string debug syntax runtime exception",
    "cooking": "butter flour oven simmer garlic onion recipe bake sugar pepper sauce "
    "roast saucepan dough whisk skillet",
    "astronomy": "galaxy planet orbit telescope nebula comet stellar lunar eclipse "
    "asteroid cosmic supernova spectrum gravity quasar photon",
}
SHARED = ["the", "of", "and", "a", "to", "in", "is", "that", "with", "for"]


def labelled_records(counts: dict[str, int], seed: int = 0) -> list[dict]:
    """`counts[domain]` documents of each domain, interleaved as a corpus builder writes them."""
    rng = random.Random(seed)
    records = []
    for i in range(max(counts.values())):
        for domain in [d for d, n in counts.items() if i < n]:
            # Labels beyond the named domains reuse one of their vocabularies.
            words = DOMAINS.get(domain, DOMAINS[sorted(DOMAINS)[len(domain) % 4]]).split()
            sentences = [
                " ".join(
                    rng.choice(words if rng.random() < 0.7 else SHARED)
                    for _ in range(rng.randint(6, 15))
                ).capitalize()
                + "."
                for _ in range(rng.randint(2, 5))
            ]
            records.append({"text": " ".join(sentences), "id": f"{domain}-{i}", "label": domain})
    return records


def write_labelled_shards(
    root: Path,
    counts: dict[str, int] | None = None,
    n_shards: int = 1,
    seed: int = 0,
    split_sentences: bool = False,
) -> list[str]:
    """Train a small BPE on the corpus and write it as `n_shards` real shards (with EOD).

    `counts`: documents per domain (default 40 each of law, code, cooking);
    `split_sentences`: one sequence per sentence in the shards' index."""
    root.mkdir(parents=True, exist_ok=True)
    records = labelled_records(counts or {"law": 40, "code": 40, "cooking": 40}, seed)
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    tokenizer = (
        TrainTokenizerConfig([str(corpus)], str(root / "tok"), vocab_size=400, progress=False)
        .build()
        .train()
    )
    prefixes = []
    per_shard = -(-len(records) // n_shards)
    for s in range(n_shards):
        part = root / f"part{s}.jsonl"
        part.write_text(
            "".join(json.dumps(r) + "\n" for r in records[s * per_shard : (s + 1) * per_shard])
        )
        prefix = str(root / f"shard{s}")
        tokenize(
            TokenizeConfig(
                [str(part)],
                prefix,
                f"hf:{tokenizer}",
                append_eod=True,
                split_sentences=split_sentences,
                progress=False,
            )
        )
        prefixes.append(prefix)
    return prefixes


def cluster_corpus(
    root: Path,
    counts: dict[str, int] | None = None,
    k: int | None = None,
    split: str = "98,2,0",
    n_shards: int = 2,
    split_sentences: bool = False,
) -> Path:
    """Shards of a labelled corpus, TF-IDF embeddings and their clusters; returns the
    cluster directory. `k=None` makes one cluster per label (sorted label order)."""
    from data_prep.cluster import ClusterConfig
    from data_prep.embed import EmbedConfig
    from data_prep.embedders import EmbedderConfig
    from data_prep.kmeans import KMeansConfig

    prefixes = write_labelled_shards(root / "shards", counts, n_shards, 0, split_sentences)
    EmbedConfig(prefixes, str(root / "emb"), EmbedderConfig("tfidf"), progress=False).build().run()
    ClusterConfig(
        str(root / "emb"),
        str(root / "clusters"),
        KMeansConfig(k or 1),
        by_label=k is None,
        split=split,
        progress=False,
    ).build().run()
    return root / "clusters"
