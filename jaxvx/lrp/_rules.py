"""LRP rules as data, and the one generic backward that applies any of them.

A rule (zennit's design, in jaxvx's words) describes how to *modify* a layer, not how to differentiate it:

- a tuple of :class:`Term` s; term k modifies the layer's inputs (``Term.input``: identity, positive part,
  negative part, ones, or a constant bound) and parameters (``Term.params``: keep, positive part, negative part,
  ``W + gamma W+``, ones, square; plus ``zero_params`` set to zero), giving ``z_k = layer(in_k, theta_k)``;
- terms are grouped: group g's denominator is ``z_g = sum_{k in g} sign_k z_k``, stabilised as
  ``z + eps * sign(z)`` with sign(0) = +1, and its normalised relevance is ``s_g = R / stab(z_g)``, optionally
  masked by the sign of the layer's original output (:class:`Group`);
- the input relevance is ``R_in = sum_k weight_k * in_k * (d z_k / d in_k)^T s_{g(k)}`` (``times_input=True``)
  or ``sum_k weight_k * (d z_k / d in_k)^T s_{g(k)}`` (Flat, WSquare).

The relevance travels as the cotangent between hooked layers: a hooked layer's custom VJP returns ``R_in``
directly, activations get :func:`pass_` (the relevance crosses them unchanged) and un-hooked layers (max pooling
by default, reshapes) apply their ordinary gradient. So the cotangent that reaches the input *is* the relevance
(never multiply it by the input again).

Rule kinds: ``"basic"`` (terms as above), ``"pass"`` (R_in = R), ``"gradient"`` (no change: the layer's ordinary
gradient), ``"wta"`` (max pooling's winner-takes-all gradient, computed fast), ``"error"`` (raise ``message``
with the node's path: a composite's way to forbid an operation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "InputMod",
    "ParamMod",
    "Term",
    "Group",
    "Rule",
    "stabilize",
    "epsilon",
    "zplus",
    "alpha_beta",
    "gamma",
    "zbox",
    "flat",
    "wsquare",
    "norm",
    "pass_",
    "gradient",
    "proportional",
    "wta",
    "rule_backward",
]


# ----------------------------------------------------------------------------------------------------- modifiers
@dataclass(frozen=True)
class InputMod:
    """An input modifier ``(x, consts) -> x'``; ``vanishes_if_nonnegative``: ``x' == 0`` whenever ``x >= 0``."""

    name: str
    fn: Callable = field(repr=False, compare=False)
    vanishes_if_nonnegative: bool = False

    def __call__(self, x, consts):
        return self.fn(x, consts)


def _const(name):
    def fn(x, consts):
        if name not in consts:
            raise ValueError(f"rule constant {name!r} missing")
        return jnp.broadcast_to(jnp.asarray(consts[name], x.dtype), x.shape)

    return InputMod(name, fn)


IDENTITY = InputMod("identity", lambda x, c: x)
POSITIVE = InputMod("positive", lambda x, c: jnp.maximum(x, 0))
NEGATIVE = InputMod("negative", lambda x, c: jnp.minimum(x, 0), vanishes_if_nonnegative=True)
ONES = InputMod("ones", lambda x, c: jnp.ones_like(x))
LOW = _const("low")
HIGH = _const("high")


@dataclass(frozen=True)
class ParamMod:
    """A parameter modifier ``(name, value) -> value'`` applied to every leaf of the ``params`` collection."""

    name: str
    fn: Callable = field(repr=False, compare=False)

    def __call__(self, name, value):
        return self.fn(name, value)


KEEP = ParamMod("keep", lambda n, w: w)
PARAM_POSITIVE = ParamMod("positive", lambda n, w: jnp.maximum(w, 0))
PARAM_NEGATIVE = ParamMod("negative", lambda n, w: jnp.minimum(w, 0))
PARAM_ONES = ParamMod("ones", lambda n, w: jnp.ones_like(w))
PARAM_SQUARE = ParamMod("square", lambda n, w: w * w)


