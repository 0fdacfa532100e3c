"""Perturbation methods' public names (occlusion, frame masking, TSR, extremal perturbation, STEP)."""

from jaxvx.methods._ep3d import TEMPORAL_SIGMAS, PreservationResult, ep3d, min_preservation_ratio, step
from jaxvx.methods._extremal import ExtremalResult, extremal_perturbation
from jaxvx.methods._optimise import sgd_dampened
from jaxvx.methods._occlusion import broadcast_frames, frame_masking, occlusion
from jaxvx.methods._tsr import tsr

__all__: list[str] = [
    "occlusion",
    "frame_masking",
    "broadcast_frames",
    "tsr",
    "extremal_perturbation",
    "ep3d",
    "step",
    "min_preservation_ratio",
    "ExtremalResult",
    "PreservationResult",
    "TEMPORAL_SIGMAS",
    "sgd_dampened",
]
