"""PyTorch twins of C3D and R(2+1)D-18, converted with jaxvx.convert, must give the same logits.

The twins live in ``_torch_twins`` beside this file (torchvision is not available): the common C3D port (pool5 with
padding (0, 1, 1)) and torchvision's ``r2plus1d_18`` layout (Sequential indices give the state-dict names), both with
a width multiplier.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import _torch_twins as twins  # tests/peers/_torch_twins.py (tests/peers is on sys.path under pytest)
from jaxvx import CheckpointError, convert, models


def _rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _randomise_bn(torch, model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                n = m.num_features
                m.weight.copy_(0.5 + torch.rand(n, generator=g))
                m.bias.copy_(0.3 * torch.randn(n, generator=g))
                m.running_mean.copy_(0.3 * torch.randn(n, generator=g))
                m.running_var.copy_(0.5 + torch.rand(n, generator=g))
                m.num_batches_tracked.fill_(7)


@pytest.mark.slow
def test_c3d_matches_torch_port(torch):
    # 16 x 40 x 48 frames: pool4 gives 2 x 2 x 3, pool5 with padding (0, 1, 1) gives 1 x 2 x 2 (odd width rounds
    # down), so fc6 sees C * 4 features whose order must match torch's (C, T, H, W) flatten.
    width, k = 1 / 16, 7
    tm = twins.c3d(torch, k, width, fc_in=1 * 2 * 2).eval()
    x = torch.randn(2, 3, 16, 40, 48, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = tm(x).numpy()
    model, variables = convert.c3d_from_torch(tm.state_dict(), num_classes=k, return_model=True)
    assert model == models.C3D(k, width=width)
    out = jax.jit(model.apply)(variables, jnp.asarray(x.numpy().transpose(0, 2, 3, 4, 1)))
    assert out.shape == (2, k)
    assert _rel_err(out, ref) < 1e-5


def test_c3d_pool5_padding_is_minus_inf(torch):
    # torch pads max pooling with -inf: on negative inputs a zero-padded pool would differ at the border.
    x = -1.0 - torch.rand(2, 3, 4, 5, 7, generator=torch.Generator().manual_seed(3))
    ref = torch.nn.MaxPool3d((2, 2, 2), (2, 2, 2), padding=(0, 1, 1))(x).numpy()
    out = models.MaxPool3D((2, 2, 2), (2, 2, 2), ((0, 0), (1, 1), (1, 1))).apply({}, jnp.asarray(
        x.numpy().transpose(0, 2, 3, 4, 1)))
    np.testing.assert_array_equal(np.asarray(out), ref.transpose(0, 2, 3, 4, 1))


@pytest.mark.slow
def test_r2plus1d_matches_torchvision_layout(torch):
    width, k = 1 / 8, 5
    tm = twins.r2plus1d_18(torch, k, width)
    _randomise_bn(torch, tm)
    tm.eval()
    x = torch.randn(2, 3, 8, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        ref = tm(x).numpy()
    sd = tm.state_dict()
    model, variables = convert.r2plus1d_from_torch(sd, return_model=True)
    assert model == models.R2Plus1D18(k, width=width)
    xj = jnp.asarray(x.numpy().transpose(0, 2, 3, 4, 1))
    out = jax.jit(model.apply)(variables, xj)
    assert _rel_err(out, ref) < 1e-5
    # the folded model (LRP's form) still matches torch
    fmodel, fvars = models.fold_batchnorm(model, variables)
    assert _rel_err(jax.jit(fmodel.apply)(fvars, xj), ref) < 1e-5


def test_r2plus1d_twin_is_torchvision_sized(torch):
    # torchvision's r2plus1d_18(num_classes=400) has 31,505,325 parameters: the twin is the right architecture.
    tm = twins.r2plus1d_18(torch, 400, 1.0)
    assert sum(p.numel() for p in tm.parameters()) == 31_505_325
    names = set(tm.state_dict())
    assert {"stem.0.weight", "stem.4.running_var", "layer1.0.conv1.0.0.weight", "layer1.0.conv1.0.3.weight",
            "layer1.0.conv1.1.num_batches_tracked", "layer2.0.downsample.0.weight", "fc.bias"} <= names
    variables = convert.r2plus1d_from_torch({k: v.numpy() for k, v in tm.state_dict().items()})
    shapes = jax.eval_shape(models.R2Plus1D18(400).init, jax.random.PRNGKey(0), jnp.zeros((1, 8, 32, 32, 3)))
    assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(variables)
    for a, b in zip(jax.tree_util.tree_leaves(shapes), jax.tree_util.tree_leaves(variables)):
        assert a.shape == b.shape


def test_convert_from_path_and_errors(torch, tmp_path):
    width = 1 / 16
    tm = twins.c3d(torch, 3, width, fc_in=4)
    path = tmp_path / "c3d.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in tm.state_dict().items()}}, path)
    variables = convert.c3d_from_torch(path)
    np.testing.assert_array_equal(variables["params"]["conv2"]["kernel"],
                                  tm.conv2.weight.detach().numpy().transpose(2, 3, 4, 1, 0))
    np.testing.assert_array_equal(variables["params"]["fc6"]["kernel"], tm.fc6.weight.detach().numpy().T)

    sd = {k: v.numpy() for k, v in tm.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"missing key 'conv4a.bias'"):
        convert.c3d_from_torch({k: v for k, v in sd.items() if k != "conv4a.bias"})
    with pytest.raises(ValueError, match=r"unexpected key.*'extra.weight' \(2, 2\)"):
        convert.c3d_from_torch({**sd, "extra.weight": np.zeros((2, 2))})
    bad = dict(sd, **{"conv3b.weight": np.zeros((16, 15, 3, 3, 3), np.float32)})
    with pytest.raises(ValueError, match=r"'conv3b.weight' has shape \(16, 15, 3, 3, 3\), expected \(16, 16, 3, 3, 3"):
        convert.c3d_from_torch(bad)
    with pytest.raises(CheckpointError, match="num_classes: 4 given"):
        convert.c3d_from_torch(sd, num_classes=4)
    with pytest.raises(CheckpointError, match="no checkpoint file at"):
        convert.c3d_from_torch(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot load"):
        convert.r2plus1d_from_torch(str(tmp_path / "junk.pth"))

    rsd = {k: v.numpy() for k, v in twins.r2plus1d_18(torch, 3, 1 / 8).state_dict().items()}
    with pytest.raises(ValueError, match=r"missing key 'layer3.0.downsample.1.running_var'"):
        convert.r2plus1d_from_torch({k: v for k, v in rsd.items() if k != "layer3.0.downsample.1.running_var"})
    rsd["layer2.1.conv1.0.0.weight"] = np.zeros((5, 16, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match=r"'layer2.1.conv1.0.0.weight' has shape \(5, 16, 1, 3, 3\), expected \(36,"):
        convert.r2plus1d_from_torch(rsd)