def _gamma_mod(g: float, positive: bool) -> ParamMod:
    if positive:
        return ParamMod(f"w+{g}*w+", lambda n, w: w + g * jnp.maximum(w, 0))
    return ParamMod(f"w+{g}*w-", lambda n, w: w + g * jnp.minimum(w, 0))


@dataclass(frozen=True)
class Term:
    """One modified copy of the layer: ``z_k = layer(input(x), params(theta) with zero_params zeroed)``.

    ``group``: index of the denominator it contributes to, with ``sign`` (+1 or -1); ``weight``: its factor in
    the input relevance (alpha, -beta, -1 for the bounds of z^B).
    """

    input: InputMod = IDENTITY
    params: ParamMod = KEEP
    zero_params: tuple[str, ...] = ()
    group: int = 0
    sign: float = 1.0
    weight: float = 1.0


@dataclass(frozen=True)
class Group:
    """A denominator group; ``mask``: None, ``"positive"`` or ``"negative"`` (keep only units whose original
    output has that sign, as the generalised gamma rule does)."""

    mask: str | None = None


@dataclass(frozen=True)
class Rule:
    """An LRP rule as data (see the module docstring). Build rules with the factories of :mod:`jaxvx.lrp`."""

    name: str
    kind: str = "basic"
    terms: tuple[Term, ...] = ()
    groups: tuple[Group, ...] = (Group(),)
    stabilizer: float = 1e-6
    times_input: bool = True
    zero_params: tuple[str, ...] = ()
    layer: str | None = None  # None: the module itself; "window_sum": a max pool read as a sum pool
    consts: tuple[tuple[str, object], ...] = field(default=(), compare=False)
    message: str = ""
    #: the constants' values, hashable: rules with other bounds are other rules (also as static jit arguments)
    const_key: tuple = field(default=(), init=False)

    def __post_init__(self):
        key = tuple((name, np.shape(v), np.asarray(v, np.float64).tobytes()) for name, v in self.consts)
        object.__setattr__(self, "const_key", key)
        if self.kind not in ("basic", "pass", "gradient", "wta", "error"):
            raise ValueError(f"kind: expected 'basic', 'pass', 'gradient', 'wta' or 'error', got {self.kind!r}")
        if self.kind == "basic":
            if not self.terms:
                raise ValueError(f"rule {self.name}: a basic rule needs at least one term")
            for t in self.terms:
                if not 0 <= t.group < len(self.groups):
                    raise ValueError(f"rule {self.name}: term group {t.group} out of range for "
                                     f"{len(self.groups)} groups")

    @property
    def consts_dict(self) -> dict:
        return dict(self.consts)


def stabilize(z, eps: float):
    """``z + eps * sign(z)`` with sign(0) = +1 (zennit's stabiliser): never zero for ``eps > 0``."""
    return z + jnp.where(z >= 0, eps, -eps).astype(z.dtype)


def _zp(zero_params) -> tuple[str, ...]:
    if zero_params is None:
        return ()
    if isinstance(zero_params, str):
        return (zero_params,)
    return tuple(zero_params)


def _check_eps(name, eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"{name}: expected a number >= 0, got {eps!r}")
    return float(eps)


# ---------------------------------------------------------------------------------------------------- factories
def epsilon(eps: float = 1e-6, *, zero_params=None) -> Rule:
    """LRP-epsilon: ``z = x W + b``, ``R_in = x * W^T (R / (z + eps sign(z)))``; ``eps = 0`` is LRP-0."""
    eps = _check_eps("eps", eps)
    return Rule(f"epsilon({eps:g})", terms=(Term(),), stabilizer=eps, zero_params=_zp(zero_params))


