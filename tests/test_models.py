"""jaxvx.models: layers against NumPy, shapes, parameter counts, the LSTM cells against NumPy loops, jit/vmap.

Variables are drawn with NumPy on ``jax.eval_shape(model.init)`` shapes: compiling ``model.init``'s random number
generation takes tens of seconds per model on a 2-core CPU, the forward pass a few.
"""

import json
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _nets import init
from _platform import require_onednn
from jaxvx import models


def called_modules(model, variables, x, **kwargs):
    """``[(module path, type name)]`` of every Module ``__call__`` during ``model.apply``, in call order."""
    calls = []

    def record(next_fun, args, kw, context):
        if context.method_name == "__call__":
            calls.append(("/".join(context.module.path), type(context.module).__name__))
        return next_fun(*args, **kw)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, **kwargs), variables, x)
    return calls


def _rng(seed=0):
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------------------------
# layers against direct NumPy loops


def _np_pool(x, window, strides, pads, op, fill):
    """Reference pooling of channels-last x [B, *S, C] with explicit (low, high) pads filled with ``fill``."""
    n = len(window)
    xp = np.pad(x, [(0, 0)] + list(pads) + [(0, 0)], constant_values=fill)
    out_shape = [(xp.shape[1 + d] - window[d]) // strides[d] + 1 for d in range(n)]
    out = np.zeros([x.shape[0]] + out_shape + [x.shape[-1]], x.dtype)
    for idx in np.ndindex(*out_shape):
        sl = tuple(slice(i * s, i * s + w) for i, s, w in zip(idx, strides, window))
        win = xp[(slice(None),) + sl + (slice(None),)]
        out[(slice(None),) + idx + (slice(None),)] = op(win.reshape(x.shape[0], -1, x.shape[-1]), axis=1)
    return out


def test_maxpool3d_pads_with_minus_inf():
    x = -1.0 - _rng().random((2, 3, 5, 7, 4)).astype(np.float32)  # all negative: zero padding would show
    pads = ((0, 0), (1, 1), (1, 1))
    out = models.MaxPool3D((2, 2, 2), (2, 2, 2), pads).apply({}, jnp.asarray(x))
    ref = _np_pool(x, (2, 2, 2), (2, 2, 2), pads, np.max, -np.inf)
    assert out.shape == (2, 1, 3, 4, 4)
    np.testing.assert_array_equal(np.asarray(out), ref)
    out = models.MaxPool3D((1, 2, 2)).apply({}, jnp.asarray(x))  # strides default to the window
    np.testing.assert_array_equal(np.asarray(out), _np_pool(x, (1, 2, 2), (1, 2, 2), ((0, 0),) * 3, np.max, 0))
    with pytest.raises(ValueError, match="expected an input of 5 dims"):
        models.MaxPool3D((2, 2, 2)).apply({}, jnp.zeros((2, 4, 4, 3)))


def test_pool2d_and_avgpool():
    x = _rng(1).standard_normal((2, 7, 6, 3)).astype(np.float32)
    out = models.MaxPool2D((3, 2), (2, 2)).apply({}, jnp.asarray(x))
    np.testing.assert_array_equal(np.asarray(out), _np_pool(x, (3, 2), (2, 2), ((0, 0),) * 2, np.max, 0))
    out = models.AvgPool2D((2, 2), (1, 2), ((1, 1), (0, 0))).apply({}, jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(out), _np_pool(x, (2, 2), (1, 2), ((1, 1), (0, 0)), np.mean, 0.0),
                               rtol=1e-6, atol=1e-6)
    x3 = _rng(2).standard_normal((1, 4, 4, 4, 2)).astype(np.float32)
    out = models.AvgPool3D((2, 2, 2)).apply({}, jnp.asarray(x3))
    np.testing.assert_allclose(np.asarray(out), _np_pool(x3, (2,) * 3, (2,) * 3, ((0, 0),) * 3, np.mean, 0.0),
                               rtol=1e-6)


def test_parameter_free_layers():
    x = _rng(3).standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(models.ReLU().apply({}, x), np.maximum(x, 0))
    np.testing.assert_array_equal(models.Flatten().apply({}, x), x.reshape(2, -1))
    flat = np.asarray(models.Flatten(channels_first=True).apply({}, x))
    np.testing.assert_array_equal(flat, x.transpose(0, 4, 1, 2, 3).reshape(2, -1))
    # PyTorch order (C, T, H, W): feature index c*T*H*W + t*H*W + h*W + w
    assert flat[1, 5 * 60 + 2 * 20 + 3 * 5 + 4] == x[1, 2, 3, 4, 5]
    np.testing.assert_allclose(models.GlobalAvgPool().apply({}, x), x.mean(axis=(1, 2, 3)), rtol=1e-6)
    np.testing.assert_allclose(models.TemporalMean().apply({}, x[:, :, 0, 0]), x[:, :, 0, 0].mean(1), rtol=1e-6)
    np.testing.assert_allclose(models.Sum().apply({}, x, 2 * x, -x), 2 * x, rtol=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        models.Sum().apply({}, x, x[:1])


CONV_CASES = [  # (input shape, kernel shape, strides, padding)
    ((2, 5, 9, 8, 3), (3, 3, 3, 3, 4), (1, 1, 1), ((1, 1),) * 3),  # C3D
    ((2, 5, 9, 8, 3), (3, 1, 1, 3, 4), (2, 1, 1), ((1, 1), (0, 0), (0, 0))),  # (2+1)D temporal, stride 2
    ((2, 5, 9, 8, 3), (1, 3, 3, 3, 4), (1, 2, 2), ((0, 0), (1, 1), (1, 1))),  # (2+1)D spatial, stride 2
    ((2, 5, 9, 8, 3), (1, 1, 1, 3, 4), (2, 2, 2), "VALID"),  # downsample
    ((2, 5, 9, 8, 3), (2, 3, 2, 3, 4), (2, 1, 3), "SAME"),
    ((1, 4, 6, 7, 2), (3, 2, 1, 2, 3), (1, 1, 1), ((2, 0), (0, 1), (1, 0))),
    # over 128 input channels the temporal taps are summed, not stacked: both forms are covered
    ((1, 5, 4, 5, 130), (3, 3, 3, 130, 2), (2, 1, 1), ((1, 1),) * 3),
]


CPU_FORMS = ["onednn", "rewrite"]


def _force(monkeypatch, form):
    if form == "onednn":
        require_onednn()
    monkeypatch.setenv(models._layers.CONV_ENV, form)


@pytest.mark.parametrize("form", CPU_FORMS)
@pytest.mark.parametrize("xs,ws,strides,padding", CONV_CASES)
def test_conv_general_dilated_equals_3d_conv(xs, ws, strides, padding, form, monkeypatch):
    _force(monkeypatch, form)
    rng = _rng(20)
    x = rng.standard_normal(xs).astype(np.float32)
    w = rng.standard_normal(ws).astype(np.float32)
    dn = jax.lax.conv_dimension_numbers(xs, ws, ("NDHWC", "DHWIO", "NDHWC"))

    def ref(x, w):
        return jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)

    def ours(x, w):
        return models.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)

    def value_and_vjp(f, x, w, ct):
        y, back = jax.vjp(f, x, w)
        return y, back(ct)

    ct = rng.standard_normal(jax.eval_shape(ref, x, w).shape).astype(np.float32)
    r, gr = jax.jit(lambda x, w, ct: value_and_vjp(ref, x, w, ct))(x, w, ct)
    o, go = jax.jit(lambda x, w, ct: value_and_vjp(ours, x, w, ct))(x, w, ct)
    assert o.shape == r.shape
    # float32 rounding of a different summation order: relative to the largest value (sums of up to 3510 terms)
    np.testing.assert_allclose(np.asarray(o), np.asarray(r), rtol=1e-5, atol=1e-6 * float(np.abs(r).max()))
    for a, b in zip(go, gr):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))


