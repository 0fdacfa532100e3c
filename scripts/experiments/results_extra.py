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
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxvx import checkpoints, data, lrp, pipeline
from jaxvx.explain import _pixel_bounds, build_method
from jaxvx.transforms import selective, sum_channels


def _run(source, forward, method, *, length=16, step=1, offset=0, pad="loop", mode="snippet", save_maps=False,
         provenance=None, summary=True, **kw):
    """``jaxvx.pipeline.run`` with the sampling and output settings as keywords (they are option records there)."""
    return pipeline.run(source, forward, method, sampling=pipeline.Sampling(length=length, step=step, offset=offset,
                                                                            pad=pad, mode=mode),
                        output=pipeline.OutputOptions(save_maps=save_maps, summary=summary, provenance=provenance),
                        **kw)


# ---------------------------------------------------------------------------------------------------------------
# methods and metrics of this script


def random_map():
    """A map of i.i.d. uniform values, one channel: the chance level of every metric."""
    def method(forward, video, target, *, key):
        return jax.random.uniform(key, video.shape[:4] + (1,), jnp.float32)
    return method


def time_ramp(direction: int):
    """A map that is ``direction * t`` on frame ``t`` and the same at every pixel: deletion and insertion over frames
    then take the frames in time order, late first (``+1``) or early first (``-1``), whatever the clip shows."""
    def method(forward, video, target, *, key):
        t = jnp.arange(video.shape[1], dtype=jnp.float32) * direction
        return jnp.broadcast_to(t[None, :, None, None, None], video.shape[:4] + (1,))
    return method


def _map(rel):
    return rel.sum(axis=-1) if rel.ndim == 5 else rel


def pointing(tol: float, shape: str, tie: str = "first"):
    """Spatial pointing per clip (mean over the frames with a box), :func:`jaxvx.metrics.spatial_pointing_game`
    with its ``ties`` rule: ``"first"`` (argmax's first pixel in row-major order) or ``"centre"`` (the centroid of
    the pixels tied at the frame's maximum)."""
    from jaxvx.metrics import spatial_pointing_game

    def fn(rel, batch):
        res = spatial_pointing_game(rel, batch["boxes"], tolerance=tol, shape=shape, present=batch["present"],
                                    ties="first" if tie == "first" else "centroid")
        return res.clip_scores()
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
        if name == "frame_masking_accuracy":
            from jaxvx import methods as jm
            out[name] = jm.frame_masking(score="accuracy")
            continue
        if name in ("ep3d", "step"):  # the registry's settings (area 0.1, Li et al.'s constants), OPTIMISE's iterations
            from jaxvx import methods as jm
            from jaxvx.explain import EXTREMAL_AREA
            out[name] = getattr(jm, name)(EXTREMAL_AREA, **OPTIMISE)
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
    res = _run(src, model, meths, variables=variables, transforms=[sum_channels(), *transforms],
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
       batch_size=6, save_maps=True)


# Li et al.'s 112-pixel constants scaled to the 32-pixel frames: control-point pitch 7 -> 2 px, blur sigma 11 -> 3 px
# (STEP's ellipsoid 11 x 11 -> 3 x 3 px, its 7 frames kept)
SCALED = {"step": 2, "sigma": 3.0}
# the mask optimisations' iterations: Li et al.'s 1000 (--iterations sets fewer, for a quick look at the plumbing)
OPTIMISE = {"max_iter": 1000}


def _li_run(out, meths, metrics, clips, limit, *, batch_size=4, **kw):
    """``pipeline.run`` of ``meths`` on the li_pointing clips (r2plus1d-small, action in 8 of 16 frames)."""
    model, variables, card = load("r2plus1d-small")
    t0 = time.perf_counter()
    res = _run(source(card, clips, action_frames=8), model, meths, variables=variables,
               transforms=[sum_channels()], metrics=metrics, batch_size=batch_size, length=16,
               preprocess=dict(card.get("preprocess", {})), limit=limit, out=out, progress=False,
               provenance={"checkpoint": "r2plus1d-small", "checkpoint_sha256": card.get("sha256")}, **kw)
    print(f"== {out}: {time.perf_counter() - t0:.0f} s\n{res.markdown}", flush=True)
    return res


def li_masks_scaled(out, clips, limit):
    """EP-3D and STEP with Li et al.'s constants scaled to the frames (:data:`SCALED`), beside the gradient and a
    random map, on the first ``limit`` clips of li_pointing: the pointing games with the tie analysis, and deletion
    and insertion over frames."""
    from jaxvx import methods as jm
    from jaxvx.explain import EXTREMAL_AREA

    model, variables, card = load("r2plus1d-small")
    baselines, _, _ = methods_for(["random", "gradient"], model, variables, card)
    meths = {"ep3d_scaled": jm.ep3d(EXTREMAL_AREA, **SCALED, **OPTIMISE),
             "step_scaled": jm.step(EXTREMAL_AREA, kernel_size=3, **SCALED, **OPTIMISE), **baselines}
    metrics = _flat(["spatial_pointing_game", "temporal_pointing_game", POINTING, {"ties": ties},
                     "deletion_frames", "insertion_frames"])
    _li_run(out, meths, metrics, clips, limit, save_maps=True)


def li_deletion(out, clips, limit):
    """Deletion and insertion over frames (the area over the perturbation curve and its AUC) for Li's baselines
    and a random map, on the li_pointing clips."""
    go(out, "r2plus1d-small", ["random", "gradient", "gradcam", "excitation_backprop", "saliency_tubes"],
       ["deletion_frames", "insertion_frames"], clips=clips, limit=limit, render={"action_frames": 8})


def li_deletion_voxels(out, clips, limit):
    """Deletion and insertion over voxels (20 steps of 5 % of the T x H x W positions, in the order of the
    channel-summed map, all channels of a voxel at once) for Li's baselines and a random map, on the li_pointing
    clips."""
    go(out, "r2plus1d-small", ["random", "gradient", "gradcam", "excitation_backprop", "saliency_tubes"],
       ["deletion_voxels", "insertion_voxels"], clips=clips, limit=limit, render={"action_frames": 8})


def jaya_tsr_clean(out, clips, limit):
    """TSR and a random map on walk_run clips without distractors (key-frame correlation, temporal pointing)."""
    go(out, "lstm-ica-small", ["random", "tsr"], ["temporal_pointing_game", "keyframe_correlation",
                                                   "spatial_pointing_game"],
       clips=clips, limit=limit, render={"action_frames": 8, "distractors": 0})


def _flow_correlation(rel, batch):
    """Pearson correlation over the frames between the map's per-frame mass (|R| summed over the frame) and the
    mean magnitude of the Farneback flow from that frame to the next (NaN where either is constant)."""
    per_t = jnp.abs(_map(rel)).sum(axis=(2, 3))
    flow = jnp.sqrt((batch["flow"] ** 2).sum(-1)).mean(axis=(2, 3))
    a = per_t - per_t.mean(axis=1, keepdims=True)
    b = flow - flow.mean(axis=1, keepdims=True)
    den = jnp.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    return jnp.where(den > 0, (a * b).sum(axis=1) / jnp.maximum(den, 1e-30), jnp.nan)


