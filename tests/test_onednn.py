"""oneDNN's convolutions as XLA custom calls (jaxvx.models._onednn) against lax.conv_general_dilated in float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _platform import require_onednn
from jaxvx.models import _onednn

DN = ("NDHWC", "DHWIO", "NDHWC")

CASES = [  # (input shape, kernel shape, strides, pads)
    ((2, 6, 9, 10, 3), (3, 3, 3, 3, 5), (1, 1, 1), ((1, 1),) * 3),  # C3D's first layer: plain forward, flipped dx
    ((1, 4, 7, 5, 2), (3, 2, 3, 2, 4), (1, 1, 1), ((2, 0), (0, 1), (1, 2))),  # flipped dx, uneven pads
    ((2, 3, 6, 6, 3), (3, 3, 3, 3, 64), (1, 1, 1), ((1, 1),) * 3),  # 3 channels, 64 out: plain backward data
    ((1, 5, 8, 8, 16), (1, 3, 3, 16, 8), (1, 2, 2), ((0, 0), (1, 1), (1, 1))),  # (2+1)D spatial, stride 2
    ((2, 7, 6, 6, 8), (3, 1, 1, 8, 4), (2, 1, 1), ((1, 1), (0, 0), (0, 0))),  # (2+1)D temporal, stride 2
    ((1, 4, 6, 6, 8), (1, 1, 1, 8, 12), (2, 2, 2), ((0, 0),) * 3),  # downsample
    ((1, 4, 7, 5, 6), (2, 3, 2, 6, 7), (1, 1, 2), ((0, 1), (2, 0), (1, 1))),
    # 3 channels, strided: oneDNN's backward-data kernel on plain layouts
    ((1, 9, 12, 11, 3), (7, 7, 7, 3, 8), (2, 2, 2), ((2, 3), (2, 3), (3, 2))),  # the I3D's first layer, odd sizes
    ((2, 5, 9, 8, 2), (1, 3, 4, 2, 5), (1, 2, 3), ((0, 0), (1, 1), (2, 1))),  # k not a multiple of s, mixed s
    ((1, 4, 6, 7, 3), (1, 1, 1, 3, 4), (2, 3, 2), ((0, 0),) * 3),  # k < s: some positions receive nothing
]
IDS = ["c3d-first", "flipped-uneven", "plain-bwd", "spatial-s2", "temporal-s2", "downsample", "uneven",
       "i3d-first", "strided-mixed", "k-below-s"]


@pytest.fixture(scope="module", autouse=True)
def _library():
    require_onednn()
    assert _onednn.version().count(".") == 2


def _data(xs, ws, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(xs), rng.standard_normal(ws) / np.sqrt(np.prod(ws[:4]))


def _ref(strides, pads):
    """float64 lax convolution (the reference) with x64 enabled for the call."""
    def f(x, w):
        return jax.lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=DN)
    return f


def _close(a, b, rtol=2e-5):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


@pytest.mark.parametrize("xs,ws,strides,pads", CASES, ids=IDS)
def test_forward_and_both_gradients_match_float64(xs, ws, strides, pads):
    x, w = _data(xs, ws, 0)
    with jax.enable_x64(True):
        ref = _ref(strides, pads)
        y64 = ref(jnp.asarray(x), jnp.asarray(w))
        g = np.random.default_rng(1).standard_normal(y64.shape)
        gx64, gw64 = jax.vjp(ref, jnp.asarray(x), jnp.asarray(w))[1](jnp.asarray(g))
    x32, w32, g32 = (jnp.asarray(a, jnp.float32) for a in (x, w, g))
    y, pull = jax.vjp(lambda a, b: _onednn.conv3d(a, b, strides, pads), x32, w32)
    gx, gw = pull(g32)
    assert y.dtype == gx.dtype == gw.dtype == jnp.float32
    _close(y, y64)
    _close(gx, gx64)
    _close(gw, gw64)
    # jitted: same numbers, deterministic
    jy = jax.jit(lambda a, b: _onednn.conv3d(a, b, strides, pads))
    np.testing.assert_array_equal(np.asarray(jy(x32, w32)), np.asarray(jy(x32, w32)))
    _close(jy(x32, w32), y64)


@pytest.mark.parametrize("case", [0, 3, 6, 7])
def test_second_order_derivatives(case):
    # the three kernels' rules close over each other: derivatives of gradients match lax's (float64)
    xs, ws, strides, pads = CASES[case]
    x, w = _data(xs, ws, 2)

    def loss(conv):
        def inner(a, b):
            y = conv(a, b, strides, pads)
            return jnp.sum(jnp.tanh(y) * y)

        def outer(a, b):
            ga, gb = jax.grad(inner, (0, 1))(a, b)
            return jnp.sum(jnp.sin(ga)) + jnp.sum(gb ** 2)
        return outer

    def lax_conv(a, b, s, p):
        return jax.lax.conv_general_dilated(a, b, s, p, dimension_numbers=DN)

    with jax.enable_x64(True):
        r = jax.grad(loss(lax_conv), (0, 1))(jnp.asarray(x), jnp.asarray(w))
    o = jax.jit(jax.grad(loss(_onednn.conv3d), (0, 1)))(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32))
    for a, b in zip(o, r):
        _close(a, b, rtol=1e-4)


@pytest.mark.parametrize("case", [0, 4, 8])
def test_vmap_over_inputs_kernels_both_and_nested(case):
    xs, ws, strides, pads = CASES[case]
    x, w = (jnp.asarray(a, jnp.float32) for a in _data(xs, ws, 3))
    xb = jnp.stack([x, 2 * x, -x])
    wb = jnp.stack([w, 0.5 * w, -w])

    def ours(a, b):
        return _onednn.conv3d(a, b, strides, pads)

    def ref(a, b):
        return jax.lax.conv_general_dilated(a, b, strides, pads, dimension_numbers=DN,
                                            precision=jax.lax.Precision.HIGHEST)

    for axes, args in (((0, None), (xb, w)), ((None, 0), (x, wb)), ((0, 0), (xb, wb))):
        _close(jax.jit(jax.vmap(ours, axes))(*args), jax.vmap(ref, axes)(*args))
    nested = jax.vmap(lambda b: jax.vmap(lambda a: ours(a, b))(xb))(wb)
    _close(nested, jax.vmap(lambda b: jax.vmap(lambda a: ref(a, b))(xb))(wb))
    # per-example gradients (batched inputs and kernels in all three kernels)
    def grads(f):
        return jax.vmap(jax.grad(lambda a, b: jnp.sum(f(a, b) ** 2), (0, 1)))(xb, wb)
    for a, b in zip(jax.jit(lambda: grads(ours))(), grads(ref)):
        _close(a, b, rtol=1e-4)


def test_inside_scan_and_map():
    xs, ws, strides, pads = CASES[1]
    x, w = (jnp.asarray(a, jnp.float32) for a in _data(xs, ws, 4))

    def step(carry, _):
        g = jax.grad(lambda a: jnp.sum(_onednn.conv3d(a, w, strides, pads) ** 2))(carry)
        return carry - 1e-3 * g, jnp.sum(g)

    def ref_step(carry, _):
        g = jax.grad(lambda a: jnp.sum(jax.lax.conv_general_dilated(a, w, strides, pads, dimension_numbers=DN,
                                                                    precision="highest") ** 2))(carry)
        return carry - 1e-3 * g, jnp.sum(g)

    out, sums = jax.jit(lambda c: jax.lax.scan(step, c, None, length=3))(x)
    ref_out, ref_sums = jax.lax.scan(ref_step, x, None, length=3)
    _close(out, ref_out)
    _close(sums, ref_sums, rtol=1e-4)
    mapped = jax.jit(lambda a: jax.lax.map(lambda ai: _onednn.conv3d(ai[None], w, strides, pads)[0], a))(x)
    _close(mapped, jax.lax.conv_general_dilated(x, w, strides, pads, dimension_numbers=DN, precision="highest"))


def test_bad_arguments_raise_named_errors():
    x = jnp.zeros((1, 4, 6, 6, 3), jnp.float32)
    w = jnp.zeros((3, 3, 3, 3, 2), jnp.float32)
    with pytest.raises(TypeError, match="float32"):
        _onednn.conv3d(x.astype(jnp.bfloat16), w, (1, 1, 1), ((1, 1),) * 3)
    with pytest.raises(ValueError, match="strides"):
        _onednn.conv3d(x, w, (0, 1, 1), ((1, 1),) * 3)
    with pytest.raises(ValueError, match="kernel"):
        _onednn.conv3d(x, w[:, :, :, :2], (1, 1, 1), ((1, 1),) * 3)
    with pytest.raises(ValueError, match="output sizes"):
        _onednn.conv3d(x[:, :2], w, (1, 1, 1), ((0, 0),) * 3)


def test_conv_general_dilated_routes_float32_only(monkeypatch):
    # float32 goes to oneDNN, other dtypes to the 2D rewrite (same result either way)
    from jaxvx import models

    monkeypatch.setenv(models._layers.CONV_ENV, "onednn")
    x = jnp.asarray(np.random.default_rng(5).standard_normal((1, 4, 6, 6, 3)))
    w = jnp.asarray(np.random.default_rng(6).standard_normal((3, 3, 3, 3, 2)))

    def text(dtype):
        return jax.jit(lambda a, b: models.conv_general_dilated(a, b, (1, 1, 1), "SAME", dimension_numbers=DN)
                       ).lower(x.astype(dtype), w.astype(dtype)).as_text()

    assert "jaxvx_onednn_conv3d_fwd" in text(jnp.float32)
    assert "jaxvx_onednn_conv3d_fwd" not in text(jnp.bfloat16)
    out = models.conv_general_dilated(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), (1, 1, 1), "SAME",
                                      dimension_numbers=DN)
    assert out.dtype == jnp.bfloat16


def test_empty_batch_and_empty_channels():
    # zero-size operands: an empty output, or zeros where the sum runs over no channel (as lax)
    w = jnp.ones((3, 3, 3, 2, 4), jnp.float32)
    y = jax.jit(lambda a: _onednn.conv3d(a, w, (1, 1, 1), ((1, 1),) * 3))(jnp.zeros((0, 4, 5, 5, 2), jnp.float32))
    assert y.shape == (0, 4, 5, 5, 4)
    x = jnp.ones((1, 4, 5, 5, 0), jnp.float32)
    y = _onednn.conv3d(x, jnp.ones((3, 3, 3, 0, 4), jnp.float32), (1, 1, 1), ((1, 1),) * 3)
    np.testing.assert_array_equal(np.asarray(y), np.zeros((1, 4, 5, 5, 4), np.float32))


def test_a_failing_self_check_falls_back_to_xla(monkeypatch):
    # a library that loads but computes wrong (or not at all) is not used: conv_form() says "rewrite", and asking
    # for "onednn" explicitly names the reason
    from jaxvx import models

    def broken():
        raise RuntimeError("self-check failed: oneDNN's forward differs from lax's")

    monkeypatch.delenv(models._layers.CONV_ENV, raising=False)
    monkeypatch.setattr(_onednn, "_self_check", broken)
    _onednn._load.cache_clear()
    try:
        assert not _onednn.available() and "self-check failed" in _onednn.load_error()
        assert models.conv_form() == "rewrite"
        monkeypatch.setenv(models._layers.CONV_ENV, "onednn")
        with pytest.raises(RuntimeError, match="JAXVX_CONV=onednn.*self-check failed"):
            models.conv_form()
    finally:
        monkeypatch.undo()
        _onednn._load.cache_clear()
    assert _onednn.available()
