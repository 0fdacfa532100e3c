"""Backpropagation methods' public names (gradients, Grad-CAM family, excitation backprop, LRP)."""

__all__: list[str] = []