def jaya_one_step(out, clips, limit):
    """Jayawardhana et al.'s one-step rescaling (the gradient's magnitude scaled by frame masking's time
    contribution, ``tsr_one_step``) beside frame masking scored by the logit and by accuracy (a frame counts when
    masking it flips the decision), TSR and a random map, on the jayawardhana_temporal clips (with distractors);
    each map's per-frame mass correlated with the Farneback flow's per-frame magnitude."""
    names = ["random", "gradient", "tsr_one_step", "frame_masking", "frame_masking_accuracy", "tsr"]
    go(out, "lstm-ica-small", names, _flat(["temporal_pointing_game", "keyframe_correlation",
                                            "spatial_pointing_game", "motion_precision_flow",
                                            {"flow_correlation": _flow_correlation}]),
       clips=clips, limit=limit, render={"action_frames": 8})


LI_AREAS = (0.05, 0.1, 0.15, 0.5)


def li_areas(out, clips, limit):
    """EP-3D and STEP at each of Li et al.'s areas (0.05, 0.1, 0.15, 0.5) with the scaled constants of
    li_masks_scaled, on the first ``limit`` clips of li_pointing: the pointing games per area. Each area is its own
    optimisation, which is what Li et al.'s joint run of the areas computes (the areas' energies are summed and share
    no parameter)."""
    from jaxvx import methods as jm

    meths = {}
    for a in LI_AREAS:
        meths[f"ep3d_area{a:g}"] = jm.ep3d(a, **SCALED, **OPTIMISE)
        meths[f"step_area{a:g}"] = jm.step(a, kernel_size=3, **SCALED, **OPTIMISE)
    metrics = _flat(["spatial_pointing_game", "temporal_pointing_game", POINTING, {"ties": ties}])
    _li_run(out, meths, metrics, clips, limit, batch_size=6)


TABLE2_AREAS = (0.01, 0.02, 0.05, 0.1, 0.2)


def li_table2(out, clips, limit):
    """Li et al.'s Table 2, the mean minimum preservation ratio per model: for each clip the smallest area of
    :data:`TABLE2_AREAS` whose STEP preservation mask (Li's settings with the scaled constants of li_masks_scaled,
    all areas optimised in one run) still keeps the model's predicted class
    (:func:`jaxvx.methods.min_preservation_ratio`), on the li_pointing clips, for r2plus1d-small and cnnlstm-small.
    Beside it, whether the clip blurred everywhere (the perturbation with no mask, area 0) already keeps the class:
    there the ratio says nothing about the evidence. Writes ``MODEL/ratios.json`` (per clip: the ratio, NaN where
    no area keeps the class, each area's probability, and the blurred clip's verdict)."""
    import json

    from jaxvx import io
    from jaxvx import methods as jm
    from jaxvx.methods._pyramid import perturbation_pyramid
    from jaxvx.metrics import bootstrap_ci

    mpr = jm.min_preservation_ratio(TABLE2_AREAS, kernel_size=3, **SCALED, **OPTIMISE)
    for name in ("r2plus1d-small", "cnnlstm-small"):
        model, variables, card = load(name)
        src = source(card, clips, action_frames=8)
        n = clips if limit is None else min(limit, clips)

        def both(v, x, model=model):
            forward = lambda z: model.apply(v, z)  # noqa: E731
            kept = mpr(forward, x)
            blurred = forward(perturbation_pyramid(x, 8, "blur")[0])  # the blur pyramid's bottom: area 0
            return kept, jnp.argmax(blurred, -1) == jnp.argmax(forward(x), -1)

        fn = jax.jit(both)
        t0 = time.perf_counter()
        rows = []
        for i in range(0, n, 4):
            batch = src.batch(np.arange(i, min(i + 4, n)), keys=["video", "label"])
            x = jnp.asarray(io.preprocess(batch["video"], **card["preprocess"]))
            res, blurred = jax.device_get(fn(variables, x))
            for j in range(len(x)):
                rows.append({"clip": i + j, "label": int(batch["label"][j]), "ratio": float(res.ratio[j]),
                             "probability": [float(p) for p in res.probability[j]],
                             "blurred_keeps_class": bool(blurred[j])})
            print(f"{name}: {len(rows)} of {n} clips, {time.perf_counter() - t0:.0f} s", flush=True)
        ratios = np.array([r["ratio"] for r in rows])
        blurred = np.array([r["blurred_keeps_class"] for r in rows])
        summary = {"model": name, "clips": n, "areas": list(TABLE2_AREAS), "seconds": time.perf_counter() - t0,
                   "blurred_keeps_class": int(blurred.sum())}
        for part, sel in (("all", np.ones_like(blurred)), ("blur_loses_class", ~blurred)):
            ci = bootstrap_ci(ratios[sel])
            summary[part] = {"mean_ratio": ci.mean, "low": ci.low, "high": ci.high, "kept_by_some_area": ci.n,
                             "clips": int(sel.sum())}
            print(f"== {out}/{name} ({part}): mean minimum preservation ratio {ci.mean:.3f} [{ci.low:.3f}, "
                  f"{ci.high:.3f}] over the {ci.n} of {int(sel.sum())} clips that some area keeps", flush=True)
        print(f"{name}: the blurred clip keeps the class in {int(blurred.sum())} of {n} clips; "
              f"{summary['seconds']:.0f} s", flush=True)
        os.makedirs(f"{out}/{name}", exist_ok=True)
        with open(f"{out}/{name}/ratios.json", "w") as f:
            json.dump({**summary, "rows": rows}, f, indent=1)


def li_table4(out, clips, limit):
    """Li et al.'s Table 4 variants with the scaled constants of li_masks_scaled: EP-3D-Evenly (the area loss per
    frame) and EP-3D with the control points smoothed in time by a Gaussian of sigma 1, 2 and 4 frames."""
    from jaxvx import methods as jm
    from jaxvx.explain import EXTREMAL_AREA

    meths = {"ep3d_evenly": jm.ep3d(EXTREMAL_AREA, evenly=True, **SCALED, **OPTIMISE),
             **{f"ep3d_temporal_sigma{ts}": jm.ep3d(EXTREMAL_AREA, temporal_sigma=float(ts), **SCALED,
                                                              **OPTIMISE)
                for ts in (1, 2, 4)}}
    metrics = _flat(["spatial_pointing_game", "temporal_pointing_game", POINTING, {"ties": ties}])
    _li_run(out, meths, metrics, clips, limit, batch_size=6)


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


def _weighted_true(rel, batch):
    from jaxvx.metrics import motion_precision
    return motion_precision(rel, batch["motion"], weighted=True)


def _positive_share(rel, batch):
    """The share of the voxels where the channel-summed map is > 0 (motion precision counts these voxels)."""
    return (_map(rel) > 0).mean(axis=(1, 2, 3))


def hiley_weighted(out, clips, limit):
    """Motion precision as a share of positive relevance (weighted) beside the share of voxels (the library's
    default), and how many voxels are positive at all, raw and after selective relevance (sigma 4, zero padding)."""
    names = ["deep_taylor", "deep_taylor_proportional", "gradcam", "guided_backprop", "guided_gradcam", "random"]
    metrics = {"motion_precision": "motion_precision", "motion_precision_weighted": _weighted_true,
               "positive_share": _positive_share}
    go(f"{out}/raw", "c3d-small", names, metrics, clips=clips, limit=limit)
    go(f"{out}/zeros", "c3d-small", names, metrics, clips=clips, limit=limit, transforms=[selective(4.0)])


