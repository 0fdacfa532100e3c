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


def program_mib(jitted, *args):
    """MiB that XLA plans for one call of ``jitted(*args)``: arguments + outputs + temporaries (minus aliased
    buffers), from the compiled program's ``memory_analysis()``; ``None`` where the backend gives none.

    The figure is XLA's buffer assignment, the same on every run of a backend (unlike a sampled peak), so it is
    the benchmarks' memory measure on CPU and GPU alike. After a call of ``jitted`` the compilation is cached and
    this costs no compile.
    """
    stats = jitted.lower(*args).compile().memory_analysis()
    if stats is None:
        return None
    total = (stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
             - stats.alias_size_in_bytes)
    return total / 2**20


def torch_peak_mib(torch, device, fn):
    """Peak MiB that PyTorch's CUDA allocator held during ``fn()`` (``None`` off CUDA: no allocator statistics)."""
    if device is None or device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


def format_mib(value, reference=None) -> str:
    """A table cell for a MiB figure: ``"-"`` where none was measured, ``"N (r)"`` with ``r = value / reference``."""
    if value is None:
        return "-"
    return f"{value:.0f}" + (f" ({value / reference:.1f})" if reference else "")
