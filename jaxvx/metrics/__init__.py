"""Metrics of relevance maps: against ground truth, against motion, between maps, and faithfulness without ground truth.

Maps are ``[B, T, H, W, C]`` (summed over channels where a metric needs one value per pixel) or ``[B, T, H, W]``.
Per-clip metrics are jnp functions that work under ``jax.jit`` and ``jax.vmap``; aggregations over a run
(:func:`pointing_accuracy`, :func:`bootstrap_ci`) and the OpenCV-based key-frame detector are host-side NumPy.

- Ground truth: :func:`spatial_pointing_game`, :func:`temporal_pointing_game` (-> :class:`PointingResult`),
  aggregated per class by :func:`pointing_accuracy`.
- Motion: :func:`motion_precision` against a true motion mask or an optical flow (:func:`jaxvx.flow.farneback`).
- Between maps: :func:`selectivity` (what a transform keeps), :func:`agreement` (overlap of positive areas).
- Time: :func:`keyframes` (the 30 % frame-differencing detector) and :func:`keyframe_correlation`.
- Faithfulness: :func:`perturbation_curve` (:func:`deletion_curve`, :func:`insertion_curve`) over frames or voxels,
  with the area over the perturbation curve.
- Summaries: :func:`bootstrap_ci`.
"""

from jaxvx.metrics._keyframes import (
    KeyFrames,
    difference_signal,
    iterative_baseline,
    keyframe_correlation,
    keyframes,
    peak_indices,
)
from jaxvx.metrics._maps import Selectivity, agreement, motion_mask, motion_precision, selectivity
from jaxvx.metrics._perturbation import PerturbationCurve, deletion_curve, insertion_curve, perturbation_curve
from jaxvx.metrics._pointing import (
    PointingResult,
    argmax_point,
    pointing_accuracy,
    spatial_pointing_game,
    temporal_pointing_game,
)
from jaxvx.metrics._stats import MeanCI, bootstrap_ci

__all__ = [
    "PointingResult",
    "spatial_pointing_game",
    "temporal_pointing_game",
    "argmax_point",
    "pointing_accuracy",
    "motion_precision",
    "motion_mask",
    "Selectivity",
    "selectivity",
    "agreement",
    "KeyFrames",
    "keyframes",
    "difference_signal",
    "iterative_baseline",
    "peak_indices",
    "keyframe_correlation",
    "PerturbationCurve",
    "perturbation_curve",
    "deletion_curve",
    "insertion_curve",
    "MeanCI",
    "bootstrap_ci",
]
