"""The figures of docs/results.md, drawn from the runs' summary.json / sweep.json files.

    python scripts/experiments/results_figures.py BASE EXTRA [--out docs/images/results]

BASE is the OUT of `bash scripts/experiments/run.sh OUT`, EXTRA the OUT of `results_extra.py OUT ...` (the
untrained model's sweeps in EXTRA/dtdu_steps and EXTRA/dtdu_lookahead). Figures whose runs are missing are skipped.
"""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _rows(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def _get(rows, method, metric, **where):
    for r in rows:
        if r["method"] == method and r["metric"] == metric and all(r.get(k) == v for k, v in where.items()):
            return r
    return None


def _series(rows, method, metric, key):
    pts = sorted((r[key], r["mean"], r["low"], r["high"]) for r in rows
                 if r["method"] == method and r["metric"] == metric)
    return [np.array(v, float) for v in zip(*pts)] if pts else None


def _band(ax, s, label, **kw):
    if s is None:
        return
    x, m, lo, hi = s
    line, = ax.plot(x, m, marker="o", ms=3, label=label, **kw)
    ax.fill_between(x, lo, hi, alpha=0.2, color=line.get_color())


def _anders_runs(base: Path, extra: Path, kind: str):
    """(trained, untrained, proportional) sweep tables of ``kind`` ("steps" or "lookahead"), or None."""
    trained = _rows(base / f"anders_{kind}" / "sweep.json")
    untrained = _rows(extra / f"dtdu_{kind}" / "sweep.json") or []
    prop = _rows(extra / "dtd_proportional_steps" / kind / "sweep.json") or []
    return None if trained is None else (trained, untrained, prop)


def _anders_curves(ax, runs, metric, key):
    trained, untrained, prop = runs
    for rows, method, label in ((trained, "deep_taylor", "DTD (WTA max pool)"),
                                (prop, "deep_taylor_proportional", "DTD (proportional max pool)"),
                                (trained, "sensitivity", "SA"),
                                (untrained, "deep_taylor", "DTD-u (untrained)"),
                                (prop, "random", "random map")):
        _band(ax, _series(rows, method, metric, key), label)
    ax.axhline(0, color="grey", lw=0.6)


def anders_steps(base: Path, extra: Path, out: Path):
    runs = _anders_runs(base, extra, "steps")
    if runs is None:
        return None
    trained, untrained, _ = runs
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    _band(a, _series(trained, "(model)", "accuracy", "step_value"), "c3d-small")
    _band(a, _series(untrained, "(model)", "accuracy", "step_value"), "c3d-small-untrained")
    a.axhline(0.1, color="grey", ls=":", label="chance (10 classes)")
    a.axvline(32, color="k", lw=0.6, ls="--")
    a.set(xscale="log", xlabel="snippet step (frames)", ylabel="accuracy", title="accuracy over the step")
    a.legend(fontsize=7)
    _anders_curves(b, runs, "border B (frame share)", "step_value")
    b.axvline(32, color="k", lw=0.6, ls="--")
    b.set(xscale="log", xlabel="snippet step (frames); dashed: the training time scale", ylabel="border B",
          title="border effect B over the step (95 % CI)")
    b.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out / "anders_steps.png")


def anders_lookahead(base: Path, extra: Path, out: Path):
    runs = _anders_runs(base, extra, "lookahead")
    if runs is None:
        return None
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    _anders_curves(ax, runs, "lookahead L (frame share)", "offset")
    ax.set(xlabel="offset (frames; the 8-frame title card ends at 8)", ylabel="lookahead L",
           title="lookahead L over the offset (95 % CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out / "anders_lookahead.png")


def both_sides(extra: Path, out: Path):
    root = extra / "steps_both_sides"
    if not root.exists():
        return None
    steps = ["1/4", "1/2", "1", "2", "4", "8", "16", "32"]
    data = {}
    for s in steps:
        rows = _rows(root / f"step-{s.replace('/', '_')}" / "summary.json")
        if rows:
            data[float(Fraction(s))] = rows
    if not data:
        return None
    xs = sorted(data)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))

    def series(method, metric):
        vals = [_get(data[x], method, metric) for x in xs]
        return [np.array(xs), np.array([v["mean"] for v in vals]), np.array([v["low"] for v in vals]),
                np.array([v["high"] for v in vals])]

    _band(a, series("(model)", "accuracy"), "c3d-small")
    a.axhline(0.1, color="grey", ls=":", label="chance")
    a.axvline(4, color="k", lw=0.6, ls="--")
    a.set(xscale="log", xlabel="step (frames); dashed: training time scale (step 4)", ylabel="accuracy",
          title="accuracy, action of 64 frames, snippet centred on it")
    a.legend(fontsize=7)
    for method, label in (("deep_taylor", "DTD"), ("sensitivity", "SA"), ("random", "random map")):
        _band(b, series(method, "border B (frame share)"), label)
    b.axhline(0, color="grey", lw=0.6)
    b.axvline(4, color="k", lw=0.6, ls="--")
    b.set(xscale="log", xlabel="step (frames)", ylabel="border B", title="border B (95 % CI)")
    b.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out / "anders_both_sides.png")


