"""LRP as a method: ``lrp(composite)`` gives ``relevance = method(forward, video, target)``, ``[B, T, H, W, C]``.

One forward pass and one backward pass in which every layer of the traced program (:mod:`jaxvx._program`) passes
relevance by its composite's rule instead of the gradient: ``R_i = sum_j (z_ij / z_j) R_j`` for the rules' own
``z`` (z+, epsilon, gamma, z^B, flat, alpha-beta: :mod:`jaxvx.lrp`), seeded at the target's logit, so that a
conserving composite's relevance sums to it.
"""

from __future__ import annotations

from jaxvx import lrp as _lrp
from jaxvx.methods._common import check_video, guarded

__all__ = ["lrp"]


def lrp(composite, *, seed: str = "logit"):
    """Layer-wise relevance propagation with a :class:`jaxvx.lrp.Composite` (rules attached as custom VJPs).

    ``relevance = method(forward, video, target)``: float32, shape of ``video``; the relevance of each input
    element, obtained by one forward pass and one modified backward pass seeded at the target's output:
    ``seed="logit"`` (default: the target's logit, so a conserving composite's relevance sums to the logit),
    ``"one_hot"`` (1) or ``"softmax"`` (the target's softmax probability). ``target=None``: the predicted class.

    ``forward`` is any pure function of the video: a Flax linen apply, an NNX model merged inside a function, plain
    JAX; BatchNorm after a layer is folded automatically (:mod:`jaxvx._program`). Example::

        method = jaxvx.methods.lrp(jaxvx.lrp.deep_taylor(low=-1.0, high=1.0))
        relevance = jax.jit(method, static_argnums=0)(forward, video, target)
    """
    if not isinstance(composite, _lrp.Composite):
        raise TypeError(f"composite: expected a jaxvx.lrp.Composite (e.g. jaxvx.lrp.epsilon_plus()), got "
                        f"{type(composite).__name__}")
    if seed not in _lrp.SEEDS:
        raise ValueError(f"seed: expected one of {_lrp.SEEDS}, got {seed!r}")

    @guarded
    def method(forward, video, target=None, *, key=None):
        video = check_video(video)
        rel, _, _ = _lrp.relevance(forward, video, target, composite, seed_kind=seed)
        return rel

    method.__name__ = f"lrp_{composite.name}"
    return method
