"""Excitation backprop (Zhang et al.) and contrastive excitation backprop for CNN-LSTMs (Bargal et al.)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvx import _program as P
from jaxvx import lrp
from jaxvx.lrp import _rules as R
from jaxvx.lrp._engine import handler_for
from jaxvx.methods._cam import INTERPOLATIONS, clip_maps, upsample
from jaxvx.methods._common import check_video, guarded, resolve_target

__all__ = ["excitation_backprop", "contrastive_excitation_backprop"]


def _check_interp(interpolation):
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}, got {interpolation!r}")


def _map_to_clip(rel, video, name):
    """Channel-summed relevance of a layer as ``[B, t, h, w]`` (per-frame 2D layers regrouped by clip)."""
    return clip_maps(rel, video.shape, name=name).sum(-1)


def excitation_backprop(layer=None, *, stabilizer: float = 1e-6, interpolation: str = "linear",
                        max_pool: str = "wta"):
    """Excitation backprop: marginal winning probabilities by the z+ rule without bias,
    ``P_i = a_i * sum_j w+_ij P_j / stab(sum_i' a_i' w+_i'j)``, on every conv and dense layer (norm on averages and
    sums, pass on ReLUs, winner-takes-all max pooling), from a one-hot top signal at the target.

    ``layer=None``: the winning probabilities of the input elements (shape of ``video``; signed inputs are split
    as the z+ rule does). ``layer="conv5b"`` (a layer path, :meth:`jaxvx._program.Program.layer`; any model):
    those of that layer's outputs, summed over channels,
    upsampled to ``(T, H, W)`` (trilinear by default), ``[B, T, H, W, 1]`` (the usual EB saliency map).
    """
    _check_interp(interpolation)
    composite = lrp.excitation(stabilizer, max_pool=max_pool)
    if layer is not None and (not isinstance(layer, str) or not layer):
        raise TypeError(f"layer: expected a layer path such as 'conv5b' or 'Mixed_5c', or None, got {layer!r}")

    @guarded
    def method(forward, video, target=None, *, key=None):
        video = check_video(video)
        if layer is None:
            rel, _, _ = lrp.relevance(forward, video, target, composite, seed_kind="one_hot")
            return rel
        logits, _, pullback = P.layer_vjp(forward, video, [layer],
                                          handler=lambda program: handler_for(composite, program))
        target = resolve_target(logits, target)
        (rel,) = pullback(jax.nn.one_hot(target, logits.shape[-1], dtype=logits.dtype))
        m = upsample(_map_to_clip(rel, video, "layer"), video.shape[1:4], interpolation)
        return m[..., None].astype(video.dtype)

    method.__name__ = "excitation_backprop"
    return method


_NEG_POS = R.ParamMod("(-w)+", lambda n, w: jnp.maximum(-w, 0))
_NEG_NEG = R.ParamMod("(-w)-", lambda n, w: jnp.minimum(-w, 0))


def _negated_zplus(stabilizer):
    """z+ of the negated weights (bias ignored): the classifier's rule for the contrastive signal."""
    return R.Rule("zplus(-W)", terms=(R.Term(R.POSITIVE, _NEG_POS), R.Term(R.NEGATIVE, _NEG_NEG)),
                  stabilizer=stabilizer, zero_params=("bias",))


