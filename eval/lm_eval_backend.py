"""An lm-evaluation-harness model backend: any of its tasks, on native checkpoints.

    lm_eval run --model megatron_split --tasks arc_easy \\
        --model_args checkpoint=runs/demo/trunk
    lm_eval run --model megatron_split --tasks arc_easy \\
        --model_args clusters=runs/demo/clusters,branches=runs/demo/split_200/cluster_0:...

With ``checkpoint=`` one model answers. With ``clusters=`` and ``branches=`` (one run per
cluster, ``:``-separated, in cluster order) the family answers through the router: each
request goes to the specialist of its context's nearest cluster, or to a mixture of
``top_k`` specialists weighted softmax(-distance / ``temperature``) (c-BTM). Specialists
are loaded one at a time. The backend is ``megatron_split`` (and ``msplit``) to lm-eval's
own ``lm_eval`` executable (registered at start-up: eval/lm_eval_plugin.py) and to
``msplit lm-eval``, the same command line; in Python, ``import eval.lm_eval_backend``
registers it.
Log-likelihood, perplexity and generation tasks are supported; generation is greedy.

A model larger than one device runs under torchrun, split over ``tensor`` x ``pipeline``
ranks (``--model_args checkpoint=RUN,tensor=2``; generation at pipeline=1): every rank
answers the same requests (lm-eval sees one process), and rank 0 alone prints and writes
the results.
"""

from __future__ import annotations

import gc
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from eval.lm import CheckpointLM, encode_pair
from eval.mc import mix
from megatron_split.config import ConfigError
from megatron_split.data.datasets import checkpoint_tokenizer

if TYPE_CHECKING:
    from eval.router import Router

# What lm-eval passes to every backend beside its --model_args (its --device, ...).
LM_EVAL_OPTIONS = ("device", "max_batch_size")


