"""Where a method's time goes on the Kinetics-400 I3D: one traced run of its jitted program (``jax.profiler``),
the time of every compiled HLO instruction summed by kind (oneDNN convolution calls, loop fusions, ...) and by
fusion name, as shares of the instructions' total (thread time: the CPU backend runs independent instructions
side by side, so the total can exceed the wall time).

Usage::

    python scripts/bench/profile_i3d.py gradient
    python scripts/bench/profile_i3d.py epsilon_plus --batch 8 --top 20
"""

from __future__ import annotations

import argparse
import collections
import glob
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

import jaxvx
from jaxvx.explain import build_method

CLIP = (16, 224, 224)


def instruction_kinds(hlo_text: str) -> dict:
    """``{instruction name: kind}`` from a compiled module's text: the opcode, a custom call's target, a
    fusion's kind."""
    kinds = {}
    for line in hlo_text.splitlines():
        m = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = \S+ ([\w\-]+)\(", line)
        if m:
            target = re.search(r'custom_call_target="([^"]+)"', line)
            fusion = re.search(r"kind=(\w+)", line)
            kinds[m.group(1)] = m.group(2) + (f" {target.group(1)}" if target else "") + (
                f" {fusion.group(1)}" if fusion else "")
    return kinds


def profile(name: str, batch: int):
    model, variables, card = jaxvx.checkpoints.load("i3d-kinetics400")
    method, model, variables = build_method(name, model, variables, card)
    x = jax.random.uniform(jax.random.PRNGKey(0), (batch, *CLIP, 3), minval=-1.0, maxval=1.0)
    target = jnp.full((batch,), 6)

    def forward(v):
        return model.apply(variables, v)

    run = jax.jit(lambda v: method(forward, v, target, key=jax.random.PRNGKey(0)))
    kinds = instruction_kinds(run.lower(x).compile().as_text())
    for _ in range(3):
        jax.block_until_ready(run(x))
    with tempfile.TemporaryDirectory() as where:
        with jax.profiler.trace(where):
            t0 = time.perf_counter()
            jax.block_until_ready(run(x))
            wall = time.perf_counter() - t0
        data = jax.profiler.ProfileData.from_file(glob.glob(f"{where}/**/*.xplane.pb", recursive=True)[0])
        by_instruction = collections.Counter()
        for plane in data.planes:
            for line in plane.lines:
                for event in line.events:
                    if event.name in kinds:
                        by_instruction[event.name] += event.duration_ns
    return wall, kinds, by_instruction


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("method", help="a jaxvx explain method name (gradient, epsilon_plus, deep_taylor, ...)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--top", type=int, default=12)
    a = p.parse_args(argv)
    wall, kinds, by_instruction = profile(a.method, a.batch)
    total = sum(by_instruction.values())
    print(f"{a.method}, batch {a.batch}, {CLIP}: traced run {wall * 1e3:.0f} ms wall, instructions "
          f"{total / 1e6:.0f} ms of thread time")
    for title, key in (("kind", lambda n: kinds[n]), ("fusion or call name", lambda n: re.sub(r"\.\d+$", "", n))):
        sums, counts = collections.Counter(), collections.Counter()
        for n, ns in by_instruction.items():
            sums[key(n)] += ns
            counts[key(n)] += 1
        print(f"\n| {title} | instructions | ms | share |\n|---|---:|---:|---:|")
        for k, ns in sums.most_common(a.top):
            print(f"| {k} | {counts[k]} | {ns / 1e6:.1f} | {ns / total:.1%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
