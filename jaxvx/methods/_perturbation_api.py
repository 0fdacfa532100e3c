"""Perturbation methods' public names (occlusion, frame masking, TSR, extremal perturbation, STEP)."""

__all__: list[str] = []
