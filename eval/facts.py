"""Fact recall: the share of facts whose answer is the model's greedy continuation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from data_prep.phonebook import fact_text


def fact_recall(lm: Any, facts: Sequence[dict[str, Any]], batch_size: int = 32) -> float:
    """Share of ``facts`` (phonebook entries) whose number the model produces greedily
    after the name: recall by exact match, as the phonebook experiment measures it."""
    if not facts:
        raise ValueError("no facts to recall")
    requests = [fact_text(fact["name"], fact["number"]) for fact in facts]
    scored = lm.loglikelihood(requests, batch_size)
    return sum(s.is_greedy for s in scored) / len(scored)