def dtd_proportional_steps(out, clips, limit):
    """Anders' step sweep and lookahead for deep Taylor with proportional max pooling, and a random map."""
    model, variables, card = load("c3d-small")
    meths, model, variables = methods_for(["deep_taylor_proportional", "random"], model, variables, card)
    common = dict(variables=variables, transforms=[sum_channels()], metrics=["frame_share"], batch_size=8,
                  sampling=pipeline.Sampling(length=16), preprocess=dict(card.get("preprocess", {})), limit=limit,
                  progress=False)
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
    """Input-cell attention against the plain LSTM: per-frame shares of the gradient, sensitivity and frame masking on
    walk_run clips with the action in 8 of 16 frames (results.md splits the clips by where the action lies)."""
    for name in ("lstm-small", "lstm-ica-small"):
        go(f"{out}/{name}", name, ["random", "gradient", "sensitivity", "frame_masking"],
           ["temporal_pointing_game", "frame_share"], clips=clips, limit=limit, render={"action_frames": 8})


VIDEOS = ("arm_wrestling.mp4", "basketball.mp4", "cleaning_pool.mp4", "ucf101_apply_eye_makeup.avi",
          "ntu_rgbd_S001C001P001R001A001.avi")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm", ".mov")
# the real clips the repository carries (tests/data/videos: VIDEOS, 3.7 MB); --videos points at another folder
REPO_VIDEOS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "data", "videos")
REAL = {"root": REPO_VIDEOS, "offsets": (0, 48)}
# the I3D's deletion / insertion curves: 8 steps of 2 frames each (--curve-steps; each step is a forward of the I3D)
CURVE = {"steps": 8}


def video_files(root):
    """The video files of ``root``: those of :data:`VIDEOS` first, in that order, then any others sorted by name."""
    if not os.path.isdir(root):
        raise SystemExit(f"--videos: {root!r} is not a folder of video files")
    present = sorted(f for f in os.listdir(root) if f.lower().endswith(VIDEO_SUFFIXES))
    files = [f for f in VIDEOS if f in present] + [f for f in present if f not in VIDEOS]
    if not files:
        raise SystemExit(f"--videos: no video files ({', '.join(VIDEO_SUFFIXES)}) in {root!r}")
    return files


def _real_snippets(span=32, offsets=None, root=None):
    """One record per (clip, offset): the clip's frames from ``offset`` on (``span`` of them), short side brought
    to 256 first (the I3D's preprocessing then crops 224), label 0 (real clips have no label for our purposes:
    every method explains the predicted class). ``offsets`` and ``root`` default to ``REAL`` (``--offsets``,
    ``--videos``); a clip too short for an offset gives no snippet there."""
    import cv2

    from jaxvx.io import read_video

    root = REAL["root"] if root is None else root
    offsets = REAL["offsets"] if offsets is None else offsets
    records = []
    for name in video_files(root):
        frames = read_video(os.path.join(root, name), max_frames=max(offsets) + span)
        h, w = frames.shape[1:3]
        k = 256 / min(h, w)
        frames = np.stack([cv2.resize(f, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)
                           for f in frames])
        for o in offsets:
            if o + span <= len(frames):
                records.append({"video": frames[o:o + span], "label": 0, "clip": name, "offset": o})
    return records


def _unlabelled(records, limit):
    """The snippets as pipeline records (video, label 0), the first ``limit`` of them."""
    return [{"video": r["video"], "label": 0} for r in records][:limit]


def _i3d_run(out, records, model, variables, card, meths, *, metrics, transforms=None, note=None, **kw):
    """``pipeline.run`` of ``meths`` on real snippets with the I3D: one snippet a batch, 16 frames, the I3D's own
    preprocessing, the predicted class explained; ``transforms`` default to the channel sum."""
    t0 = time.perf_counter()
    res = _run(records, model, meths, variables=variables,
               transforms=[sum_channels()] if transforms is None else transforms, metrics=metrics, batch_size=1,
               length=16, preprocess=dict(card.get("preprocess", {})), target="predicted", progress=False, out=out,
               provenance={"checkpoint": "i3d-kinetics400", "checkpoint_sha256": card.get("sha256"),
                           **({"variables": note} if note else {})}, **kw)
    print(f"== {out}: {time.perf_counter() - t0:.0f} s\n{res.markdown}", flush=True)
    return res


def i3d_real(out, clips, limit):
    """The I3D on the real clips: Anders' B over the step (1, 2) and L over the snippets' offsets, Hiley's
    selective relevance against Farneback flow, and where the selected voxels lie (:func:`_kept_where`,
    :func:`_kept_sides`), on the snippets of 16 (x step) frames at the ``--offsets`` of each clip (by default 0
    and 48: 10 snippets of 5 clips)."""
    model, variables, card = load("i3d-kinetics400")
    names = ["deep_taylor", "sensitivity", "guided_backprop", "random"]
    meths, model, variables = methods_for(names, model, variables, card)
    records = _real_snippets()
    print(f"{len(records)} snippets of {len({r['clip'] for r in records})} clips: "
          + ", ".join(f"{r['clip']}@{r['offset']}" for r in records), flush=True)
    keep = _unlabelled(records, limit)
    t0 = time.perf_counter()
    sw = pipeline.sweep(keep, model, {k: meths[k] for k in ("deep_taylor", "sensitivity", "random")},
                        steps=[1, 2], out=f"{out}/steps", transforms=[sum_channels()], metrics=["frame_share"],
                        variables=variables, batch_size=1, sampling=pipeline.Sampling(length=16),
                        preprocess=dict(card.get("preprocess", {})), target="predicted", progress=False,
                        output=pipeline.OutputOptions(provenance={"checkpoint": "i3d-kinetics400",
                                                                  "checkpoint_sha256": card.get("sha256")}))
    print(f"== {out}/steps: {time.perf_counter() - t0:.0f} s\n{sw.markdown}", flush=True)
    from jaxvx import metrics as jm

    def raw_flow(rel, batch):  # the raw map's flow precision, in the same pass as the selected one's
        return jm.motion_precision(_map(batch["raw"]), batch["flow"], threshold=0.5)

    _i3d_run(f"{out}/selective", keep, model, variables, card,
             {k: meths[k] for k in ("deep_taylor", "guided_backprop", "random")},
             transforms=[sum_channels(), selective(4.0)],
             metrics={"motion_precision_flow": "motion_precision_flow", "raw_flow_precision": raw_flow,
                      "selectivity": "selectivity", "kept": _kept_where, "sides": _kept_sides}, save_maps=True)


def i3d_untrained(out, clips, limit):
    """The I3D's architecture alone: B and L of deep Taylor and sensitivity on the same real snippets with the
    I3D's variables re-initialised at random (Flax's default initialisers, seed 0): what an untrained I3D gives,
    as DTD-u does for C3D."""
    model, _, card = load("i3d-kinetics400")
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 224, 224, 3), jnp.float32))
    meths, model, variables = methods_for(["deep_taylor", "sensitivity"], model, variables, card)
    _i3d_run(out, _unlabelled(_real_snippets(), limit), model, variables, card, meths, metrics=["frame_share"],
             note="re-initialised, seed 0")


