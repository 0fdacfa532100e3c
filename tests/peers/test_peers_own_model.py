"""A model jaxvx did not write, against zennit (with its BatchNorm canonizer) and captum on identical weights.

The network of ``tests/test_program.py`` (Flax linen written the usual way: BatchNorm after convolutions, one
negative scale in each, ``nn.relu`` / ``nn.max_pool`` / ``nn.avg_pool`` as functions, a concatenation, a residual
addition, ``jnp.mean``) and its PyTorch twin: ``Conv3d`` + ``BatchNorm3d`` pairs that zennit's
``SequentialMergeBatchNorm`` merges, one ``ReLU`` module per use, ``torch.cat``, zennit's ``Sum`` layer for the
residual addition (zennit gives it the norm rule, as jaxvx gives ``x + y``), ``AvgPool3d`` and
``AdaptiveAvgPool3d``. jaxvx folds the BatchNorms itself; zennit is given its canonizer. Maximum relative error
(max |a - b| / max |b|) under 1e-4 in float32.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxvx import lrp, methods

from test_peers_zennit import rel_err  # noqa: E402  (tests/peers is on sys.path under pytest)
from test_program import LinenNet, _clips, _nnx_forward, _variables  # noqa: E402


def torch_twin(torch, v):
    from zennit.layer import Sum

    nn = torch.nn
    p, s = v["params"], v["batch_stats"]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv3d(3, 4, 3, padding=1, bias=False)
            self.stem_bn = nn.BatchNorm3d(4, eps=1e-5)
            self.relu1 = nn.ReLU()
            self.pool = nn.MaxPool3d((1, 2, 2))
            self.branch_a = nn.Conv3d(4, 3, 1)
            self.relu_a = nn.ReLU()
            self.branch_b = nn.Conv3d(4, 5, 3, padding=1)
            self.relu_b = nn.ReLU()
            self.res = nn.Conv3d(8, 8, 1, bias=False)
            self.res_bn = nn.BatchNorm3d(8, eps=1e-5)
            self.relu_r = nn.ReLU()
            self.sum = Sum()
            self.avg = nn.AvgPool3d((1, 2, 2))
            self.gap = nn.AdaptiveAvgPool3d(1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            x = self.pool(self.relu1(self.stem_bn(self.stem(x))))
            x = torch.cat([self.relu_a(self.branch_a(x)), self.relu_b(self.branch_b(x))], 1)
            x = self.sum(torch.stack([x, self.relu_r(self.res_bn(self.res(x)))], dim=-1))
            return self.fc(self.gap(self.avg(x)).flatten(1))

    net = Net().eval()

    def t(a):
        return torch.from_numpy(np.array(a, np.float32))

    with torch.no_grad():
        for name in ("stem", "branch_a", "branch_b", "res"):
            conv = getattr(net, name)
            conv.weight.copy_(t(np.asarray(p[name]["kernel"]).transpose(4, 3, 0, 1, 2)))
            if conv.bias is not None:
                conv.bias.copy_(t(p[name]["bias"]))
        for name in ("stem_bn", "res_bn"):
            bn = getattr(net, name)
            bn.weight.copy_(t(p[name]["scale"]))
            bn.bias.copy_(t(p[name]["bias"]))
            bn.running_mean.copy_(t(s[name]["mean"]))
            bn.running_var.copy_(t(s[name]["var"]))
        net.fc.weight.copy_(t(np.asarray(p["fc"]["kernel"]).T))
        net.fc.bias.copy_(t(p["fc"]["bias"]))
    return net


def _ncdhw(torch, x):
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 4, 1, 2, 3)))


def _ndhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 4, 1)


@pytest.fixture(scope="module")
def setup(torch):
    v = _variables(seed=2)
    x = _clips(2, seed=5)
    net = torch_twin(torch, v)
    xt = _ncdhw(torch, x)
    forwards = {"linen": functools.partial(LinenNet().apply, v), "nnx": _nnx_forward(v)}
    with torch.no_grad():
        want = net(xt).numpy()
    np.testing.assert_allclose(np.asarray(forwards["linen"](x)), want, rtol=1e-4, atol=1e-5)
    return net, forwards, xt, x, want.argmax(-1)


def _zennit(torch, net, composite, xt, targets):
    x = xt.clone().requires_grad_(True)
    with composite.context(net) as modified:
        out = modified(x)
        seed = torch.zeros_like(out)
        idx = torch.arange(len(targets)), torch.as_tensor(targets)
        seed[idx] = out[idx].detach()
        (rel,) = torch.autograd.grad(out, x, grad_outputs=seed)
    return _ndhwc(rel)


@pytest.mark.parametrize("name", ["epsilon_plus_flat", "epsilon_gamma_box"])
def test_composites_match_zennit_with_its_canonizer(torch, setup, name):
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonGammaBox, EpsilonPlusFlat

    net, forwards, xt, x, targets = setup
    z_comp, j_comp = {
        "epsilon_plus_flat": (EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()]), lrp.epsilon_plus_flat()),
        "epsilon_gamma_box": (EpsilonGammaBox(low=-1.0, high=1.0, canonizers=[SequentialMergeBatchNorm()]),
                              lrp.epsilon_gamma_box(-1.0, 1.0)),
    }[name]
    want = _zennit(torch, net, z_comp, xt, targets)
    assert np.isfinite(want).all() and np.abs(want).max() > 0
    for kind, forward in forwards.items():
        got = np.asarray(jax.jit(methods.lrp(j_comp), static_argnums=0)(forward, x, jnp.asarray(targets)))
        assert rel_err(got, want) < 1e-4, (kind, rel_err(got, want))


def test_zennit_without_its_canonizer_differs(torch, setup):
    """What a zennit user who forgets the canonizer gets is not the LRP of the model: jaxvx's folded result is."""
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonPlusFlat

    net, forwards, xt, x, targets = setup
    with_canonizer = _zennit(torch, net, EpsilonPlusFlat(canonizers=[SequentialMergeBatchNorm()]), xt, targets)
    without = _zennit(torch, net, EpsilonPlusFlat(), xt, targets)
    assert rel_err(without, with_canonizer) > 1e-2


def test_gradients_match_captum(torch, setup):
    from captum.attr import GuidedBackprop, IntegratedGradients, Saliency

    net, forwards, xt, x, targets = setup
    t = torch.as_tensor(targets)
    cases = [
        (Saliency(net).attribute(xt.clone().requires_grad_(True), target=t, abs=False), methods.gradient()),
        (IntegratedGradients(net).attribute(xt, baselines=0.0, target=t, n_steps=50, method="gausslegendre"),
         methods.integrated_gradients()),
        (GuidedBackprop(net).attribute(xt.clone().requires_grad_(True), target=t), methods.guided_backprop()),
    ]
    for want, method in cases:
        want = _ndhwc(want)
        for kind, forward in forwards.items():
            got = np.asarray(jax.jit(method, static_argnums=0)(forward, x, jnp.asarray(targets)))
            assert rel_err(got, want) < 1e-4, (method.__name__, kind, rel_err(got, want))