@pytest.mark.parametrize("xs,ws,strides,padding", [
    ((3, 9, 8, 3), (3, 3, 3, 4), (1, 1), ((1, 1), (1, 1))),  # SmallCNN / VGG16 layers
    ((2, 9, 8, 5), (2, 3, 5, 4), (2, 1), "SAME"),
    ((2, 7, 6, 4), (3, 1, 4, 6), (1, 2), ((2, 0), (0, 1))),
])
def test_conv_general_dilated_2d_through_onednn(xs, ws, strides, padding, monkeypatch):
    # channels-last 2D convolutions go to oneDNN as one-frame 3D ones: lax's value and gradients
    _force(monkeypatch, "onednn")
    rng = _rng(27)
    x = jnp.asarray(rng.standard_normal(xs), jnp.float32)
    w = jnp.asarray(rng.standard_normal(ws), jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC")

    def loss(conv):
        return lambda a, b: jnp.sum(jnp.tanh(conv(a, b, strides, padding, dimension_numbers=dn)))

    text = jax.jit(lambda a, b: models.conv_general_dilated(a, b, strides, padding, dimension_numbers=dn)
                   ).lower(x, w).as_text()
    assert "jaxvx_onednn_conv3d_fwd" in text
    ref = jax.lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn, precision="highest")
    out = models.conv_general_dilated(x, w, strides, padding, dimension_numbers=dn)
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))
    for a, b in zip(jax.grad(loss(models.conv_general_dilated), (0, 1))(x, w),
                    jax.grad(loss(jax.lax.conv_general_dilated), (0, 1))(x, w)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5 * float(np.abs(b).max()))


