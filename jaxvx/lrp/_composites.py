"""Composites: which rule each layer gets. Layer predicates map to rules, first match wins, with a special map for
the first matching layer in forward order (zennit's ``SpecialFirstLayerMapComposite``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import flax.linen as nn

from jaxvx._program import KINDS, path_matcher
from jaxvx.lrp import _rules as R
from jaxvx.models import AvgPool, GlobalAvgPool, MaxPool, ReLU, Sum, TemporalMean

__all__ = [
    "Composite",
    "Kind",
    "SCALE",
    "node_matcher",
    "CONV",
    "DENSE",
    "LINEAR",
    "ACTIVATION",
    "AVG_POOL",
    "SUM",
    "MAX_POOL",
    "layer_map_base",
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_gamma_box",
    "epsilon_alpha2_beta1",
    "deep_taylor",
    "excitation",
    "name_map",
]

@dataclass(frozen=True)
class Kind:
    """A layer spec: the operations of these :data:`jaxvx._program.KINDS` in the traced program."""

    name: str
    kinds: frozenset

    def __call__(self, node, path) -> bool:
        return node.kind in self.kinds


#: convolutions (``conv_general_dilated`` with a constant kernel: flax.linen.Conv, nnx.Conv, lax)
CONV = Kind("CONV", frozenset({"conv"}))
#: dense layers (``dot_general`` with a constant matrix: flax.linen.Dense, nnx.Linear, jnp.dot)
DENSE = Kind("DENSE", frozenset({"dense"}))
#: every layer with a weight matrix
LINEAR = Kind("LINEAR", frozenset({"conv", "dense"}))
#: activations: ReLU and other max/min with a constant, tanh, logistic (relevance passes)
ACTIVATION = Kind("ACTIVATION", frozenset({"activation"}))
#: averages (average pooling, means: the sum that computes them; Norm rule)
AVG_POOL = Kind("AVG_POOL", frozenset({"sum"}))
#: sums: residual additions, reductions (Norm rule)
SUM = Kind("SUM", frozenset({"sum"}))
#: scaling and shifting by constants that no linear layer absorbed (input normalisation, a BatchNorm before any
#: convolution, the division that ends a mean): relevance passes
SCALE = Kind("SCALE", frozenset({"scale"}))
MAX_POOL = Kind("MAX_POOL", frozenset({"max_pool"}))

_MODULE_KINDS = (((nn.Conv, nn.ConvTranspose, nn.ConvLocal), "conv"), ((nn.Dense, nn.DenseGeneral), "dense"),
                 ((ReLU,), "activation"), ((AvgPool, GlobalAvgPool, TemporalMean, Sum), "sum"),
                 ((MaxPool,), "max_pool"), ((nn.BatchNorm,), None))


def node_matcher(spec, *, name: str = "layer") -> Callable:
    """A predicate ``(node, path) -> bool`` over the nodes of a traced program from a layer spec: a :class:`Kind`,
    a path pattern (:func:`jaxvx._program.path_matcher`), a Flax module class or a tuple of them (matched by the
    kind of operation it computes), or a predicate ``(node, path) -> bool`` used as is."""
    if isinstance(spec, Kind):
        return spec
    if isinstance(spec, str):
        if not spec:
            raise ValueError(f"{name}: expected a path pattern such as 'conv5b', got an empty string")
        match = path_matcher(spec)

        def by_path(node, path, _m=match):
            return _m(path)

        by_path.__name__ = f"path {spec!r}"
        return by_path
    classes = spec if isinstance(spec, tuple) else (spec,)
    if classes and all(isinstance(c, type) and issubclass(c, nn.Module) for c in classes):
        kinds = set()
        for c in classes:
            found = [k for mods, k in _MODULE_KINDS if issubclass(c, mods)]
            if not found:
                raise TypeError(f"{name}: the module class {c.__name__} computes no operation kind jaxvx knows; "
                                f"name its layers by path or use a kind ({', '.join(KINDS)})")
            kinds.update(k for k in found if k is not None)
        return Kind("/".join(c.__name__ for c in classes), frozenset(kinds))
    if callable(spec):
        return spec
    raise TypeError(f"{name}: expected a path pattern (str), a jaxvx.lrp kind such as jaxvx.lrp.CONV, a flax Module "
                    f"class or a predicate (node, path) -> bool, got {spec!r}")


@dataclass(frozen=True)
class Composite:
    """Rules by layer: ``layer_map`` and ``first_map`` are tuples of ``(layer spec, Rule)``.

    A layer spec is a :class:`Kind` (:data:`CONV`, :data:`DENSE`, ...), a path pattern (``"fc8"``, ``"conv*"``,
    ``"Mixed_5c/*"``), a Flax module class (matched by the kind of operation it computes) or a predicate
    ``(node, path) -> bool`` on the nodes of the traced program (:class:`jaxvx._program.Node`). For each node in
    forward order: if no node matched ``first_map`` yet and this one does, it gets that rule (the "first layer");
    otherwise the first entry of ``layer_map`` that matches decides. A node no entry matches keeps its ordinary
    gradient if it only moves values (kind ``structure``); any other unmatched node is an error naming it, never a
    silent gradient.
    """

    name: str
    layer_map: tuple = ()
    first_map: tuple = ()

    def __post_init__(self):
        for what, entries in (("layer_map", self.layer_map), ("first_map", self.first_map)):
            for e in entries:
                if not (isinstance(e, tuple) and len(e) == 2 and isinstance(e[1], R.Rule)):
                    raise TypeError(f"{what}: expected (layer spec, Rule) pairs, got {e!r}")
                node_matcher(e[0], name=what)

    def assign(self, nodes) -> list:
        """The rule of each node of a traced program (in forward order; ``None``: no entry matched)."""
        layer = [(node_matcher(s, name="layer_map"), r) for s, r in self.layer_map]
        first = [(node_matcher(s, name="first_map"), r) for s, r in self.first_map]
        rules, first_seen = [], False
        for node in nodes:
            rule = None
            if not first_seen:
                rule = next((r for m, r in first if m(node, node.path)), None)
                first_seen = rule is not None
            if rule is None:
                rule = next((r for m, r in layer if m(node, node.path)), None)
            rules.append(rule)
        return rules

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
    """The entries every built-in composite starts with: activations -> pass, sums (residual additions, average
    pooling, means) -> norm, scaling by constants -> pass, max pooling -> winner-takes-all (or
    ``proportional``)."""
    return (
        (ACTIVATION, R.pass_()),
        (SUM, R.norm(stabilizer)),
        (AVG_POOL, R.norm(stabilizer)),
        (SCALE, R.pass_()),
        (MAX_POOL, _max_pool_rule(max_pool, stabilizer)),
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