@register_model("megatron_split", "msplit")
class MSplitLM(LM):
    def __init__(
        self,
        checkpoint: str | None = None,
        clusters: str | None = None,
        branches: str | None = None,
        top_k: int = 1,
        temperature: float = 0.1,
        batch_size: int = 16,
        tensor: int = 1,
        pipeline: int = 1,
        **lm_eval_options,
    ) -> None:
        super().__init__()
        from megatron_split.checkpoint import read_meta, resolve_checkpoint
        from megatron_split.runtime import check_world_size

        unknown = sorted(set(lm_eval_options) - set(LM_EVAL_OPTIONS))
        if unknown:
            raise ConfigError(f"--model_args: unknown argument {', '.join(unknown)}; the "
                              "megatron_split backend's arguments are "
                              f"{', '.join(model_arguments())}")  # fmt: skip
        if (checkpoint is None) == (branches is None):
            raise ConfigError(
                "--model_args: give checkpoint=RUN, or clusters=DIR and branches=A:B:..."
            )
        if clusters is None and branches is not None:
            raise ConfigError("--model_args: branches= needs clusters= (the cluster directory)")
        self.top_k, self.temperature = int(top_k), float(temperature)
        self.batch_size = int(batch_size)
        self.layout = {"tensor": int(tensor), "pipeline": int(pipeline)}
        check_world_size(self.layout["tensor"], self.layout["pipeline"])
        try:
            self.models, self.router = self._family(checkpoint, clusters, branches)
            meta = read_meta(resolve_checkpoint(self.models[0]))
        except FileNotFoundError as error:  # a checkpoint, run or cluster directory
            raise ConfigError(f"--model_args: {error}") from None
        self.tokenizer = checkpoint_tokenizer(meta)
        self.seq_length = int(meta["config"]["model"]["seq_length"])

    @staticmethod
    def _family(
        checkpoint: str | None, clusters: str | None, branches: str | None
    ) -> tuple[list[str], Router | None]:
        """(the models, the router that picks among them: None for one model)."""
        if checkpoint is not None:
            return [str(checkpoint)], None
        from eval.family import check_family
        from eval.router import Router
        from megatron_split.data.clusters import ClusterDataConfig

        models = str(branches).split(":")
        check_family(None, models, ClusterDataConfig(str(clusters)).build().prefixes)
        return models, Router.from_clusters(clusters)

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
                self.tokenizer.encode_prompt(text), self.tokenizer.eod_id, self.seq_length, 1
            ):
                windows.append(make_disjoint_window(window))
                owner.append(index)
                queries.append(text)
        logprob, _ = self._score(windows, queries)
        totals = np.zeros(len(requests))
        np.add.at(totals, owner, logprob)
        return totals.tolist()

    def generate_until(self, requests) -> list[str]:
        """Greedy generation. A family answers each request with its context's nearest
        specialist (mixing would need every specialist at every step)."""
        contexts = [req.args[0] for req in requests]
        settings = [self._generation_settings(req.args[1]) for req in requests]
        if self.router is None:
            nearest = np.zeros(len(requests), dtype=np.int64)
        else:
            nearest = self.router.route(contexts, top_k=1).clusters[:, 0]
        outputs: list[str] = [""] * len(requests)

        def generate(_: int, lm: CheckpointLM, needed: np.ndarray) -> None:
            groups: dict[tuple[int, tuple[str, ...]], list[int]] = {}
            for i in needed:  # one batch per (max tokens, stop strings)
                groups.setdefault(settings[i], []).append(int(i))
            for (max_new, until), members in groups.items():
                texts = lm.generate_text(
                    [contexts[i] for i in members], max_new, until, batch_size=self.batch_size
                )
                for i, text in zip(members, texts, strict=True):
                    outputs[i] = text

        self._for_each_model(nearest[:, None], generate)
        return outputs

    def _generation_settings(self, gen_kwargs: dict) -> tuple[int, tuple[str, ...]]:
        """(max new tokens, stop strings) of one request's generation arguments."""
        if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0) > 0:
            raise ValueError(f"msplit: greedy generation only; the task asks for {gen_kwargs}")
        until = gen_kwargs.get("until") or []
        until = (until,) if isinstance(until, str) else tuple(until)
        # lm-eval's default; the context keeps at least half of the model's length
        wanted = int(gen_kwargs.get("max_gen_toks", 256))
        return min(wanted, self.seq_length // 2), until

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

        def score(model: int, lm: CheckpointLM, needed: np.ndarray) -> None:
            scored = lm.loglikelihood_tokens([pairs[i] for i in needed], self.batch_size)
            for i, result in zip(needed, scored, strict=True):
                per_model[model, i, 0] = result.logprob
                if clusters[i, 0] == model:  # greedy is the nearest specialist's call
                    greedy[i] = result.is_greedy

        self._for_each_model(clusters, score)
        return mix(per_model, clusters, weights).logprob[:, 0], greedy

    def _for_each_model(
        self, clusters: np.ndarray, work: Callable[[int, CheckpointLM, np.ndarray], None]
    ) -> None:
        """``work(index, model, requests routed to it)`` for each model that a row of
        ``clusters`` names: one model in memory at a time, none loaded that no request needs."""
        for model, path in enumerate(self.models):
            needed = np.flatnonzero((clusters == model).any(axis=1))
            if needed.size:
                lm = CheckpointLM.load(path, tokenizer=self.tokenizer, **self.layout)
                work(model, lm, needed)
                del lm
                gc.collect()  # nothing holds that model any more: free it before the next


def model_arguments() -> list[str]:
    """The backend's own --model_args keys."""
    parameters = inspect.signature(MSplitLM.__init__).parameters.values()
    return [p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"]


# lm-eval's options that write results: on model-parallel ranks other than 0 they are
# dropped (with their value, where they take one), so that one process reports.
OUTPUT_OPTIONS = {"--output_path": True, "-o": True, "--log_samples": False, "-s": False}


def main(argv: list[str] | None = None) -> int:
    """lm-eval's command line (its own parser and flags), with this backend registered."""
    import logging
    import os
    import sys

    from lm_eval.__main__ import cli_evaluate

    from eval.family import FamilyError
    from megatron_split.runtime import detect_launch_env

    args = list(sys.argv[1:] if argv is None else argv)
    if detect_launch_env().rank != 0:
        args = without_outputs(args)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the rest of the process)
    # lm-eval's own logger keeps its records to itself; this shows the package's (layouts).
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.argv = ["lm-eval", *args]
    try:
        cli_evaluate()
    except (ConfigError, FamilyError) as error:  # the backend's model_args: one line
        print(f"msplit lm-eval: {error}", file=sys.stderr)
        return 2
    return 0


def without_outputs(args: list[str]) -> list[str]:
    """``args`` without lm-eval's options that write results (OUTPUT_OPTIONS)."""
    kept, skip = [], False
    for arg in args:
        name = arg.split("=", 1)[0]
        if skip:
            skip = False
        elif name in OUTPUT_OPTIONS:
            skip = OUTPUT_OPTIONS[name] and "=" not in arg
        else:
            kept.append(arg)
    return kept


if __name__ == "__main__":
    raise SystemExit(main())
