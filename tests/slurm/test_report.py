"""How the report reads curves and the law's form selection."""

import pytest

from slurm.report import _why_chosen, trend


@pytest.mark.parametrize(
    ("values", "reading"),
    [
        ([0.935, 0.936, 0.938, 0.954], "rises"),  # every step below the tolerance
        ([0.954, 0.950, 0.941, 0.935], "falls"),
        ([0.903, 0.901, 0.900, 0.898], "stays"),
        ([0.90, 0.95, 0.90, 0.96], "is not monotonic"),
        ([0.90, 0.93, 0.925, 0.96], "rises"),  # a step back within the tolerance
    ],
)
def test_a_trend_is_read_from_first_to_last_value(values, reading):
    assert trend(values, 0.01) == reading


def _row(form: str, validation: float, heldout: float) -> dict:
    return {"form": form, "validation": {"split": "largest-N", "n_test": 48, "mre": validation},
            "heldout": {"split": "largest-N", "n_test": 48, "mre": heldout}}  # fmt: skip


def test_the_report_says_which_split_chose_the_form_and_what_the_test_set_would_pick():
    rows = [_row("a", 0.03, 0.019), _row("b", 0.02, 0.027), _row("c", 0.025, 0.03)]
    fit = {"form": "b", "chosen_on": "validation", "selection": rows}
    text = _why_chosen(fit)
    assert text.startswith("b won: the lowest mean relative error on the validation split")
    assert "a predicts the held-out rows best (1.90%) but ranks 3 of 3" in text
    fit["selection"][0]["heldout"]["mre"] = 0.04  # the chosen form is also the best held out
    assert "predicts the held-out rows best" not in _why_chosen(fit)
    fit["chosen_on"] = "heldout"
    assert "the held-out score chose the form, and so is optimistic" in _why_chosen(fit)
    fit["chosen_on"] = "aicc"
    assert "lowest AICc of the forms compared, in sample (no held-out split" in _why_chosen(fit)
