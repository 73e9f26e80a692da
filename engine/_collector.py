"""Keeps CPython's garbage collector from taking a large share of a run's CPU.

The cyclic collector runs a young collection every few hundred new container objects, and
every so often a full one that walks every tracked object of the process. At hundreds of
requests a second, each request's objects (coroutines, futures, HTTP requests and
responses, SDK options) outlive several young collections, so they are promoted and full
collections come often; each walks the hundreds of thousands of objects that the imported
libraries hold (the SDK's types, pydantic's models). On the scale benchmark that was about
a quarter of the engine's CPU.

While a run goes on, `collector_tuned`:
- freezes what exists when it starts (`gc.freeze`: modules, classes, the pool). Frozen
  objects are still freed by reference counting; full collections only stop walking them;
- raises the young threshold, so that a request's objects are freed before they are
  promoted, and full collections become rare.

Both are undone when the last run of the process ends (`gc.unfreeze`, the thresholds it
found). The collector stays enabled, and cycles are still found.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

__all__ = ["YOUNG_THRESHOLD", "collector_tuned"]

YOUNG_THRESHOLD = 10_000
"""New container objects between two young collections during a run (CPython's default is
700): a few times what the requests in flight allocate, so that most die young."""

_lock = threading.Lock()
_runs = 0
_thresholds: tuple[int, int, int] = gc.get_threshold()


@contextlib.contextmanager
def collector_tuned() -> Iterator[None]:
    """Tune the collector for the block; runs may nest or overlap (the last one to end
    restores it)."""
    global _runs, _thresholds
    with _lock:
        if _runs == 0:
            _thresholds = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(YOUNG_THRESHOLD, _thresholds[0]), *_thresholds[1:])
        _runs += 1
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0:
                gc.set_threshold(*_thresholds)
                gc.unfreeze()