def i3d_offsets(out, clips, limit):
    """Anders' lookahead L over the snippet's offset in the video, on the I3D: 16-frame snippets at offsets 0, 32,
    64, 96, 128, 192 and 256 of every real clip long enough (29 snippets of the 5 clips the repository carries),
    deep Taylor, sensitivity and the random map, one run per offset (the programs compile once)."""
    model, variables, card = load("i3d-kinetics400")
    meths, model, variables = methods_for(["deep_taylor", "sensitivity", "random"], model, variables, card)
    offsets = (0, 32, 64, 96, 128, 192, 256)
    records = _real_snippets(16, offsets)
    for o in offsets:
        at = [r for r in records if r["offset"] == o][:limit]
        print(f"offset {o}: {len(at)} snippets: {', '.join(r['clip'] for r in at)}", flush=True)
        _i3d_run(f"{out}/offset_{o}", _unlabelled(at, None), model, variables, card, meths,
                 metrics=["frame_share"])


def _kept_where(rel, batch):
    """Of the map's non-zero positions: the share in the last frame, in the last 5 frames, within 2 px of the
    frame's edge, and in the 2 rightmost columns (a 2-px border is 3.5 % of a 224 x 224 frame, 2 columns 0.9 %)."""
    nz = (_map(rel) != 0).astype(jnp.float32)
    total = jnp.maximum(nz.sum(axis=(1, 2, 3)), 1)
    border = nz.at[:, :, 2:-2, 2:-2].set(0)
    return {"kept_last_frame": nz[:, -1].sum(axis=(1, 2)) / total,
            "kept_last5_frames": nz[:, -5:].sum(axis=(1, 2, 3)) / total,
            "kept_border2": border.sum(axis=(1, 2, 3)) / total,
            "kept_right2": nz[..., -2:].sum(axis=(1, 2, 3)) / total}


def i3d_edges(out, clips, limit):
    """Where deep Taylor's selected voxels lie on the real snippets with the I3D re-initialised (seed 0): is the
    pile-up in the last frames and at the right edge the architecture's? (The trained I3D's: ``i3d_real``.)"""
    model, _, card = load("i3d-kinetics400")
    fresh = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 224, 224, 3), jnp.float32))
    meths, model, fresh = methods_for(["deep_taylor", "random"], model, fresh, card)
    _i3d_run(out, _unlabelled(_real_snippets(), limit), model, fresh, card, meths,
             transforms=[sum_channels(), selective(4.0)], metrics={"kept": _kept_where, "sides": _kept_sides},
             note="re-initialised, seed 0")


def _cue_where(rel, batch):
    """The context cue's hold on a map: the share of its positive mass inside the cue's box (mapped to the model's
    grid; the box is carried as ``boxes``), and the share of frames whose argmax falls inside it."""
    r = jnp.maximum(_map(rel), 0)
    box = batch["boxes"]  # [B, T, 4] x_min, y_min, x_max, y_max, inclusive; the same box in every frame
    t, h, w = r.shape[1:]
    ys = jnp.arange(h)[None, None, :, None]
    xs = jnp.arange(w)[None, None, None, :]
    inside = ((xs >= box[..., 0, None, None]) & (xs <= box[..., 2, None, None])
              & (ys >= box[..., 1, None, None]) & (ys <= box[..., 3, None, None]))
    total = r.sum(axis=(1, 2, 3))
    share = jnp.where(total > 0, (r * inside).sum(axis=(1, 2, 3)) / jnp.maximum(total, 1e-30), jnp.nan)
    flat = r.reshape(*r.shape[:2], -1)
    peak = jnp.take_along_axis(inside.reshape(*r.shape[:2], -1), jnp.argmax(flat, axis=-1)[..., None], axis=-1)[..., 0]
    has_mass = flat.max(axis=-1) > 0
    hit = jnp.where(has_mass, peak, False).sum(axis=1) / jnp.maximum(has_mass.sum(axis=1), 1)
    return {"cue_share": share, "cue_pointing": hit.astype(jnp.float32), "cue_area": inside.mean(axis=(1, 2, 3))}


def _cue_records(card, clips, limit):
    """Test clips with a random context cue (the cue model's test split, whose badges are random whatever the
    training rate), the cue's box carried as every frame's ``boxes``; with the cue's and the actor's class per
    clip."""
    src = source(card, clips)
    n = clips if limit is None else min(limit, clips)
    records, cue_labels, labels = [], [], []
    for i in range(n):
        rec = src[i]
        records.append({"video": rec["video"], "label": rec["label"],
                        "boxes": np.repeat(np.asarray(rec["cue_box"], np.float32)[None], len(rec["video"]), 0)})
        cue_labels.append(int(rec["cue_label"]))
        labels.append(int(rec["label"]))
    return records, np.array(cue_labels), np.array(labels)


def hiley_cue(out, clips, limit):
    """A known spatial bias: c3d-small-cue (trained with a badge whose colour gives the class in every training
    clip) beside c3d-small (never shown a meaningful badge), on test clips whose badge is random. How
    much of each map lies on the badge, raw and after selective relevance (sigma 4, zero and edge padding); and
    how often the cue model follows the badge instead of the motion."""
    import json
    import os

    from jaxvx import io

    names = ["deep_taylor", "guided_backprop", "gradcam", "guided_gradcam", "random"]
    records, cue, labels = _cue_records(checkpoints.load_card("c3d-small-cue"), clips, limit)  # one set for both
    for ckpt in ("c3d-small-cue", "c3d-small"):
        model, variables, card = load(ckpt)
        x = io.preprocess(np.stack([r["video"] for r in records]), **card["preprocess"])
        apply = jax.jit(lambda v, x: model.apply(v, x))
        pred = np.concatenate([np.asarray(apply(variables, x[i:i + 50])).argmax(-1) for i in range(0, len(x), 50)])
        other = cue != labels
        stats = {"clips": len(labels), "accuracy": float(np.mean(pred == labels)),
                 "accuracy_cue_matches": float(np.mean(pred[~other] == labels[~other])) if (~other).any() else None,
                 "accuracy_cue_differs": float(np.mean(pred[other] == labels[other])),
                 "follows_cue_when_it_differs": float(np.mean(pred[other] == cue[other])),
                 "cue_matches": int((~other).sum())}
        os.makedirs(f"{out}/{ckpt}", exist_ok=True)
        with open(f"{out}/{ckpt}/accuracy.json", "w") as f:
            json.dump(stats, f, indent=1)
        print(ckpt, stats, flush=True)
        # the map of the predicted class: where the model's decision comes from
        go(f"{out}/{ckpt}/raw", ckpt, names, {"cue": _cue_where}, clips=clips, records=records,
           target="predicted")
        for pad in ("zeros", "edge"):
            go(f"{out}/{ckpt}/{pad}", ckpt, names, {"cue": _cue_where, "selectivity": "selectivity"}, clips=clips,
               records=records, target="predicted", transforms=[selective(4.0, padding=pad)])


