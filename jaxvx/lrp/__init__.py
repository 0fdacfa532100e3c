"""Layer-wise relevance propagation and deep Taylor decomposition as custom VJPs.

Rules are data (:class:`Rule`: how to modify a layer's inputs and parameters, how to group and reduce, as in
zennit's design) applied by one generic custom VJP around each operation of the traced program of the user's
``forward`` (:mod:`jaxvx._program`: any Flax linen or NNX model, or plain JAX function; BatchNorm and other
per-channel affine maps after a convolution or dense layer are folded into it). The relevance travels as the
cotangent: what reaches the input is the relevance. Composites (:class:`Composite`) say which rule each operation
gets (first match wins, with a special rule for the first layer in forward order); an operation without a rule
that does more than move values (softmax, attention, LayerNorm, ...) is refused by name.

Rules (zennit's formulas and defaults; stabiliser ``z + eps * sign(z)``, sign(0) = +1):
:func:`epsilon` (1e-6), :func:`zplus`, :func:`alpha_beta` (2, 1), :func:`gamma` (0.25), :func:`zbox` (low, high),
:func:`flat`, :func:`wsquare`, :func:`norm` (average pooling, sums), :func:`pass_` (activations), :func:`gradient`
(the layer's ordinary gradient), :func:`wta` (max pooling's winner takes all, the default) and
:func:`proportional` (max pooling as sum pooling).

Composites: :func:`epsilon_plus`, :func:`epsilon_plus_flat`, :func:`epsilon_gamma_box`,
:func:`epsilon_alpha2_beta1`, :func:`deep_taylor`, :func:`excitation`. Use them with
``jaxvx.methods.lrp(composite)``.

Example::

    method = jaxvx.methods.lrp(jaxvx.lrp.deep_taylor(low=-1.0, high=1.0))
    relevance = method(functools.partial(model.apply, variables), video, target)
"""

from jaxvx.lrp._composites import (
    ACTIVATION,
    AVG_POOL,
    CONV,
    DENSE,
    LINEAR,
    MAX_POOL,
    SCALE,
    SUM,
    Composite,
    Kind,
    deep_taylor,
    epsilon_alpha2_beta1,
    epsilon_gamma_box,
    epsilon_plus,
    epsilon_plus_flat,
    excitation,
    layer_map_base,
    name_map,
)
from jaxvx.lrp._engine import SEEDS, attach, canonize, relevance, seed
from jaxvx.lrp._rules import (
    Group,
    InputMod,
    ParamMod,
    Rule,
    Term,
    alpha_beta,
    epsilon,
    flat,
    gamma,
    gradient,
    norm,
    pass_,
    proportional,
    rule_backward,
    wta,
    stabilize,
    wsquare,
    zbox,
    zplus,
)

__all__ = [
    # rules
    "Rule",
    "Term",
    "Group",
    "InputMod",
    "ParamMod",
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
    "stabilize",
    "rule_backward",
    # composites
    "Composite",
    "Kind",
    "epsilon_plus",
    "epsilon_plus_flat",
    "epsilon_gamma_box",
    "epsilon_alpha2_beta1",
    "deep_taylor",
    "excitation",
    "name_map",
    "layer_map_base",
    "CONV",
    "DENSE",
    "LINEAR",
    "ACTIVATION",
    "AVG_POOL",
    "SUM",
    "SCALE",
    "MAX_POOL",
    # engine
    "attach",
    "relevance",
    "seed",
    "SEEDS",
    "canonize",
]
