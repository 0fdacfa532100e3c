"""Forward time and parameter count of every jaxvx model, full size and the shipped small variants.

Each model is jitted (inference mode, batch statistics for BatchNorm), warmed up once, then timed ``--repeats``
times at batch 1 and batch 8; the median is printed. Parameter counts include every ``params`` leaf (not the
BatchNorm running statistics). Prints one JSON line per model and a markdown table.

    python scripts/bench/bench_models.py                 # every model, batch 1 and 8
    python scripts/bench/bench_models.py --only small    # only the small variants (a minute on 2 cores)
    python scripts/bench/bench_models.py --match C3D "R(2+1)D"   # models whose name contains one of these

Variables are drawn with NumPy on ``jax.eval_shape(model.init)``'s shapes (He-normal kernels, small biases, unit
BatchNorm statistics): compiling ``model.init``'s random draws takes longer than the timings on a CPU.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx import models

# name, constructor, input shape [T, H, W, C] (no batch), size class
MODELS = [
    ("C3D (Sports-1M layout)", lambda: models.C3D(487), (16, 112, 112, 3), "full"),
    ("R(2+1)D-18", lambda: models.R2Plus1D18(400), (16, 112, 112, 3), "full"),
    ("VGG16-LSTM (CNNLSTM, 512 units)", lambda: models.CNNLSTM(101, backbone="vgg16", hidden=512),
     (16, 224, 224, 3), "full"),
    ("c3d-small: C3D width 1/8", lambda: models.C3D(10, width=0.125, dropout=0.0), (16, 32, 32, 3), "small"),
    ("r2plus1d-small: R(2+1)D-18 width 1/8", lambda: models.R2Plus1D18(10, width=0.125), (16, 32, 32, 3), "small"),
    ("cnnlstm-small: CNNLSTM small, 64 units", lambda: models.CNNLSTM(2, backbone="small", hidden=64),
     (16, 32, 32, 3), "small"),
    ("lstm-small: LSTM 32 units over SmallCNN", lambda: models.LSTMClassifier(2, hidden=32, frontend="small"),
     (16, 32, 32, 3), "small"),
    ("lstm-ica-small: input-cell attention LSTM 32 units over SmallCNN",
     lambda: models.LSTMClassifier(2, cell="input_cell_attention", hidden=32, frontend="small"),
     (16, 32, 32, 3), "small"),
]


def parameter_count(variables) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(variables["params"])))


def random_variables(model, x):
    """Variables of ``model`` for ``x`` from NumPy: He-normal kernels, N(0, 0.01) biases, BatchNorm mean 0 and
    variance and scale 1."""
    shapes = jax.eval_shape(model.init, jax.random.key(0), x)
    rng = np.random.default_rng(0)

    def draw(path, s):
        name = getattr(path[-1], "key", None)
        if name in ("var", "scale"):
            return jnp.ones(s.shape, s.dtype)
        if name == "mean":
            return jnp.zeros(s.shape, s.dtype)
        if name == "bias" or len(s.shape) == 1:
            return jnp.asarray(rng.normal(0, 0.01, s.shape), s.dtype)
        return jnp.asarray(rng.normal(0, np.sqrt(2 / np.prod(s.shape[:-1])), s.shape), s.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def median_time(fn, x, repeats: int) -> float:
    jax.block_until_ready(fn(x))  # compile and warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(x))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["full", "small"], help="time only the full-size or the small models")
    parser.add_argument("--match", nargs="+", help="time only the models whose name contains one of these")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for name, make, shape, size in MODELS:
        if (args.only and size != args.only) or (args.match and not any(m in name for m in args.match)):
            continue
        model = make()
        x1 = jnp.asarray(np.random.default_rng(0).normal(size=(1,) + shape).astype(np.float32))
        variables = random_variables(model, x1)
        apply = jax.jit(model.apply)  # variables as an argument: closed over, XLA would constant-fold them
        forward = functools.partial(apply, variables)
        row = {"model": name, "input": list(shape), "parameters": parameter_count(variables)}
        for b in args.batches:
            x = jnp.broadcast_to(x1, (b,) + shape) + 0.0
            row[f"batch{b}_s"] = median_time(forward, x, args.repeats)
        row.update(backend=jax.default_backend(), cpus=os.cpu_count(), date=time.strftime("%Y-%m-%d"),
                   machine=platform.platform(), load=os.getloadavg()[0])
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"Forward time (jitted, median of {args.repeats} after one warm-up), {jax.default_backend()}, "
          f"{os.cpu_count()} CPUs")
    print()
    heads = " | ".join(f"batch {b} (ms)" for b in args.batches)
    print(f"| model | input | parameters | {heads} | batch {args.batches[-1]} / batch {args.batches[0]} |")
    print("|---|---|---:|" + "---:|" * (len(args.batches) + 1))
    for r in rows:
        times = " | ".join(f"{r[f'batch{b}_s'] * 1e3:.1f}" for b in args.batches)
        ratio = r[f"batch{args.batches[-1]}_s"] / r[f"batch{args.batches[0]}_s"]
        print(f"| {r['model']} | {' x '.join(map(str, r['input']))} | {r['parameters']:,} | {times} | {ratio:.1f} |")


if __name__ == "__main__":
    main()
