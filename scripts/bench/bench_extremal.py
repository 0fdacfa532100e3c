"""Benchmark STEP and EP-3D (Li et al.): jaxvx against a TorchRay-style per-iteration PyTorch loop.

Both sides optimise 4 areas at once (0.05, 0.1, 0.15, 0.5) on one clip with Li et al.'s settings (step 7, sigma 11,
8 blur levels, lr 0.05, STEP kernel 7 x 11 x 11) on the same model weights (R(2+1)D-18 or C3D built in PyTorch,
converted with ``jaxvx.convert``). The PyTorch side is Li et al.'s loop written out with TorchRay's
``MaskGenerator`` and ``imsmooth``: per iteration, generate the masks, gather the perturbed clips from the blur
pyramid, run the model, ``-log p_c`` + sorted-volume area loss (+ the strided-conv3d smoothness loss for STEP),
backward, SGD step with dampening, clamp.

A clip takes 1000 iterations; on a CPU the script times ``--iters`` iterations after a warm-up and reports
``per-iteration time x 1000`` (the iterations cost the same throughout: fixed shapes). jaxvx runs both loop
modes: ``python`` (one jitted step per iteration) and ``scan`` (all iterations in one ``lax.scan``); compile time
is excluded and printed apart. Memory: the MiB XLA plans for the scanned program (arguments, outputs and
temporaries, ``memory_analysis``: the 1000 iterations' scan holds one iteration's activations), and on CUDA the
peak of PyTorch's allocator over its loop. Prints one JSON line per configuration and a markdown table.

Usage::

    python scripts/bench/bench_extremal.py --model r2plus1d --width 1 --iters 3
    python scripts/bench/bench_extremal.py --model c3d --width 0.125 --iters 5
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import _torch_device as torch_device
from _peers import twins
from _timing import format_mib, program_mib, torch_peak_mib
from jaxvx import convert
from jaxvx.methods import ep3d, step

AREAS = (0.05, 0.1, 0.15, 0.5)


def torch_loop(torch, model, video, target, *, core, iters, warmup=1, device=None):
    """Li et al.'s per-iteration loop (TorchRay pieces), timed: (seconds per iteration, peak MiB on CUDA or None)."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests", "peers", "_stubs"))
    from torchray.attribution.extremal_perturbation import MaskGenerator
    from torchray.utils import imsmooth

    F = torch.nn.functional
    for p in model.parameters():
        p.requires_grad_(False)
    device = torch.device("cpu") if device is None else device
    model = model.to(device)
    x = torch.tensor(video.transpose(0, 1, 4, 2, 3)[0]).to(device)  # [T, C, H, W] frames
    t_len, _, h, w = x.shape
    levels = 8
    with torch.no_grad():
        pyramid = torch.stack([imsmooth(x, sigma=float((1 - s) * 20)) for s in torch.linspace(0, 1, levels)], 1)
    gen = MaskGenerator((h, w), 7, 11).to(device)
    n_area = len(AREAS)
    pmask = torch.ones(n_area * t_len, 1, *gen.shape_in, device=device, requires_grad=True)
    oh, ow = gen.shape_out
    volume = t_len * oh * ow
    ref = torch.ones(n_area, volume)
    for i, a in enumerate(AREAS):
        ref[i, : int(volume * (1 - a))] = 0
    ref = ref.to(device)
    kernel = None
    if core:
        v1, v2, v3 = np.meshgrid(np.linspace(-1, 1, 7), np.linspace(-1, 1, 11), np.linspace(-1, 1, 11),
                                 indexing="ij")
        kernel = torch.from_numpy((np.sqrt(v1 ** 2 + v2 ** 2 + v3 ** 2) <= 1)[None, None]).float().to(device)
        topk = [math.ceil(a * volume / int(7 * 121 * 0.5236)) for a in AREAS]
    optimizer = torch.optim.SGD([pmask], lr=0.05, momentum=0.9, dampening=0.9)
    lam = 300.0

    def iteration():
        nonlocal lam
        masks, full = gen.generate(pmask)  # [A T, 1, H, W]
        wgt = masks.reshape(n_area, t_len, 1, 1, h, w) * (levels - 1)
        k = wgt.floor()
        frac = wgt - k
        k = k.long().expand(n_area, t_len, 1, 3, h, w)
        pyr = pyramid[None].expand(n_area, *pyramid.shape)
        y0 = torch.gather(pyr, 2, k)
        y1 = torch.gather(pyr, 2, torch.clamp(k + 1, max=levels - 1))
        clips = ((1 - frac) * y0 + frac * y1)[:, :, 0].permute(0, 2, 1, 3, 4)  # [A, C, T, H, W]
        prob = F.softmax(model(clips), dim=1)[:, target]
        reward = -torch.log(prob)
        full = full.reshape(n_area, t_len, oh, ow)
        regul = ((full.reshape(n_area, -1).sort(dim=1)[0] - ref) ** 2).mean(1) * lam
        if core:
            conv = F.conv3d(full[:, None], kernel, stride=(1, 11, 11)).reshape(n_area, -1) / kernel.sum()
            conv = conv.sort(dim=1, descending=True)[0]
            for i in range(n_area):
                regul[i] = regul[i] + 300 * (((conv[i, : topk[i]] - 1) ** 2).mean() + (conv[i, topk[i]:] ** 2).mean())
        optimizer.zero_grad()
        (reward + regul).sum().backward()
        optimizer.step()
        pmask.data = pmask.data.clamp(0, 1)
        lam *= 1.0008668

    sync = torch_device.timed(torch, device, lambda: None)
    for _ in range(warmup):
        iteration()
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        iteration()
    sync()
    per_iter = (time.perf_counter() - t0) / iters
    return per_iter, torch_peak_mib(torch, device, iteration)


