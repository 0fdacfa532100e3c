"""Backpropagation methods' public names (gradients, Grad-CAM family, excitation backprop, LRP)."""

from jaxvx.methods._cam import gradcam, guided_gradcam, saliency_tubes
from jaxvx.methods._excitation import contrastive_excitation_backprop, excitation_backprop
from jaxvx.methods._gradient import (
    deconvnet,
    gradient,
    gradient_x_input,
    guided_backprop,
    integrated_gradients,
    smoothgrad,
)
from jaxvx.methods._lrp_method import lrp

__all__: list[str] = [
    "gradient",
    "gradient_x_input",
    "integrated_gradients",
    "smoothgrad",
    "guided_backprop",
    "deconvnet",
    "gradcam",
    "guided_gradcam",
    "saliency_tubes",
    "excitation_backprop",
    "contrastive_excitation_backprop",
    "lrp",
]
