"""Benchmark jaxvx's backpropagation methods against the jitted forward pass and against zennit / captum.

For each C3D size ("small": width 1/4, "full": width 1, both on 16 x 112 x 112 clips) and batch size, prints a
markdown table with, per method: jaxvx's time (jitted, compile excluded, best of ``--repeats``), that time over the
jitted forward pass of the same model, the peer's time on a PyTorch twin with identical weights (converted with
``jaxvx.convert.c3d_from_torch``), and jaxvx's time over the peer's. The load average before and after each
configuration is printed too: the machine may be shared. Memory: the MiB XLA plans for each jitted program
(arguments, outputs and temporaries, ``memory_analysis``) over the forward program's, and on CUDA the peak MiB of
PyTorch's allocator for the peer.

Each method and its peer are timed in alternating rounds (jaxvx, peer, jaxvx, peer, ...), best round each.

Usage::

    python scripts/bench/bench_backprop.py --sizes small full --batches 1 8 --repeats 3
    python scripts/bench/bench_backprop.py --sizes full --batches 1 --methods gradient deep_taylor --no-peers

Integrated gradients and SmoothGrad run with ``--steps`` points (default 8) on both sides, not 50.
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
from _peers import torch_inputs, twins, zennit_runner
from _timing import alternating_best, format_mib, program_mib, torch_peak_mib
from jaxvx import convert, lrp
from jaxvx import methods as M

SIZES = {"small": 0.25, "full": 1.0}
CLIP = (16, 112, 112)
LOW, HIGH = -1.0, 1.0


def jax_methods(steps):
    return {
        "gradient": M.gradient(),
        "gradient_chunked": M.chunked(M.gradient(), "auto"),  # one clip per pass on CPU (the batch at batch 1)
        "gradient_x_input": M.gradient_x_input(),
        "integrated_gradients": M.integrated_gradients(steps=steps),  # batch_size "auto", as smoothgrad
        "smoothgrad": M.smoothgrad(M.gradient(), n=steps),
        "guided_backprop": M.guided_backprop(),
        "deconvnet": M.deconvnet(),
        "gradcam": M.gradcam("conv5b"),
        "guided_gradcam": M.guided_gradcam("conv5b"),
        "excitation_backprop": M.excitation_backprop(),
        "epsilon_plus_flat": M.lrp(lrp.epsilon_plus_flat()),
        "epsilon_gamma_box": M.lrp(lrp.epsilon_gamma_box(LOW, HIGH)),
        "deep_taylor": M.lrp(lrp.deep_taylor(LOW, HIGH)),
    }


def peer_methods(torch, model, steps):
    """name -> (peer label, fn(x, target) -> attribution) for the PyTorch twin."""
    out = {}
    try:
        from captum.attr import (Deconvolution, GuidedBackprop, GuidedGradCam, InputXGradient, IntegratedGradients,
                                 LayerAttribution, LayerGradCam, NoiseTunnel, Saliency)

        out["gradient"] = ("captum", lambda x, t: Saliency(model).attribute(x, target=t, abs=False))
        out["gradient_chunked"] = out["gradient"]
        out["gradient_x_input"] = ("captum", lambda x, t: InputXGradient(model).attribute(x, target=t))
        out["integrated_gradients"] = ("captum", lambda x, t: IntegratedGradients(model).attribute(
            x, baselines=0.0, target=t, n_steps=steps, internal_batch_size=steps * x.shape[0]))
        out["smoothgrad"] = ("captum", lambda x, t: NoiseTunnel(Saliency(model)).attribute(
            x, nt_type="smoothgrad", nt_samples=steps, nt_samples_batch_size=steps * x.shape[0], stdevs=0.2,
            target=t, abs=False))
        out["guided_backprop"] = ("captum", lambda x, t: GuidedBackprop(model).attribute(x, target=t))
        out["deconvnet"] = ("captum", lambda x, t: Deconvolution(model).attribute(x, target=t))
        out["gradcam"] = ("captum", lambda x, t: LayerAttribution.interpolate(
            LayerGradCam(model, model.conv5b).attribute(x, target=t, relu_attributions=True), tuple(x.shape[2:]),
            interpolate_mode="trilinear"))
        out["guided_gradcam"] = ("captum", lambda x, t: GuidedGradCam(model, model.conv5b).attribute(x, target=t))
    except ImportError as e:  # pragma: no cover
        print(f"# captum unavailable: {e}", file=sys.stderr)
    try:
        from zennit.composites import (EpsilonGammaBox, EpsilonPlusFlat, ExcitationBackprop,
                                       SpecialFirstLayerMapComposite, layer_map_base)
        from zennit.rules import ZBox, ZPlus
        from zennit.types import Linear

        def zennit(make):
            return zennit_runner(torch, model, make)

        def deep_taylor():
            return SpecialFirstLayerMapComposite(
                layer_map=layer_map_base() + [(Linear, ZPlus(zero_params=["bias"]))],
                first_map=[(Linear, ZBox(LOW, HIGH))])

        out["excitation_backprop"] = ("zennit", zennit(lambda: ExcitationBackprop(zero_params=["bias"])))
        out["epsilon_plus_flat"] = ("zennit", zennit(EpsilonPlusFlat))
        out["epsilon_gamma_box"] = ("zennit", zennit(lambda: EpsilonGammaBox(low=LOW, high=HIGH)))
        out["deep_taylor"] = ("zennit", zennit(deep_taylor))
    except ImportError as e:  # pragma: no cover
        print(f"# zennit unavailable: {e}", file=sys.stderr)
    return out


def load():
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return float("nan")


def run_config(size, batch, names, repeats, steps, peers, torch, peer_methods_subset=None, peer_warmup=True,
               device=None):
    width = SIZES[size]
    num_classes = 101
    rng = np.random.default_rng(0)
    x = rng.uniform(LOW, HIGH, (batch,) + CLIP + (3,)).astype(np.float32)
    target = rng.integers(0, num_classes, batch)
    if torch is not None:
        torch.manual_seed(0)
        tmodel = twins.c3d(torch, num_classes, width).eval()
        with torch.no_grad():
            for m in tmodel.modules():
                if isinstance(m, (torch.nn.Conv3d, torch.nn.Linear)):
                    m.weight.normal_(0, math.sqrt(2 / m.weight[0].numel()))
                    m.bias.normal_(0, 0.01)
        model, variables = convert.c3d_from_torch(tmodel.state_dict(), return_model=True)
        tmodel = tmodel.to(device)
    else:
        from jaxvx.models import C3D

        model = C3D(num_classes=num_classes, width=width)
        shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), jnp.zeros((1,) + CLIP + (3,)))
        variables = jax.tree.map(lambda s: rng.normal(0, 0.01, s.shape).astype(np.float32), shapes)
    variables = jax.device_put(jax.tree.map(jnp.asarray, variables))
    xj, tj = jnp.asarray(x), jnp.asarray(target, jnp.int32)
    key = jax.random.PRNGKey(0)

    fwd = jax.jit(lambda v, x: model.apply(v, x))
    rows = []
    load0 = load()
    table = jax_methods(steps)
    peer_fns = peer_methods(torch, tmodel, steps) if (peers and torch is not None) else {}
    fwd_calls = {"jaxvx": lambda: jax.block_until_ready(fwd(variables, xj))}
    if torch is not None:
        xt, tt, torch_forward = torch_inputs(torch, device, x, target)
        fwd_calls["peer"] = torch_forward(tmodel)
    fwd_best = alternating_best(fwd_calls, repeats, warmup={})
    t_fwd, t_torch_fwd = fwd_best["jaxvx"], fwd_best.get("peer")
    mib_fwd = program_mib(fwd, variables, xj)
    for name in names:
        method = table[name]
        f = jax.jit(lambda v, x, t, k, _m=method: _m(functools.partial(model.apply, v), x, t, key=k))
        calls = {"jaxvx": lambda: jax.block_until_ready(f(variables, xj, tj, key))}
        if name in peer_fns and (peer_methods_subset is None or name in peer_methods_subset):
            label, pf = peer_fns[name]
            xin = xt.clone().requires_grad_(True)
            calls["peer"] = torch_device.timed(torch, device, lambda: pf(xin, tt))
        best = alternating_best(calls, repeats, warmup={"jaxvx": True, "peer": peer_warmup})
        t_m = best["jaxvx"]
        row = {"size": size, "batch": batch, "method": name, "jaxvx_s": t_m, "forward_s": t_fwd,
               "ratio_forward": t_m / t_fwd, "jaxvx_mib": program_mib(f, variables, xj, tj, key),
               "forward_mib": mib_fwd}
        if "peer" in best:
            t_p = best["peer"]
            row.update(peer=label, peer_s=t_p, peer_ratio_forward=t_p / t_torch_fwd, ratio_peer=t_m / t_p,
                       peer_mib=torch_peak_mib(torch, device, calls["peer"]))
        rows.append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    return rows, t_fwd, t_torch_fwd, (load0, load())


def _conv_form_text():
    from jaxvx.models import _onednn, conv_form

    form = conv_form()
    return f"{form} {_onednn.version()}" if form == "onednn" else form


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["small", "full"], choices=sorted(SIZES))
    p.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    p.add_argument("--methods", nargs="+", default=None, help="subset of method names (default: all)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=8, help="integration points / noise samples for IG and SmoothGrad")
    p.add_argument("--no-peers", action="store_true", help="skip zennit and captum")
    p.add_argument("--peer-methods", nargs="+", default=None, help="time the peers only for these methods")
    p.add_argument("--no-peer-warmup", action="store_true", help="time the peers' first call (no warm-up call)")
    p.add_argument("--json", help="also write the rows to this JSON file (rewritten after each configuration)")
    torch_device.add_argument(p)
    args = p.parse_args(argv)
    names = args.methods or list(jax_methods(args.steps))
    unknown = sorted(set(names) - set(jax_methods(args.steps)))
    if unknown:
        p.error(f"unknown methods {unknown}; choose from {list(jax_methods(args.steps))}")
    torch = device = None
    try:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        device = torch_device.resolve(torch, args.torch_device)
        stubs = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "peers", "_stubs")
        try:
            import torchvision  # noqa: F401
        except ImportError:
            sys.path.insert(0, os.path.abspath(stubs))  # zennit imports torchvision's ResNet blocks
    except ImportError:
        print("# torch unavailable: no peers, random jaxvx weights", file=sys.stderr)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, jax {jax.__version__} ({jax.default_backend()}: {jax.devices()[0].device_kind}), "
          f"convolutions: {_conv_form_text()}"
          + (f", torch {torch.__version__} on {device}" if torch is not None else ""))
    all_rows = []
    for size in args.sizes:
        for batch in args.batches:
            rows, t_fwd, t_tfwd, (l0, l1) = run_config(size, batch, names, args.repeats, args.steps,
                                                      not args.no_peers, torch, args.peer_methods,
                                                      not args.no_peer_warmup, device)
            all_rows += rows
            tf = f", PyTorch forward {t_tfwd * 1e3:.0f} ms" if t_tfwd is not None else ""
            print(f"\n### C3D {size} (width {SIZES[size]:g}), batch {batch}: jaxvx forward {t_fwd * 1e3:.0f} ms"
                  f"{tf}; load average {l0:.1f} -> {l1:.1f}\n")
            print("| method | jaxvx (ms) | / forward | peer | peer (ms) | peer / its forward | jaxvx / peer "
                  "| jaxvx MiB (/ forward's) | peer peak MiB |")
            print("|---|---:|---:|---|---:|---:|---:|---:|---:|")
            for r in rows:
                peer = (f"{r['peer']} | {r['peer_s'] * 1e3:.0f} | {r['peer_ratio_forward']:.2f} | "
                        f"{r['ratio_peer']:.2f}") if "peer" in r else "- | - | - | -"
                print(f"| {r['method']} | {r['jaxvx_s'] * 1e3:.0f} | {r['ratio_forward']:.2f} | {peer} | "
                      f"{format_mib(r['jaxvx_mib'], r['forward_mib'])} | {format_mib(r.get('peer_mib'))} |")
            sys.stdout.flush()
            if args.json:  # after every configuration, so that a run stopped early keeps what it measured
                with open(args.json, "w") as fh:
                    json.dump(all_rows, fh, indent=1)


if __name__ == "__main__":
    main()
