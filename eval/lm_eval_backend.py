"""An lm-evaluation-harness model backend: any of its tasks, on native checkpoints.

    python -m eval.lm_eval_backend run --model msplit --tasks arc_easy \\
        --model_args checkpoint=runs/demo/trunk
    python -m eval.lm_eval_backend run --model msplit --tasks arc_easy \\
        --model_args clusters=runs/demo/clusters,branches=runs/demo/branches/cluster_0:...

With ``checkpoint=`` one model answers. With ``clusters=`` and ``branches=`` (one run per
cluster, ``:``-separated, in cluster order) the family answers through the router: each
request goes to the specialist of its context's nearest cluster, or to a mixture of
``top_k`` specialists weighted softmax(-distance / ``temperature``) (c-BTM). Specialists
are loaded one at a time. ``python -m eval.lm_eval_backend`` is lm-eval's own command line
with this backend registered (in Python, ``import eval.lm_eval_backend`` registers it).
Generation tasks are not supported (log-likelihood and perplexity tasks are).
"""

from __future__ import annotations

import gc
from collections.abc import Sequence

import numpy as np
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from eval.lm import CheckpointLM, encode_pair
from eval.mc import mix
from megatron_split.data.datasets import shards_tokenizer


@register_model("msplit")
class MSplitLM(LM):
    def __init__(
        self,
        checkpoint: str | None = None,
        clusters: str | None = None,
        branches: str | None = None,
        top_k: int = 1,
        temperature: float = 0.1,
        batch_size: int = 16,
        **_ignored,  # lm-eval passes its own options (device, ...) to every backend
    ) -> None:
        super().__init__()
        from megatron_split.checkpoint import read_meta, resolve_checkpoint
        from megatron_split.data.clusters import ClusterDataConfig

        if (checkpoint is None) == (branches is None):
            raise ValueError("msplit: give checkpoint=RUN, or clusters=DIR and branches=A:B:...")
        self.router = None
        if checkpoint is not None:
            self.models = [str(checkpoint)]
        else:
            from eval.family import check_family
            from eval.router import Router

            if clusters is None:
                raise ValueError("msplit: branches= needs clusters= (the cluster directory)")
            self.models = str(branches).split(":")
            prefixes = ClusterDataConfig(str(clusters)).build().prefixes
            check_family(None, self.models, prefixes)
            self.router = Router.from_clusters(clusters)
        self.top_k, self.temperature = int(top_k), float(temperature)
        self.batch_size = int(batch_size)
        meta = read_meta(resolve_checkpoint(self.models[0]))
        self.tokenizer = shards_tokenizer(meta["config"]["data"]["paths"])
        self.seq_length = int(meta["config"]["model"]["seq_length"])

    # ---- lm-eval's interface ---------------------------------------------------------
    def loglikelihood(self, requests) -> list[tuple[float, bool]]:
        pairs = [encode_pair(self.tokenizer, *req.args) for req in requests]
        logprob, greedy = self._score(pairs, [req.args[0] for req in requests])
        return list(zip(logprob.tolist(), greedy.tolist(), strict=True))

    def loglikelihood_rolling(self, requests) -> list[float]:
        """Each text's total log-likelihood, in disjoint windows of the model's length."""
        windows, owner, queries = [], [], []
        for index, req in enumerate(requests):
            text = req.args[0]
            for window in get_rolling_token_windows(
                self.tokenizer.encode(text), self.tokenizer.eod_id, self.seq_length, 1
            ):
                windows.append(make_disjoint_window(window))
                owner.append(index)
                queries.append(text)
        logprob, _ = self._score(windows, queries)
        totals = np.zeros(len(requests))
        np.add.at(totals, owner, logprob)
        return totals.tolist()

    def generate_until(self, requests) -> list[str]:
        raise NotImplementedError(
            "msplit: generation tasks are not supported; use log-likelihood or perplexity tasks"
        )

    # ---- scoring ---------------------------------------------------------------------
    def _score(
        self, pairs: Sequence[tuple[list[int], list[int]]], queries: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(log-likelihood, is greedy) of each pair, from the model or the routed family."""
        if self.router is None:
            clusters = np.zeros((len(pairs), 1), dtype=np.int64)
            weights = np.ones((len(pairs), 1))
        else:
            routing = self.router.route(list(queries), top_k=self.top_k)
            clusters, weights = routing.clusters, routing.weights(self.temperature)
        per_model = np.full((len(self.models), len(pairs), 1), np.nan)
        greedy = np.zeros(len(pairs), dtype=bool)
        for model, path in enumerate(self.models):
            needed = np.flatnonzero((clusters == model).any(axis=1))
            if needed.size == 0:
                continue
            lm = CheckpointLM.load(path, tokenizer=self.tokenizer)
            scored = lm.loglikelihood_tokens([pairs[i] for i in needed], self.batch_size)
            for i, result in zip(needed, scored, strict=True):
                per_model[model, i, 0] = result.logprob
                if clusters[i, 0] == model:  # greedy is the nearest specialist's call
                    greedy[i] = result.is_greedy
            del lm
            gc.collect()
        return mix(per_model, clusters, weights).logprob[:, 0], greedy


if __name__ == "__main__":
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()
