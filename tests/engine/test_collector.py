"""The garbage collector's tuning during runs: on while any run goes on, undone after."""

from __future__ import annotations

import gc

from mils.engine._collector import YOUNG_THRESHOLD, collector_tuned


def test_collector_is_tuned_while_runs_overlap_and_restored_after_the_last() -> None:
    """Objects from before a run are frozen and young collections are rarer until the last
    of two overlapping runs ends; then the thresholds and the frozen objects are as before."""
    before, frozen_before = gc.get_threshold(), gc.get_freeze_count()
    with collector_tuned():
        assert gc.get_freeze_count() > frozen_before
        assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0])
        with collector_tuned():
            pass
        assert gc.get_threshold()[0] == max(YOUNG_THRESHOLD, before[0])
        assert gc.get_freeze_count() > frozen_before
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()
