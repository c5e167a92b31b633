"""clients.sdk.heap.settle: what ``vox daemon`` and ``vox chat`` do to the cyclic collector
after start-up (its effect on time is measured in bench/e2e.py, ``client_gc_us_per_msg``)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from clients.sdk import heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_freezes_start_up_and_raises_the_young_threshold(restored_gc: None) -> None:
    gc.set_threshold(700, 10, 10)
    start_up = [object() for _ in range(10)]
    cycle: list[object] = []
    cycle.append(cycle)  # garbage in a cycle: collected, not frozen
    del cycle
    heap.settle()
    assert gc.get_freeze_count() >= len(start_up)
    assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, 10, 10)
    later: list[object] = []
    later.append(later)
    assert gc.is_tracked(later)
    del later
    assert gc.collect() >= 1  # cyclic garbage made after it is still collected


def test_settle_never_lowers_a_higher_threshold(restored_gc: None) -> None:
    gc.set_threshold(50_000, 20, 30)
    heap.settle()
    assert gc.get_threshold() == (50_000, 20, 30)
