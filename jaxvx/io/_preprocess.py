"""Turn decoded frames into a model's input: resize, centre crop, per-channel normalisation (pure jnp, jittable)."""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx._checks import is_int

__all__ = ["preprocess", "PRESETS", "KINETICS_MEAN", "KINETICS_STD", "SPORTS1M_MEAN"]

#: Per-channel RGB mean and std of Kinetics-400 in [0, 1] pixel units (torchvision's video classification recipe).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
#: Per-channel RGB means of the Sports-1M mean cube of C3D (Tran et al.), in 0..255 pixel units.
SPORTS1M_MEAN = (101.41, 97.66, 90.25)

_C3D = {
    "size": (112, 112),
    "resize": "direct",
    "resize_to": (128, 171),
    "crop": "center",
    "mean": tuple(m / 255.0 for m in SPORTS1M_MEAN),
    "std": (1 / 255.0,) * 3,
}
_R2PLUS1D = {
    "size": (112, 112),
    "resize": "direct",
    "resize_to": (128, 171),
    "crop": "center",
    "mean": KINETICS_MEAN,
    "std": KINETICS_STD,
}
_LI2021 = {
    "size": (112, 112),
    "resize": "direct",
    "resize_to": (112, 112),
    "crop": "none",
    "mean": KINETICS_MEAN,
    "std": KINETICS_STD,
}
_I3D = {
    "size": (224, 224),
    "resize": "short_side",
    "short_side": 256,
    "crop": "center",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
}

#: Named preprocessing recipes: name -> keyword arguments of :func:`preprocess`.
#:
#: - ``"c3d"``: Tran et al. (C3D): every frame resized to 128x171 (H x W), centre crop 112x112, output
#:   ``x_255 - mean_255`` with the per-channel means of the Sports-1M mean cube, RGB (101.41, 97.66, 90.25)
#:   (expressed as mean = m / 255, std = 1 / 255). Ported weights may have been trained with their own values.
#: - ``"r2plus1d"`` (alias ``"kinetics"``): resize to 128x171, centre crop 112x112, Kinetics mean/std
#:   (torchvision's video classification recipe).
#: - ``"li2021"``: Li et al. (WACV 2021): resize directly to 112x112, Kinetics mean/std.
#: - ``"i3d"``: DeepMind's Kinetics I3D: short side resized to 256 (aspect kept), centre crop 224x224, RGB scaled to
#:   [-1, 1] (``x / 127.5 - 1``, as mean = std = 0.5).
PRESETS = {
    "c3d": _C3D,
    "r2plus1d": _R2PLUS1D,
    "kinetics": dict(_R2PLUS1D),
    "li2021": _LI2021,
    "i3d": _I3D,
}

RESIZE_MODES = ("short_side", "direct", "none")
CROP_MODES = ("center", "none")

_UNSET = object()
_DEFAULTS = {
    "size": (112, 112),
    "resize": "short_side",
    "short_side": 128,
    "resize_to": None,
    "crop": "center",
    "mean": (0.0, 0.0, 0.0),
    "std": (1.0, 1.0, 1.0),
}