def hiley_agreement(out, clips, limit):
    """Hiley et al.'s Table 2 question, how much the baselines agree: the Jaccard index of the positive areas of
    every pair of maps (:func:`jaxvx.metrics.agreement`), raw and after selective relevance (sigma 4), on
    c3d-small's test clips, the labelled class explained; beside each pair the index two independent areas of the
    same sizes would have (the chance level, which grows with the areas: a map positive everywhere agrees with any
    map as much as that map covers)."""
    import itertools
    import json
    import os

    from jaxvx import io
    from jaxvx.metrics import agreement, bootstrap_ci

    names = ["deep_taylor", "guided_backprop", "gradcam", "guided_gradcam", "random"]
    model, variables, card = load("c3d-small")
    meths, model, variables = methods_for(names, model, variables, card)
    src = source(card, clips)
    n = clips if limit is None else min(limit, clips)
    sel = selective(4.0)
    fns = {k: jax.jit(lambda v, x, y, key, m=m: sel_pair(m(lambda z: model.apply(v, z), x, y, key=key), sel))
           for k, m in meths.items()}
    t0 = time.perf_counter()
    raw = {k: [] for k in names}
    kept = {k: [] for k in names}
    for i in range(0, n, 20):
        batch = src.batch(np.arange(i, min(i + 20, n)), keys=["video", "label"])
        x = jnp.asarray(io.preprocess(batch["video"], **card["preprocess"]))
        y = jnp.asarray(batch["label"], jnp.int32)
        for k, fn in fns.items():
            r, s_ = fn(variables, x, y, jax.random.fold_in(jax.random.PRNGKey(0), i))
            raw[k].append(np.asarray(r))
            kept[k].append(np.asarray(s_))
    rows = []
    for stage, maps in (("raw", raw), ("selective", kept)):
        maps = {k: np.concatenate(v) for k, v in maps.items()}
        for a, b in itertools.combinations(names, 2):
            ci = bootstrap_ci(np.asarray(agreement(maps[a], maps[b])))
            # chance: the expected Jaccard index of two independent areas of the maps' sizes, p q / (p + q - p q)
            p, q = ((maps[k] > 0).mean(axis=(1, 2, 3)) for k in (a, b))
            chance = float(np.nanmean(np.where(p + q > 0, p * q / np.maximum(p + q - p * q, 1e-12), np.nan)))
            rows.append({"stage": stage, "a": a, "b": b, "mean": ci.mean, "low": ci.low, "high": ci.high, "n": ci.n,
                         "chance": chance})
    os.makedirs(out, exist_ok=True)
    with open(f"{out}/agreement.json", "w") as f:
        json.dump({"clips": n, "seconds": time.perf_counter() - t0, "rows": rows}, f, indent=1)
    print(f"== {out}: {time.perf_counter() - t0:.0f} s", flush=True)
    for r in rows:
        print(f"{r['stage']:9s} {r['a']:16s} {r['b']:16s} {r['mean']:.3f} [{r['low']:.3f}, {r['high']:.3f}]"
              f"  chance {r['chance']:.3f}")


def sel_pair(rel, sel):
    """The channel-summed map and its selected version."""
    r = _map(rel)
    return r, sel(r)


def i3d_deletion(out, clips, limit):
    """Deletion and insertion over frames on the real snippets (``--curve-steps`` steps, by default 8 of 2 frames
    each: 7 forwards a curve beside the 2 that every curve shares), the predicted class followed, for deep Taylor,
    guided backprop, Grad-CAM at Mixed_5c and a random map, and the controls that tell what carries a map's order:
    frames by time alone (late first, early first), frame parity alone (even frames first, :func:`even_first`) and
    deep Taylor with the level between even and odd frames divided out (:func:`within_parity`). One run, so that
    every pair of maps compares snippet by snippet (``i3d_deletion_paired``)."""
    model, variables, card = load("i3d-kinetics400")
    meths, model, variables = methods_for(["deep_taylor", "guided_backprop", "gradcam", "random"], model, variables,
                                          card)
    meths = {**meths, "late_first": time_ramp(1), "early_first": time_ramp(-1), "even_first": even_first(),
             "deep_taylor_within_parity": within_parity(meths["deep_taylor"])}
    _i3d_run(out, _unlabelled(_real_snippets(), limit), model, variables, card, meths,
             metrics=["deletion_frames", "insertion_frames"],
             metric_options=pipeline.MetricOptions(perturbation_steps=CURVE["steps"]))


def even_first():
    """A map that takes the even frames (0, 2, ..., the ones the I3D's first layer reads with its heavier taps) before
    the odd ones, in a random order within each parity (uniform jitter below 1): frame parity alone."""
    def method(forward, video, target, *, key):
        t = jnp.arange(video.shape[1])
        jitter = jax.random.uniform(key, video.shape[:2], jnp.float32)
        value = (t % 2 == 0).astype(jnp.float32)[None] + 0.5 * jitter
        return jnp.broadcast_to(value[:, :, None, None, None], video.shape[:4] + (1,))
    return method


def within_parity(method):
    """``method``'s map with each frame divided by the mean per-frame sum of the frames of its parity (even or odd):
    the same order within the even and within the odd frames, but no level between the two parities."""
    def wrapped(forward, video, target, *, key):
        rel = method(forward, video, target, key=key)
        s = rel.sum(axis=(2, 3, 4))  # [B, T]
        even = (jnp.arange(s.shape[1]) % 2 == 0)[None]
        level = jnp.where(even, jnp.mean(s[:, 0::2], axis=1, keepdims=True), jnp.mean(s[:, 1::2], axis=1,
                                                                                      keepdims=True))
        return rel / jnp.where(level == 0, 1.0, jnp.abs(level))[:, :, None, None, None]
    return wrapped


def i3d_ep3d(out, clips, limit):
    """EP-3D on the I3D's real snippets, Li et al.'s settings for frames larger than 112 pixels (area 0.1, control
    points every 7 pixels, blur sigma 23, 1000 iterations), beside a random map: P_t (B, L) and deletion and
    insertion over frames, the predicted class. One snippet did not finish in 39 minutes on 2 CPU cores: for a GPU
    (``reproduce.py --full``)."""
    from jaxvx import methods as jm

    model, variables, card = load("i3d-kinetics400")
    _i3d_run(out, _unlabelled(_real_snippets(), limit), model, variables, card,
             {"ep3d": jm.ep3d(0.1, sigma=23.0, **OPTIMISE), "random": random_map()},
             metrics=["frame_share", "deletion_frames", "insertion_frames"],
             metric_options=pipeline.MetricOptions(perturbation_steps=CURVE["steps"]))


PAIRS = (("deep_taylor", "random"), ("deep_taylor", "late_first"), ("guided_backprop", "random"),
         ("gradcam", "random"), ("late_first", "random"), ("even_first", "random"), ("deep_taylor", "even_first"),
         ("deep_taylor_within_parity", "random"), ("deep_taylor", "deep_taylor_within_parity"))


def i3d_deletion_paired(out, clips, limit):
    """Paired differences of the AOPC between the maps of :func:`i3d_deletion` (run first into the same ``OUTX``),
    snippet by snippet: the mean, a percentile-bootstrap 95 % interval over the snippets
    (:func:`jaxvx.metrics.bootstrap_ci`, seed 0: the same resamples for every pair) and how many snippets are above
    0. Reads its ``results.jsonl``; writes ``paired.json``."""
    import json

    from jaxvx.metrics import bootstrap_ci

    with open(os.path.join(os.path.dirname(out), "i3d_deletion", "results.jsonl")) as f:
        runs = [r["methods"] for r in map(json.loads, f) if r.get("status") == "ok"]
    rows = []
    print(f"== {out}: {len(runs)} snippets")
    print("| difference | deletion AOPC | snippets above 0 | insertion AOPC | snippets above 0 |")
    print("|---|---|---:|---|---:|")
    for x, y in PAIRS:
        row = {"a": x, "b": y}
        for metric in ("deletion_frames", "insertion_frames"):
            diff = np.array([r[x][metric] - r[y][metric] for r in runs])
            ci = bootstrap_ci(diff)
            row[metric] = {"mean": ci.mean, "low": ci.low, "high": ci.high, "above": int((diff > 0).sum()),
                           "n": ci.n}
        rows.append(row)
        print(f"| {x} - {y} | " + " | ".join(
            f"{c['mean']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}] | {c['above']} of {c['n']}"
            for c in (row["deletion_frames"], row["insertion_frames"])) + " |", flush=True)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "paired.json"), "w") as f:
        json.dump(rows, f, indent=1)