def zplus(stabilizer: float = 1e-6, *, zero_params=None) -> Rule:
    """LRP-z+ (alpha 1, beta 0 for signed inputs): ``z = x+ W+ + x- W- + b+``,
    ``R_in = x+ * W+^T s + x- * W-^T s`` with ``s = R / stab(z)``.

    ``zero_params=("bias",)`` drops the bias from ``z`` (deep Taylor's and excitation backprop's form).
    """
    eps = _check_eps("stabilizer", stabilizer)
    return Rule("zplus", terms=(Term(POSITIVE, PARAM_POSITIVE), Term(NEGATIVE, PARAM_NEGATIVE, ("bias",))),
                stabilizer=eps, zero_params=_zp(zero_params))


def alpha_beta(alpha: float = 2.0, beta: float = 1.0, stabilizer: float = 1e-6, *, zero_params=None) -> Rule:
    """LRP-alpha-beta: ``alpha`` times the z+ relevance of the positive contributions minus ``beta`` times that of
    the negative ones (``z_a = x+ W+ + x- W- + b+``, ``z_b = x+ W- + x- W+ + b-``). Requires ``alpha - beta = 1``,
    both >= 0."""
    alpha, beta = float(alpha), float(beta)
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha, beta: both must be >= 0, got alpha={alpha}, beta={beta}")
    if alpha - beta != 1.0:
        raise ValueError(f"alpha, beta: alpha - beta must equal 1, got alpha={alpha}, beta={beta}")
    eps = _check_eps("stabilizer", stabilizer)
    terms = (Term(POSITIVE, PARAM_POSITIVE, (), 0, 1.0, alpha), Term(NEGATIVE, PARAM_NEGATIVE, ("bias",), 0, 1.0, alpha),
             Term(POSITIVE, PARAM_NEGATIVE, (), 1, 1.0, -beta), Term(NEGATIVE, PARAM_POSITIVE, ("bias",), 1, 1.0, -beta))
    return Rule(f"alpha_beta({alpha:g}, {beta:g})", terms=terms, groups=(Group(), Group()), stabilizer=eps,
                zero_params=_zp(zero_params))


def gamma(gamma: float = 0.25, stabilizer: float = 1e-6, *, zero_params=None) -> Rule:
    """Generalised LRP-gamma (zennit's): for units with a positive output, ``z = x+ (W + g W+) + x- (W + g W-) +
    (b + g b+)``; for units with a negative output, ``z = x+ (W + g W-) + x- (W + g W+) + (b + g b-)``; units with a
    zero output get nothing. ``R_in = sum of in_k * W_k^T (mask * R / stab(z))``."""
    g = float(gamma)
    if g < 0:
        raise ValueError(f"gamma: expected a number >= 0, got {gamma!r}")
    eps = _check_eps("stabilizer", stabilizer)
    terms = (Term(POSITIVE, _gamma_mod(g, True), (), 0), Term(NEGATIVE, _gamma_mod(g, False), ("bias",), 0),
             Term(POSITIVE, _gamma_mod(g, False), (), 1), Term(NEGATIVE, _gamma_mod(g, True), ("bias",), 1))
    return Rule(f"gamma({g:g})", terms=terms, groups=(Group("positive"), Group("negative")), stabilizer=eps,
                zero_params=_zp(zero_params))


