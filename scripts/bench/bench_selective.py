"""What selective relevance costs next to the explanation it filters (Hiley et al.: 0.5-1 ms on a GTX 1080 Ti).

    python scripts/bench/bench_selective.py [--batch 1] [--frames 16] [--size 112] [--width 1.0] [--repeats 20]

Times, per clip batch, with ``jax.jit`` and ``block_until_ready`` (median of ``--repeats`` runs after a warm-up):

- ``selective(4)`` as jaxvx implements it (separable adds on the channel-summed map);
- the same filter as one ``lax.conv_general_dilated`` with the 3x3x3 kernel (the paper's conv3d), for comparison;
- the C3D forward pass and the input-gradient explanation (one backward pass: the cheapest explanation there is;
  LRP costs about the same), at width ``--width`` (1.0: the paper's network).

Prints milliseconds and the ratio selective / explanation, on whatever device JAX uses.
"""

import argparse
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx.models import C3D
from jaxvx.transforms import SOBEL_T, selective


def _time(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile + warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _conv_selective(sigma):
    kernel = jnp.asarray(SOBEL_T, jnp.float32)[..., None, None]  # [3, 3, 3, in=1, out=1]

    def fn(relevance):
        r = relevance.sum(-1)[..., None]
        g = jax.lax.conv_general_dilated(r, kernel, (1, 1, 1), ((1, 1),) * 3,
                                         dimension_numbers=("NDHWC", "DHWIO", "NDHWC"))[..., 0]
        g = jnp.abs(g)
        mask = g > sigma * jnp.std(g, axis=(1, 2, 3), keepdims=True)
        return relevance * mask[..., None]

    return fn


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--size", type=int, default=112)
    parser.add_argument("--width", type=float, default=1.0, help="C3D width multiplier (1.0 = the paper's)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    shape = (args.batch, args.frames, args.size, args.size, 3)
    rng = np.random.default_rng(0)
    video = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    relevance = jnp.asarray(rng.normal(size=shape).astype(np.float32))
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}), machine: "
          f"{platform.processor() or platform.machine()}; clip batch {shape}")

    sel = jax.jit(selective(4.0))
    conv = jax.jit(_conv_selective(4.0))
    same = float(np.mean(np.asarray(sel(relevance)) == np.asarray(conv(relevance))))
    t_sel = _time(sel, relevance, repeats=args.repeats)
    t_conv = _time(conv, relevance, repeats=args.repeats)

    model = C3D(num_classes=101, width=args.width)
    variables = model.init(jax.random.PRNGKey(0), video[:1])
    forward = jax.jit(lambda v, x: model.apply(v, x))

    @jax.jit
    def explain(v, x):
        def score(x):
            logits = model.apply(v, x)
            return jnp.take_along_axis(logits, jnp.argmax(logits, -1)[:, None], 1).sum()
        return jax.grad(score)(x)

    t_fwd = _time(forward, variables, video, repeats=max(3, args.repeats // 4))
    t_exp = _time(explain, variables, video, repeats=max(3, args.repeats // 4))
    print(f"selective(4), separable adds : {t_sel:9.3f} ms")
    print(f"selective(4), conv3d         : {t_conv:9.3f} ms   (same output on {100 * same:.3f} % of elements)")
    print(f"C3D(width={args.width:g}) forward      : {t_fwd:9.3f} ms")
    print(f"input-gradient explanation   : {t_exp:9.3f} ms")
    print(f"selective / explanation      : {t_sel / t_exp:9.4f}  ({100 * t_sel / t_exp:.2f} %)")


if __name__ == "__main__":
    main()