def test_conv_general_dilated_backward_keeps_the_kernel_layout_inside_loops(monkeypatch):
    monkeypatch.setenv(models._layers.CONV_ENV, "rewrite")
    # JAX's own transpose swaps the kernel's I/O axes in the dimension numbers ("01oi"); XLA's CPU backend runs
    # such convolutions on a slow path inside loop bodies. The written-out input gradient must not produce them.
    x = jnp.asarray(_rng(23).standard_normal((2, 3, 5, 4, 5, 3)), jnp.float32)
    w = jnp.asarray(_rng(24).standard_normal((3, 3, 3, 3, 4)), jnp.float32)
    dn = ("NDHWC", "DHWIO", "NDHWC")

    def grads(conv):
        def one(xi):
            return jax.grad(lambda v: (conv(v, w, (1, 1, 1), ((1, 1),) * 3, dimension_numbers=dn) ** 2).sum())(xi)
        return jax.jit(lambda xs: jax.lax.map(one, xs))

    ours, ref = grads(models.conv_general_dilated), grads(jax.lax.conv_general_dilated)
    np.testing.assert_allclose(np.asarray(ours(x)), np.asarray(ref(x)), rtol=1e-4, atol=1e-4)
    swapped = re.compile(r"dim_labels=\w+_0[0-9]*oi->")  # kernel axes (spatial..., O, I)
    assert swapped.search(ref.lower(x).compile().as_text())  # the layout this guards against does occur
    assert not swapped.search(ours.lower(x).compile().as_text())