def _i3d_stages(variables):
    """The I3D (as :class:`jaxvx.models.I3D` computes it) cut into its 16 stages: ``[(name of the stage's input,
    function of that input), ...]`` and the head (average pool, classifier, mean), each stage applying its own
    Flax module to its own variables."""
    import flax.linen as nn

    from jaxvx.models._i3d import _MIXED, InceptionBlock, Unit3D

    params, stats = variables["params"], variables["batch_stats"]

    def sub(name):
        return {"params": params[name], **({"batch_stats": stats[name]} if name in stats else {})}

    def unit(name, features, kernel=(1, 1, 1), strides=(1, 1, 1), **kw):
        return lambda h: Unit3D(features, kernel, strides, **kw).apply(sub(name), h)

    def mixed(name):
        return lambda h: InceptionBlock(_MIXED[name]).apply(sub(name), h)

    def pool(window, strides):
        return lambda h: nn.max_pool(h, window, strides=strides, padding="SAME")

    stages = [("input", unit("Conv3d_1a_7x7", 64, (7, 7, 7), (2, 2, 2))), ("Conv3d_1a out", pool((1, 3, 3), (1, 2, 2))),
              ("MaxPool3d_2a out", unit("Conv3d_2b_1x1", 64)), ("Conv3d_2b out", unit("Conv3d_2c_3x3", 192, (3, 3, 3))),
              ("Conv3d_2c out", pool((1, 3, 3), (1, 2, 2)))]
    for name in _MIXED:
        if name == "Mixed_4b":
            stages.append(("Mixed_3c out", pool((3, 3, 3), (2, 2, 2))))
        elif name == "Mixed_5b":
            stages.append(("Mixed_4f out", pool((2, 2, 2), (2, 2, 2))))
        stages.append((f"{name} in", mixed(name)))

    def head(h):
        h = nn.avg_pool(h, (2, 7, 7), strides=(1, 1, 1), padding="VALID")
        h = Unit3D(400, batch_norm=False, relu=False, use_bias=True).apply(sub("Logits/Conv3d_0c_1x1"), h)
        return jnp.mean(h, axis=(1, 2, 3))
    return stages, head


def _tail_from(stages, head, i):
    """The I3D from stage ``i`` of :func:`_i3d_stages` on: a function of that stage's input to the logits."""
    def f(h):
        for _, g in stages[i:]:
            h = g(h)
        return head(h)
    return f


def _zplus_all():
    """z+ on every linear layer, biases left out (deep Taylor's rule above the first layer)."""
    return lrp.Composite("zplus_all", lrp.layer_map_base() + ((lrp.LINEAR, lrp.zplus(zero_params=("bias",))),))


def i3d_edge_stages(out, clips, limit):
    """Where in the I3D deep Taylor's right-edge pile-up arises: the relevance at the input of a stage (z+ on every
    convolution above the first, as deep Taylor; z^B on the first at the clip itself), channel-summed, and the
    share of its positive mass in the rightmost and leftmost column and the bottom and top row of that stage's
    grid, over the 10 real snippets. A share far above ``1 / W`` in one edge column and not the other is the
    pile-up at that depth. Prints a markdown table (nothing is written to ``out``)."""
    from jaxvx import methods as jm
    from jaxvx.io import preprocess

    model, variables, card = load("i3d-kinetics400")
    stages, head = _i3d_stages(variables)

    cuts = [0, 1, 3, 5, 8, 14, 15]  # input, Conv3d_1a out, Conv3d_2b out, Mixed_3b, _4b, _5b, _5c in
    zplus_all = _zplus_all()
    fns = {i: jax.jit(jm.lrp(lrp.deep_taylor(-1.0, 1.0) if i == 0 else zplus_all), static_argnums=0) for i in cuts}
    tails = {i: _tail_from(stages, head, i) for i in cuts}
    shares: dict = {}
    t0 = time.perf_counter()
    for r in _real_snippets()[:limit]:
        x = preprocess(r["video"][:16], **card["preprocess"])[None]
        logits = model.apply(variables, x)
        hs = [x]
        for _, g in stages:
            hs.append(g(hs[-1]))
        np.testing.assert_allclose(np.asarray(head(hs[-1])), np.asarray(logits), rtol=1e-4, atol=1e-4)
        target = jnp.argmax(logits, -1)
        for i in cuts:
            m = np.maximum(np.asarray(fns[i](tails[i], hs[i], target)).sum(-1)[0], 0)  # [T, H, W]
            total = m.sum()
            shares.setdefault(stages[i][0], []).append(
                (m[:, :, -1].sum() / total, m[:, :, 0].sum() / total, m[:, -1].sum() / total, m[:, 0].sum() / total,
                 m.shape[1], m.shape[2]))
    print(f"== {out}: {len(next(iter(shares.values())))} snippets, {time.perf_counter() - t0:.0f} s")
    print("| relevance at | grid H x W | 1 / W | rightmost column | leftmost column | bottom row | top row |")
    print("|---|---|---|---|---|---|---|")
    for name, v in shares.items():
        v = np.array(v)
        print(f"| {name} | {int(v[0, 4])} x {int(v[0, 5])} | {1 / v[0, 5]:.4f} | {v[:, 0].mean():.4f} | "
              f"{v[:, 1].mean():.4f} | {v[:, 2].mean():.4f} | {v[:, 3].mean():.4f} |", flush=True)