def zbox(low, high, stabilizer: float = 1e-6, *, zero_params=None) -> Rule:
    """LRP-z^B (deep Taylor for bounded inputs): ``z = x W - l W+ - h W-`` (the bias cancels),
    ``R_in = x * W^T s - l * W+^T s - h * W-^T s``.

    ``low`` / ``high``: the lowest / highest input values, scalars or arrays broadcastable to the layer's input
    (e.g. per-channel bounds of normalised pixels, shape ``[C]`` for a channels-last input).

    Scalar and per-channel bounds are constant over the input's other axes, so the two bound terms are one
    layer call on an input of ones: ``l W+ + h W- = 1 (L W+ + H W-)`` with ``L``, ``H`` the bounds scaling the
    kernel's input axis (the one before last, ``[..., C, O]`` as in ``flax.linen.Conv`` / ``Dense``) and the bias
    ``b+ + b- = b``; the same for the relevance, ``l * W+^T s + h * W-^T s = (L W+ + H W-)^T s`` per channel. A
    layer of this rule then costs two forward and two backward passes instead of three (on C3D's first layer).
    Such a layer's parameters must be named ``kernel`` and ``bias``; other bounds keep the three terms.
    """
    lo, hi = np.asarray(low, np.float32), np.asarray(high, np.float32)
    if np.any(lo > hi):
        raise ValueError(f"low, high: expected low <= high, got low={low!r}, high={high!r}")
    eps = _check_eps("stabilizer", stabilizer)
    consts = (("low", jnp.asarray(lo)), ("high", jnp.asarray(hi)))
    if lo.ndim <= 1 and hi.ndim <= 1:
        terms = (Term(IDENTITY, KEEP, (), 0, 1.0, 1.0), Term(ONES, _bounds_mod(lo, hi), (), 0, -1.0, -1.0))
    else:
        terms = (Term(IDENTITY, KEEP, (), 0, 1.0, 1.0), Term(LOW, PARAM_POSITIVE, (), 0, -1.0, -1.0),
                 Term(HIGH, PARAM_NEGATIVE, (), 0, -1.0, -1.0))
    return Rule("zbox", terms=terms, stabilizer=eps, zero_params=_zp(zero_params), consts=consts)


def _bounds_mod(lo: np.ndarray, hi: np.ndarray) -> ParamMod:
    """``kernel -> L W+ + H W-`` (bounds along the kernel's input axis, -2), ``bias -> bias`` (= b+ + b-)."""
    def scaled(v, w):
        v = jnp.asarray(v, w.dtype)
        if v.ndim == 0:
            return v
        if w.ndim < 2 or v.shape[0] not in (1, w.shape[-2]):
            raise ValueError(f"zbox: per-channel bounds of shape {tuple(v.shape)} do not match the kernel's input "
                             f"axis (kernel shape {tuple(w.shape)}, axis -2)")
        return v[:, None]

    def fn(name, w):
        if name == "bias":
            return w
        if name != "kernel":
            raise ValueError(f"zbox with scalar or per-channel bounds: expected a layer with parameters 'kernel' "
                             f"and 'bias' (flax.linen.Conv / Dense), got a parameter {name!r}")
        return scaled(lo, w) * jnp.maximum(w, 0) + scaled(hi, w) * jnp.minimum(w, 0)

    return ParamMod(f"bounds({lo.tolist()}, {hi.tolist()})", fn)


def flat(stabilizer: float = 1e-6) -> Rule:
    """LRP-flat: every weight 1, bias 0, inputs 1: ``R_in = 1^T (R / stab(z))`` with ``z`` the number of taps
    reaching each output (in-bounds taps only for a padded conv)."""
    eps = _check_eps("stabilizer", stabilizer)
    return Rule("flat", terms=(Term(ONES, PARAM_ONES),), stabilizer=eps, times_input=False, zero_params=("bias",))


def wsquare(stabilizer: float = 1e-6, *, zero_params=None) -> Rule:
    """LRP-w^2: inputs 1, every parameter squared (the bias too, as zennit), ``R_in = (W^2)^T (R / stab(z))``."""
    eps = _check_eps("stabilizer", stabilizer)
    return Rule("wsquare", terms=(Term(ONES, PARAM_SQUARE),), stabilizer=eps, times_input=False,
                zero_params=_zp(zero_params))


def norm(stabilizer: float = 1e-6) -> Rule:
    """The epsilon rule without parameters, for average pooling and sums: ``R_i = x_i * J^T (R / stab(f(x)))``
    (``R_i = x_i / sum(x) * R`` for a sum)."""
    eps = _check_eps("stabilizer", stabilizer)
    return Rule("norm", terms=(Term(),), stabilizer=eps)