def _hw(name: str, value, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if is_int(value):
        value = (value, value)
    try:
        h, w = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an int or a pair (height, width) of positive ints, got {value!r}") from None
    for v in (h, w):
        if not is_int(v) or v < 1:
            raise ValueError(f"{name} must be an int or a pair (height, width) of positive ints, got {value!r}")
    return int(h), int(w)


def _per_channel(name: str, value, channels: int) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full((channels,), float(arr))
    if arr.shape != (channels,):
        raise ValueError(f"{name} must be a scalar or have {channels} values (one per channel), got {value!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return arr


def _resized_shape(h: int, w: int, resize: str, short_side, resize_to, size) -> tuple[int, int]:
    if resize == "none":
        return h, w
    if resize == "direct":
        return resize_to if resize_to is not None else size
    # short_side: the shorter side becomes short_side, the other keeps the aspect ratio (rounded half up)
    if not is_int(short_side) or short_side < 1:
        raise ValueError(
            f"short_side must be a positive int with resize='short_side', got {short_side!r} "
            "(to resize to a fixed (height, width) use resize='direct', resize_to=(h, w))"
        )
    s = int(short_side)
    if h <= w:  # round(w * s / h), halves up, in exact integer arithmetic
        return s, max(1, (2 * w * s + h) // (2 * h))
    return max(1, (2 * h * s + w) // (2 * w)), s


def _resolve(given: dict, preset: str | None) -> dict:
    """Every keyword of :func:`preprocess`: those ``given``, else the preset's, else the defaults."""
    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)} or None, got {preset!r}")
        base = {**_DEFAULTS, **PRESETS[preset]}
    else:
        base = dict(_DEFAULTS)
    return {**base, **given}


def _layout(h: int, w: int, opts: dict, *, short_side_given: bool) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """``((resized height, width), (top, left, crop height, crop width))`` of an ``h x w`` frame under the resolved
    options ``opts``, or the ValueError that names the option that does not fit."""
    rmode, cmode = opts["resize"], opts["crop"]
    if rmode not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {rmode!r}")
    if cmode not in CROP_MODES:
        raise ValueError(f"crop must be one of {CROP_MODES}, got {cmode!r}")
    out_size = _hw("size", opts["size"], allow_none=(cmode == "none"))
    rto = _hw("resize_to", opts["resize_to"], allow_none=True)
    short_side = opts["short_side"]
    if rmode == "direct" and short_side_given and not isinstance(short_side, numbers.Integral):
        raise ValueError(
            f"short_side={short_side!r} is only for resize='short_side' (an int); to resize to a fixed "
            "(height, width) pass resize='direct', resize_to=(height, width)"
        )
    if rmode == "direct" and rto is None and out_size is None:
        raise ValueError("resize='direct' needs resize_to=(height, width) (or size) to know the target")
    rh, rw = _resized_shape(h, w, rmode, short_side, rto, out_size)
    if cmode == "center":
        ch, cw = out_size
        if ch > rh or cw > rw:
            raise ValueError(
                f"crop size {out_size} is larger than the resized frame {(rh, rw)} (input {(h, w)}, resize={rmode!r})"
            )
        return (rh, rw), ((rh - ch) // 2, (rw - cw) // 2, ch, cw)
    if out_size is not None and out_size != (rh, rw):
        raise ValueError(
            f"crop='none' needs the resized frame to be size={out_size}, but it is {(rh, rw)} (input {(h, w)}, "
            f"resize={rmode!r}); use crop='center' or resize='direct', resize_to={out_size}"
        )
    return (rh, rw), (0, 0, rh, rw)


def preprocess(
    frames,
    *,
    size=_UNSET,
    resize=_UNSET,
    short_side=_UNSET,
    resize_to=_UNSET,
    crop=_UNSET,
    mean=_UNSET,
    std=_UNSET,
    preset: str | None = None,
) -> jax.Array:
    """Resize, crop and normalise video frames for a model.

    Steps, applied to the trailing ``[H, W, C]`` axes of every frame:

    1. resize (``jax.image.resize``, bilinear with antialiasing when downsampling; upsampling matches OpenCV's
       ``INTER_LINEAR``, downsampling is a triangle filter close to ``INTER_AREA``):

       - ``"short_side"``: the shorter side becomes ``short_side``, the longer one ``round(long * short_side /
         short)`` (aspect kept; 240x320 -> 128x171);
       - ``"direct"``: to ``resize_to = (height, width)``, or to ``size`` when ``resize_to`` is None;
       - ``"none"``: no resize.
    2. crop to ``size``: ``"center"`` takes rows ``[top, top + h)`` with ``top = (H' - h) // 2`` (floor; likewise
       for columns; torchvision rounds half to even, which can differ by one pixel), ``"none"`` takes no crop and
       requires the resized frame to be ``size`` already (or ``size=None``).
    3. normalise per channel: ``(x / 255 - mean) / std``.

    For fixed input shapes the whole function is jittable (wrap it with the string arguments closed over or static)
    and works under ``jax.vmap``.

    Parameters
    ----------
    frames : array_like
        ``[..., T, H, W, C]`` with ``C = 3`` channels last and any leading batch axes (rank >= 4); uint8, or a float
        in the 0..255 pixel range.
    size : int or (int, int) or None
        Output ``(height, width)`` after cropping. Default (112, 112).
    resize : {"short_side", "direct", "none"}
        Resize mode. Default "short_side".
    short_side : int
        Target of the shorter side for ``resize="short_side"``. Default 128.
    resize_to : (int, int), optional
        Target ``(height, width)`` for ``resize="direct"``; defaults to ``size``.
    crop : {"center", "none"}
        Crop mode. Default "center".
    mean, std : float or sequence of 3 floats
        Per-channel statistics in 0..1 pixel units (RGB order). Defaults 0 and 1 (output ``x / 255``).
    preset : str, optional
        A key of :data:`PRESETS` (``"c3d"``, ``"r2plus1d"``, ``"kinetics"``, ``"li2021"``, ``"i3d"``) supplying
        defaults for all of the above; explicitly passed keywords override the preset's values.

    Returns
    -------
    jax.Array
        float32 ``[..., T, size[0], size[1], 3]``.

    Raises
    ------
    ValueError
        Rank below 4, channels not 3, bad sizes or modes, a crop larger than the resized frame, an unknown preset,
        zero std.
    """
    given = {
        "size": size,
        "resize": resize,
        "short_side": short_side,
        "resize_to": resize_to,
        "crop": crop,
        "mean": mean,
        "std": std,
    }
    opts = _resolve({k: v for k, v in given.items() if v is not _UNSET}, preset)

    if not isinstance(frames, jax.Array):
        frames = np.asarray(frames)
    if frames.ndim < 4:
        raise ValueError(f"frames must have shape [..., T, H, W, C] (rank >= 4), got shape {tuple(frames.shape)}")
    *lead, h, w, c = frames.shape
    if c != 3:
        raise ValueError(f"frames must have 3 channels last ([..., T, H, W, 3]), got shape {tuple(frames.shape)}")
    if h < 1 or w < 1:
        raise ValueError(f"frames must have H, W >= 1, got shape {tuple(frames.shape)}")
    if not (jnp.issubdtype(frames.dtype, jnp.integer) or jnp.issubdtype(frames.dtype, jnp.floating)):
        raise TypeError(f"frames must be uint8 or float in [0, 255], got dtype {frames.dtype}")

    (rh, rw), box = _layout(h, w, opts, short_side_given=short_side is not _UNSET)
    mean_arr = _per_channel("mean", opts["mean"], c)
    std_arr = _per_channel("std", opts["std"], c)
    if np.any(std_arr == 0):
        raise ValueError(f"std must be non-zero for every channel, got {opts['std']!r}")

    # (x / 255 - mean) / std == x * a + b with a = 1 / (255 std), b = -mean / std (folded in float64)
    scale = np.asarray(1.0 / (255.0 * std_arr), dtype=np.float32)
    shift = np.asarray(-mean_arr / std_arr, dtype=np.float32)
    return _apply(frames, scale, shift, resized=(rh, rw), box=box)


@functools.partial(jax.jit, static_argnames=("resized", "box"))
def _apply(frames, scale, shift, *, resized, box):
    """Resize to ``resized``, crop ``box = (top, left, height, width)``, then ``x * scale + shift``; one compile per
    shape and configuration (inlined when the caller is itself jitted)."""
    x = frames.astype(jnp.float32)
    *lead, h, w, c = x.shape
    if resized != (h, w):
        x = jax.image.resize(x, (*lead, *resized, c), method="linear", antialias=True)
    top, left, ch, cw = box
    x = x[..., top : top + ch, left : left + cw, :]
    return x * scale + shift
