"""Excitation backprop (Zhang et al.) and contrastive excitation backprop for CNN-LSTMs (Bargal et al.)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvx import _intercept as I
from jaxvx import _program as P
from jaxvx import lrp
from jaxvx.lrp import _rules as R
from jaxvx.lrp._engine import handler_for
from jaxvx.lrp._engine import rule_for as _rule_for
from jaxvx.methods._cam import INTERPOLATIONS, clip_maps, upsample
from jaxvx.methods._common import check_video, resolve_target

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
    upsampled to ``(T, H, W)`` (trilinear by default) and repeated over channels (the usual EB saliency map).
    """
    _check_interp(interpolation)
    composite = lrp.excitation(stabilizer, max_pool=max_pool)
    if layer is not None and (not isinstance(layer, str) or not layer):
        raise TypeError(f"layer: expected a layer path such as 'conv5b' or 'Mixed_5c', or None, got {layer!r}")

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
        return jnp.broadcast_to(m[..., None], video.shape).astype(video.dtype)

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
       channels: a signed map ``[B, T, h, w]``, upsampled to ``(T, H, W)`` (trilinear by default) and repeated
       over channels.
    """
    _check_interp(interpolation)
    feat_match = I.layer_matcher(features, name="features")
    cls_match = I.layer_matcher(classifier, name="classifier")
    if layer is not None:
        I.layer_matcher(layer)
    eps = R._check_eps("stabilizer", stabilizer)

    def method(forward, video, target=None, *, key=None):
        video = check_video(video)
        _, shapes, paths = I.tap_shapes(forward, video, [features, classifier], name="features/classifier")
        feat_path = paths[0]
        inside = feat_path + "/"

        def in_features(types):
            return lambda m, p: p.startswith(inside) and isinstance(m, types.modules)

        cnn_map = (
            (in_features(lrp.ACTIVATION), R.pass_()),
            (in_features(lrp.SUM), R.norm(eps)),
            (in_features(lrp.AVG_POOL), R.norm(eps)),
            (in_features(lrp.MAX_POOL), R.wta()),
            (in_features(lrp.LINEAR), R.zplus(eps, zero_params=("bias",))),
        )
        pos = lrp.Composite("ceb+", ((cls_match, R.zplus(eps, zero_params=("bias",))),) + cnn_map)
        neg = lrp.Composite("ceb-", ((cls_match, _negated_zplus(eps)),) + cnn_map)

        conv_layer = layer
        if conv_layer is None:
            record = []
            jax.eval_shape(lambda v: I.run(forward, v, record=record), video)
            convs = [r.path for r in record if r.path.startswith(inside) and isinstance(r.module, lrp.CONV.modules)]
            if not convs:
                raise ValueError(f"layer: no convolution inside features module {feat_path!r}; pass layer=...")
            conv_layer = convs[-1]
            conv_spec = lambda m, p, _c=conv_layer: p == _c  # noqa: E731
        else:
            conv_spec = layer

        # 1. P+ and P- at the features
        signals = []
        target_ = target
        for comp in (pos, neg):
            logits, _, pull = I.layer_vjp(forward, video, [features], name="features",
                                          rule_for=lambda comp=comp: _rule_for(comp))
            target_ = resolve_target(logits, target_)
            (p,) = pull(jax.nn.one_hot(target_, logits.shape[-1], dtype=logits.dtype))
            signals.append(p)
        b = video.shape[0]

        def normalise(p):
            p = p.reshape((b, -1))
            total = p.sum(axis=1, keepdims=True)
            return p / R.stabilize(total, eps)

        d = (normalise(signals[0]) - normalise(signals[1])).reshape(signals[0].shape)

        # 3. D down to the conv layer by EB
        _, conv_shapes, _ = I.tap_shapes(forward, video, [conv_spec], name="layer")

        def to_features(delta):
            taps = [I.Tap(I.layer_matcher(conv_spec), "layer"), I.Tap(feat_match, "features")]
            I.run(forward, video, rule_for=_rule_for(pos), taps=taps, deltas=[delta, jnp.zeros((), delta.dtype)])
            return taps[1].hit

        zeros = jnp.zeros(conv_shapes[0].shape, conv_shapes[0].dtype)
        _, pull = jax.vjp(to_features, zeros)
        (rel,) = pull(d.astype(zeros.dtype))
        m = upsample(_map_to_clip(rel, video, "layer"), video.shape[1:4], interpolation)
        return jnp.broadcast_to(m[..., None], video.shape).astype(video.dtype)

    method.__name__ = "contrastive_excitation_backprop"
    return method
