"""Bad input to the methods: an eager error that names it, or under jit a NaN result for the clip it concerns.

Each case was a silent map before: NaN input gave NaN maps (LRP, EP-3D), an all-zero gradient (one NaN pixel) or
finite Grad-CAM and occlusion maps from NaN logits; a target outside the classes gave all-zero, all-NaN or finite
maps, and -1 was taken from the end; a batch of 0 crashed inside JAX; an input of the wrong size surfaced as Flax's
parameter shape error about a layer without naming the input.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _nets import init
from jaxvx import chain, methods, models
from jaxvx.transforms import selective, sum_channels

K = 10


@pytest.fixture(scope="module")
def c3d():
    model = models.create("c3d", K, width=0.0625)
    variables = init(model, jnp.zeros((1, 16, 32, 32, 3)))
    return functools.partial(model.apply, variables)


def video(batch=2, seed=0):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, (batch, 16, 32, 32, 3)), jnp.float32)


# what the registry's methods need, for this C3D (saliency tubes and contrastive EB get layers they would reject
# when run: the input checks come first)
NEEDS = {"bounds": (-1.0, 1.0), "layer": "conv5b", "input_shape": (16, 32, 32), "tube_layers": ("conv5b", "fc8"),
         "lstm_layers": ("conv5b", "fc8")}
METHODS = {
    **{name: methods.make(name, **{n: NEEDS[n] for n in info.needs}) for name, info in methods.REGISTRY.items()},
    "ep3d": methods.ep3d(0.1, max_iter=2),
    "occlusion": methods.occlusion((8, 16, 16)),
    "chain": chain(methods.gradient(), sum_channels(), selective(2.0)),
}


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_an_error_naming_the_first_bad_value(c3d, name, bad):
    x = video().at[1, 3, 4, 5, 2].set(bad)  # one value suffices
    with pytest.raises(ValueError, match=r"video must be finite, got 1 NaN or inf value\(s\) \(the first at index "
                                         r"\(1, 3, 4, 5, 2\)\)"):
        METHODS[name](c3d, x, jnp.asarray([1, 2]))


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize("target", [K, 1000, -1])
def test_a_target_outside_the_classes_is_an_error(c3d, name, target):
    with pytest.raises(ValueError, match=rf"target must hold classes in \[0, {K}\) .*got \[1, {target}\]"):
        METHODS[name](c3d, video(), jnp.asarray([1, target]))


@pytest.mark.parametrize("name", sorted(METHODS))
def test_an_empty_batch_is_an_error(c3d, name):
    with pytest.raises(ValueError, match=r"video must hold at least one clip .* got shape \(0, 16, 32, 32, 3\)"):
        METHODS[name](c3d, jnp.zeros((0, 16, 32, 32, 3)), None)


def test_a_video_of_another_size_names_the_input_and_where_to_find_the_size(c3d):
    with pytest.raises(ValueError, match=r"video of shape \(1, 16, 64, 64, 3\) does not fit the model: .*fc6.*"
                                         "input_shape"):
        methods.gradient()(c3d, jnp.zeros((1, 16, 64, 64, 3)), None)


@pytest.mark.parametrize("name", ["gradient", "deep_taylor", "gradcam", "occlusion", "chain"])
def test_under_jit_the_bad_clip_gets_a_nan_map_and_the_good_one_its_map(c3d, name):
    method = METHODS[name]
    run = jax.jit(lambda v, t: method(c3d, v, t))
    x, t = video(), jnp.asarray([1, 2])
    good = np.asarray(run(x, t))
    assert np.all(np.isfinite(good)) and np.any(good != 0)
    for bad_x, bad_t in [(x.at[1, 0, 0, 0, 0].set(jnp.nan), t), (x, jnp.asarray([1, K])),
                         (x, jnp.asarray([1, -1]))]:
        out = np.asarray(run(bad_x, bad_t))
        assert np.all(np.isnan(out[1])), "the bad clip's map is all NaN"
        np.testing.assert_allclose(out[0], good[0], rtol=1e-5, atol=1e-6)  # the other clip is untouched


def test_a_concrete_target_inside_another_trace_is_still_checked(c3d):
    """A target closed over by a jitted function is concrete: checked while tracing, before anything runs."""
    x = video()
    with pytest.raises(ValueError, match=r"target must hold classes in \[0, 10\)"):
        jax.jit(lambda v: methods.gradient()(c3d, v, np.asarray([0, 12])))(x)