def test_conv_form_auto_is_onednn_on_cpu_and_every_form_can_be_forced(monkeypatch):
    # "auto": oneDNN's custom calls on CPU (where the library loaded), lax's native 3D convolution elsewhere; the
    # environment variable forces a form, and every form gives lax's result
    x = jnp.asarray(_rng(25).standard_normal((1, 4, 5, 5, 2)), jnp.float32)
    w = jnp.asarray(_rng(26).standard_normal((3, 3, 3, 2, 3)), jnp.float32)
    dn = ("NDHWC", "DHWIO", "NDHWC")

    def lowered():
        return jax.jit(lambda a, b: models.conv_general_dilated(a, b, (1, 1, 1), "SAME", dimension_numbers=dn)
                       ).lower(x, w).as_text()

    def conv_ranks(text):  # spatial rank + 2 of every convolution in the lowered program
        return {len(m.split(",")) for m in re.findall(r"stablehlo\.convolution.*?dim_numbers = \[([^\]]*)\]", text)}

    ref = jax.lax.conv_general_dilated(x, w, (1, 1, 1), "SAME", dimension_numbers=dn)
    monkeypatch.delenv(models._layers.CONV_ENV, raising=False)
    from jaxvx.models import _onednn

    cpu = jax.default_backend() == "cpu"
    assert models.conv_form() == (("onednn" if _onednn.available() else "rewrite") if cpu else "lax")
    forms = {"rewrite": {4}, "lax": {5}}
    if cpu and _onednn.available():
        forms["onednn"] = set()
    for form, ranks in forms.items():
        monkeypatch.setenv(models._layers.CONV_ENV, form)
        assert models.conv_form() == form
        text = lowered()
        assert conv_ranks(text) == ranks
        assert ("jaxvx_onednn_conv3d_fwd" in text) == (form == "onednn")
        out = models.conv_general_dilated(x, w, (1, 1, 1), "SAME", dimension_numbers=dn)
        np.testing.assert_allclose(np.asarray(out), np.asarray(ref), rtol=1e-5, atol=1e-5)
    if cpu and _onednn.available():
        # "auto" leaves convolutions under 50 MFLOP to XLA (this one: 0.04) and sends larger ones to oneDNN
        monkeypatch.delenv(models._layers.CONV_ENV)
        assert "jaxvx_onednn_conv3d_fwd" not in lowered()
        big = jax.ShapeDtypeStruct((1, 8, 32, 32, 16), jnp.float32), jax.ShapeDtypeStruct((3, 3, 3, 16, 16), jnp.float32)
        assert "jaxvx_onednn_conv3d_fwd" in jax.jit(lambda a, b: models.conv_general_dilated(
            a, b, (1, 1, 1), "SAME", dimension_numbers=dn)).lower(*big).as_text()
    monkeypatch.setenv(models._layers.CONV_ENV, "sometimes")
    with pytest.raises(ValueError, match="JAXVX_CONV"):
        models.conv_form()


def test_conv_general_dilated_falls_back():
    # channels-first layout and dilation are not rewritten: still lax's result
    x = _rng(21).standard_normal((1, 2, 5, 6, 6)).astype(np.float32)
    w = _rng(22).standard_normal((3, 2, 3, 3, 3)).astype(np.float32)
    out = models.conv_general_dilated(x, w, (1, 1, 1), "SAME", rhs_dilation=(1, 2, 1))
    np.testing.assert_array_equal(out, jax.lax.conv_general_dilated(x, w, (1, 1, 1), "SAME", rhs_dilation=(1, 2, 1)))


# ---------------------------------------------------------------------------------------------------------------
# shapes, names, parameter counts

SMALL = [
    (models.C3D(7, width=1 / 16), (2, 16, 32, 40, 3)),
    (models.R2Plus1D18(7, width=1 / 16), (2, 4, 24, 16, 3)),
    (models.CNNLSTM(7, backbone="small", hidden=8, width=0.25), (2, 5, 24, 24, 3)),
    (models.CNNLSTM(7, backbone="vgg16", hidden=8, width=1 / 16), (2, 3, 32, 32, 3)),
    (models.LSTMClassifier(7, cell="lstm", hidden=6), (2, 5, 11)),
    (models.LSTMClassifier(7, cell="input_cell_attention", hidden=6, r=3, d_a=4), (2, 5, 11)),
    (models.LSTMClassifier(7, cell="input_cell_attention", frontend="small", width=0.25, hidden=6), (2, 5, 24, 24, 3)),
]
SMALL_IDS = ["c3d", "r2plus1d", "cnnlstm-small", "cnnlstm-vgg16", "lstm", "lstm-ica", "lstm-ica-video"]


