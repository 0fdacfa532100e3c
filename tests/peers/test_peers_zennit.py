"""jaxvx's LRP composites against zennit's on identical weights: a small C3D twin in PyTorch, converted with
``jaxvx.convert.c3d_from_torch``. Maximum relative error (max |a - b| / max |b|) under 1e-4 in float32."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _torch_twins as twins  # tests/peers/_torch_twins.py (tests/peers is on sys.path under pytest)
from jaxvx import convert, lrp, methods

WIDTH = 1 / 16
CLIP = (16, 32, 32)  # pool5 gives 1 x 2 x 2 positions


def twin(torch, seed=0):
    """``(torch model, jaxvx forward, torch input NCDHW, jax input NDHWC, targets)``."""
    torch.manual_seed(seed)
    model = twins.c3d(torch, 5, WIDTH, fc_in=4).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.Conv3d, torch.nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.normal_(0, math.sqrt(2 / fan_in))
                m.bias.normal_(0, 0.05)
    state = {k: v for k, v in model.state_dict().items()}
    jmodel, variables = convert.c3d_from_torch(state, return_model=True)
    forward = functools.partial(jmodel.apply, jax.tree.map(jnp.asarray, variables))
    x = np.random.default_rng(seed).uniform(-1, 1, (2,) + CLIP + (3,)).astype(np.float32)
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3)))
    with torch.no_grad():
        logits = model(xt).numpy()
    np.testing.assert_allclose(np.asarray(jax.jit(forward)(jnp.asarray(x))), logits, rtol=1e-4, atol=1e-5)
    targets = np.argmax(logits, -1)
    return model, forward, xt, jnp.asarray(x), targets


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def zennit_relevance(torch, model, composite, xt, targets):
    """zennit's relevance with the target logit as the seed (jaxvx's default seed)."""
    x = xt.clone().requires_grad_(True)
    with composite.context(model) as modified:
        out = modified(x)
        seed = torch.zeros_like(out)
        seed[torch.arange(len(targets)), torch.as_tensor(targets)] = out[torch.arange(len(targets)),
                                                                          torch.as_tensor(targets)].detach()
        (rel,) = torch.autograd.grad(out, x, grad_outputs=seed)
    return rel.numpy().transpose(0, 2, 3, 4, 1)


@pytest.fixture(scope="module")
def setup(torch):
    return twin(torch)


def _composites():
    from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat, SpecialFirstLayerMapComposite, layer_map_base
    from zennit.rules import ZBox, ZPlus
    from zennit.types import Linear

    deep_taylor = SpecialFirstLayerMapComposite(layer_map=layer_map_base() + [(Linear, ZPlus(zero_params=["bias"]))],
                                                first_map=[(Linear, ZBox(-1.0, 1.0))])
    return {
        "epsilon_plus_flat": (EpsilonPlusFlat(), lrp.epsilon_plus_flat()),
        "epsilon_gamma_box": (EpsilonGammaBox(low=-1.0, high=1.0), lrp.epsilon_gamma_box(-1.0, 1.0)),
        "deep_taylor": (deep_taylor, lrp.deep_taylor(-1.0, 1.0)),
    }


@pytest.mark.parametrize("name", ["epsilon_plus_flat", "epsilon_gamma_box", "deep_taylor"])
def test_composite_matches_zennit(torch, setup, name):
    model, forward, xt, x, targets = setup
    z_comp, j_comp = _composites()[name]
    want = zennit_relevance(torch, model, z_comp, xt, targets)
    got = np.asarray(jax.jit(methods.lrp(j_comp), static_argnums=0)(forward, x, jnp.asarray(targets)))
    assert np.isfinite(got).all() and np.abs(want).max() > 0
    assert rel_err(got, want) < 1e-4, rel_err(got, want)