def i3d_edge_channels(out, clips, limit):
    """Which channels carry the I3D's right-edge pile-up at the top of the network: deep Taylor's relevance (z+
    above the cut, as :func:`i3d_edge_stages`) at the input of Mixed_5c (Mixed_5b's output) and at the head's
    input (Mixed_5c's output), split by the inception branch that made each channel (1x1; 1x1 then 3x3; 1x1 then
    3x3; 3x3x3 max pool then 1x1). Per branch: its share of the positive relevance, the share of its own positive
    relevance in the rightmost of the 7 columns (uniform 1/7 = 0.143), and its share of all the rightmost column's
    relevance; and how many channels hold half of that column's relevance. Prints markdown (nothing written)."""
    from jaxvx import methods as jm
    from jaxvx.io import preprocess
    from jaxvx.models._i3d import _MIXED

    model, variables, card = load("i3d-kinetics400")
    stages, head = _i3d_stages(variables)

    zplus_all = _zplus_all()
    explain = jax.jit(jm.lrp(zplus_all), static_argnums=0)
    cuts = {"Mixed_5c input (Mixed_5b's branches)": (15, "Mixed_5b"),
            "head input (Mixed_5c's branches)": (16, "Mixed_5c")}
    tails = {i: _tail_from(stages, head, i) for i, _ in cuts.values()}
    maps: dict = {name: [] for name in cuts}
    t0 = time.perf_counter()
    for r in _real_snippets()[:limit]:
        x = preprocess(r["video"][:16], **card["preprocess"])[None]
        hs = [x]
        for _, g in stages:
            hs.append(g(hs[-1]))
        target = jnp.argmax(head(hs[-1]), -1)
        for name, (i, _) in cuts.items():
            m = np.maximum(np.asarray(explain(tails[i], hs[i], target))[0], 0)  # [T, 7, 7, C]
            maps[name].append(m / m.sum())
    print(f"== {out}: {len(next(iter(maps.values())))} snippets, {time.perf_counter() - t0:.0f} s")
    for name, (i, block) in cuts.items():
        m = np.mean(maps[name], axis=0)  # the snippets' normalised maps, averaged
        b0, _, b1, _, b2, b3 = _MIXED[block]
        edges = np.cumsum([0, b0, b1, b2, b3])
        labels = ["1x1", "1x1, 3x3", "1x1, 3x3 (narrow)", "max pool, 1x1"]
        per_channel = m.sum(axis=(0, 1, 2))
        right = m[:, :, -1].sum(axis=(0, 1))
        order = np.argsort(-right)
        half = int(np.searchsorted(np.cumsum(right[order]) / right.sum(), 0.5)) + 1
        print(f"\n{name}: rightmost column {right.sum():.3f} of the positive relevance (uniform 0.143); half of it "
              f"in {half} of {len(right)} channels\n")
        print("| branch | channels | share of the relevance | its share in the rightmost column | share of that "
              "column's relevance |\n|---|---:|---:|---:|---:|")
        for lab, lo, hi in zip(labels, edges[:-1], edges[1:]):
            tot = per_channel[lo:hi].sum()
            print(f"| {lab} | {hi - lo} | {tot:.3f} | {right[lo:hi].sum() / tot:.3f} | "
                  f"{right[lo:hi].sum() / right.sum():.3f} |", flush=True)





def _kept_sides(rel, batch):
    """Of the map's non-zero positions: the share in the 2 outermost columns or rows on each side (0.9 % of a
    224 x 224 frame each), and the share of the positive relevance there (the raw map's mass, before selection)."""
    nz = (_map(rel) != 0).astype(jnp.float32)
    total = jnp.maximum(nz.sum(axis=(1, 2, 3)), 1)
    mass = jnp.maximum(_map(batch["raw"]), 0)
    whole = jnp.maximum(mass.sum(axis=(1, 2, 3)), 1e-30)
    sides = {"left": (slice(None), slice(0, 2)), "right": (slice(None), slice(-2, None)),
             "top": (slice(0, 2), slice(None)), "bottom": (slice(-2, None), slice(None))}
    out = {}
    for side, (ys, xs) in sides.items():
        out[f"kept_{side}2"] = nz[:, :, ys, xs].sum(axis=(1, 2, 3)) / total
        out[f"raw_mass_{side}2"] = mass[:, :, ys, xs].sum(axis=(1, 2, 3)) / whole
    return out


def i3d_flip(out, clips, limit):
    """Is the I3D's right-edge pile-up of deep Taylor's selected voxels the content's or the model's? The same
    snippets mirrored left to right: content on the right moves to the left, the model's padding (TF "SAME": one
    more zero on the right and bottom than on the left and top of every stride-2 layer of even size) stays. (The
    snippets as filmed: ``i3d_real``'s selective run.)"""
    model, variables, card = load("i3d-kinetics400")
    meths, model, variables = methods_for(["deep_taylor", "random"], model, variables, card)
    mirrored = [{"video": r["video"][:, :, ::-1].copy(), "label": 0} for r in _real_snippets()][:limit]
    _i3d_run(out, mirrored, model, variables, card, meths, transforms=[sum_channels(), selective(4.0)],
             metrics={"sides": _kept_sides}, note="trained; snippets mirrored left to right")


def _flip_kernels(variables, axes):
    """The I3D's variables with every convolution kernel ``[kt, kh, kw, C_in, C_out]`` reversed along ``axes`` (0: time,
    1: height, 2: width); biases and BatchNorm statistics are per channel and stay."""
    def flip(path, leaf):
        return jnp.flip(leaf, axes) if path[-1].key == "kernel" and leaf.ndim == 5 else leaf
    return jax.tree_util.tree_map_with_path(flip, variables)


def _check_mirrored_padding(kernel, x):
    """The identity :func:`i3d_pads_mirrored` rests on, checked on the I3D's first layer (7 x 7 x 7, stride 2, TF
    "SAME" pads (2, 3) on 16 x 224 x 224): convolving the mirrored clip with the mirrored kernel and mirroring the
    result equals the convolution with the pads mirrored, (3, 2), in every axis."""
    conv = jax.lax.conv_general_dilated
    dims = ("NDHWC", "DHWIO", "NDHWC")
    mirrored = jnp.flip(conv(jnp.flip(x, (1, 2, 3)), jnp.flip(kernel, (0, 1, 2)), (2, 2, 2), "SAME",
                             dimension_numbers=dims), (1, 2, 3))
    explicit = conv(x, kernel, (2, 2, 2), [(3, 2)] * 3, dimension_numbers=dims)
    scale = float(jnp.abs(explicit).max())
    np.testing.assert_allclose(np.asarray(mirrored), np.asarray(explicit), rtol=0, atol=1e-5 * scale)


