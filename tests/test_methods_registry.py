"""jaxvx.methods.REGISTRY: every method by name builds from what its entry says it needs, returns the map its entry
says, has a details variant exactly where it says, and the entries that say they conserve do."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvx import checkpoints, cli, methods
from jaxvx.explain import LRP_METHODS, METHODS, build_method

# the shipped checkpoint each method is built on: a C3D, but where the method needs another architecture
CHECKPOINT = {"saliency_tubes": "r2plus1d-small", "contrastive_excitation_backprop": "cnnlstm-small"}


@pytest.fixture(scope="module")
def loaded():
    return {name: checkpoints.load(name) for name in ("c3d-small", "r2plus1d-small", "cnnlstm-small")}


@pytest.mark.parametrize("name", list(methods.REGISTRY))
def test_each_entry_builds_by_name_and_returns_the_map_it_says(loaded, name):
    info = methods.REGISTRY[name]
    model, variables, card = loaded[CHECKPOINT.get(name, "c3d-small")]
    method, model, variables = build_method(name, model, variables, card)
    forward = functools.partial(model.apply, variables)
    video = jax.ShapeDtypeStruct((2, *card["input_shape"]), jnp.float32)
    target = jax.ShapeDtypeStruct((2,), jnp.int32)
    out = jax.eval_shape(lambda v, t: method(forward, v, t, key=jax.random.key(0)), video, target)
    channels = video.shape[-1] if info.channels == "input" else 1
    assert out.shape == (*video.shape[:4], channels) and out.dtype == jnp.float32, (name, out)
    assert hasattr(method, "details") == info.details, name
    if info.details:
        full = jax.eval_shape(lambda v, t: methods.details(method)(forward, v, t), video, target)
        assert full[0].shape == out.shape
    assert set(info.needs) <= set(methods.NEEDS) and info.summary


def test_every_interface_lists_the_registry():
    names = tuple(methods.REGISTRY)
    assert METHODS == names == methods.method_names()
    assert LRP_METHODS == tuple(n for n, e in methods.REGISTRY.items() if e.conserves)
    assert set(LRP_METHODS) == {"deep_taylor", "epsilon_plus", "epsilon_plus_flat", "epsilon_gamma_box",
                                "epsilon_alpha2_beta1"}
    parser = cli._parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    for command in ("explain", "stream"):
        option = next(a for a in subcommands[command]._actions if a.dest == "method")
        assert tuple(option.choices) == names, command


class _BiasFree(nn.Module):
    """conv (no bias), ReLU, max pool, conv (no bias), ReLU, mean over time and space, Dense (no bias)."""

    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Conv(4, (2, 3, 3), use_bias=False)(x))
        x = nn.max_pool(x, (1, 2, 2), (1, 2, 2))
        x = nn.relu(nn.Conv(6, (2, 3, 3), use_bias=False)(x))
        return nn.Dense(3, use_bias=False)(x.mean(axis=(1, 2, 3)))


def test_the_entries_that_conserve_sum_to_the_logit_on_a_bias_free_network():
    model = _BiasFree()
    x = jnp.asarray(np.random.default_rng(0).uniform(-1, 1, (2, 4, 8, 8, 3)), jnp.float32)
    variables = model.init(jax.random.key(1), x)
    forward = functools.partial(model.apply, variables)
    logits = np.asarray(forward(x))
    target = jnp.asarray(np.argmax(logits, axis=1), jnp.int32)
    chosen = logits[np.arange(2), np.asarray(target)]
    assert np.all(chosen > 0)
    for name in methods.method_names(conserves=True):
        needs = {"bounds": (-1.0, 1.0)} if "bounds" in methods.REGISTRY[name].needs else {}
        relevance = np.asarray(methods.make(name, **needs)(forward, x, target), np.float64)
        np.testing.assert_allclose(relevance.reshape(2, -1).sum(1), chosen, rtol=1e-3, err_msg=name)


def test_random_entries_draw_from_their_key():
    model = _BiasFree()
    x = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (1, 4, 8, 8, 3)), jnp.float32)
    forward = functools.partial(model.apply, model.init(jax.random.key(1), x))
    for name in (n for n, e in methods.REGISTRY.items() if e.random):
        method = methods.make(name)
        a, b, a2 = (np.asarray(method(forward, x, None, key=jax.random.key(k))) for k in (0, 1, 0))
        np.testing.assert_array_equal(a, a2)
        assert not np.array_equal(a, b), name


def test_make_names_what_is_wrong():
    with pytest.raises(ValueError, match="method must be one of .*deep_taylor.*got 'lrp'"):
        methods.make("lrp")
    with pytest.raises(ValueError, match="method 'gradcam' needs layer"):
        methods.make("gradcam")
    with pytest.raises(ValueError, match=r"method 'gradient' takes only no needs, got \['layer'\]"):
        methods.make("gradient", layer="conv5b")
    with pytest.raises(ValueError, match="family must be one of"):
        methods.method_names(family="attention")
    with pytest.raises(ValueError, match="has no details variant"):
        methods.details(methods.gradient())


def test_a_method_outside_the_contract_is_named():
    """guarded (every method of jaxvx.methods is wrapped in it) checks the output against the one contract."""
    from jaxvx.methods._common import guarded, with_details

    forward = lambda v: v.reshape(v.shape[0], -1)[:, :3]  # noqa: E731
    video = jnp.ones((2, 3, 4, 5, 3))
    frames_only = guarded(lambda f, v, t=None, *, key=None: v.sum(-1))
    frames_only.__name__ = "frames_only"
    with pytest.raises(ValueError, match=r"the output of method .* must be \[B, T, H, W, C\] on the video's grid, "
                                         r"\(2, 3, 4, 5, 3\) or \(2, 3, 4, 5, 1\), got shape \(2, 3, 4, 5\)"):
        frames_only(forward, video)
    detailed = with_details(lambda f, v, t=None, *, key=None: (v[..., :2], {"n": 1}))
    with pytest.raises(ValueError, match=r"got shape \(2, 3, 4, 5, 2\)"):
        detailed(forward, video)
    fine = with_details(lambda f, v, t=None, *, key=None: (v[..., :1], {"n": 1}))
    assert fine(forward, video).shape == (2, 3, 4, 5, 1)
