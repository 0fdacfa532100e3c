"""jaxvx._program: one engine for any model. The same network written as a Flax linen module (the usual way:
BatchNorm after convolutions, nn.relu / nn.max_pool / nn.avg_pool as functions, a concatenation, a residual
addition, jnp.mean), as an NNX module and as a plain JAX function gets the same relevance from every composite;
BatchNorm is folded without asking; operations without a rule are refused by name."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from jaxvx import _program as P
from jaxvx import lrp, methods

SHAPE = (4, 8, 8, 3)


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3, 3), padding="SAME", use_bias=False, name="stem")(x)
        x = nn.relu(nn.BatchNorm(use_running_average=True, name="stem_bn")(x))
        x = nn.max_pool(x, (1, 2, 2), (1, 2, 2))
        a = nn.relu(nn.Conv(3, (1, 1, 1), name="branch_a")(x))
        b = nn.relu(nn.Conv(5, (3, 3, 3), padding="SAME", name="branch_b")(x))
        x = jnp.concatenate([a, b], axis=-1)
        y = nn.Conv(8, (1, 1, 1), use_bias=False, name="res")(x)
        x = x + nn.relu(nn.BatchNorm(use_running_average=True, name="res_bn")(y))
        x = nn.avg_pool(x, (1, 2, 2), (1, 2, 2))
        return nn.Dense(4, name="fc")(jnp.mean(x, axis=(1, 2, 3)))


class NNXNet(nnx.Module):
    def __init__(self, rngs):
        self.stem = nnx.Conv(3, 4, (3, 3, 3), padding="SAME", use_bias=False, rngs=rngs)
        self.stem_bn = nnx.BatchNorm(4, use_running_average=True, rngs=rngs)
        self.branch_a = nnx.Conv(4, 3, (1, 1, 1), rngs=rngs)
        self.branch_b = nnx.Conv(4, 5, (3, 3, 3), padding="SAME", rngs=rngs)
        self.res = nnx.Conv(8, 8, (1, 1, 1), use_bias=False, rngs=rngs)
        self.res_bn = nnx.BatchNorm(8, use_running_average=True, rngs=rngs)
        self.fc = nnx.Linear(8, 4, rngs=rngs)

    def __call__(self, x):
        x = nnx.relu(self.stem_bn(self.stem(x)))
        x = nnx.max_pool(x, (1, 2, 2), (1, 2, 2))
        x = jnp.concatenate([nnx.relu(self.branch_a(x)), nnx.relu(self.branch_b(x))], axis=-1)
        x = x + nnx.relu(self.res_bn(self.res(x)))
        x = nnx.avg_pool(x, (1, 2, 2), (1, 2, 2))
        return self.fc(jnp.mean(x, axis=(1, 2, 3)))


def plain_forward(v, x):
    """The same network with lax / jnp only (``v``: the linen variables)."""
    p, s = v["params"], v["batch_stats"]

    def conv(x, name, pad):
        y = lax.conv_general_dilated(x, p[name]["kernel"], (1, 1, 1), pad, dimension_numbers=("NDHWC", "DHWIO",
                                                                                              "NDHWC"))
        return y + p[name]["bias"] if "bias" in p[name] else y

    def bn(x, name):
        return (x - s[name]["mean"]) * lax.rsqrt(s[name]["var"] + 1e-5) * p[name]["scale"] + p[name]["bias"]

    same = ((1, 1), (1, 1), (1, 1))
    x = jnp.maximum(bn(conv(x, "stem", same), "stem_bn"), 0)
    x = lax.reduce_window(x, -jnp.inf, lax.max, (1, 1, 2, 2, 1), (1, 1, 2, 2, 1), "VALID")
    x = jnp.concatenate([jax.nn.relu(conv(x, "branch_a", "VALID")), jax.nn.relu(conv(x, "branch_b", same))], -1)
    x = x + jax.nn.relu(bn(conv(x, "res", "VALID"), "res_bn"))
    x = lax.reduce_window(x, 0.0, lax.add, (1, 1, 2, 2, 1), (1, 1, 2, 2, 1), "VALID") / 4.0
    return jnp.dot(x.mean(axis=(1, 2, 3)), p["fc"]["kernel"]) + p["fc"]["bias"]


def _variables(bias_free=False, seed=0):
    model = LinenNet()
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1,) + SHAPE))
    rng = np.random.default_rng(seed)
    v = jax.tree.map(lambda s: jnp.asarray(rng.normal(0, 0.5, s.shape), jnp.float32), shapes)
    v["batch_stats"] = jax.tree.map(lambda a: jnp.abs(a) + 0.5, v["batch_stats"])
    # one negative BatchNorm scale in each BatchNorm: the fold must flip those kernels' signs
    for name in ("stem_bn", "res_bn"):
        scale = np.abs(np.asarray(v["params"][name]["scale"])) + 0.2
        scale[1] = -scale[1]
        v["params"][name]["scale"] = jnp.asarray(scale)
    if bias_free:
        v["params"] = {k: {n: (jnp.zeros_like(a) if n == "bias" else a) for n, a in d.items()}
                       for k, d in v["params"].items()}
        v["batch_stats"] = {k: {"mean": jnp.zeros_like(d["mean"]), "var": d["var"]} for k, d in v["batch_stats"].items()}
    return v


def _nnx_forward(v):
    net = NNXNet(nnx.Rngs(0))
    for name in ("stem", "branch_a", "branch_b", "res", "fc"):
        layer = getattr(net, name)
        layer.kernel[...] = v["params"][name]["kernel"]
        if "bias" in v["params"][name]:
            layer.bias[...] = v["params"][name]["bias"]
    for name in ("stem_bn", "res_bn"):
        layer = getattr(net, name)
        layer.scale[...], layer.bias[...] = v["params"][name]["scale"], v["params"][name]["bias"]
        layer.mean[...], layer.var[...] = v["batch_stats"][name]["mean"], v["batch_stats"][name]["var"]
    graphdef, state = nnx.split(net)
    return lambda x: nnx.merge(graphdef, state)(x)


def _forwards(v):
    return {"linen": functools.partial(LinenNet().apply, v), "nnx": _nnx_forward(v),
            "plain": functools.partial(plain_forward, v)}


def _clips(n=2, seed=1):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (n,) + SHAPE), jnp.float32)


@pytest.fixture(scope="module")
def nets():
    return _forwards(_variables()), _clips()


def test_three_ways_compute_the_same_logits(nets):
    forwards, x = nets
    want = np.asarray(forwards["linen"](x))
    for name, f in forwards.items():
        np.testing.assert_allclose(np.asarray(f(x)), want, rtol=1e-5, atol=1e-5, err_msg=name)


def test_program_reads_the_layers_of_a_usual_linen_model(nets):
    forwards, x = nets
    program = P.trace(forwards["linen"], x)
    kinds = [(n.kind, n.path) for n in program.nodes]
    assert kinds[0] == ("conv", "stem") and program.nodes[0].folded == ("sub", "mul", "add")
    assert ("conv", "res") in kinds and [n.folded for n in program.nodes if n.path == "res"] == [("sub", "mul", "add")]
    assert [k for k, _ in kinds].count("conv") == 4 and [k for k, _ in kinds].count("dense") == 1
    assert [n.primitive for n in program.nodes if n.kind == "max_pool"] == ["reduce_window_max"]
    sums = [n for n in program.nodes if n.kind == "sum"]
    assert [n.primitive for n in sums] == ["add", "reduce_window_sum", "reduce_sum"]
    assert [n.folded for n in sums] == [(), ("div",), ("div",)]  # average pooling and mean: the division inside
    assert sum(n.relu for n in program.nodes) == 4
    # ReLU outputs (and their pooling, concatenation and sum) are known non-negative: z+ skips the negative terms
    assert all(n.nonneg for n in program.nodes if n.path in ("branch_a", "branch_b", "res", "fc"))
    assert not program.nodes[0].nonneg
    # the NNX model and the plain function have the same operations, without names
    for name in ("nnx", "plain"):
        other = P.trace(forwards[name], x)
        assert [n.kind for n in other.nodes] == [n.kind for n in program.nodes], name
        assert [n.folded for n in other.nodes if n.kind == "conv"][1:3] == [("add",), ("add",)], name


COMPOSITES = {
    "epsilon_plus": lrp.epsilon_plus(),
    "epsilon_plus_flat": lrp.epsilon_plus_flat(),
    "epsilon_gamma_box": lrp.epsilon_gamma_box(-1.0, 1.0),
    "epsilon_alpha2_beta1": lrp.epsilon_alpha2_beta1(),
    "deep_taylor": lrp.deep_taylor(-1.0, 1.0),
    "deep_taylor_proportional": lrp.deep_taylor(-1.0, 1.0, max_pool="proportional"),
}


@pytest.mark.parametrize("name", sorted(COMPOSITES))
def test_every_composite_gives_the_same_relevance_three_ways(nets, name):
    forwards, x = nets
    method = jax.jit(methods.lrp(COMPOSITES[name]), static_argnums=0)
    target = jnp.asarray([0, 3])
    want = np.asarray(method(forwards["linen"], x, target))
    assert np.isfinite(want).all() and np.abs(want).max() > 0
    for kind in ("nnx", "plain"):
        got = np.asarray(method(forwards[kind], x, target))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max(), err_msg=kind)


@pytest.mark.parametrize("max_pool", ["wta", "proportional"])
def test_deep_taylor_conserves_on_the_bias_free_net(max_pool):
    """No biases, BatchNorm means and betas zero (its negative scales stay): deep Taylor's relevance sums to the
    logit, through the folded BatchNorms, the concatenation, the residual sum, both poolings and the mean."""
    forwards = _forwards(_variables(bias_free=True))
    x = _clips(3, seed=4)
    for name, f in forwards.items():
        logits = np.asarray(f(x))
        target = logits.argmax(-1)
        rel = np.asarray(methods.lrp(lrp.deep_taylor(-1.0, 1.0, max_pool=max_pool))(f, x, jnp.asarray(target)))
        np.testing.assert_allclose(rel.reshape(3, -1).sum(1), logits[np.arange(3), target], rtol=1e-4, err_msg=name)


def test_batchnorm_fold_matches_a_dense_reference():
    """One conv (kernel 1, so a matrix) + a BatchNorm with a negative scale, epsilon rule, float64: the relevance
    equals x * W'^T (R / z) with W' = W * s, z = x W' + b' computed by hand."""
    jax.config.update("jax_enable_x64", True)
    try:
        rng = np.random.default_rng(3)
        w, b = rng.normal(size=(3, 4)), rng.normal(size=4)
        scale, beta = np.array([1.5, -0.7, 0.3, -2.0]), rng.normal(size=4)
        mean, var = rng.normal(size=4), rng.uniform(0.5, 2, 4)

        def forward(x):
            y = lax.conv_general_dilated(x, jnp.asarray(w)[None, None, None], (1, 1, 1), "VALID",
                                         dimension_numbers=("NDHWC", "DHWIO", "NDHWC")) + b
            y = (y - mean) / jnp.sqrt(var + 1e-3) * scale + beta
            return y.reshape(y.shape[0], -1)

        x = rng.normal(size=(2, 1, 1, 1, 3))
        r = rng.normal(size=(2, 4))
        _, pull = jax.vjp(lrp.attach(forward, lrp.Composite("eps", ((lrp.CONV, lrp.epsilon(0.0)),))), jnp.asarray(x))
        (got,) = pull(jnp.asarray(r))
        s = scale / np.sqrt(var + 1e-3)
        w2, b2 = w * s, (b - mean) * s + beta
        xf = x.reshape(2, 3)
        want = xf * ((r / (xf @ w2 + b2)) @ w2.T)
        np.testing.assert_allclose(np.asarray(got).reshape(2, 3), want, rtol=1e-10)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_lrp_on_nnx_under_jit_and_vmap(nets):
    forwards, x = nets
    method = methods.lrp(lrp.epsilon_gamma_box(-1.0, 1.0))
    f = forwards["nnx"]
    eager = np.asarray(method(f, x, None))
    jitted = np.asarray(jax.jit(method, static_argnums=0)(f, x, None))
    vmapped = np.asarray(jax.vmap(lambda v: method(f, v[None], None)[0])(x))
    np.testing.assert_allclose(jitted, eager, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(vmapped, eager, rtol=1e-5, atol=1e-7)


def test_nnx_jit_forward_is_read_through():
    v = _variables()
    net_forward = _nnx_forward(v)
    x = _clips()
    jitted = jax.jit(net_forward)
    want = np.asarray(methods.lrp(lrp.epsilon_plus())(net_forward, x, None))
    got = np.asarray(methods.lrp(lrp.epsilon_plus())(jitted, x, None))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["guided_backprop", "deconvnet"])
def test_guided_methods_modify_functional_relus(nets, method):
    forwards, x = nets
    m = getattr(methods, method)()
    plain_grad = np.asarray(methods.gradient()(forwards["linen"], x, None))
    want = np.asarray(m(forwards["linen"], x, None))
    assert np.abs(want - plain_grad).max() > 1e-3 * np.abs(plain_grad).max()  # the ReLUs were modified
    for kind in ("nnx", "plain"):
        np.testing.assert_allclose(np.asarray(m(forwards[kind], x, None)), want, rtol=1e-4,
                                   atol=1e-6 * np.abs(want).max(), err_msg=kind)


class TinyVideoTransformer(nn.Module):
    """Conv patch embedding, one attention block with LayerNorm and a GELU MLP, mean over tokens."""

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(8, (2, 4, 4), strides=(2, 4, 4), name="patch")(x)
        x = x.reshape(x.shape[0], -1, 8)
        x = x + nn.MultiHeadDotProductAttention(num_heads=2, name="attn")(nn.LayerNorm(name="ln1")(x))
        x = x + nn.Dense(8, name="mlp2")(nn.gelu(nn.Dense(16, name="mlp1")(nn.LayerNorm(name="ln2")(x))))
        return nn.Dense(3, name="head")(x.mean(axis=1))


def test_operations_without_a_rule_are_refused_by_name():
    model = TinyVideoTransformer()
    x = _clips(1)
    v = model.init(jax.random.PRNGKey(0), x)
    forward = functools.partial(model.apply, v)
    for comp in (lrp.epsilon_plus(), lrp.epsilon_gamma_box(-1.0, 1.0)):
        with pytest.raises(ValueError, match=r"no LRP rule for #\d+ other \w+ at ln1") as err:
            methods.lrp(comp)(forward, x, None)
        assert "silently" in str(err.value) and "jaxvx.lrp.gradient()" in str(err.value)
    # the gradient family needs no rules
    assert np.isfinite(np.asarray(methods.gradient()(forward, x, None))).all()
    # the refused operations are listed with their paths
    other = {n.path.split("/")[0] for n in P.trace(forward, x).nodes if n.kind == "other"}
    assert {"ln1", "attn", "ln2"} <= other


def test_forward_must_return_one_array():
    model = LinenNet()
    v = _variables()
    with pytest.raises(ValueError, match=r"forward must return one array.*\[0\]"):
        methods.lrp(lrp.epsilon_plus())(lambda x: (model.apply(v, x), {}), _clips(1), None)


def test_paths_and_kinds_select_rules(nets):
    """A path pattern and a kind pick rules; the first-layer rule goes to the first matching node only."""
    forwards, x = nets
    program = P.trace(forwards["linen"], x)
    comp = lrp.epsilon_plus().with_layers([("branch_*", lrp.epsilon(0.25))])
    rules = comp.assign(program.nodes)
    by_path = {n.path: r.name for n, r in zip(program.nodes, rules) if n.kind == "conv"}
    assert by_path == {"stem": "zplus", "branch_a": "epsilon(0.25)", "branch_b": "epsilon(0.25)", "res": "zplus"}
    first = lrp.epsilon_gamma_box(-1, 1).assign(program.nodes)
    assert [r.name for n, r in zip(program.nodes, first) if n.kind == "conv"] == ["zbox", "gamma(0.25)",
                                                                                  "gamma(0.25)", "gamma(0.25)"]


@pytest.mark.parametrize("method", ["gradcam", "guided_gradcam", "excitation_backprop"])
def test_layer_methods_take_layers_by_path_in_any_model(nets, method):
    """Grad-CAM, guided Grad-CAM and excitation backprop at the layer "res": a linen module path, an NNX attribute
    path and a plain function's parameter path (the names come from the parameters forward holds)."""
    forwards, x = nets
    m = getattr(methods, method)("res")
    want = np.asarray(m(forwards["linen"], x, jnp.asarray([1, 2])))
    assert np.isfinite(want).all() and np.abs(want).max() > 0
    for kind in ("nnx", "plain"):
        got = np.asarray(m(forwards[kind], x, jnp.asarray([1, 2])))
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max(), err_msg=kind)


