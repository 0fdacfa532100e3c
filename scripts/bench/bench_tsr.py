"""Benchmark two-step Temporal Saliency Rescaling: jaxvx's one jitted program against the papers' loops.

Three implementations of the same algorithm (Ismail et al.'s two-step TSR, gradient magnitude as the base method,
masking value 0) on the same small C3D (random weights, built in PyTorch and converted with
``jaxvx.convert.c3d_from_torch``, so both frameworks hold identical weights):

- ``jaxvx``: ``jaxvx.methods.tsr(gradient(absolute=True))`` under ``jax.jit`` (compile time reported apart);
- ``loop (a)``: a Python loop calling a jitted jaxvx gradient once per masked clip (NumPy masking);
- ``loop (b)``: a Python loop calling captum's ``Saliency`` once per masked clip on the PyTorch twin.

The number of base-method calls is ``1 + T + k * n_blocks`` (``k`` frames above the 0.55 quantile; 14 of 30).
The loops are timed on ``--loop-masks`` masked clips and scaled to that count (their cost per mask is constant;
``--loop-masks 0`` times them all); jaxvx is timed end to end. ``--rounds`` rounds alternate the implementations
(a shared machine's slow spells then hit all of them) and each one's best round is reported. ``--block`` sets the block size: the paper setting is 10 (144 blocks at 112 pixels,
2047 calls); on a 2-core CPU ``--block 56`` (4 blocks, 87 calls) keeps a run to minutes, and the per-call times
carry over. Memory: the MiB XLA plans for jaxvx's program and for loop (a)'s base call (arguments, outputs and
temporaries: ``memory_analysis``), and on CUDA the peak of PyTorch's allocator for one captum call. Prints one
JSON line and a markdown table.

Usage::

    python scripts/bench/bench_tsr.py                      # 30 x 112 x 112, 10 x 10 blocks, width 1/8
    python scripts/bench/bench_tsr.py --block 56 --loop-masks 0 --rounds 2
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

import _torch_device as torch_device
from _peers import twins
from _timing import format_mib, program_mib, torch_peak_mib
from jaxvx import convert
from jaxvx.methods import gradient, tsr
from jaxvx.methods._tsr import tsr_num_selected


def minmax(x):
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def _batch_size(text):
    return text if text == "auto" else int(text)


def masks_of(frames, size, block, order):
    """The masks of Ismail et al.'s loop, in order: each frame, then each block of the selected frames."""
    for t in range(frames):
        yield (t, slice(None), slice(None))
    for t in order:
        for r in range(0, size, block):
            for c in range(0, size, block):
                yield (t, slice(r, r + block), slice(c, c + block))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--block", type=int, default=10)
    parser.add_argument("--width", type=float, default=0.125, help="C3D width multiplier (1/8: conv1 has 8)")
    parser.add_argument("--batch-size", type=_batch_size, default="auto",
                        help="masked clips per call inside jaxvx's lax.map: an int or 'auto' (tsr's default)")
    parser.add_argument("--loop-masks", type=int, default=12,
                        help="masked clips timed for each loop, scaled to all calls (0: time them all)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds; each implementation's best counts")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", help="also write the result to this JSON file")
    torch_device.add_argument(parser)
    args = parser.parse_args()

    import torch
    from captum.attr import Saliency

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    device = torch_device.resolve(torch, args.torch_device)
    t_len, size, block = args.frames, args.size, args.block
    tm = twins.c3d(torch, 10, args.width, frames=t_len, size=size)
    model, variables = convert.c3d_from_torch(tm.state_dict(), return_model=True)
    forward = functools.partial(model.apply, variables)
    rng = np.random.default_rng(0)
    video = rng.normal(size=(1, t_len, size, size, 3)).astype(np.float32)
    target = int(np.asarray(forward(jnp.asarray(video))).argmax())
    base = gradient(absolute=True)
    n_blocks = math.ceil(size / block) ** 2
    k = tsr_num_selected(t_len, 0.55)
    calls = 1 + t_len + k * n_blocks
    result = {"frames": t_len, "size": size, "block": block, "n_blocks": n_blocks, "selected_frames": k,
              "base_calls": calls, "width": args.width, "batch_size": args.batch_size,
              "backend": jax.default_backend(), "device": str(jax.devices()[0]), "cpus": os.cpu_count(),
              "torch_device": str(device),
              "machine": platform.platform(), "date": time.strftime("%Y-%m-%d"),
              "load_before": os.getloadavg()[0]}

    # jaxvx: one jitted program
    method = tsr(base, block=(block, block), batch_size=args.batch_size)
    run = jax.jit(lambda v, t: method(forward, v, t))
    x = jnp.asarray(video)
    tgt = jnp.array([target])
    t0 = time.perf_counter()
    compiled = run.lower(x, tgt).compile()
    result["jaxvx_compile_s"] = time.perf_counter() - t0
    result["jaxvx_mib"] = program_mib(run, x, tgt)
    jax.block_until_ready(method(forward, x, tgt))  # the eager path compiles its chunk program here

    # loop (a): a jitted base call per mask
    jbase = jax.jit(lambda v, t: base(forward, v, t))
    actual = np.asarray(jbase(x, tgt))
    result["loop_a_mib"] = program_mib(jbase, x, tgt)
    order = list(range(k))  # which frames does not change the cost per mask
    masks = list(masks_of(t_len, size, block, order))
    if args.loop_masks:
        masks = masks[: args.loop_masks]

    def loop_a():
        for t, rows, cols in masks:
            masked = video.copy()
            masked[0, t, rows, cols] = 0.0
            np.abs(actual - np.asarray(jbase(jnp.asarray(masked), tgt))).sum()

    if not args.no_torch:
        tm = tm.to(device)
        saliency = Saliency(tm)
        xt = torch.tensor(video.transpose(0, 4, 1, 2, 3)).to(device)
        actual_t = saliency.attribute(xt, target=target).cpu().numpy()
        result["loop_b_mib"] = torch_peak_mib(torch, device, lambda: saliency.attribute(xt.clone(), target=target))

        def loop_b():  # .cpu() waits for the device, as the papers' loops did when they read each map back
            for t, rows, cols in masks:
                masked = xt.clone()
                masked[0, :, t, rows, cols] = 0.0
                np.abs(actual_t - saliency.attribute(masked, target=target).cpu().numpy()).sum()

    # rounds alternate the implementations, so that a slow spell of a shared machine hits them alike; each
    # implementation's best round counts
    timings = {"jaxvx_s": [], "jaxvx_eager_s": [], "loop_a_per_call_s": [], "loop_b_per_call_s": []}
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(x, tgt))
        timings["jaxvx_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(method(forward, x, tgt))
        timings["jaxvx_eager_s"].append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        loop_a()
        timings["loop_a_per_call_s"].append((time.perf_counter() - t0) / len(masks))
        if not args.no_torch:
            t0 = time.perf_counter()
            loop_b()
            timings["loop_b_per_call_s"].append((time.perf_counter() - t0) / len(masks))
    result["rounds"] = {name: [round(v, 4) for v in ts] for name, ts in timings.items() if ts}
    for name, ts in timings.items():
        if ts:
            result[name] = min(ts)
    result["loop_a_s"] = result["loop_a_per_call_s"] * calls
    if "loop_b_per_call_s" in result:
        result["loop_b_s"] = result["loop_b_per_call_s"] * calls
    result["load_after"] = os.getloadavg()[0]
    print(json.dumps(result))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    print()
    print(f"TSR two-step, {t_len} x {size} x {size}, {block} x {block} blocks ({calls} base calls), C3D width "
          f"{args.width}, {result['backend']} ({result['cpus']} CPUs)")
    print()
    best = min(result["jaxvx_s"], result["jaxvx_eager_s"])
    print("| implementation | time (s) | per base call (s) | its time / jaxvx's best | memory (MiB) |")
    print("|---|---|---|---|---|")
    print(f"| jaxvx under jax.jit (one program, lax.map) | {result['jaxvx_s']:.1f} | {result['jaxvx_s'] / calls:.3f} "
          f"| {result['jaxvx_s'] / best:.2f} | {format_mib(result.get('jaxvx_mib'))} |")
    print(f"| jaxvx called eagerly (chunks of one compiled program) | {result['jaxvx_eager_s']:.1f} | "
          f"{result['jaxvx_eager_s'] / calls:.3f} | {result['jaxvx_eager_s'] / best:.2f} | - |")
    print(f"| loop (a): jitted base per mask | {result['loop_a_s']:.1f} | {result['loop_a_per_call_s']:.3f} | "
          f"{result['loop_a_s'] / best:.2f} | {format_mib(result.get('loop_a_mib'))} |")
    if "loop_b_s" in result:
        print(f"| loop (b): PyTorch + captum Saliency | {result['loop_b_s']:.1f} | {result['loop_b_per_call_s']:.3f} "
              f"| {result['loop_b_s'] / best:.2f} | {format_mib(result.get('loop_b_mib'))} |")


if __name__ == "__main__":
    main()
