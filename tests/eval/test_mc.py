"""acc / acc_norm as lm-eval defines them, and c-BTM's mixing of routed specialists."""

import numpy as np
import pytest

from eval.mc import ChoiceScores, accuracy, mix, requests_of
from eval.tasks import MCItem


def item(gold: int, *continuations: str) -> MCItem:
    return MCItem("i", tuple(("ctx", c) for c in continuations), gold, "ctx")


def test_acc_takes_the_most_likely_choice_and_acc_norm_the_most_likely_per_character():
    items = [item(1, " a", " bbbb"), item(0, " a", " b", " c")]
    scores = ChoiceScores(np.array([[-1.0, -3.0, np.nan], [-3.0, -1.0, -2.0]]))
    result = accuracy(items, scores)
    # item 0: acc picks " a" (wrong); per character of the choice, -1/1 vs -3/4: " bbbb"
    # (right; per byte with the space, -1/2 vs -3/5, it would pick " a")
    # item 1: acc picks " b" (wrong), acc_norm too (all 1 character)
    assert result["acc"][0] == 0.0
    assert result["acc_norm"][0] == 0.5
    assert result["acc_norm"][1] == pytest.approx(np.sqrt(0.25 / 1))


def test_requests_keep_their_item_and_choice():
    items = [item(0, " a", " b"), item(1, " c")]
    requests, where = requests_of(items)
    assert requests == [("ctx", " a"), ("ctx", " b"), ("ctx", " c")]
    assert where == [(0, 0), (0, 1), (1, 0)]


def test_mix_is_the_weighted_mixture_of_probabilities():
    rng = np.random.default_rng(0)
    per_cluster = np.log(rng.dirichlet(np.ones(3), size=(4, 5)))  # (k=4, items=5, choices=3)
    clusters = rng.permutation(np.tile(np.arange(4), (5, 1)).T).T[:, :2]  # top-2 per item
    weights = rng.dirichlet(np.ones(2), size=5)
    mixed = mix(per_cluster, clusters, weights).logprob
    for i in range(5):
        expected = sum(weights[i, j] * np.exp(per_cluster[clusters[i, j], i]) for j in range(2))
        np.testing.assert_allclose(np.exp(mixed[i]), expected)


def test_top1_routing_is_the_nearest_specialists_scores():
    per_cluster = np.full((3, 2, 2), np.nan)
    per_cluster[2, 0] = [-1.0, -2.0]
    per_cluster[0, 1] = [-4.0, -3.0]
    mixed = mix(per_cluster, np.array([[2], [0]]), np.ones((2, 1)))
    np.testing.assert_allclose(mixed.logprob, [[-1.0, -2.0], [-4.0, -3.0]])
    with pytest.raises(ValueError, match="no scores for an item"):
        mix(per_cluster, np.array([[1], [0]]), np.ones((2, 1)))
