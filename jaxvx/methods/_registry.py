"""The methods by name: one entry per method, with what it needs to be built and what its map is.

Every name that ``jaxvx explain``, ``jaxvx run``, the experiments' configurations and :func:`jaxvx.explain.
build_method` accept is an entry of :data:`REGISTRY`; nothing else lists method names. An entry
(:class:`MethodInfo`) holds

- ``build(**needs) -> method``: the factory with the settings a method gets by name (its papers' defaults);
- ``needs``: what only the model can say, given to ``build`` as keywords (:data:`NEEDS` says what each is);
- ``channels``: ``"input"`` when the map ``[B, T, H, W, C]`` has the video's channels, ``"one"`` when it is
  ``[B, T, H, W, 1]`` (the contract of :mod:`jaxvx._maps`);
- ``conserves``: whether the map is a sum-decomposition of the target's logit (``sum R = f_c(x)``, exact on a
  bias-free ReLU network; the CLI prints the ratio as a check);
- ``random``: whether the method draws noise from its ``key``;
- ``details``: whether :func:`jaxvx.methods.details` gives a richer result beside the map.

Example::

    method = jaxvx.methods.make("deep_taylor", bounds=(low, high))
    relevance = method(forward, video, target)           # [B, T, H, W, C]
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping

from jaxvx import lrp
from jaxvx.methods._cam import gradcam, guided_gradcam, saliency_tubes
from jaxvx.methods._ep3d import ep3d, step
from jaxvx.methods._excitation import contrastive_excitation_backprop, excitation_backprop
from jaxvx.methods._extremal import extremal_perturbation
from jaxvx.methods._gradient import (deconvnet, gradient, gradient_x_input, guided_backprop, integrated_gradients,
                                     smoothgrad)
from jaxvx.methods._lrp_method import lrp as lrp_method
from jaxvx.methods._occlusion import frame_masking, occlusion
from jaxvx.methods._tsr import tsr

__all__ = ["EXTREMAL_AREA", "FAMILIES", "NEEDS", "REGISTRY", "MethodInfo", "make", "method_names"]

#: What a method may need from the model to be built by name (the keyword of ``MethodInfo.build``: its meaning).
NEEDS: Mapping[str, str] = types.MappingProxyType({
    "bounds": "the per-channel bounds (low, high) of the model's input, for the z^B rule of the first layer",
    "layer": "the path of the layer whose activations it maps (a checkpoint's cam_layer, or its last convolution)",
    "tube_layers": "the paths (layer, head) of a last convolution and of the one Dense layer reading its global "
                   "average (saliency tubes; a model class says them as tube_layers, e.g. jaxvx.models.R2Plus1D18)",
    "lstm_layers": "the paths (features, classifier) of a CNN-LSTM: the per-frame feature module feeding the LSTM "
                   "and the classifier after it (a model class says them as lstm_layers, e.g. "
                   "jaxvx.models.CNNLSTM)",
    "input_shape": "the model's input size (T, H, W), which sizes the occlusion windows",
})
FAMILIES = ("gradient", "lrp", "cam", "excitation", "perturbation")
#: the area fraction of the one preserved volume that EP-3D, STEP and extremal perturbation optimise by name (Li et
#: al. run several at once: call jaxvx.methods.ep3d / step with the areas you need)
EXTREMAL_AREA = 0.1


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """One method by name (see the module docstring for the fields)."""

    name: str
    family: str
    build: Callable = dataclasses.field(repr=False)
    needs: tuple[str, ...] = ()
    channels: str = "input"
    conserves: bool = False
    random: bool = False
    details: bool = False
    summary: str = ""

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        unknown = sorted(set(self.needs) - set(NEEDS))
        if unknown:
            raise ValueError(f"needs must be among {sorted(NEEDS)}, got {unknown}")
        if self.channels not in ("input", "one"):
            raise ValueError(f"channels must be 'input' or 'one', got {self.channels!r}")


def _occlusion(input_shape):
    t, h, w = (int(n) for n in input_shape)
    return occlusion(window=(max(1, t // 4), max(1, h // 7), max(1, w // 7)))


def _lrp(composite: Callable, *, bounded: bool = False) -> Callable:
    if bounded:
        return lambda bounds: lrp_method(composite(low=bounds[0], high=bounds[1]))
    return lambda: lrp_method(composite())


def _entries() -> tuple[MethodInfo, ...]:
    one = {"channels": "one"}
    lrp_ = {"family": "lrp", "conserves": True}
    return (
        MethodInfo("deep_taylor", build=_lrp(lrp.deep_taylor, bounded=True), needs=("bounds",), **lrp_,
                   summary="deep Taylor decomposition: z^B on the first layer, z+ above (Anders et al.)"),
        MethodInfo("epsilon_plus", build=_lrp(lrp.epsilon_plus), **lrp_,
                   summary="LRP: epsilon on dense layers, z+ on convolutions"),
        MethodInfo("epsilon_plus_flat", build=_lrp(lrp.epsilon_plus_flat), **lrp_,
                   summary="epsilon_plus with the flat rule on the first layer"),
        MethodInfo("epsilon_gamma_box", build=_lrp(lrp.epsilon_gamma_box, bounded=True), needs=("bounds",), **lrp_,
                   summary="LRP: epsilon on dense layers, gamma on convolutions, z^B on the first layer"),
        MethodInfo("epsilon_alpha2_beta1", build=_lrp(lrp.epsilon_alpha2_beta1), **lrp_,
                   summary="LRP: epsilon on dense layers, alpha 2 beta 1 on convolutions"),
        MethodInfo("gradient", "gradient", build=gradient, summary="the input gradient d f_c / d x"),
        MethodInfo("sensitivity", "gradient", build=lambda: gradient(squared=True),
                   summary="sensitivity analysis, the squared gradient (Anders et al.)"),
        MethodInfo("gradient_x_input", "gradient", build=gradient_x_input, summary="x * d f_c / d x"),
        MethodInfo("integrated_gradients", "gradient", build=integrated_gradients,
                   summary="integrated gradients from a zero baseline, 50 Gauss-Legendre points"),
        MethodInfo("smoothgrad", "gradient", build=smoothgrad, random=True,
                   summary="the gradient averaged over 20 noisy copies (sigma 0.1)"),
        MethodInfo("guided_backprop", "gradient", build=guided_backprop,
                   summary="guided backpropagation: every ReLU passes positive gradients of positive inputs"),
        MethodInfo("deconvnet", "gradient", build=deconvnet,
                   summary="deconvnet: every ReLU passes positive gradients"),
        MethodInfo("gradcam", "cam", build=lambda layer: gradcam(layer), needs=("layer",), **one,
                   summary="Grad-CAM at a layer, upsampled to the clip"),
        MethodInfo("guided_gradcam", "cam", build=lambda layer: guided_gradcam(layer), needs=("layer",),
                   summary="Grad-CAM times guided backpropagation"),
        MethodInfo("saliency_tubes", "cam", build=lambda tube_layers: saliency_tubes(*tube_layers),
                   needs=("tube_layers",), **one, summary="saliency tubes (Stergiou et al.): CAM of the head's class weights"),
        MethodInfo("excitation_backprop", "excitation", build=lambda layer: excitation_backprop(layer),
                   needs=("layer",), **one, summary="excitation backprop's winning probabilities at a layer, upsampled"),
        MethodInfo("contrastive_excitation_backprop", "excitation",
                   build=lambda lstm_layers: contrastive_excitation_backprop(
                       features=lstm_layers[0], classifier=lstm_layers[1]),
                   needs=("lstm_layers",), **one, summary="contrastive excitation backprop on a CNN-LSTM (Bargal et al.)"),
        MethodInfo("occlusion", "perturbation", build=_occlusion, needs=("input_shape",), **one,
                   summary="sliding occlusion with windows of T/4 x H/7 x W/7 (captum's semantics)"),
        MethodInfo("frame_masking", "perturbation", build=frame_masking, details=True, **one,
                   summary="each frame's time contribution: the logit's drop with the frame masked"),
        MethodInfo("tsr", "perturbation", build=lambda: tsr(gradient(absolute=True)), **one,
                   summary="two-step temporal saliency rescaling of the gradient magnitude, 10 x 10 blocks"),
        MethodInfo("tsr_one_step", "perturbation",
                   build=lambda: tsr(gradient(absolute=True), one_step=True, time_from="score"), **one,
                   summary="the gradient magnitude scaled by frame masking's time contribution (Jayawardhana et al.)"),
        MethodInfo("ep3d", "perturbation", build=lambda: ep3d(EXTREMAL_AREA), details=True, **one,
                   summary="EP-3D (Li et al.): one mask per frame, one area loss over the clip, 1000 iterations"),
        MethodInfo("step", "perturbation", build=lambda: step(EXTREMAL_AREA), details=True, **one,
                   summary="STEP (Li et al.): EP-3D with the spatio-temporal smoothness loss"),
        MethodInfo("extremal_perturbation", "perturbation", build=lambda: extremal_perturbation(EXTREMAL_AREA),
                   details=True, **one,
                   summary="extremal perturbation (Fong et al., TorchRay): one 2D mask for the whole clip"),
    )


#: every method by name, in the order the CLI lists them
REGISTRY: Mapping[str, MethodInfo] = types.MappingProxyType({e.name: e for e in _entries()})


def method_names(*, family: str | None = None, conserves: bool | None = None) -> tuple[str, ...]:
    """The registered names, in order; only those of ``family`` and/or with ``conserves`` when given."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return tuple(n for n, e in REGISTRY.items()
                 if (family is None or e.family == family) and (conserves is None or e.conserves == conserves))


def make(name: str, **needs) -> Callable:
    """The method ``name`` with its settings by name, built from what it needs (``MethodInfo.needs``, keywords)."""
    if name not in REGISTRY:
        raise ValueError(f"method must be one of {list(REGISTRY)}, got {name!r}")
    info = REGISTRY[name]
    missing = [n for n in info.needs if needs.get(n) is None]
    if missing:
        raise ValueError(f"method {name!r} needs {', '.join(f'{n} ({NEEDS[n]})' for n in missing)}")
    extra = sorted(set(needs) - set(info.needs))
    if extra:
        raise ValueError(f"method {name!r} takes only {list(info.needs) or 'no needs'}, got {extra}")
    return info.build(**{n: needs[n] for n in info.needs})
