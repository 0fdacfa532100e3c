"""The analyses of docs/results.md that a `jaxvx run` configuration cannot express: chance levels (a random map
through the same metrics), box-shaped and frame-size-scaled pointing, ties in the argmax of saturated masks, deep
Taylor with proportional max pooling, edge vs zero padding of selective relevance, and accuracy at steps on both
sides of the training step.

    python scripts/experiments/results_extra.py OUT NAME [NAME ...] [--clips N] [--limit N]

NAME is one of the functions in EXPERIMENTS below; each writes OUT/NAME[/...]/ (results.jsonl, summary.md) with
:func:`jaxvx.pipeline.run`, the library's own metrics beside a few custom ones defined here.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx import checkpoints, data, lrp, pipeline
from jaxvx.explain import _pixel_bounds, build_method
from jaxvx.transforms import selective, sum_channels


# ---------------------------------------------------------------------------------------------------------------
# methods and metrics of this script


def random_map():
    """A map of i.i.d. uniform values, one channel: the chance level of every metric."""
    def method(forward, video, target, *, key):
        return jax.random.uniform(key, video.shape[:4] + (1,), jnp.float32)
    return method


def _map(rel):
    return rel.sum(axis=-1) if rel.ndim == 5 else rel


def _hit(px, py, boxes, tol, shape):
    x0, y0, x1, y1 = (boxes[..., i] for i in range(4))
    dx = jnp.maximum(jnp.maximum(x0 - px, px - x1), 0.0)
    dy = jnp.maximum(jnp.maximum(y0 - py, py - y1), 0.0)
    return (dx * dx + dy * dy <= tol * tol) if shape == "disk" else (jnp.maximum(dx, dy) <= tol)


def pointing(tol: float, shape: str, tie: str = "first"):
    """Spatial pointing per clip (mean over frames with a box). ``tie="first"``: the argmax as the library takes it
    (first in row-major order); ``"centre"``: the centroid of all pixels tied at the frame's maximum."""
    def fn(rel, batch):
        r = _map(rel)
        b, t, h, w = r.shape
        boxes = batch["boxes"].astype(jnp.float32)
        valid = batch["present"] & (boxes[..., 0] >= 0)
        if tie == "first":
            flat = jnp.argmax(r.reshape(b, t, h * w), axis=-1)
            px, py = (flat % w).astype(jnp.float32), (flat // w).astype(jnp.float32)
        else:
            m = r.max(axis=(2, 3), keepdims=True)
            tied = (r >= m - 1e-6 * jnp.abs(m)).astype(jnp.float32)
            n = tied.sum(axis=(2, 3))
            px = (tied * jnp.arange(w)[None, None, None, :]).sum(axis=(2, 3)) / n
            py = (tied * jnp.arange(h)[None, None, :, None]).sum(axis=(2, 3)) / n
        hits = _hit(px, py, boxes, tol, shape) & valid
        nv = valid.sum(axis=1)
        return jnp.where(nv > 0, hits.sum(axis=1) / jnp.maximum(nv, 1), jnp.nan)
    fn.__name__ = f"pointing_{shape}{tol:g}_{tie}"
    return fn


def ties(rel, batch):
    """Mean over frames of the number of pixels tied at the frame's maximum (1: a unique peak)."""
    r = _map(rel)
    m = r.max(axis=(2, 3), keepdims=True)
    n = (r >= m - 1e-6 * jnp.abs(m)).sum(axis=(2, 3))
    return {"tied_pixels": n.mean(axis=1).astype(jnp.float32), "tied_frames": (n > 1).mean(axis=1)}


def end_frames(rel, batch):
    """Share of the map's non-zero positions (after selective relevance: the kept ones) in the first and last
    frame (2 / T = 0.125 for positions spread evenly over 16 frames)."""
    nz = (_map(rel) != 0).astype(jnp.float32)
    per_t = nz.sum(axis=(2, 3))
    total = per_t.sum(axis=1)
    return jnp.where(total > 0, (per_t[:, 0] + per_t[:, -1]) / jnp.maximum(total, 1), jnp.nan)


def motion_share(rel, batch):
    """The true motion mask's share of the voxels (the chance level of motion precision)."""
    return batch["motion"].astype(jnp.float32).mean(axis=(1, 2, 3))


# ---------------------------------------------------------------------------------------------------------------
# plumbing


def load(name):
    model, variables, card = checkpoints.load(name)
    return model, variables, card


def source(card, clips, split="test", **render):
    t, h, w = (int(v) for v in card["input_shape"][:3])
    config = dict(card.get("data", {}).get("config") or {"height": h, "width": w})
    config["num_frames"] = t
    config.update(render)
    return data.synthetic(split, num_clips=clips, **config)


def methods_for(names, model, variables, card):
    out = {}
    for name in names:
        if name == "random":
            out[name] = random_map()
            continue
        if name == "deep_taylor_proportional":
            from jaxvx import methods as jm
            low, high = _pixel_bounds(card)
            out[name] = jm.lrp(lrp.deep_taylor(low=low, high=high, max_pool="proportional"))
            continue
        m, model_m, variables_m = build_method(name, model, variables, card)
        if model_m is not model:
            model, variables = model_m, variables_m
        out[name] = m
    return out, model, variables


def go(out, checkpoint, names, metrics, *, clips, limit=None, transforms=(), render=None, records=None,
       batch_size=8, **kw):
    model, variables, card = load(checkpoint)
    meths, model, variables = methods_for(names, model, variables, card)
    src = records if records is not None else source(card, clips, **(render or {}))
    t0 = time.perf_counter()
    res = pipeline.run(src, model, meths, variables=variables, transforms=[sum_channels(), *transforms],
                       metrics=metrics, batch_size=batch_size, length=int(card["input_shape"][0]),
                       preprocess=dict(card.get("preprocess", {})), limit=limit, out=out, progress=False,
                       provenance={"checkpoint": checkpoint, "checkpoint_sha256": card.get("sha256")}, **kw)
    print(f"== {out}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(res.markdown, flush=True)
    return res


POINTING = {"pointing_box7": pointing(7, "box"), "pointing_disk2": pointing(2, "disk"),
            "pointing_box2": pointing(2, "box"), "pointing_disk7_centre": pointing(7, "disk", "centre"),
            "pointing_disk2_centre": pointing(2, "disk", "centre")}


# ---------------------------------------------------------------------------------------------------------------
# experiments


def chance_hiley(out, clips, limit):
    """Random maps on Hiley's setting (c3d-small): motion precision (true mask, flow), the mask's voxel share,
    spatial pointing, raw and after selective relevance."""
    metrics = ["motion_precision", "motion_precision_flow", "spatial_pointing_game",
               {"motion_share": motion_share}]
    metrics = _flat(metrics)
    go(f"{out}/raw", "c3d-small", ["random"], metrics, clips=clips, limit=limit)
    go(f"{out}/selective", "c3d-small", ["random"], {**metrics, "selectivity": "selectivity"}, clips=clips,
       limit=limit, transforms=[selective(4.0)])


def _flat(items):
    out = {}
    for it in items:
        if isinstance(it, dict):
            out.update(it)
        else:
            out[it] = it
    return out


def li_pointing(out, clips, limit):
    """Li's baselines and a random map, action in 8 of 16 frames: disk and box pointing at 7 px (Li's 112-px
    tolerance) and 2 px (7 px scaled to 32-px frames), argmax ties, temporal pointing."""
    metrics = _flat(["spatial_pointing_game", "temporal_pointing_game", POINTING, {"ties": ties}])
    go(out, "r2plus1d-small", ["random", "gradient", "gradcam", "excitation_backprop", "saliency_tubes"], metrics,
       clips=clips, limit=limit, render={"action_frames": 8})


def li_masks(out, clips, limit):
    """EP-3D and STEP (Li's settings, area 0.1) on the first clips of li_pointing, the same metrics."""
    metrics = _flat(["spatial_pointing_game", "temporal_pointing_game", POINTING, {"ties": ties}])
    go(out, "r2plus1d-small", ["ep3d", "step"], metrics, clips=clips, limit=limit, render={"action_frames": 8},
       batch_size=2, save_maps=True)


def chance_jaya(out, clips, limit):
    """Random maps on Jayawardhana's setting, and frame masking / the gradient on clips without distractors."""
    metrics = ["temporal_pointing_game", "keyframe_correlation", "spatial_pointing_game"]
    go(f"{out}/distractors", "lstm-ica-small", ["random"], metrics, clips=clips, limit=limit,
       render={"action_frames": 8})
    go(f"{out}/no_distractors", "lstm-ica-small", ["random", "frame_masking", "gradient"], metrics, clips=clips,
       limit=limit, render={"action_frames": 8, "distractors": 0})


def hiley_padding(out, clips, limit):
    """Selective relevance with zero and edge padding; deep Taylor with proportional max pooling beside WTA."""
    names = ["deep_taylor", "deep_taylor_proportional", "gradcam", "guided_backprop", "guided_gradcam", "random"]
    base = ["motion_precision", "motion_precision_flow", "spatial_pointing_game"]
    go(f"{out}/raw", "c3d-small", names, _flat(base + [{"end_frames": end_frames}]), clips=clips, limit=limit)
    for pad in ("zeros", "edge"):
        go(f"{out}/{pad}", "c3d-small", names, _flat(base + ["selectivity", {"end_frames": end_frames}]),
           clips=clips, limit=limit, transforms=[selective(4.0, padding=pad)])


def dtd_proportional_steps(out, clips, limit):
    """Anders' step sweep and lookahead for deep Taylor with proportional max pooling, and a random map."""
    model, variables, card = load("c3d-small")
    meths, model, variables = methods_for(["deep_taylor_proportional", "random"], model, variables, card)
    common = dict(variables=variables, transforms=[sum_channels()], metrics=["frame_share"], batch_size=8,
                  length=16, preprocess=dict(card.get("preprocess", {})), limit=limit, progress=False)
    t0 = time.perf_counter()
    sw = pipeline.sweep(source(card, clips, num_frames=512), model, meths,
                        steps=["1/16", "1/4", 1, 4, 16, 32], out=f"{out}/steps", **common)
    print(f"== {out}/steps: {time.perf_counter() - t0:.0f} s\n{sw.markdown}", flush=True)
    t0 = time.perf_counter()
    sw = pipeline.sweep(source(card, clips, num_frames=24, title_frames=8), model, meths,
                        offsets=[0, 2, 4, 6, 8], out=f"{out}/lookahead", **common)
    print(f"== {out}/lookahead: {time.perf_counter() - t0:.0f} s\n{sw.markdown}", flush=True)


class _Centred:
    """Each clip's 16 frames sampled at ``step`` around the centre of its action segment (clamped to the clip;
    outside the segment the actor stands still, so clamping repeats a still frame)."""

    def __init__(self, src, step):
        self.src, self.step = src, float(step)

    def __len__(self):
        return len(self.src)

    def __getitem__(self, i):
        rec = self.src[i]
        s, e = (int(v) for v in rec["segment"])
        c = (s + e - 1) / 2.0
        idx = np.clip(np.round(c + (np.arange(16) - 7.5) * self.step).astype(int), 0, len(rec["video"]) - 1)
        return {"video": rec["video"][idx], "label": rec["label"]}

    def __iter__(self):
        return (self[i] for i in range(len(self)))


def steps_both_sides(out, clips, limit):
    """Accuracy and B at steps on both sides of the training step: 512-frame clips whose action fills 64 frames
    (the training time scale is step 4), 16 frames sampled around the action's centre at steps 1/4 to 32."""
    model, variables, card = load("c3d-small")
    meths, model, variables = methods_for(["deep_taylor", "sensitivity", "random"], model, variables, card)
    src = source(card, clips, num_frames=512, action_frames=64)
    records = [src[i] for i in range(clips if limit is None else min(limit, clips))]
    for step in ("1/4", "1/2", "1", "2", "4", "8", "16", "32"):
        from fractions import Fraction
        recs = _Centred(records, Fraction(step))
        go(f"{out}/step-{step.replace('/', '_')}", "c3d-small", ["deep_taylor", "sensitivity", "random"],
           ["frame_share"], clips=clips, records=[recs[i] for i in range(len(recs))])


def hiley_sigma2(out, clips, limit):
    """Selective relevance at 2 standard deviations (Hiley et al. found it unhelpful for Grad-CAM)."""
    names = ["deep_taylor", "gradcam", "guided_backprop", "guided_gradcam", "random"]
    go(out, "c3d-small", names, _flat(["motion_precision", "motion_precision_flow", "selectivity",
                                        {"end_frames": end_frames}]),
       clips=clips, limit=limit, transforms=[selective(2.0)])


def li_cnnlstm(out, clips, limit):
    """Li et al.'s CNN-LSTM column: contrastive excitation backprop (cEB-R), the gradient and a random map on
    cnnlstm-small, action in 8 of 16 frames."""
    metrics = _flat(["spatial_pointing_game", "temporal_pointing_game", POINTING, {"ties": ties}])
    go(out, "cnnlstm-small", ["random", "gradient", "contrastive_excitation_backprop"], metrics, clips=clips,
       limit=limit, render={"action_frames": 8})


def jaya_lstm(out, clips, limit):
    """Input-cell attention against the plain LSTM: per-frame shares of the gradient and of frame masking on
    walk_run clips with the action in 8 of 16 frames (results.md splits the clips by where the action lies)."""
    for name in ("lstm-small", "lstm-ica-small"):
        go(f"{out}/{name}", name, ["random", "gradient", "frame_masking"],
           ["temporal_pointing_game", "frame_share"], clips=clips, limit=limit, render={"action_frames": 8})


EXPERIMENTS = {f.__name__: f for f in (chance_hiley, li_pointing, li_masks, chance_jaya, hiley_padding,
                                       dtd_proportional_steps, steps_both_sides, hiley_sigma2, li_cnnlstm,
                                       jaya_lstm)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("names", nargs="+", choices=sorted(EXPERIMENTS))
    p.add_argument("--clips", type=int, default=200)
    p.add_argument("--limit", type=int, default=None)
    a = p.parse_args(argv)
    for name in a.names:
        t0 = time.perf_counter()
        EXPERIMENTS[name](f"{a.out}/{name}", a.clips, a.limit)
        print(f"==== {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
