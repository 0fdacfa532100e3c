"""The progress bar of a run or sweep: tqdm with clips per second, or nothing."""

from __future__ import annotations


class _NoBar:
    def update(self, n):
        pass

    def close(self):
        pass


def progress_bar(total, enabled: bool | str, initial: int = 0):
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    label = enabled if isinstance(enabled, str) else "jaxvx run"
    return tqdm(total=total, initial=initial, unit="clips", desc=label, smoothing=0.1, dynamic_ncols=True)

