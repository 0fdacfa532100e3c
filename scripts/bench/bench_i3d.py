"""Benchmark jaxvx's backpropagation methods on the real Kinetics-400 I3D (16 x 224 x 224) against its jitted
forward pass and against zennit / captum on the PyTorch twin with the same weights (tests/peers/_i3d_torch.py).

Per method: jaxvx's time (jitted, compile excluded, best of ``--repeats`` alternating rounds with the peer), over
jaxvx's forward pass, the peer's time, and jaxvx's over the peer's; the MiB XLA plans for each program over the
forward program's. zennit runs with its BatchNorm canonizer (``SequentialMergeBatchNorm``), as jaxvx folds the
BatchNorms itself.

Usage::

    python scripts/bench/bench_i3d.py --batches 1 --repeats 2
    python scripts/bench/bench_i3d.py --batches 1 8 --methods gradient deep_taylor --no-peers
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import _torch_device as torch_device
from _peers import torch_inputs, zennit_runner
from _timing import alternating_best, format_mib, program_mib
import jaxvx
from jaxvx import lrp
from jaxvx import methods as M
from jaxvx.methods._gradient import fast_forward

CLIP = (16, 224, 224)


def jax_methods():
    return {
        "gradient": M.gradient(),
        "guided_backprop": M.guided_backprop(),
        "gradcam": M.gradcam("Mixed_5c"),
        "epsilon_plus": M.lrp(lrp.epsilon_plus()),
        "epsilon_plus_flat": M.lrp(lrp.epsilon_plus_flat()),
        "epsilon_gamma_box": M.lrp(lrp.epsilon_gamma_box(-1.0, 1.0)),
        "deep_taylor": M.lrp(lrp.deep_taylor(-1.0, 1.0)),
    }


def peer_methods(torch, model):
    from captum.attr import GuidedBackprop, Saliency
    from zennit.canonizers import SequentialMergeBatchNorm
    from zennit.composites import EpsilonGammaBox, EpsilonPlus, EpsilonPlusFlat, SpecialFirstLayerMapComposite
    from zennit.composites import layer_map_base
    from zennit.rules import ZBox, ZPlus
    from zennit.types import Convolution

    def zennit(make):
        return zennit_runner(torch, model, make)

    def canon():
        return [SequentialMergeBatchNorm()]

    def deep_taylor():
        return SpecialFirstLayerMapComposite(layer_map=layer_map_base() + [(Convolution, ZPlus(zero_params=["bias"]))],
                                             first_map=[(Convolution, ZBox(-1.0, 1.0))], canonizers=canon())

    return {
        "gradient": ("captum", lambda x, t: Saliency(model).attribute(x, target=t, abs=False)),
        "guided_backprop": ("captum", lambda x, t: GuidedBackprop(model).attribute(x, target=t)),
        "epsilon_plus": ("zennit", zennit(lambda: EpsilonPlus(canonizers=canon()))),
        "epsilon_plus_flat": ("zennit", zennit(lambda: EpsilonPlusFlat(canonizers=canon()))),
        "epsilon_gamma_box": ("zennit", zennit(lambda: EpsilonGammaBox(low=-1.0, high=1.0, canonizers=canon()))),
        "deep_taylor": ("zennit", zennit(deep_taylor)),
    }


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--no-peers", action="store_true")
    p.add_argument("--json")
    torch_device.add_argument(p)
    args = p.parse_args(argv)
    names = args.methods or list(jax_methods())
    model, variables, card = jaxvx.checkpoints.load("i3d-kinetics400")
    torch = None
    if not args.no_peers:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        here = os.path.dirname(os.path.abspath(__file__))
        for sub in ("peers", os.path.join("peers", "_stubs")):
            sys.path.insert(0, os.path.join(here, "..", "..", "tests", sub))
        from _i3d_torch import i3d_twin

        device = torch_device.resolve(torch, args.torch_device)
        tmodel = i3d_twin(torch, jax.tree.map(np.asarray, variables), eps_in_var=True).to(device)
        peers = peer_methods(torch, tmodel)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"jax {jax.__version__} ({jax.default_backend()}), convolutions: {jaxvx.models.conv_form()}"
          + (f", torch {torch.__version__} on {device}" if torch is not None else ""))
    rows = []
    for batch in args.batches:
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, (batch,) + CLIP + (3,)).astype(np.float32)
        target = rng.integers(0, 400, batch)
        xj, tj = jnp.asarray(x), jnp.asarray(target, jnp.int32)
        fwd = jax.jit(lambda v, x: model.apply(v, x))
        # the same forward pass read as jaxvx's program (its convolutions through oneDNN on CPU), as methods run it
        fwd_program = jax.jit(lambda v, x: fast_forward(functools.partial(model.apply, v))(x))
        calls = {"jaxvx": lambda: jax.block_until_ready(fwd(variables, xj)),
                 "program": lambda: jax.block_until_ready(fwd_program(variables, xj))}
        if torch is not None:
            xt, tt, torch_forward = torch_inputs(torch, device, x, target)
            calls["peer"] = torch_forward(tmodel)
        best = alternating_best(calls, args.repeats)
        t_fwd, t_prog, t_pfwd = best["jaxvx"], best["program"], best.get("peer")
        mib_fwd = program_mib(fwd, variables, xj)
        print(f"\n### I3D, batch {batch}: jaxvx forward {t_fwd * 1e3:.0f} ms (model.apply), {t_prog * 1e3:.0f} ms read "
              f"as jaxvx's program" + (f", PyTorch forward {t_pfwd * 1e3:.0f} ms" if t_pfwd else "")
              + f"; forward program {mib_fwd:.0f} MiB\n")
        print("| method | jaxvx (ms) | / forward | / program forward | peer | peer (ms) | jaxvx / peer "
              "| jaxvx MiB (/ forward's) |")
        print("|---|---:|---:|---:|---|---:|---:|---:|")
        for name in names:
            method = jax_methods()[name]
            f = jax.jit(lambda v, x, t, _m=method: _m(functools.partial(model.apply, v), x, t))
            calls = {"jaxvx": lambda: jax.block_until_ready(f(variables, xj, tj))}
            if torch is not None and name in peers:
                label, pf = peers[name]
                calls["peer"] = torch_device.timed(torch, device, lambda: pf(xt, tt))
            best = alternating_best(calls, args.repeats)
            row = {"batch": batch, "method": name, "jaxvx_s": best["jaxvx"], "forward_s": t_fwd, "program_s": t_prog,
                   "jaxvx_mib": program_mib(f, variables, xj, tj), "forward_mib": mib_fwd}
            peer = "- | - | -"
            if "peer" in best:
                row.update(peer=label, peer_s=best["peer"])
                peer = f"{label} | {best['peer'] * 1e3:.0f} | {best['jaxvx'] / best['peer']:.2f}"
            rows.append(row)
            print(f"| {name} | {best['jaxvx'] * 1e3:.0f} | {best['jaxvx'] / t_fwd:.2f} | {best['jaxvx'] / t_prog:.2f} "
                  f"| {peer} | "
                  f"{format_mib(row['jaxvx_mib'], mib_fwd)} |", flush=True)
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)


if __name__ == "__main__":
    main()