@pytest.mark.parametrize("model,shape", SMALL, ids=SMALL_IDS)
def test_output_shapes(model, shape):
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    out = jax.eval_shape(model.apply, variables, x)
    assert out.shape == (shape[0], 7) and out.dtype == jnp.float32


def test_c3d_other_sizes_and_bad_input():
    m = models.C3D(3, width=1 / 16)
    v = jax.eval_shape(m.init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 32, 32, 3)))
    # fc6 fixes the input size it was built for; a new model at 24 x 48 x 64 builds and runs as well
    v2 = jax.eval_shape(m.init, jax.random.PRNGKey(0), jnp.zeros((1, 24, 48, 64, 3)))
    assert v["params"]["fc6"]["kernel"].shape == (32 * 1 * 2 * 2, 256)
    assert v2["params"]["fc6"]["kernel"].shape == (32 * 1 * 2 * 3, 256)
    with pytest.raises(ValueError, match=r"x: C3D needs T >= 16.*\(1, 8, 32, 32, 3\)"):
        jax.eval_shape(m.init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 32, 32, 3)))
    with pytest.raises(ValueError, match=r"x: expected a clip batch"):
        jax.eval_shape(m.init, jax.random.PRNGKey(0), jnp.zeros((16, 32, 32, 3)))
    with pytest.raises(ValueError, match="width: expected a positive number"):
        models.C3D(3, width=0)
    with pytest.raises(ValueError, match="num_classes"):
        models.R2Plus1D18(0)
    with pytest.raises(ValueError, match="cell: expected one of"):
        models.LSTMClassifier(3, cell="gru")
    with pytest.raises(ValueError, match="backbone: expected one of"):
        models.CNNLSTM(3, backbone="resnet")


def _conv3(cin, cout):
    return 27 * cin * cout + cout


def test_c3d_full_size_parameter_count_and_names():
    m = models.C3D(101)
    v = jax.eval_shape(m.init, jax.random.PRNGKey(0), jnp.zeros((1, 16, 112, 112, 3)))
    convs = [(3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512), (512, 512), (512, 512)]
    expected = sum(_conv3(a, b) for a, b in convs)
    expected += (512 * 1 * 4 * 4 + 1) * 4096 + (4096 + 1) * 4096 + (4096 + 1) * 101
    assert sum(a.size for a in jax.tree_util.tree_leaves(v)) == expected
    assert 78e6 < expected < 79e6
    assert list(v["params"]) == ["conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b",
                                 "fc6", "fc7", "fc8"]
    calls = called_modules(m, v, jnp.zeros((1, 16, 112, 112, 3)))
    pools = [p for p, t in calls if t == "MaxPool3D"]
    assert pools == ["pool1", "pool2", "pool3", "pool4", "pool5"]
    assert sum(t == "ReLU" for _, t in calls) == 10
    assert ("flatten", "Flatten") in calls


def test_r2plus1d_full_size_parameter_count_and_structure():
    m = models.R2Plus1D18(400)
    x = jnp.zeros((1, 16, 112, 112, 3))
    v = jax.eval_shape(m.init, jax.random.PRNGKey(0), x)
    # torchvision's r2plus1d_18 at 400 classes: 31,505,325 parameters (BatchNorm scale and bias included)
    assert sum(a.size for a in jax.tree_util.tree_leaves(v["params"])) == 31_505_325
    p = v["params"]
    assert p["stem"]["spatial"]["kernel"].shape == (1, 7, 7, 3, 45)
    assert p["stem"]["temporal"]["kernel"].shape == (3, 1, 1, 45, 64)
    # midplanes = (64*128*27) // (64*9 + 3*128) = 230 in layer2's first block, used by both of its (2+1)D convs
    assert p["layer2_0"]["conv1"]["spatial"]["kernel"].shape == (1, 3, 3, 64, 230)
    assert p["layer2_0"]["conv2"]["spatial"]["kernel"].shape == (1, 3, 3, 128, 230)
    assert "downsample" not in p["layer1_0"] and "downsample" not in p["layer2_1"]
    assert p["layer4_0"]["downsample"]["kernel"].shape == (1, 1, 1, 256, 512)
    calls = called_modules(m, v, x)
    assert sum(t == "Sum" for _, t in calls) == 8
    assert ("avgpool", "GlobalAvgPool") in calls
    out = jax.eval_shape(lambda v, x: m.apply(v, x, capture_intermediates=True), v, x)
    assert out[1]["intermediates"]["layer4_1"]["__call__"][0].shape == (1, 2, 7, 7, 512)


