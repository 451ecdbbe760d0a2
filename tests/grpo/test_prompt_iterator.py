"""The seeded, resumable prompt iterator: the order is a function of the seed, every epoch
is a fresh permutation of all problems, a state round trip resumes at exactly the next
problem (also on an exact epoch boundary), and batches may be larger than the dataset."""

from __future__ import annotations

import pytest

from torl_rllib.algorithms.grpo.prompt_iterator import PromptIterator

PROBLEMS = [f"p{i}" for i in range(10)]


def draw(iterator, sizes):
    return [p for n in sizes for p in iterator.next_batch(n)]


def test_order_is_seeded():
    a, b, c = (PromptIterator(PROBLEMS, seed=s).next_batch(10) for s in (1, 1, 2))
    assert a == b, "the same seed must give the same order"
    assert a != c, "another seed must give another order"
    assert a != PROBLEMS, "shuffle=True must shuffle"
    assert PromptIterator(PROBLEMS, seed=1, shuffle=False).next_batch(10) == PROBLEMS


def test_every_epoch_is_a_reshuffled_permutation():
    it = PromptIterator(PROBLEMS, seed=0)
    epochs = [it.next_batch(10) for _ in range(4)]
    assert all(sorted(e) == sorted(PROBLEMS) for e in epochs), "each epoch visits every problem once"
    assert len({tuple(e) for e in epochs}) == 4, "each epoch must be reshuffled"
    assert it.get_state()["epoch"] == 3


def test_batches_spanning_epochs_continue_the_stream():
    whole = draw(PromptIterator(PROBLEMS, seed=5), [30])
    assert draw(PromptIterator(PROBLEMS, seed=5), [3, 4, 7, 1, 15]) == whole


def test_batch_larger_than_the_dataset():
    it = PromptIterator(PROBLEMS, seed=3)
    batch = it.next_batch(25)
    assert len(batch) == 25
    assert sorted(batch[:10]) == sorted(PROBLEMS) and sorted(batch[10:20]) == sorted(PROBLEMS)
    assert batch == draw(PromptIterator(PROBLEMS, seed=3), [10, 10, 5])
    assert PromptIterator(["only"], seed=0).next_batch(3) == ["only"] * 3


@pytest.mark.parametrize("before", [0, 3, 10, 20, 27], ids=lambda n: f"after{n}")
def test_state_round_trip_resumes_exactly(before):
    """10 and 20 are exact epoch boundaries: the resumed run must start the next epoch."""
    reference = PromptIterator(PROBLEMS, seed=9)
    expected = draw(reference, [before, 4, 4, 4, 4, 4, 4])[before:]

    first = PromptIterator(PROBLEMS, seed=9)
    draw(first, [before])
    state = first.get_state()
    resumed = PromptIterator(PROBLEMS, seed=0)  # the seed comes back with the state
    resumed.set_state(dict(state))
    assert draw(resumed, [4] * 6) == expected


def test_empty_dataset_is_refused():
    with pytest.raises(ValueError, match="at least one problem"):
        PromptIterator([])
