"""Memory of jaxvx's backpropagation methods: the MiB XLA plans for each jitted method over the forward pass's.

For each C3D size and batch of ``bench_backprop.py`` (same methods, same clips), lowers and compiles every method
and reads the compiled program's ``memory_analysis()``: arguments + outputs + temporaries - aliased buffers. The
plan is XLA's buffer assignment, so it is the same on every run of a backend (no timing, nothing sampled); it
differs between backends (CPU and GPU fuse differently). Nothing is executed: a configuration costs its compiles.

Usage::

    python scripts/bench/bench_memory.py --sizes small full --batches 1 8
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import time

import jax
import jax.numpy as jnp

from _timing import format_mib, program_mib
from bench_backprop import CLIP, SIZES, _conv_form_text, jax_methods
from jaxvx.models import C3D


def run_config(size, batch, names, steps):
    model = C3D(num_classes=101, width=SIZES[size])
    x = jax.ShapeDtypeStruct((batch,) + CLIP + (3,), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1,) + CLIP + (3,)))
    target = jax.ShapeDtypeStruct((batch,), jnp.int32)
    key = jax.eval_shape(lambda: jax.random.PRNGKey(0))
    forward_mib = program_mib(jax.jit(model.apply), variables, x)
    rows = []
    table = jax_methods(steps)
    for name in names:
        method = table[name]
        f = jax.jit(lambda v, x, t, k, _m=method: _m(functools.partial(model.apply, v), x, t, key=k))
        t0 = time.perf_counter()
        mib = program_mib(f, variables, x, target, key)
        rows.append({"size": size, "batch": batch, "method": name, "jaxvx_mib": mib, "forward_mib": forward_mib,
                     "ratio_forward": mib / forward_mib, "compile_s": time.perf_counter() - t0})
    return rows, forward_mib


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["small", "full"], choices=sorted(SIZES))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--methods", nargs="+", default=None, help="subset of method names (default: all)")
    p.add_argument("--steps", type=int, default=8, help="integration points / noise samples for IG and SmoothGrad")
    p.add_argument("--json", help="also write the rows to this JSON file (rewritten after each configuration)")
    args = p.parse_args(argv)
    names = args.methods or list(jax_methods(args.steps))
    unknown = sorted(set(names) - set(jax_methods(args.steps)))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(jax_methods(args.steps))}")
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, jax {jax.__version__} ({jax.default_backend()}: {jax.devices()[0].device_kind}), "
          f"convolutions: {_conv_form_text()}")
    configs = [(s, b) for s in args.sizes for b in args.batches]
    table, all_rows = {}, []
    for size, batch in configs:
        rows, forward_mib = run_config(size, batch, names, args.steps)
        all_rows += rows
        table[size, batch] = ({r["method"]: r for r in rows}, forward_mib)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(all_rows, fh, indent=1)
    print("\nMiB XLA plans per jitted call (in brackets: over the forward pass's)\n")
    print("| method | " + " | ".join(f"C3D {s} b{b}" for s, b in configs) + " |")
    print("|---|" + "---:|" * len(configs))
    print("| forward | " + " | ".join(f"{table[c][1]:.0f}" for c in configs) + " |")
    for name in names:
        cells = [table[c][0][name] for c in configs]
        print(f"| {name} | " + " | ".join(format_mib(r["jaxvx_mib"], r["forward_mib"]) for r in cells) + " |")


if __name__ == "__main__":
    main()