def i3d_pads_mirrored(out, clips, limit):
    """Does TF "SAME" padding make the I3D's end-frame and right-edge pile-ups? Every stride-2 layer of even input
    size pads one zero more at the end of the axis (the last frame, the bottom row, the rightmost column) than at
    its start. The same trained weights with that extra pad moved to the start of an axis is
    ``x -> I3D_flipped(flip(x))``, the kernels reversed along the axis (exact: convolution, ReLU, per-channel
    BatchNorm, symmetric pooling windows and the global average commute with the reversal; the first layer is
    checked); deep Taylor's map of it is the flipped-back map of that model on the flipped clip. Three models on the
    10 real snippets: as trained, pads moved to the start in time, pads moved to the top and left. Per model: the
    predicted class kept, B and L of the frame shares, the shares of the first 2 and last 4 frames, and of the raw
    positive mass and of the voxels selective relevance keeps in the 2 outermost columns and rows of each side;
    and, as a control for the predictions, how often the as-trained model keeps its class when the snippet is
    shifted by one frame or one pixel (the stride-2 layers then sample the other phase, as moving the pad does).
    Prints markdown tables (nothing is written to ``out``)."""
    from jaxvx.io import preprocess
    from jaxvx.transforms import fit_border_lookahead, frame_share

    model, variables, card = load("i3d-kinetics400")
    meths, model, variables = methods_for(["deep_taylor"], model, variables, card)
    dtd = meths["deep_taylor"]

    def explain(v, x, target):
        return dtd(lambda y: model.apply(v, y), x, target, key=jax.random.PRNGKey(0))

    explain = jax.jit(explain)
    apply = jax.jit(model.apply)
    select = selective(4.0)
    share = frame_share()
    variants = {"as trained (extra pad at the end, bottom, right)": (),
                "extra pad at the start in time": (1,), "extra pad at the top and left": (2, 3)}
    rows: dict = {name: [] for name in variants}
    t0 = time.perf_counter()
    snippets = _real_snippets()[:limit]
    for i, r in enumerate(snippets):
        x = jnp.asarray(preprocess(r["video"][:16], **card["preprocess"])[None])
        if i == 0:
            _check_mirrored_padding(variables["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"], x)
        target = None
        for name, axes in variants.items():
            v = _flip_kernels(variables, tuple(a - 1 for a in axes)) if axes else variables
            xf = jnp.flip(x, axes) if axes else x
            logits = apply(v, xf)
            if target is None:
                target = jnp.argmax(logits, -1)
            rel = np.asarray(explain(v, xf, target))
            rel = np.flip(rel, axes) if axes else rel
            m = rel.sum(-1)  # [1, T, H, W]
            kept = np.asarray(select(jnp.asarray(m)))[0] != 0
            pos = np.maximum(m[0], 0)
            p_t = np.asarray(share(jnp.asarray(m)))[0]
            side = {"left": (slice(None), slice(0, 2)), "right": (slice(None), slice(-2, None)),
                    "top": (slice(0, 2), slice(None)), "bottom": (slice(-2, None), slice(None))}
            rows[name].append({
                "same_class": bool(jnp.argmax(logits, -1)[0] == target[0]),
                "prob": float(jax.nn.softmax(logits, -1)[0, target[0]]), "p_t": p_t,
                **{f"mass_{k}": float(pos[:, ys, xs].sum() / pos.sum()) for k, (ys, xs) in side.items()},
                **{f"kept_{k}": float(kept[:, ys, xs].sum() / max(kept.sum(), 1)) for k, (ys, xs) in side.items()},
                "kept_first5": float(kept[:5].sum() / max(kept.sum(), 1)),
                "kept_last5": float(kept[-5:].sum() / max(kept.sum(), 1))})
        # the control: the as-trained model on the snippet shifted by one frame, and by one pixel down and right
        full = preprocess(r["video"][:17], resize="none", crop="none", size=None, mean=card["preprocess"]["mean"],
                          std=card["preprocess"]["std"])
        top, left = (full.shape[1] - 224) // 2, (full.shape[2] - 224) // 2
        np.testing.assert_array_equal(np.asarray(full[:16, top:top + 224, left:left + 224]), np.asarray(x[0]))
        for name, view in (("one frame later", full[1:17, top:top + 224, left:left + 224]),
                           ("one pixel down and right", full[:16, top + 1:top + 225, left + 1:left + 225])):
            rows.setdefault(f"as trained, the snippet {name}", []).append(
                {"same_class": bool(jnp.argmax(apply(variables, jnp.asarray(view)[None]), -1)[0] == target[0])})
        print(f"{r['clip']}@{r['offset']}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"== {out}: {len(snippets)} snippets, {time.perf_counter() - t0:.0f} s")
    print("| the as-trained model on | predicted class kept |\n|---|---:|")
    for name in [n for n in rows if n not in variants]:
        print(f"| {name[len('as trained, '):]} | {sum(q['same_class'] for q in rows.pop(name))} of {len(snippets)} |")

    def ci(values, scale=1.0, fmt=".3f"):
        values = np.asarray(values, np.float64) * scale
        means = values[np.random.default_rng(0).integers(0, len(values), (1000, len(values)))].mean(axis=1)
        return f"{values.mean():{fmt}} [{np.percentile(means, 2.5):{fmt}}, {np.percentile(means, 97.5):{fmt}}]"

    print("| model | predicted class kept | its probability | B | L | frames 0-1 | frames 12-15 |")
    print("|---|---:|---|---|---|---|---|")
    for name, rs in rows.items():
        p = np.stack([q["p_t"] for q in rs])
        fit = fit_border_lookahead(p)
        print(f"| {name} | {sum(q['same_class'] for q in rs)} of {len(rs)} | {ci([q['prob'] for q in rs])} | "
              f"{fit.border:.2e} [{fit.border_ci[0]:.2e}, {fit.border_ci[1]:.2e}] | "
              f"{fit.lookahead:.2e} [{fit.lookahead_ci[0]:.2e}, {fit.lookahead_ci[1]:.2e}] | "
              f"{ci(p[:, :2].sum(1))} | {ci(p[:, 12:].sum(1))} |")
    print("\n| model | raw mass: left / right / top / bottom (%) | kept: left / right / top / bottom (%) | "
          "kept in frames 0-4 / 11-15 (%) |")
    print("|---|---|---|---|")
    for name, rs in rows.items():
        cells = [" / ".join(ci([q[f"{kind}_{k}"] for q in rs], 100, ".1f") for k in ("left", "right", "top", "bottom"))
                 for kind in ("mass", "kept")]
        print(f"| {name} | {cells[0]} | {cells[1]} | {ci([q['kept_first5'] for q in rs], 100, '.1f')} / "
              f"{ci([q['kept_last5'] for q in rs], 100, '.1f')} |", flush=True)


EXPERIMENTS = {f.__name__: f for f in (
    chance_hiley, chance_jaya, dtd_proportional_steps, hiley_agreement, hiley_cue, hiley_padding, hiley_sigma2,
    hiley_weighted, i3d_deletion, i3d_deletion_paired, i3d_edge_channels, i3d_edge_stages, i3d_edges, i3d_ep3d,
    i3d_flip, i3d_offsets, i3d_pads_mirrored, i3d_real, i3d_untrained, jaya_lstm, jaya_one_step, jaya_tsr_clean,
    li_areas, li_cnnlstm, li_deletion, li_deletion_voxels, li_masks, li_masks_scaled, li_pointing, li_table2,
    li_table4, steps_both_sides,
)}


def _offsets(text):
    try:
        offsets = tuple(int(v) for v in text.split(","))
    except ValueError:
        offsets = ()
    if not offsets or min(offsets) < 0:
        raise argparse.ArgumentTypeError(f"expected frame offsets >= 0 separated by commas (e.g. 0,48), got {text!r}")
    return offsets


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("names", nargs="+", choices=sorted(EXPERIMENTS))
    p.add_argument("--clips", type=int, default=200, help="synthetic clips rendered (default 200)")
    p.add_argument("--limit", type=int, default=None, help="the first N clips or snippets only")
    p.add_argument("--videos", default=REPO_VIDEOS,
                   help="folder of real clips for the I3D analyses (default: the repository's tests/data/videos)")
    p.add_argument("--iterations", type=int, default=1000,
                   help="iterations of the mask optimisations (EP-3D, STEP; default 1000, Li et al.'s)")
    p.add_argument("--curve-steps", type=int, default=8,
                   help="steps of the I3D's deletion / insertion curves over the 16 frames (default 8: 2 frames a "
                        "step; 4 halves their forwards)")
    p.add_argument("--offsets", type=_offsets, default=(0, 48),
                   help="frame offsets of the I3D snippets in each clip (default 0,48; i3d_offsets has its own)")
    a = p.parse_args(argv)
    for name in ("iterations", "curve_steps"):
        if getattr(a, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(a, name)}")
    REAL.update(root=a.videos, offsets=a.offsets)
    OPTIMISE.update(max_iter=a.iterations)
    CURVE.update(steps=a.curve_steps)
    for name in a.names:
        t0 = time.perf_counter()
        EXPERIMENTS[name](f"{a.out}/{name}", a.clips, a.limit)
        print(f"==== {name}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