# a forward written at a script's top level: ``graphdef`` and ``state`` are globals of this module, not closure cells
_GLOBAL_GRAPHDEF, _GLOBAL_STATE = nnx.split(NNXNet(nnx.Rngs(3)))
global_nnx_forward = lambda x: nnx.merge(_GLOBAL_GRAPHDEF, _GLOBAL_STATE)(x)  # noqa: E731


def test_nnx_layers_are_named_when_forward_holds_its_state_as_a_global():
    x = _clips()
    assert global_nnx_forward.__closure__ is None
    program = P.trace(global_nnx_forward, x)
    assert [n.path for n in program.nodes if n.kind in ("conv", "dense")] == ["stem", "branch_a", "branch_b", "res",
                                                                              "fc"]
    assert {"stem", "res", "fc"} <= set(program.scopes())
    cam = np.asarray(methods.gradcam("res")(global_nnx_forward, x, jnp.asarray([1, 2])))
    assert cam.shape == x.shape[:4] + (1,) and np.abs(cam).max() > 0


def test_layer_outputs_are_scope_outputs(nets):
    """A scope's output is its last operation's: a BatchNorm module folded into its convolution is found there, an
    inner scope of a match is not a second match, and an ambiguous pattern is an error naming the scopes."""
    forwards, x = nets
    program = P.trace(forwards["linen"], x)
    assert program.layer("stem_bn") is program.nodes[0] and program.layer("stem") is program.nodes[0]
    assert program.layer("branch_b").path == "branch_b"
    with pytest.raises(ValueError, match=r"'branch_\*' matches 2 scopes \(branch_a, branch_b\)"):
        program.layer("branch_*")
    with pytest.raises(ValueError, match=r"no operation of forward lies in a scope matching 'conv9'.*stem, stem_bn"):
        program.layer("conv9")
    logits, acts, pull = P.layer_vjp(forwards["linen"], x, ["branch_b"])
    np.testing.assert_allclose(np.asarray(logits), np.asarray(forwards["linen"](x)), rtol=1e-5, atol=1e-6)
    assert acts[0].shape == (2, 4, 4, 4, 5) and float(acts[0].min()) != 0.0  # before the ReLU


def test_public_module():
    import jaxvx

    assert jaxvx.program.trace is P.trace and jaxvx.program.describe is P.describe
    assert set(jaxvx.program.__all__) <= set(dir(jaxvx.program)) and "program" in dir(jaxvx)
