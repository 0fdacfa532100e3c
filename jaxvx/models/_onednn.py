"""oneDNN's 3D convolutions as XLA custom calls on the CPU backend (the native piece built from csrc/).

oneDNN's JIT kernels, called here through XLA's FFI, take less time than XLA's own convolutions (Eigen) forward and
for the input gradient on the CPU (``scripts/bench/bench_convs.py``, docs/performance.md). :func:`conv3d` is a
drop-in for a channels-last ``lax.conv_general_dilated`` (``NDHWC`` input, ``DHWIO`` kernel, float32, no dilation
or groups) with reverse-mode derivatives of any order and ``vmap``:

- forward ``y = conv(x, w)``;
- input gradient ``dx = conv^T_x(g, w)`` (oneDNN's backward-data) and kernel gradient ``dw = conv^T_w(x, g)``
  (backward-weights); the three are linear in each argument and each one's derivatives are the other two, so
  the rules close and differentiate again;
- ``vmap``: the batched axes lead the operands (XLA FFI's ``expand_dims``); where the kernel is not batched the
  library folds them into the batch, else it loops over them.

The library (``jaxvx/_onednn_conv*.so``) is optional and built on request only: ``JAXVX_BUILD_ONEDNN=1 pip install
"jaxvx[onednn]"`` (Linux x86-64, a C++17 compiler; the ``onednn`` extra brings oneDNN's runtime library, the
``onednn-cpu-gomp`` wheel). :func:`available` says whether it loaded, :func:`load_error` why not; without it the models
run XLA's convolutions (``jaxvx.models.conv_form``).
"""

from __future__ import annotations

import ctypes
import functools
import glob
import os
from importlib import metadata

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["available", "load_error", "version", "conv3d"]

_TARGETS = {"fwd": "JaxvxConv3dForward", "bwd_data": "JaxvxConv3dBackwardData",
            "bwd_weights": "JaxvxConv3dBackwardWeights"}
_PREFIX = "jaxvx_onednn_conv3d_"
_DN = ("NDHWC", "DHWIO", "NDHWC")
# Up to this many input channels the forward pass runs on the plain channels-last layouts; above it oneDNN picks
# its blocked layouts and the buffers are reordered (C3D's first layer, 3 channels: 45 against 61 ms at width 1,
# batch 1; every wider layer is 1.2 to 1.9 times faster blocked).
_PLAIN_MAX_CHANNELS = 4
# The input gradient of such a layer (3 channels, from O): with O < 64 as oneDNN's blocked forward convolution of
# the output gradient with the flipped kernel (16 x 112 x 112 clips, O = 16, batch 8: 85 ms, against 192 ms for its
# backward-data kernel and 119 ms for XLA's), with O >= 64 by its plain backward-data kernel (O = 64, batch 1:
# 40 ms, flipped 57 ms, XLA 112 ms).
_FLIPPED_MAX_OUT = 64
# how to get the library where it is missing (setup.py's switch, pyproject.toml's extra)
_INSTALL = 'JAXVX_BUILD_ONEDNN=1 pip install "jaxvx[onednn]"'