def hiley(extra: Path, out: Path):
    root = extra / "hiley_padding"
    runs = {k: _rows(root / k / "summary.json") for k in ("raw", "zeros", "edge")}
    if any(v is None for v in runs.values()):
        return None
    methods = ["deep_taylor", "deep_taylor_proportional", "guided_backprop", "guided_gradcam", "gradcam", "random"]
    labels = ["DTD", "DTD prop.", "GBP", "guided\nGrad-CAM", "Grad-CAM", "random"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    x = np.arange(len(methods))
    for ax, metric, title in ((axes[0], "motion_precision", "motion precision (true motion mask)"),
                              (axes[1], "motion_precision_flow", "motion precision (Farneback flow)"),
                              (axes[2], "end_frames", "share of kept positions in frames 0 and 15")):
        for i, (k, name) in enumerate((("raw", "raw"), ("zeros", "selective, zero padding"),
                                       ("edge", "selective, edge padding"))):
            rows = runs[k]
            vals = [_get(rows, m, metric) for m in methods]
            mean = np.array([v["mean"] if v else np.nan for v in vals])
            err = np.array([[v["mean"] - v["low"], v["high"] - v["mean"]] if v and v["low"] is not None
                            else [0, 0] for v in vals]).T
            ax.bar(x + (i - 1) * 0.27, mean, 0.27, yerr=err, label=name, capsize=2)
        if metric == "end_frames":
            ax.axhline(2 / 16, color="k", ls=":", lw=0.8, label="2/16 (even spread)")
        ax.set_xticks(x, labels, fontsize=7)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out / "hiley_selective.png")


