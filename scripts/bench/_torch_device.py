"""Where the PyTorch peers of the benchmarks run, and how to time them there.

``--torch-device auto`` (the benchmarks' default) puts the peers on the GPU when PyTorch sees one and jax's
default backend is a GPU too, so that "jaxvx / peer" always compares the two frameworks on the same machine part.
On a GPU a timed PyTorch call must wait for its kernels: :func:`timed` wraps a call so that it returns only once
the device is idle (``torch.cuda.synchronize``), as ``jax.block_until_ready`` does for jaxvx.
"""

from __future__ import annotations

import jax

CHOICES = ("auto", "cpu", "cuda")


def add_argument(parser):
    parser.add_argument("--torch-device", choices=CHOICES, default="auto",
                        help="where the PyTorch peers run (auto: cuda when jax runs on a GPU and torch sees one)")


def resolve(torch, name: str):
    """The ``torch.device`` for ``name`` (one of :data:`CHOICES`)."""
    if name not in CHOICES:
        raise ValueError(f"--torch-device: expected one of {CHOICES}, got {name!r}")
    if name == "auto":
        name = "cuda" if (jax.default_backend() == "gpu" and torch.cuda.is_available()) else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--torch-device cuda: PyTorch sees no CUDA device (torch.cuda.is_available() is False)")
    return torch.device(name)


def timed(torch, device, fn):
    """``fn`` made to return only when ``device`` has finished the work it queued."""
    if device.type != "cuda":
        return fn

    def call(*args, **kwargs):
        out = fn(*args, **kwargs)
        torch.cuda.synchronize(device)
        return out

    return call