def _library_files() -> list[str]:
    """The built extension beside jaxvx's ``__init__.py`` (``jaxvx/_onednn_conv*.so``), sorted; empty if none."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return sorted(glob.glob(os.path.join(here, "_onednn_conv*.so")))


@functools.cache
def _load():
    """Loads oneDNN and jaxvx's library and registers the custom calls; returns (library, error message)."""
    found = _library_files()
    if not found:
        return None, f"jaxvx was built without its oneDNN library (to build it: {_INSTALL}; Linux x86-64, g++)"
    try:
        dist = metadata.distribution("onednn-cpu-gomp")
    except metadata.PackageNotFoundError:
        return None, f"oneDNN's runtime library, the onednn-cpu-gomp wheel, is not installed ({_INSTALL})"
    try:
        libs = [str(dist.locate_file(f)) for f in dist.files or () if f.name.startswith("libdnnl.so.")]
        # load oneDNN by path first, so that the library's dependency on its soname resolves to it
        for path in sorted(libs, key=len):
            ctypes.CDLL(os.path.normpath(path), mode=ctypes.RTLD_GLOBAL)
            break
        lib = ctypes.CDLL(found[0])
        for name, symbol in _TARGETS.items():
            jax.ffi.register_ffi_target(_PREFIX + name, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        _self_check()
    except Exception as err:  # noqa: BLE001 - report any loading failure, fall back to XLA's convolutions
        return None, f"{type(err).__name__}: {err}"
    return lib, None


def _self_check():
    """One small convolution through each kernel against lax on the CPU: a library built against another jaxlib's
    FFI, or a oneDNN that does not run here, fails now (and XLA's convolutions are used) rather than in a model."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 4, 5, 3)).astype(np.float32)
    w = rng.standard_normal((3, 3, 3, 3, 2)).astype(np.float32)
    geometry = ((1, 1, 1), (1, 1, 1), (1, 1, 1))
    cpu = jax.devices("cpu")[0]
    # the first load may happen while a program is traced: compute these now, outside that trace
    with jax.ensure_compile_time_eval(), jax.default_device(cpu):
        ref, pullback = jax.vjp(lambda a, b: jax.lax.conv_general_dilated(
            a, b, (1, 1, 1), ((1, 1),) * 3, dimension_numbers=_DN, precision="highest"), x, w)
        g = np.asarray(ref)
        got = [_ffi("fwd", x, w, ref.shape, geometry, blocked) for blocked in (False, True)]
        got.append(_ffi("bwd_data", g, w, x.shape, geometry, True))
        got.append(_ffi("bwd_weights", x, g, w.shape, geometry, True))
        want = [ref, ref, *pullback(ref)]
    for name, a, b in zip(("forward", "forward (blocked)", "input gradient", "kernel gradient"), got, want):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max()):
            raise RuntimeError(f"self-check failed: oneDNN's {name} differs from lax's")


def available() -> bool:
    """Whether oneDNN's convolutions loaded (they are used on the CPU backend only)."""
    return _load()[0] is not None


def load_error() -> str | None:
    """Why :func:`available` is false (``None`` when it is true)."""
    return _load()[1]


def version() -> str | None:
    """The version of the loaded oneDNN library, ``"major.minor.patch"`` (``None`` when not loaded)."""
    lib = _load()[0]
    if lib is None:
        return None
    v = [ctypes.c_int() for _ in range(3)]
    lib.jaxvx_onednn_version(*(ctypes.byref(x) for x in v))
    return ".".join(str(x.value) for x in v)


def _call(op, a, b, out_shape, geometry, blocked):
    if _load()[0] is None:  # registers the custom calls on first use
        raise RuntimeError(f"jaxvx's oneDNN convolutions are not available: {load_error()}")
    return _ffi(op, a, b, out_shape, geometry, blocked)


def _ffi(op, a, b, out_shape, geometry, blocked):
    strides, lo, hi = (np.asarray(v, np.int64) for v in geometry)
    return jax.ffi.ffi_call(_PREFIX + op, jax.ShapeDtypeStruct(out_shape, jnp.float32), vmap_method="expand_dims")(
        a, b, strides=strides, pad_lo=lo, pad_hi=hi, blocked=np.int64(blocked))


def _out_size(n, k, s, lo, hi):
    return (n + lo + hi - k) // s + 1


# geometry = (strides, pad_lo, pad_hi), three tuples of 3 ints: static (nondiff) arguments below.
@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _fwd(x, w, geometry):
    strides, lo, hi = geometry
    out = tuple(_out_size(n, k, s, a, b) for n, k, s, a, b in zip(x.shape[1:4], w.shape[:3], strides, lo, hi))
    return _call("fwd", x, w, (x.shape[0], *out, w.shape[-1]), geometry, x.shape[-1] > _PLAIN_MAX_CHANNELS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _bwd_data(g, w, geometry, in_size):
    strides, lo, hi = geometry
    c, o = w.shape[-2:]
    if c <= _PLAIN_MAX_CHANNELS and o < _FLIPPED_MAX_OUT and all(s == 1 for s in strides) and all(
            0 <= p <= k - 1 for p, k in zip(lo + hi, w.shape[:3] * 2)):
        # the stride-1 input gradient is the forward convolution of g with the flipped, I/O-swapped kernel
        flipped = jnp.flip(w, (0, 1, 2)).swapaxes(3, 4)
        pads = (strides, tuple(k - 1 - p for k, p in zip(w.shape[:3], lo)),
                tuple(k - 1 - p for k, p in zip(w.shape[:3], hi)))
        return _call("fwd", g, flipped, (g.shape[0], *in_size, c), pads, True)
    return _call("bwd_data", g, w, (g.shape[0], *in_size, c), geometry, c > _PLAIN_MAX_CHANNELS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _bwd_weights(x, g, geometry, kernel_size):
    return _call("bwd_weights", x, g, (*kernel_size, x.shape[-1], g.shape[-1]), geometry, True)


# <conv(x, w), g> = <x, bwd_data(g, w)> = <w, bwd_weights(x, g)>: each op's cotangents are the other two.
def _fwd_fwd(x, w, geometry):
    return _fwd(x, w, geometry), (x, w)


def _fwd_bwd(geometry, res, g):
    x, w = res
    return _bwd_data(g, w, geometry, x.shape[1:4]), _bwd_weights(x, g, geometry, w.shape[:3])


def _bwd_data_fwd(g, w, geometry, in_size):
    return _bwd_data(g, w, geometry, in_size), (g, w)


def _bwd_data_bwd(geometry, in_size, res, c):
    g, w = res
    return _fwd(c, w, geometry), _bwd_weights(c, g, geometry, w.shape[:3])


def _bwd_weights_fwd(x, g, geometry, kernel_size):
    return _bwd_weights(x, g, geometry, kernel_size), (x, g)


def _bwd_weights_bwd(geometry, kernel_size, res, m):
    x, g = res
    return _bwd_data(g, m, geometry, x.shape[1:4]), _fwd(x, m, geometry)


_fwd.defvjp(_fwd_fwd, _fwd_bwd)
_bwd_data.defvjp(_bwd_data_fwd, _bwd_data_bwd)
_bwd_weights.defvjp(_bwd_weights_fwd, _bwd_weights_bwd)


def conv3d(x, w, strides, pads):
    """3D convolution ``[B, T, H, W, C] * [kT, kH, kW, C, O] -> [B, T', H', W', O]`` by oneDNN (float32).

    Args:
        x: input, float32 ``[B, T, H, W, C]``.
        w: kernel, float32 ``[kT, kH, kW, C, O]``.
        strides: 3 ints.
        pads: 3 ``(low, high)`` pairs of non-negative ints.

    Returns:
        ``y[b, t, h, w, o] = sum_{dt, dh, dw, c} x_pad[b, s_t t + dt, s_h h + dh, s_w w + dw, c] w[dt, dh, dw, c, o]``
        (``x_pad``: ``x`` zero-padded by ``pads``), as ``lax.conv_general_dilated`` with ``NDHWC`` / ``DHWIO``.
    """
    if not available():
        raise RuntimeError(f"jaxvx's oneDNN convolutions are not available: {load_error()}")
    if x.dtype != jnp.float32 or w.dtype != jnp.float32:
        raise TypeError(f"conv3d: oneDNN path takes float32, got x {x.dtype}, w {w.dtype}")
    geometry = (tuple(int(s) for s in strides), tuple(int(p[0]) for p in pads), tuple(int(p[1]) for p in pads))
    if any(p < 0 for p in geometry[1] + geometry[2]) or any(s < 1 for s in geometry[0]):
        raise ValueError(f"conv3d: strides must be >= 1 and pads >= 0, got {strides}, {pads}")
    out = [_out_size(n, k, *a) for n, k, a in zip(x.shape[1:4], w.shape[:3], zip(*geometry))]
    if x.ndim != 5 or w.ndim != 5 or x.shape[-1] != w.shape[-2] or min(out) < 1:
        raise ValueError(f"conv3d: input {tuple(x.shape)} (expected [B, T, H, W, C]) and kernel {tuple(w.shape)} "
                         f"(expected [kT, kH, kW, C, O]) with strides {strides}, pads {pads} give output sizes {out}")
    return _fwd(x, w, geometry)
