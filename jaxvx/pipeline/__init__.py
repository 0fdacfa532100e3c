"""Explanation methods over a dataset: :func:`run` (see :mod:`jaxvx.pipeline._run`) and :func:`sweep` over snippet
steps and offsets (:mod:`jaxvx.pipeline._sweep`)."""

from jaxvx.pipeline._run import (RESULTS_FILE, SUMMARY_FILE, PeerLost, Results, ResultsLocked, Terminated, initialize,
                                 results_paths, run, summarize_folder)
from jaxvx.pipeline._sweep import SWEEP_FILE, SWEEP_METRICS, Sweep, step_label, sweep

__all__ = ["run", "summarize_folder", "results_paths", "initialize", "PeerLost", "Terminated", "Results",
           "ResultsLocked", "RESULTS_FILE", "SUMMARY_FILE", "sweep", "Sweep", "SWEEP_FILE", "SWEEP_METRICS",
           "step_label"]