def jax_times(method_factory, forward, video, target, iters, loops=("python", "scan")):
    """(compile + first run, seconds per iteration, planned MiB for scan) of a jaxvx method, per loop mode."""
    out = {}
    for loop in loops:
        method = method_factory(AREAS, max_iter=iters, loop=loop)
        call = functools.partial(method, forward)
        if loop == "scan":  # the whole optimisation is one program: jit it here to read its memory plan too
            call = jax.jit(call)
        t0 = time.perf_counter()
        jax.block_until_ready(call(video, target))
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        jax.block_until_ready(call(video, target))  # compiled (cached per forward)
        per_iter = (time.perf_counter() - t0) / iters
        out[loop] = {"first_call_s": first, "per_iter_s": per_iter}
        if loop == "scan":
            out[loop]["mib"] = program_mib(call, video, target)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("r2plus1d", "c3d"), default="r2plus1d")
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--iters", type=int, default=3, help="timed iterations (scaled to 1000)")
    parser.add_argument("--torch-iters", type=int, default=None, help="timed iterations of the PyTorch loop "
                        "(default: --iters); on a GPU time jaxvx over all 1000 and PyTorch over fewer")
    parser.add_argument("--methods", nargs="+", default=["step", "ep3d"], choices=("step", "ep3d"))
    parser.add_argument("--loops", nargs="+", default=["python", "scan"], choices=("python", "scan"))
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", help="also write the rows to this JSON file (rewritten after each method)")
    torch_device.add_argument(parser)
    args = parser.parse_args()

    import torch

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    device = torch_device.resolve(torch, args.torch_device)
    if args.model == "r2plus1d":
        tm = twins.r2plus1d_18(torch, 10, args.width)
        model, variables = convert.r2plus1d_from_torch(tm.state_dict(), return_model=True)
    else:
        tm = twins.c3d(torch, 10, args.width, frames=args.frames, size=args.size)
        model, variables = convert.c3d_from_torch(tm.state_dict(), return_model=True)
    forward = functools.partial(model.apply, variables)
    rng = np.random.default_rng(0)
    video = rng.normal(size=(1, args.frames, args.size, args.size, 3)).astype(np.float32)
    x = jnp.asarray(video)
    target = int(np.asarray(forward(x)).argmax())
    factories = {"step": step, "ep3d": ep3d}
    rows = []
    for name in args.methods:
        result = {"method": name, "model": args.model, "width": args.width, "clip": [args.frames, args.size],
                  "areas": list(AREAS), "timed_iters": args.iters, "backend": jax.default_backend(),
                  "device": str(jax.devices()[0]), "torch_device": str(device), "cpus": os.cpu_count(),
                  "machine": platform.platform(),
                  "date": time.strftime("%Y-%m-%d"), "load_before": os.getloadavg()[0]}
        result["jaxvx"] = jax_times(factories[name], forward, x, jnp.array([target]), args.iters, args.loops)
        if not args.no_torch:
            result["torch_per_iter_s"], result["torch_mib"] = torch_loop(
                torch, tm, video, target, core=name == "step", iters=args.torch_iters or args.iters, device=device)
        result["load_after"] = os.getloadavg()[0]
        print(json.dumps(result), flush=True)
        rows.append(result)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
    print()
    print("| method | model | jaxvx python loop (s / clip) | jaxvx scan (s / clip) | PyTorch loop (s / clip) | "
          "speed-up (best jaxvx) | jaxvx scan MiB | PyTorch peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        py, sc = (r["jaxvx"][k]["per_iter_s"] * 1000 if k in r["jaxvx"] else float("nan") for k in ("python", "scan"))
        th = r.get("torch_per_iter_s", float("nan")) * 1000
        mj, mt = r["jaxvx"].get("scan", {}).get("mib"), r.get("torch_mib")
        print(f"| {r['method']} | {r['model']} x{r['width']} | {py:.1f} | {sc:.1f} | {th:.1f} | "
              f"{th / np.nanmin([py, sc]):.2f} | {format_mib(mj)} | {format_mib(mt)} |")


if __name__ == "__main__":
    main()
