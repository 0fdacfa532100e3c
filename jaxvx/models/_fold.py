"""BatchNorm folding: merge every inference-mode BatchNorm into the convolution before it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

__all__ = ["fold_batchnorm"]


def _path(keys) -> str:
    return "/".join(keys)


def fold_batchnorm(model, variables):
    """Merge each BatchNorm into the preceding conv: ``(model, variables) -> (folded_model, folded_variables)``.

    For a BatchNorm with scale gamma, bias beta, running mean mu and variance var (``batch_stats``) after a conv
    with kernel W ``[..., in, out]`` and bias b (0 when absent), every output channel gets
    ``s = gamma / sqrt(var + eps)``, ``W' = W * s`` and ``b' = (b - mu) * s + beta``, so that
    ``conv'(x) = BN(conv(x))`` in inference mode. The folded model is ``model.clone(fold_bn=True)``: the same
    architecture without BatchNorm modules and with conv biases; its logits equal the original's (inference
    mode) up to float rounding. LRP needs this form (zennit's canonizer does the same).

    Jaxvx's models name each BatchNorm ``<conv>_bn`` beside the conv it follows; that is how the pairs are found.
    A model without ``batch_stats`` (C3D, the LSTMs) is returned unchanged. The variables part is a pure function of
    the arrays: ``jax.jit(lambda v: fold_batchnorm(model, v)[1])`` works. ``eps`` is ``model.bn_epsilon`` when present,
    else 1e-5.

    Args:
        model: a jaxvx model (Flax Module) with a ``fold_bn`` attribute when it has BatchNorms.
        variables: ``{"params": ..., "batch_stats": ...}`` as returned by ``model.init`` or a converter.

    Returns:
        ``(folded_model, {"params": folded_params, **other collections except batch_stats})``.
    """
    if "params" not in variables:
        raise ValueError(f"variables: expected a 'params' collection, got collections {sorted(variables)}")
    stats = variables.get("batch_stats") or {}
    rest = {k: v for k, v in variables.items() if k not in ("params", "batch_stats")}
    flat_stats = traverse_util.flatten_dict(stats)
    if not flat_stats:
        return model, {"params": variables["params"], **rest}
    if not hasattr(model, "fold_bn"):
        raise TypeError(f"model: {type(model).__name__} has batch_stats but no fold_bn attribute to fold them into")
    if model.fold_bn:
        raise ValueError("model: already has fold_bn=True but variables still hold batch_stats")
    from jaxvx.models._r2plus1d import BN_EPSILON

    eps = getattr(model, "bn_epsilon", BN_EPSILON)
    params = dict(traverse_util.flatten_dict(variables["params"]))
    bn_modules = sorted({k[:-1] for k in flat_stats})
    for bn in bn_modules:
        if not bn[-1].endswith("_bn"):
            raise ValueError(f"variables: BatchNorm {_path(bn)!r} is not named '<conv>_bn'; cannot find its conv")
        conv = bn[:-1] + (bn[-1][:-3],)
        if conv + ("kernel",) not in params:
            raise ValueError(f"variables: BatchNorm {_path(bn)!r} has no conv {_path(conv)!r} with a kernel")
        try:
            mean, var = flat_stats[bn + ("mean",)], flat_stats[bn + ("var",)]
        except KeyError as e:
            raise ValueError(f"variables: batch_stats of {_path(bn)!r} lack {e.args[0][-1]!r}") from None
        kernel = params.pop(conv + ("kernel",))
        n = kernel.shape[-1]
        if mean.shape != (n,) or var.shape != (n,):
            raise ValueError(f"variables: batch_stats of {_path(bn)!r} have shapes {mean.shape}, {var.shape}; "
                             f"expected ({n},) to match the kernel of {_path(conv)!r} {kernel.shape}")
        gamma = params.pop(bn + ("scale",), None)
        beta = params.pop(bn + ("bias",), None)
        bias = params.pop(conv + ("bias",), None)
        params[conv + ("kernel",)], params[conv + ("bias",)] = _fold_one(kernel, bias, gamma, beta, mean, var, eps)
    left = sorted({_path(k[:-1]) for k in params if k[:-1] in set(bn_modules)})
    if left:
        raise ValueError(f"variables: BatchNorm parameters left over after folding: {left}")
    return model.clone(fold_bn=True), {"params": traverse_util.unflatten_dict(params), **rest}


def _fold_one(kernel, bias, gamma, beta, mean, var, eps):
    """``(W * s, (b - mu) * s + beta)`` with ``s = gamma / sqrt(var + eps)``, per output channel (last axis).

    Concrete arrays are folded in float64 NumPy (one rounding to the kernel's dtype, and no per-shape compilation
    of eager jnp ops); traced ones (under ``jax.jit``) with jnp in their own dtype.
    """
    arrays = [a for a in (kernel, bias, gamma, beta, mean, var) if a is not None]
    dtype = jnp.result_type(kernel)
    if any(isinstance(a, jax.core.Tracer) for a in arrays):
        xp, cast = jnp, (lambda a: jnp.asarray(a))
    else:
        xp, cast = np, (lambda a: np.asarray(a, np.float64))
    s = 1.0 / xp.sqrt(cast(var) + eps)
    if gamma is not None:
        s = cast(gamma) * s
    b = -cast(mean) if bias is None else cast(bias) - cast(mean)
    b = b * s
    if beta is not None:
        b = b + cast(beta)
    return (cast(kernel) * s).astype(dtype), b.astype(dtype)