def proportional(stabilizer: float = 1e-6) -> Rule:
    """Max pooling as sum pooling: each window's relevance shared in proportion to its inputs,
    ``R_i = x_i * sum_{windows w containing i} R_w / stab(sum_{j in w} x_j)`` (Hiley et al.'s C3D explainer; padded
    positions count as zeros). For :class:`jaxvx.models.MaxPool` modules."""
    eps = _check_eps("stabilizer", stabilizer)
    return Rule("proportional", terms=(Term(),), stabilizer=eps, layer="window_sum")


def pass_() -> Rule:
    """Relevance crosses the layer unchanged (activations): ``R_in = R``."""
    return Rule("pass", kind="pass")


def gradient() -> Rule:
    """The layer's ordinary gradient (e.g. winner-takes-all max pooling); stops further matching."""
    return Rule("gradient", kind="gradient")


def wta() -> Rule:
    """Winner-takes-all max pooling: each window's relevance goes to its first maximal input (the ordinary
    max-pool gradient, computed without XLA's slow ``select_and_scatter`` for non-overlapping pools). For
    :class:`jaxvx.models.MaxPool` modules."""
    return Rule("wta", kind="wta")


# ------------------------------------------------------------------------------------------------------- engine
def _modify(variables, term: Term, zero: tuple[str, ...]):
    params = variables.get("params", {}) if isinstance(variables, dict) or hasattr(variables, "get") else {}

    def leaf(path, w):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in zero:
            return jnp.zeros_like(w)
        return term.params(name, w)

    out = dict(variables)
    out["params"] = jax.tree_util.tree_map_with_path(leaf, params)
    return out


def rule_backward(rule: Rule, layer: Callable, inputs: tuple, output, variables, consts: dict, relevance,
                  *, nonneg: bool = False):
    """Input relevances ``(R_in per input)`` of a basic ``rule`` for ``layer(variables, *inputs) -> output``.

    ``relevance``: the relevance reaching the output (same shape). ``nonneg=True`` states that every input is
    >= 0 (known at trace time, e.g. the output of a ReLU): terms whose input modifier vanishes there (the
    negative parts) are then left out, which changes nothing but the cost.
    """
    if rule.kind != "basic":
        raise ValueError(f"rule_backward: {rule.name} is not a basic rule")
    terms = tuple(t for t in rule.terms if not (nonneg and t.input.vanishes_if_nonnegative))
    zs, pulls, ins_all = [], [], []
    for t in terms:
        ins = tuple(t.input(x, consts) for x in inputs)
        vs = _modify(variables, t, rule.zero_params + t.zero_params)
        z, pull = jax.vjp(lambda *a, _vs=vs: layer(_vs, *a), *ins)
        zs.append(z)
        pulls.append(pull)
        ins_all.append(ins)
    s = []
    for g, grp in enumerate(rule.groups):
        members = [(t, z) for t, z in zip(terms, zs) if t.group == g]
        if not members:
            s.append(None)
            continue
        denom = sum(t.sign * z for t, z in members)
        sg = relevance / stabilize(denom, rule.stabilizer)
        if grp.mask == "positive":
            sg = jnp.where(output > 0, sg, 0)
        elif grp.mask == "negative":
            sg = jnp.where(output < 0, sg, 0)
        s.append(sg)
    result = [jnp.zeros_like(x) for x in inputs]
    for t, pull, ins in zip(terms, pulls, ins_all):
        grads = pull(s[t.group].astype(zs[0].dtype))
        for i, (g_i, in_i) in enumerate(zip(grads, ins)):
            contrib = in_i * g_i if rule.times_input else g_i
            result[i] = result[i] + (contrib if t.weight == 1.0 else t.weight * contrib)
    return tuple(result)
