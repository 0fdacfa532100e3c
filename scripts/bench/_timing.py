"""Timing helpers shared by the benchmarks."""

from __future__ import annotations

import time


def alternating_best(calls, repeats, warmup=None):
    """Minimum wall time of each call in ``calls`` (name -> fn) over ``repeats`` rounds that call them in turn.

    Alternating jaxvx and its peer inside one loop exposes both to the same spells of a shared machine (its
    speed varied by up to 2x within an afternoon here), so their ratio is fairer than that of two separate runs.
    ``warmup``: name -> whether to make one untimed call first (jaxvx: compilation); default: every call.
    """
    warmup = warmup or {}
    for name, fn in calls.items():
        if warmup.get(name, True):
            fn()
    times = {name: [] for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(ts) for name, ts in times.items()}
