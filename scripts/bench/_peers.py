"""Peer-library helpers shared by the benchmarks; ``twins``: the PyTorch twins of tests/peers/_torch_twins.py."""

from __future__ import annotations

import pathlib
import sys

import numpy as np

import _torch_device as torch_device

# The twins live beside the peer tests, which use them too (not in the library package).
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "peers"))
import _torch_twins as twins  # noqa: E402


def torch_inputs(torch, device, x, target):
    """``(xt, tt, forward)``: the clips ``x`` ``[B, T, H, W, C]`` as a torch ``[B, C, T, H, W]`` tensor and the
    targets on ``device``, and ``forward(model)`` -> a timed no-grad call of ``model(xt)``."""
    xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3))).to(device)
    tt = torch.as_tensor(target).to(device)

    def forward(model):
        def call():
            with torch.no_grad():
                return model(xt)

        return torch_device.timed(torch, device, call)

    return xt, tt, forward


def zennit_runner(torch, model, make_composite):
    """``run(x, t) -> relevance``: zennit's relevance for targets ``t`` with the target logit as the seed (jaxvx's
    default seed); ``make_composite()`` builds a fresh composite for each call."""
    def run(x, t):
        x = x.detach().requires_grad_(True)
        with make_composite().context(model) as modified:
            out = modified(x)
            seed = torch.zeros_like(out)
            idx = torch.arange(len(t), device=t.device)
            seed[idx, t] = out[idx, t].detach()
            (rel,) = torch.autograd.grad(out, x, grad_outputs=seed)
        return rel

    return run