def li(extra: Path, out: Path):
    base = _rows(extra / "li_pointing" / "summary.json")
    if base is None:
        return None
    masks = _rows(extra / "li_masks" / "summary.json") or []
    scaled = _rows(extra / "li_masks_scaled" / "summary.json") or []
    methods = [("random", base), ("gradient", base), ("gradcam", base), ("excitation_backprop", base),
               ("saliency_tubes", base), ("ep3d", masks), ("step", masks), ("ep3d_scaled", scaled),
               ("step_scaled", scaled)]
    methods = [(m, r) for m, r in methods if _get(r, m, "spatial_pointing_game")]
    metrics = [("spatial_pointing_game", "disk 7 px"), ("pointing_disk7_centre", "disk 7 px, ties at their centroid"),
               ("pointing_box7", "box 7 px (Li)"), ("pointing_disk2", "disk 2 px (7 px scaled to 32 px)"),
               ("pointing_box2", "box 2 px")]
    fig, ax = plt.subplots(figsize=(12, 3.8))
    x = np.arange(len(methods))
    for i, (metric, name) in enumerate(metrics):
        vals = [_get(r, m, metric) for m, r in methods]
        mean = np.array([v["mean"] for v in vals])
        err = np.array([[v["mean"] - v["low"], v["high"] - v["mean"]] for v in vals]).T
        ax.bar(x + (i - 2) * 0.16, mean, 0.16, yerr=err, label=name, capsize=2)
    n_masks = _get(masks, "ep3d", "spatial_pointing_game")
    ax.set_xticks(x, [m + (f"\n({n_masks['n']} clips)" if r is not base and n_masks else "\n(200 clips)")
                      for m, r in methods], fontsize=7)
    ax.set(ylabel="spatial pointing", title="r2plus1d-small, action in 8 of 16 frames: spatial pointing (95 % CI)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out / "li_pointing.png")


def li_mask_frames(extra: Path, out: Path, clip: int = 1):
    root = extra / "li_masks" / "maps"
    if not (root / "ep3d").exists():
        return None
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from jaxvx import checkpoints, data

    _, _, card = checkpoints.load("r2plus1d-small")
    t, h, w = (int(v) for v in card["input_shape"][:3])
    config = dict(card.get("data", {}).get("config") or {"height": h, "width": w})
    config.update(num_frames=t, action_frames=8)
    rec = data.synthetic("test", num_clips=200, **config)[clip]
    video = np.asarray(rec["video"], np.float32) / 255.0
    maps = {m: np.load(root / m / f"{clip:06d}.npy") for m in ("ep3d", "step")}
    frames = list(range(0, t, 2))
    fig, axes = plt.subplots(3, len(frames), figsize=(1.3 * len(frames), 4.4))
    s, e = (int(v) for v in rec["segment"])
    for j, f in enumerate(frames):
        axes[0, j].imshow(video[f])
        axes[0, j].set_title(f"t={f}" + (" *" if s <= f < e else ""), fontsize=7)
        for i, m in enumerate(("ep3d", "step"), start=1):
            mp = np.asarray(maps[m])
            mp = mp.reshape(mp.shape[0], mp.shape[1], mp.shape[2], -1).sum(-1) if mp.ndim == 4 else mp
            axes[i, j].imshow(mp[f], vmin=0, vmax=1, cmap="magma")
            k = mp.shape[-1] / video.shape[2]  # clips are rendered at 64 px, the model sees 32
            x0, y0, x1, y1 = np.asarray(rec["boxes"][f], float) * k
            if x0 >= 0:
                axes[i, j].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                                                   ec="cyan", lw=0.8))
            yy, xx = np.unravel_index(np.argmax(mp[f]), mp[f].shape)
            axes[i, j].plot(xx, yy, "g+", ms=6)
            axes[i, j].set_xlim(-0.5, mp.shape[-1] - 0.5)
            axes[i, j].set_ylim(mp.shape[-2] - 0.5, -0.5)
        for a in axes[:, j]:
            a.set_xticks([])
            a.set_yticks([])
    axes[1, 0].set_ylabel("EP-3D", fontsize=8)
    axes[2, 0].set_ylabel("STEP", fontsize=8)
    fig.suptitle(f"clip {clip}: frames, EP-3D and STEP masks (cyan: actor box on the 32-px grid, green +: the "
                 "argmax, first of the tied pixels; * action frames)",
                 fontsize=8)
    fig.tight_layout()
    return _save(fig, out / "li_masks.png")


def jaya(base: Path, extra: Path, out: Path):
    dist = _rows(base / "jayawardhana_temporal" / "summary.json")
    rnd = _rows(extra / "chance_jaya" / "distractors" / "summary.json")
    nod = _rows(extra / "chance_jaya" / "no_distractors" / "summary.json")
    if dist is None or rnd is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, metric, title in ((axes[0], "temporal_pointing_game", "temporal pointing"),
                              (axes[1], "keyframe_correlation", "correlation with key frames")):
        cols = [("frame masking", _get(dist, "frame_masking", metric)), ("TSR", _get(dist, "tsr", metric)),
                ("gradient", _get(dist, "gradient", metric)), ("random", _get(rnd, "random", metric))]
        if nod:
            cols += [("frame masking\nno distr.", _get(nod, "frame_masking", metric)),
                     ("gradient\nno distr.", _get(nod, "gradient", metric)),
                     ("random\nno distr.", _get(nod, "random", metric))]
        x = np.arange(len(cols))
        mean = np.array([v["mean"] for _, v in cols])
        err = np.array([[v["mean"] - v["low"], v["high"] - v["mean"]] for _, v in cols]).T
        ax.bar(x, mean, yerr=err, capsize=3, color=["C0"] * 4 + ["C1"] * (len(cols) - 4))
        ax.axhline(0, color="grey", lw=0.6)
        ax.set_xticks(x, [c for c, _ in cols], fontsize=6, rotation=25)
        ax.set_title(f"lstm-ica-small, walk_run: {title} (95 % CI)", fontsize=9)
    fig.tight_layout()
    return _save(fig, out / "jayawardhana.png")