# ---------------------------------------------------------------------------------------------------------------
# recurrent models against NumPy loops of their equations


def _sig(z):
    return 1.0 / (1.0 + np.exp(-z))


def _np_lstm_classifier(p, x, cell, r):
    """Ismail et al.'s cell step by step: at step t attention over X = x_1..t recomputed from scratch."""
    p = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), p)
    lstm = p["lstm"]
    b_, t_, _ = x.shape
    hdim = lstm["recurrent"].shape[0]
    logits = []
    for b in range(b_):
        h = np.zeros(hdim)
        c = np.zeros(hdim)
        for t in range(t_):
            if cell == "lstm":
                m = x[b, t]
            else:
                xs = x[b, : t + 1]  # [t+1, N]
                a = lstm["attention"]
                e = np.tanh(xs @ a["w1"]["kernel"] + a["w1"]["bias"]) @ a["w2"]["kernel"] + a["w2"]["bias"]  # [t+1, r]
                att = np.exp(e - e.max(axis=0))
                att = att / att.sum(axis=0)  # softmax over time, per hop
                mm = att.T @ xs  # [r, N]
                assert mm.shape[0] == r
                m = mm.mean(axis=0)
            z = m @ lstm["input"]["kernel"] + lstm["input"]["bias"] + h @ lstm["recurrent"]
            i, f, g, o = np.split(z, 4)
            c = _sig(f) * c + _sig(i) * np.tanh(g)
            h = _sig(o) * np.tanh(c)
        logits.append(h @ p["classifier"]["kernel"] + p["classifier"]["bias"])
    return np.stack(logits)


@pytest.mark.parametrize("cell", ["lstm", "input_cell_attention"])
def test_lstm_cells_match_numpy_loop(cell):
    r = 3
    model = models.LSTMClassifier(4, cell=cell, hidden=5, r=r, d_a=6)
    x = _rng(4).standard_normal((2, 6, 7)).astype(np.float32)
    v = init(model, x, seed=5, bias_std=0.5)
    # causality: changing the last input leaves the earlier hidden states alone
    x2 = x.copy()
    x2[:, -1] += 1.0
    out, hs = jax.jit(lambda v, x: (model.apply(v, x), model.apply(v, x, method="hidden_states")))(
        v, np.concatenate([x, x2]))
    ref = _np_lstm_classifier(v["params"], x.astype(np.float64), cell, r)
    np.testing.assert_allclose(np.asarray(out[:2]), ref, rtol=1e-5, atol=1e-5)
    hs, hs2 = np.asarray(hs[:2]), np.asarray(hs[2:])
    np.testing.assert_allclose(hs[:, :-1], hs2[:, :-1], rtol=1e-6, atol=1e-7)
    assert not np.allclose(hs[:, -1], hs2[:, -1])


