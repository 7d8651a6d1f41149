"""How the scorer batches its inputs: prefixes shared within a batch, groups of inputs that
share one, and the tokens read per forward pass."""

from eval.lm import MIN_TOKENS_SAVED, batches, common_prefix, reading_order, shared_prefix

HEADER = tuple(range(100, 120))  # 20 tokens every input of a "task" starts with


def test_common_prefix_is_the_longest_prefix_of_every_row():
    assert common_prefix([(1, 2, 3), (1, 2, 4), (1, 2)]) == 2
    assert common_prefix([(1, 2, 3)]) == 3
    assert common_prefix([(1, 2), (3, 2)]) == 0


def test_a_prefix_is_read_once_only_when_that_saves_enough_and_never_a_whole_row():
    few = [HEADER + (1, 2), HEADER + (3,), HEADER + (4, 5, 6)]
    assert MIN_TOKENS_SAVED > 2 * 20  # 40 tokens saved: not worth a pass
    assert shared_prefix(few) == 0
    many = [HEADER + (i,) for i in range(8)]  # 7 x 20 saved
    assert shared_prefix(many) == 20
    assert shared_prefix(many, limit=12) == 12  # never past the first scored position
    assert shared_prefix(many, limit=3) == 0  # too short to be worth a pass
    assert shared_prefix([HEADER, HEADER + (1,)] * 4) == 19  # a whole row is never cached
    assert shared_prefix([(1,) * 30, (2,) * 30]) == 0


def test_inputs_sharing_a_prefix_are_read_side_by_side_longest_first():
    task_a = [HEADER + (7,) * n for n in (3, 9, 5)]
    task_b = [(900,) * 10 + (8,) * n for n in (2, 12)]
    loose = [(1,) * 40, (2,) * 4]
    order = reading_order(task_a + loose + task_b)
    # groups by their longest input (40, 29, 22, 4), each longest first
    assert order == [(1,) * 40, *sorted(task_a, key=len, reverse=True),
                     *sorted(task_b, key=len, reverse=True), (2,) * 4]  # fmt: skip


def test_batches_hold_at_most_batch_size_inputs_and_the_token_budget():
    inputs = [(i,) * 100 for i in range(10)]  # no shared prefix: 100 tokens a row
    assert [len(b) for b in batches(inputs, 4)] == [4, 4, 2]
    assert [len(b) for b in batches(inputs, 4, token_budget=250)] == [2, 2, 2, 2, 2]
    assert [len(b) for b in batches([(1,) * 500], 4, token_budget=250)] == [1]  # one at least
    shared = [HEADER * 4 + (i,) * 20 for i in range(10)]  # 80 shared + 20 own tokens
    # read: 80 once + 20 a row, so 8 rows (240 tokens) fit a budget of 250
    assert [len(b) for b in batches(shared, 16, token_budget=250)] == [8, 2]
    assert [b for batch in batches(inputs, 3, 250) for b in batch] == inputs