def anders_table(runs: dict[str, Path]) -> str:
    """Anders et al.'s Table 1 in full: B, C, D (quadratic fit) and L, A (linear fit) of the mean frame share, with
    95 % bootstrap intervals over clips, for each ``label -> run folder`` and each method in it."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from jaxvx.transforms import fit_border_lookahead

    lines = ["| run | method | clips | B | C | D | L | A |", "|---|---|---:|---|---|---|---|---|"]
    for label, folder in runs.items():
        path = folder / "results.jsonl"
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines()[1:]]
        rows = [r for r in rows if r.get("status") == "ok"]
        for method in rows[0]["methods"] if rows else []:
            shares = np.array([r["methods"][method]["frame_share"] for r in rows], float)
            fit = fit_border_lookahead(shares)
            cells = []
            for coef, ci in ((fit.quadratic, fit.quadratic_ci), (fit.linear, fit.linear_ci)):
                for k in range(len(coef)):
                    cells.append(f"{coef[k]:.2e} [{ci[k, 0]:.2e}, {ci[k, 1]:.2e}]")
            lines.append(f"| {label} | {method} | {len(shares)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def i3d_overlays(extra: Path, out: Path, videos: str | None = None):
    """One overlay per real clip: the I3D's deep Taylor map after selective relevance (sigma 4) over the snippet at
    offset 0, frames 8 to 15; ``videos`` is the folder ``i3d_real`` ran on (default: the repository's clips)."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_extra import _real_snippets

    from jaxvx.viz import overlay

    root = extra / "i3d_real" / "selective" / "maps" / "deep_taylor"
    if not root.exists():
        return None
    records = _real_snippets(root=videos)
    names = list(dict.fromkeys(r["clip"] for r in records))
    index = {(r["clip"], r["offset"]): i for i, r in enumerate(records)}
    frames_shown = list(range(8, 16))  # frames 0 to 7 keep almost nothing (see docs/results.md)
    fig, axes = plt.subplots(len(names), len(frames_shown), figsize=(1.6 * len(frames_shown), 1.75 * len(names)),
                             squeeze=False)
    for row, name in enumerate(names):
        i = index.get((name, 0))
        path = root / f"{i:06d}.npy" if i is not None else None
        if path is None or not path.exists():
            continue
        rel = np.load(path)
        video = records[i]["video"][:16]
        h, w = video.shape[1:3]
        top, left = (h - 224) // 2, (w - 224) // 2
        crop = np.ascontiguousarray(video[:, top:top + 224, left:left + 224])
        import cv2

        kernel = np.ones((7, 7), np.uint8)  # the kept voxels are single pixels: dilated 7 px to be seen
        rel = np.stack([cv2.dilate(np.abs(f).astype(np.float32), kernel) for f in rel])
        img = overlay(crop, rel, weight="relevance", cmap="hot", symmetric=False)
        for j, f in enumerate(frames_shown):
            ax = axes[row, j]
            ax.imshow(img[f])
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"t={f}", fontsize=8)
        axes[row, 0].set_ylabel(name.split(".")[0][:16], fontsize=7)
    fig.suptitle("I3D (Kinetics-400), deep Taylor after selective relevance (sigma 4), |R| dilated 7 px, frames 8 "
                 "to 15 of the snippet at offset 0, explaining the predicted class", fontsize=8)
    fig.tight_layout()
    return _save(fig, out / "i3d_overlays.png")


def i3d_shares(extra: Path, out: Path):
    """The I3D's mean frame share P_t over the real snippets (step 1): trained and re-initialised, DTD and SA."""
    runs = {"trained": extra / "i3d_real" / "steps" / "step-1-offset-0" / "results.jsonl",
            "re-initialised": extra / "i3d_untrained" / "results.jsonl"}
    if not all(p.exists() for p in runs.values()):
        return None
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for label, path in runs.items():
        rows = [json.loads(line) for line in path.read_text().splitlines()[1:]]
        rows = [r for r in rows if r.get("status") == "ok"]
        for method, name, ls in (("deep_taylor", "DTD", "-"), ("sensitivity", "SA", "--")):
            shares = np.array([r["methods"][method]["frame_share"] for r in rows], float)
            boot = [_boot(shares[:, t]) for t in range(shares.shape[1])]
            m, lo, hi = (np.array(v) for v in zip(*boot))
            line, = ax.plot(np.arange(len(m)), m, ls=ls, marker="o", ms=3, label=f"{name}, {label}")
            ax.fill_between(np.arange(len(m)), lo, hi, alpha=0.15, color=line.get_color())
    ax.axhline(1 / 16, color="grey", lw=0.6, ls=":", label="uniform (1/16)")
    ax.set(xlabel="frame of the 16-frame snippet", ylabel="mean share of relevance P_t",
           title=f"I3D on {len(rows)} real snippets: P_t, 95 % CI over snippets")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _save(fig, out / "i3d_frame_shares.png")


