"""Multiple-choice scoring: per-choice log-likelihoods -> acc and acc_norm, and routing.

A model's answer to an item is the choice whose continuation it finds most likely (``acc``),
or most likely per character of the choice (``acc_norm``, lm-evaluation-harness's length
normalisation). A family of specialists answers through routing: each item goes to the
branches of its nearest clusters, whose likelihoods are mixed with c-BTM's weights,
p(choice) = sum_j w_j p_j(choice), w = softmax(-distance / T) over the top-k clusters. With
top-k = 1 this is plain routing to the nearest specialist.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from eval.tasks import MCItem


@dataclass
class ChoiceScores:
    """Log-likelihood of every choice of every item: (items, max choices), NaN-padded."""

    logprob: np.ndarray

    @classmethod
    def empty(cls, items: Sequence[MCItem]) -> ChoiceScores:
        width = max(len(item.choices) for item in items)
        return cls(np.full((len(items), width), np.nan))


def requests_of(items: Sequence[MCItem]) -> tuple[list[tuple[str, str]], list[tuple[int, int]]]:
    """Every (context, continuation) of the items, with its (item, choice) position."""
    requests, where = [], []
    for i, item in enumerate(items):
        for j, pair in enumerate(item.choices):
            requests.append(pair)
            where.append((i, j))
    return requests, where


def accuracy(items: Sequence[MCItem], scores: ChoiceScores) -> dict[str, tuple[float, float]]:
    """{"acc": (mean, stderr), "acc_norm": (mean, stderr)}; binomial stderr as lm-eval's."""
    gold = np.array([item.gold for item in items])
    # lm-eval's acc_norm divides by the characters of the choice, without the space that
    # joins it to the context.
    n_chars = np.ones(scores.logprob.shape)
    for i, item in enumerate(items):
        for j, (_, continuation) in enumerate(item.choices):
            n_chars[i, j] = max(len(continuation.removeprefix(" ")), 1)
    padded = np.where(np.isnan(scores.logprob), -np.inf, scores.logprob)
    result = {}
    for metric, values in (("acc", padded), ("acc_norm", padded / n_chars)):
        correct = (values.argmax(axis=1) == gold).astype(np.float64)
        mean = float(correct.mean())
        result[metric] = (mean, math.sqrt(mean * (1 - mean) / max(len(items) - 1, 1)))
    return result


def mix(per_cluster: np.ndarray, clusters: np.ndarray, weights: np.ndarray) -> ChoiceScores:
    """Mix specialists' likelihoods per item.

    per_cluster: (k, items, choices) log-likelihoods, NaN where a cluster did not score an
    item; clusters, weights: (items, top_k) routing. Returns log sum_j w_j p_{c_j}(choice).
    """
    rows = np.arange(per_cluster.shape[1])[:, None]
    chosen = per_cluster[clusters, rows]  # (items, top_k, choices)
    if np.isnan(chosen).all(axis=2).any():
        raise ValueError("a routed specialist has no scores for an item it was routed to")
    return ChoiceScores(logsumexp(chosen + np.log(weights)[:, :, None], axis=1))
