"""Benchmark C3D's convolution layers one by one: jaxvx (XLA) against PyTorch, forward and input gradient.

For each of C3D's eight 3 x 3 x 3 convolutions (``--width`` scales the channels, 16 x 112 x 112 clips), times
``jaxvx.models.conv_general_dilated`` (in the form jaxvx's models use on this backend, or the one ``--form`` names;
see ``jaxvx.models.conv_form``) and ``torch.nn.functional.conv3d`` on the same random input and kernel: the
forward convolution, and the input gradient alone (``jax.vjp`` / ``torch.autograd.grad`` of a fixed cotangent).
Both are timed in alternating rounds, best round each, and reported with the achieved GFLOP/s. This is where the
gradient family's time goes (docs/performance.md: why captum is faster on CPU at batch 8 and on the full C3D).

Usage::

    python scripts/bench/bench_convs.py --width 1 --batch 1
    python scripts/bench/bench_convs.py --width 0.25 --batch 8 --repeats 3
    python scripts/bench/bench_convs.py --width 1 --batch 1 --form rewrite   # XLA's convolutions on CPU
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import _torch_device as torch_device
from _timing import alternating_best
from jaxvx.models import _layers, conv_form, conv_general_dilated
from jaxvx.models._layers import scaled

# (name, frames, size, in channels, out channels) of C3D at width 1 on 16 x 112 x 112 clips
LAYERS = [("conv1", 16, 112, 3, 64), ("conv2", 16, 56, 64, 128), ("conv3a", 8, 28, 128, 256),
          ("conv3b", 8, 28, 256, 256), ("conv4a", 4, 14, 256, 512), ("conv4b", 4, 14, 512, 512),
          ("conv5a", 2, 7, 512, 512), ("conv5b", 2, 7, 512, 512)]
DN = ("NDHWC", "DHWIO", "NDHWC")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--form", choices=("auto",) + _layers.CONV_FORMS, default="auto",
                   help="jaxvx's convolution form (sets JAXVX_CONV; default: the backend's own)")
    torch_device.add_argument(p)
    args = p.parse_args()
    os.environ[_layers.CONV_ENV] = args.form

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    device = torch_device.resolve(torch, args.torch_device)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, jax {jax.__version__} "
          f"({jax.default_backend()}, convolution form: {conv_form()}), torch {torch.__version__} on {device}; "
          f"C3D width {args.width:g}, batch {args.batch}")
    conv = jax.jit(lambda x, k: conv_general_dilated(x, k, (1, 1, 1), "SAME", dimension_numbers=DN))
    grad = jax.jit(lambda x, k, g: jax.vjp(lambda v: conv_general_dilated(v, k, (1, 1, 1), "SAME",
                                                                          dimension_numbers=DN), x)[1](g)[0])
    rng = np.random.default_rng(0)
    rows = []
    for name, t, s, ci, co in LAYERS:
        ci = ci if name == "conv1" else scaled(ci, args.width)
        co = scaled(co, args.width)
        x = rng.standard_normal((args.batch, t, s, s, ci)).astype(np.float32)
        k = (rng.standard_normal((3, 3, 3, ci, co)) / np.sqrt(27 * ci)).astype(np.float32)
        g = rng.standard_normal((args.batch, t, s, s, co)).astype(np.float32)
        xj, kj, gj = jnp.asarray(x), jnp.asarray(k), jnp.asarray(g)
        xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 4, 1, 2, 3))).to(device).requires_grad_(True)
        kt = torch.from_numpy(np.ascontiguousarray(k.transpose(4, 3, 0, 1, 2))).to(device)
        gt = torch.from_numpy(np.ascontiguousarray(g.transpose(0, 4, 1, 2, 3))).to(device)
        out_t = torch.nn.functional.conv3d(xt, kt, padding=1)

        def torch_forward():
            with torch.no_grad():
                return torch.nn.functional.conv3d(xt, kt, padding=1)

        best = alternating_best({
            "jaxvx_forward": lambda: jax.block_until_ready(conv(xj, kj)),
            "torch_forward": torch_device.timed(torch, device, torch_forward),
            "jaxvx_input_grad": lambda: jax.block_until_ready(grad(xj, kj, gj)),
            "torch_input_grad": torch_device.timed(
                torch, device, lambda: torch.autograd.grad(out_t, xt, gt, retain_graph=True)),
        }, args.repeats)
        flop = 2.0 * args.batch * t * s * s * 27 * ci * co
        row = {"layer": name, "frames": t, "size": s, "in": ci, "out": co, "batch": args.batch, **best,
               "gflop": flop / 1e9}
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    print("\n| layer (T x H x W, in -> out) | jaxvx forward (ms) | PyTorch forward (ms) | jaxvx input grad (ms) | "
          "PyTorch input grad (ms) | GFLOP/s jaxvx / PyTorch (fwd, grad) |")
    print("|---|---:|---:|---:|---:|---|")
    total = dict.fromkeys(("jaxvx_forward", "torch_forward", "jaxvx_input_grad", "torch_input_grad"), 0.0)
    for r in rows:
        for key in total:
            total[key] += r[key]
        rates = ", ".join(f"{r['gflop'] / r[a]:.0f} / {r['gflop'] / r[b]:.0f}" for a, b in
                          (("jaxvx_forward", "torch_forward"), ("jaxvx_input_grad", "torch_input_grad")))
        print(f"| {r['layer']} {r['frames']} x {r['size']} x {r['size']}, {r['in']} -> {r['out']} | "
              f"{r['jaxvx_forward'] * 1e3:.0f} | {r['torch_forward'] * 1e3:.0f} | {r['jaxvx_input_grad'] * 1e3:.0f} | "
              f"{r['torch_input_grad'] * 1e3:.0f} | {rates} |")
    print(f"| total | {total['jaxvx_forward'] * 1e3:.0f} | {total['torch_forward'] * 1e3:.0f} | "
          f"{total['jaxvx_input_grad'] * 1e3:.0f} | {total['torch_input_grad'] * 1e3:.0f} | |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