def _boot(values, n=1000, seed=0):
    v = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n, len(v)))].mean(axis=1)
    return v.mean(), np.quantile(means, 0.025), np.quantile(means, 0.975)


def jaya_lstm_table(extra: Path) -> str:
    """Early-frame saliency, plain LSTM against input-cell attention: the share of each map inside the action
    segment for clips whose action lies at the start (starts at frame 0 to 2) and at the end (starts at 6 to 8),
    95 % bootstrap intervals over clips. The segments come from re-rendering the same synthetic clips."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from jaxvx import checkpoints, data

    lines = ["| model | method | action at the start: share in the action | temporal pointing | "
             "action at the end: share in the action | temporal pointing | clips (start / end) |",
             "|---|---|---|---|---|---|---|"]
    for name in ("lstm-small", "lstm-ica-small"):
        path = extra / "jaya_lstm" / name / "results.jsonl"
        if not path.exists():
            continue
        rows = [json.loads(line) for line in path.read_text().splitlines()[1:]]
        rows = [r for r in rows if r.get("status") == "ok"]
        _, _, card = checkpoints.load(name)
        t, h, w = (int(v) for v in card["input_shape"][:3])
        config = dict(card.get("data", {}).get("config") or {"height": h, "width": w})
        config.update(num_frames=t, action_frames=8)
        src = data.synthetic("test", num_clips=len(rows), **config)
        starts = np.array([int(src[int(r["clip"])]["segment"][0]) for r in rows])
        groups = {"start": starts <= 2, "end": starts >= 6}
        for method in rows[0]["methods"]:
            cells = []
            for g in ("start", "end"):
                sel = [r for r, keep in zip(rows, groups[g]) if keep]
                st = [s for s, keep in zip(starts, groups[g]) if keep]
                # the share of a signed map (the gradient, frame masking) is not a share: left out
                share = [sum(r["methods"][method]["frame_share"][s:s + 8]) for r, s in zip(sel, st)] \
                    if method in ("sensitivity", "random") else [np.nan]
                tp = [r["methods"][method]["temporal_pointing_game"] for r in sel]
                for vals in (share, tp):
                    m, lo, hi = _boot(vals)
                    cells.append("-" if np.isnan(m) else f"{m:.3f} [{lo:.3f}, {hi:.3f}]")
            lines.append(f"| {name} | {method} | " + " | ".join(cells)
                         + f" | {int(groups['start'].sum())} / {int(groups['end'].sum())} |")
    return "\n".join(lines)


def _save(fig, path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("base", type=Path)
    p.add_argument("extra", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/images/results"))
    p.add_argument("--videos", default=None, help="the folder of real clips i3d_real ran on (default: the "
                   "repository's tests/data/videos)")
    a = p.parse_args(argv)
    for path in (anders_steps(a.base, a.extra, a.out), anders_lookahead(a.base, a.extra, a.out),
                 both_sides(a.extra, a.out), hiley(a.extra, a.out), li(a.extra, a.out),
                 li_mask_frames(a.extra, a.out), jaya(a.base, a.extra, a.out),
                 i3d_overlays(a.extra, a.out, a.videos), i3d_shares(a.extra, a.out)):
        if path:
            print(path)
    print(jaya_lstm_table(a.extra))
    print(anders_table({
        "c3d-small, step 32 (training scale)": a.base / "anders_steps" / "step-32-offset-0",
        "c3d-small, step 1": a.base / "anders_steps" / "step-1-offset-0",
        "c3d-small, proportional, step 32": a.extra / "dtd_proportional_steps" / "steps" / "step-32-offset-0",
        "c3d-small-untrained, step 32": a.extra / "dtdu_steps" / "step-32-offset-0",
        "c3d-small-untrained, step 1": a.extra / "dtdu_steps" / "step-1-offset-0"}))


if __name__ == "__main__":
    main()
