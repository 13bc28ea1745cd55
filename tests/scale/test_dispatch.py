"""Which actor the next batch goes to (no Ray needed): idle actors first, then a second batch each."""

from __future__ import annotations

import pytest

from opticam_rt.scale.ray_executor import DEPTH, next_slot


def _spread(batches: int, actors: int) -> list[int]:
    """Per actor, the batches submitted before any result comes back."""
    load = [0] * actors
    for _ in range(batches):
        slot = next_slot(load)
        if slot is None:
            break
        load[slot] += 1
    return load


@pytest.mark.parametrize(("batches", "actors", "expected"), [
    (2, 2, [1, 1]),  # one each, not both on the first actor
    (3, 2, [2, 1]),
    (4, 2, [2, 2]),
    (9, 2, [DEPTH, DEPTH]),  # the rest wait for a result
    (3, 4, [1, 1, 1, 0]),
    (1, 1, [1]),
])
def test_every_idle_actor_gets_a_batch_before_any_gets_a_second(batches, actors, expected) -> None:
    assert _spread(batches, actors) == expected


def test_the_least_loaded_actor_is_chosen() -> None:
    assert next_slot([2, 0, 1]) == 1
    assert next_slot([1, 2, 1]) == 0  # the first of a tie
    assert next_slot([DEPTH, DEPTH]) is None
    assert next_slot([]) is None
    assert next_slot([0, 3], depth=3) == 0
