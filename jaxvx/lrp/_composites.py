"""Composites: which rule each layer gets. Layer predicates map to rules, first match wins, with a special map for
the first matching layer in forward order (zennit's ``SpecialFirstLayerMapComposite``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import flax.linen as nn

from jaxvx._intercept import layer_matcher
from jaxvx.lrp import _rules as R
from jaxvx.models import AvgPool, GlobalAvgPool, MaxPool, ReLU, Sum, TemporalMean

__all__ = [
    "Composite",
    "CONV",
    "DENSE",
    "LINEAR",
    "ACTIVATION",
    "AVG_POOL",
    "SUM",
    "MAX_POOL",
    "BATCH_NORM",
    "layer_map_base",
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_gamma_box",
    "epsilon_alpha2_beta1",
    "deep_taylor",
    "excitation",
    "name_map",
]

#: convolution modules (flax.linen.Conv and friends)
CONV = (nn.Conv, nn.ConvTranspose, nn.ConvLocal)
#: dense modules
DENSE = (nn.Dense, nn.DenseGeneral)
#: every layer with a weight matrix
LINEAR = CONV + DENSE
#: activations (relevance passes unchanged)
ACTIVATION = (ReLU,)
#: averaging modules (Norm rule)
AVG_POOL = (AvgPool, GlobalAvgPool, TemporalMean)
#: residual sums (Norm rule)
SUM = (Sum,)
MAX_POOL = (MaxPool,)
BATCH_NORM = (nn.BatchNorm,)

_BN_MESSAGE = ("forward contains a BatchNorm module ({path}); LRP rules need it folded into the preceding "
               "convolution first: model, variables = jaxvx.models.fold_batchnorm(model, variables) (or "
               "jaxvx.lrp.canonize), then forward = functools.partial(model.apply, variables)")


@dataclass(frozen=True)
class Composite:
    """Rules by layer: ``layer_map`` and ``first_map`` are tuples of ``(layer spec, Rule)``.

    A layer spec is a Module class, a tuple of classes, a module path string (``"fc8"``, ``"conv*"``) or a predicate
    ``(module, path) -> bool``. For each module call in forward order: if no layer matched ``first_map`` yet and
    this one does, it gets that rule (the "first layer"); otherwise the first entry of ``layer_map`` that matches
    decides; no match means the layer's ordinary gradient.
    """

    name: str
    layer_map: tuple = ()
    first_map: tuple = ()

    def __post_init__(self):
        for what, entries in (("layer_map", self.layer_map), ("first_map", self.first_map)):
            for e in entries:
                if not (isinstance(e, tuple) and len(e) == 2 and isinstance(e[1], R.Rule)):
                    raise TypeError(f"{what}: expected (layer spec, Rule) pairs, got {e!r}")
                layer_matcher(e[0], name=what)

    def assigner(self) -> Callable:
        """A fresh ``(module, path) -> Rule | None`` that remembers whether the first layer was seen."""
        layer = [(layer_matcher(s, name="layer_map"), r) for s, r in self.layer_map]
        first = [(layer_matcher(s, name="first_map"), r) for s, r in self.first_map]
        state = {"first_seen": False}

        def assign(module, path):
            if not state["first_seen"]:
                for m, r in first:
                    if m(module, path):
                        state["first_seen"] = True
                        return r
            for m, r in layer:
                if m(module, path):
                    return r
            return None

        return assign

    def with_layers(self, layer_map=(), first_map=()) -> "Composite":
        """A copy with entries put in front of both maps (they take precedence)."""
        return Composite(self.name, tuple(layer_map) + self.layer_map, tuple(first_map) + self.first_map)


def _max_pool_rule(max_pool: str, stabilizer: float) -> R.Rule:
    if max_pool == "wta":
        return R.wta()
    if max_pool == "proportional":
        return R.proportional(stabilizer)
    raise ValueError(f"max_pool: expected 'wta' (winner takes all) or 'proportional', got {max_pool!r}")


def layer_map_base(stabilizer: float = 1e-6, max_pool: str = "wta") -> tuple:
    """The entries every built-in composite starts with: ReLU -> pass, average pools / temporal mean / sums ->
    norm, max pooling -> winner-takes-all gradient (or ``proportional``), BatchNorm -> an error asking to fold."""
    return (
        (ACTIVATION, R.pass_()),
        (SUM, R.norm(stabilizer)),
        (AVG_POOL, R.norm(stabilizer)),
        (MAX_POOL, _max_pool_rule(max_pool, stabilizer)),
        (BATCH_NORM, R._error(_BN_MESSAGE)),
    )


def epsilon_plus(epsilon: float = 1e-6, stabilizer: float = 1e-6, *, max_pool: str = "wta", layer_map=()):
    """Convolutions z+, dense layers epsilon (zennit's ``EpsilonPlus``)."""
    return Composite("epsilon_plus", tuple(layer_map) + layer_map_base(stabilizer, max_pool) + (
        (CONV, R.zplus(stabilizer)), (DENSE, R.epsilon(epsilon))))


def epsilon_plus_flat(epsilon: float = 1e-6, stabilizer: float = 1e-6, *, max_pool: str = "wta", layer_map=(),
                      first_map=()):
    """:func:`epsilon_plus` with the flat rule on the first conv or dense layer (zennit's ``EpsilonPlusFlat``)."""
    base = epsilon_plus(epsilon, stabilizer, max_pool=max_pool, layer_map=layer_map)
    return Composite("epsilon_plus_flat", base.layer_map, tuple(first_map) + ((LINEAR, R.flat(stabilizer)),))


def epsilon_gamma_box(low, high, epsilon: float = 1e-6, gamma: float = 0.25, stabilizer: float = 1e-6, *,
                      max_pool: str = "wta", layer_map=(), first_map=()):
    """Convolutions gamma(0.25), dense layers epsilon, the first convolution z^B with bounds ``low`` / ``high``
    (zennit's ``EpsilonGammaBox``)."""
    return Composite(
        "epsilon_gamma_box",
        tuple(layer_map) + layer_map_base(stabilizer, max_pool) + (
            (CONV, R.gamma(gamma, stabilizer)), (DENSE, R.epsilon(epsilon))),
        tuple(first_map) + ((CONV, R.zbox(low, high, stabilizer)),))


def epsilon_alpha2_beta1(epsilon: float = 1e-6, stabilizer: float = 1e-6, *, max_pool: str = "wta", layer_map=()):
    """Convolutions alpha-beta (2, 1), dense layers epsilon (zennit's ``EpsilonAlpha2Beta1``)."""
    return Composite("epsilon_alpha2_beta1", tuple(layer_map) + layer_map_base(stabilizer, max_pool) + (
        (CONV, R.alpha_beta(2.0, 1.0, stabilizer)), (DENSE, R.epsilon(epsilon))))


def deep_taylor(low, high, stabilizer: float = 1e-6, *, max_pool: str = "wta", bias: bool = False, layer_map=(),
                first_map=()):
    """Deep Taylor decomposition: z^B on the first conv or dense layer (bounds ``low`` / ``high``), z+ on every
    other conv and dense layer (Montavon et al.; Anders et al.; Hiley et al. on C3D).

    ``bias=False`` (default, as DTD and Hiley et al.): biases are left out of z+, so a layer conserves the
    relevance of every unit with ``z > 0``; ``bias=True`` keeps ``b+`` in z+ (zennit's ZPlus), which absorbs
    some relevance. ``max_pool="proportional"`` shares each window's relevance in proportion to its inputs, as
    Hiley et al.'s explainer; the default is winner-takes-all.
    """
    zero = () if bias else ("bias",)
    return Composite(
        "deep_taylor",
        tuple(layer_map) + layer_map_base(stabilizer, max_pool) + ((LINEAR, R.zplus(stabilizer, zero_params=zero)),),
        tuple(first_map) + ((LINEAR, R.zbox(low, high, stabilizer)),))


def excitation(stabilizer: float = 1e-6, *, max_pool: str = "wta", layer_map=()):
    """Excitation backprop (Zhang et al.): z+ without bias on every conv and dense layer (the winning probability
    ``P_i = a_i w+_ij / sum_i' a_i' w+_i'j * P_j``), norm on averages and sums, pass on activations."""
    return Composite("excitation", tuple(layer_map) + layer_map_base(stabilizer, max_pool) + (
        (LINEAR, R.zplus(stabilizer, zero_params=("bias",))),))


def name_map(entries, *, base: Composite | None = None, name: str = "name_map") -> Composite:
    """A composite from ``[(module path or spec, Rule), ...]`` (in front of ``base``'s entries, if given)."""
    entries = tuple(entries)
    if base is None:
        return Composite(name, entries + layer_map_base())
    return base.with_layers(entries)