@pytest.mark.slow
def test_cnnlstm_is_per_frame_cnn_lstm_and_time_mean():
    model = models.CNNLSTM(3, backbone="small", hidden=4, width=0.25)
    x = _rng(6).standard_normal((2, 3, 16, 16, 3)).astype(np.float32)
    v = init(model, x, seed=7)
    out, ff, sl = jax.jit(lambda v, x: (model.apply(v, x), model.apply(v, x, method="frame_features"),
                                        model.apply(v, x, method="step_logits")))(v, x)
    part = jax.jit(lambda v, a, name: model.apply(v, a, method=lambda m, a: getattr(m, name)(a)), static_argnums=2)
    # one frame at a time through the CNN (the model runs all B*T at once)
    feats = np.stack([np.stack([np.asarray(part(v, x[b, t][None], "cnn"))[0] for t in range(3)]) for b in range(2)])
    np.testing.assert_allclose(np.asarray(ff), feats, rtol=1e-5, atol=1e-6)
    steps = np.asarray(part(v, part(v, jnp.asarray(feats), "lstm"), "classifier"))
    np.testing.assert_allclose(out, steps.mean(axis=1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(sl), steps, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# jit, vmap, train mode


@pytest.mark.parametrize("which", [pytest.param(0, marks=pytest.mark.slow), 5])
def test_jit_and_vmap(which):
    model, shape = SMALL[which]
    x = _rng(8).standard_normal(shape).astype(np.float32)
    v = init(model, x, seed=9)
    out = jax.jit(model.apply)(v, x)
    per_example = jax.jit(jax.vmap(lambda xi: model.apply(v, xi[None])[0]))(x)
    # float32 rounding: the convolution kernels may sum in another order for another batch size
    scale = float(np.abs(np.asarray(out)).max())
    np.testing.assert_allclose(np.asarray(per_example), np.asarray(out), rtol=1e-5, atol=1e-6 * scale)
    assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.slow
def test_dropout_only_in_train_mode():
    model = models.CNNLSTM(3, backbone="vgg16", hidden=4, width=1 / 32)
    x = _rng(10).standard_normal((1, 2, 32, 32, 3)).astype(np.float32)
    v = init(model, x, seed=11, bias_std=1.0)
    f = jax.jit(model.apply, static_argnames="train")
    a, b = f(v, x), f(v, x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    t1 = f(v, x, train=True, rngs={"dropout": jax.random.PRNGKey(1)})
    assert not np.allclose(np.asarray(t1), np.asarray(a))


def test_batchnorm_train_mode_updates_stats():
    block = models.BasicBlock(4, stride=2)
    x = _rng(12).standard_normal((2, 4, 6, 6, 3)).astype(np.float32)
    v = init(block, x, seed=13)
    y, upd = jax.jit(lambda v, x: block.apply(v, x, True, mutable=["batch_stats"]))(v, x)
    assert y.shape == (2, 2, 3, 3, 4)
    assert not np.allclose(upd["batch_stats"]["downsample_bn"]["mean"], v["batch_stats"]["downsample_bn"]["mean"])
    y0 = jax.jit(block.apply)(v, x)  # inference: running stats, nothing to mutate
    assert not np.allclose(np.asarray(y0), np.asarray(y))


# ---------------------------------------------------------------------------------------------------------------
# registry


@pytest.mark.parametrize("model,_", SMALL, ids=SMALL_IDS)
def test_config_roundtrip(model, _):
    cfg = json.loads(json.dumps(models.config(model)))
    assert models.from_config(cfg) == model
    assert cfg["arch"] in models.ARCHITECTURES and cfg["num_classes"] == 7


def test_create():
    m = models.create("lstm", 5, cell="input_cell_attention", frontend="small")
    assert isinstance(m, models.LSTMClassifier) and m.frontend == "small" and m.num_classes == 5
    assert models.create("r2plus1d18", 400) == models.R2Plus1D18(400)
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        models.create("resnet", 3)
    with pytest.raises(TypeError, match=r"C3D has no argument\(s\) \['hidden'\]"):
        models.create("c3d", 3, hidden=4)
    with pytest.raises(TypeError, match="model: expected one of"):
        models.config(models.ReLU())