def contrastive_excitation_backprop(layer=None, *, features="cnn", classifier="classifier",
                                    stabilizer: float = 1e-6, interpolation: str = "linear"):
    """Contrastive excitation backprop for CNN-LSTMs (Bargal et al.'s cEB-R), e.g. :class:`jaxvx.models.CNNLSTM`.

    1. A one-hot signal at the target's per-step logits (through the time mean: every step) is propagated to the
       per-frame features (``features``: the module whose output ``[B*T, F]`` feeds the LSTM, default ``"cnn"``)
       by the EB rule on ``classifier`` (z+, bias ignored) and the ordinary gradient through the LSTM: ``P+``;
       the same with the classifier's weights negated: ``P-``.
    2. Each is normalised by its total over time and features, per clip; ``D = P+ / sum P+ - P- / sum P-``.
    3. ``D`` is propagated by EB (z+ without bias, pass on ReLUs, norm on averages, winner-takes-all max pooling)
       through the per-frame CNN down to ``layer`` (default: the last convolution inside ``features``), summed over
       channels: a signed map ``[B, T, h, w]``, upsampled to ``(T, H, W)`` (trilinear by default): relevance
       ``[B, T, H, W, 1]``.
    """
    _check_interp(interpolation)
    for name, value in (("features", features), ("classifier", classifier)):
        if not isinstance(value, str) or not value:
            raise TypeError(f"{name}: expected a layer path such as 'cnn', got {value!r}")
    if layer is not None and (not isinstance(layer, str) or not layer):
        raise TypeError(f"layer: expected a layer path such as 'cnn/conv5_3', or None, got {layer!r}")
    eps = R._check_eps("stabilizer", stabilizer)

    @guarded
    def method(forward, video, target=None, *, key=None):
        video = check_video(video)
        program = P.trace(forward, video)
        feat = program.layer(features, name="features")
        head = program.layer(classifier, name="classifier")
        scope = next(sc for sc in program.scopes() if any(p == sc or p.startswith(sc + "/") for p in feat.scopes)
                     and P.path_matcher(features)(sc))
        inside = [n for n in program.nodes if n.path == scope or n.path.startswith(scope + "/")]
        if layer is None:
            convs = [n for n in inside if n.kind == "conv"]
            if not convs:
                raise ValueError(f"layer: no convolution inside features {scope!r}; pass layer=...")
            conv = convs[-1]
        else:
            conv = program.layer(layer)
        eb = {"activation": R.pass_(), "sum": R.norm(eps), "scale": R.pass_(), "max_pool": R.wta(),
              "conv": R.zplus(eps, zero_params=("bias",)), "dense": R.zplus(eps, zero_params=("bias",))}
        in_features = {n.index for n in inside}

        def composite(head_rule):
            # the classifier's rule, EB inside the per-frame CNN, and through the recurrent part (the LSTM's gates
            # and scan) the ordinary gradient, as Bargal et al. propagate it
            entries = [(lambda n, p: n.index == head.index, head_rule),
                       *((lambda n, p, k=k: n.index in in_features and n.kind == k, r) for k, r in eb.items()),
                       (lambda n, p: True, R.gradient())]
            return lrp.Composite(f"ceb[{head_rule.name}]", tuple(entries))

        pos = handler_for(composite(R.zplus(eps, zero_params=("bias",))), program)
        neg = handler_for(composite(_negated_zplus(eps)), program)

        # 1. P+ and P- at the features
        def at_features(handler):
            def f(delta):
                out, captured = P.evaluate(program, video, handler, taps={feat.index: delta})
                return out

            zeros = jnp.zeros(feat.shape, feat.dtype)
            logits, pull = jax.vjp(f, zeros)
            return logits, pull

        logits, pull_pos = at_features(pos)
        target_ = resolve_target(logits, target)
        seed = jax.nn.one_hot(target_, logits.shape[-1], dtype=logits.dtype)
        signals = [pull_pos(seed)[0], at_features(neg)[1](seed)[0]]
        b = video.shape[0]

        def normalise(p):
            p = p.reshape((b, -1))
            total = p.sum(axis=1, keepdims=True)
            return p / R.stabilize(total, eps)

        d = (normalise(signals[0]) - normalise(signals[1])).reshape(signals[0].shape)

        # 3. D down to the conv layer by EB
        def to_features(delta):
            _, captured = P.evaluate(program, video, pos, taps={conv.index: delta, feat.index: 0.0})
            return captured[feat.index]

        zeros = jnp.zeros(conv.shape, conv.dtype)
        _, pull = jax.vjp(to_features, zeros)
        (rel,) = pull(d.astype(feat.dtype))
        m = upsample(_map_to_clip(rel, video, "layer"), video.shape[1:4], interpolation)
        return m[..., None].astype(video.dtype)

    method.__name__ = "contrastive_excitation_backprop"
    return method
