"""The ``jaxvx`` command line.

    jaxvx data preview --out sheet.png [--variant motion] [--num 10] ...   contact sheet of the synthetic benchmark
    jaxvx data build [--config motion_16x64] [--data-dir DIR]               build it as a TFDS dataset (array_record)
    jaxvx train --model c3d-small --out DIR ...                             train a model (see ``jaxvx train -h``)
    jaxvx explain [VIDEO] --checkpoint c3d-small --method deep_taylor --out DIR   explain one snippet
    jaxvx run [CONFIG.toml] --checkpoint c3d-small --method deep_taylor --out DIR  explain a dataset
    jaxvx stream VIDEO_OR_CAMERA --checkpoint c3d-small --out stream.mp4      sliding-window explanations

Each subcommand is a thin layer over a library function; errors in the input are reported as one line naming the
problem, with exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

import numpy as np

from jaxvx._checks import is_int

__all__ = ["main"]


def _synthetic_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("synthetic benchmark")
    g.add_argument("--variant", default="motion", choices=["motion", "walk_run"])
    g.add_argument("--split", default="train", choices=["train", "test", "validation"])
    g.add_argument("--frames", type=int, default=16, help="frames per clip (T)")
    g.add_argument("--size", type=int, nargs="+", default=[112], metavar="PX", help="H [W] in pixels")
    g.add_argument("--distractors", type=int, default=2)
    g.add_argument("--context-cue", type=float, default=None, metavar="RATE")
    g.add_argument("--title-frames", type=int, default=0)
    g.add_argument("--action-frames", type=int, default=None)
    g.add_argument("--surround", default="static", choices=["static", "other"])
    g.add_argument("--seed", type=int, default=0)


def _synthetic_config(args) -> dict:
    if len(args.size) not in (1, 2):
        raise ValueError(f"--size takes H or H W, got {args.size}")
    height, width = (args.size * 2)[:2]
    return dict(
        variant=args.variant, num_frames=args.frames, height=height, width=width, distractors=args.distractors,
        context_cue=args.context_cue, title_frames=args.title_frames, action_frames=args.action_frames,
        surround=args.surround, seed=args.seed,
    )


def _preview(args) -> int:
    from jaxvx.data import synthetic
    from jaxvx.viz import contact_sheet, save_png

    source = synthetic(args.split, num_clips=max(args.num, 1), flow=False, **_synthetic_config(args))
    records = [source[i] for i in range(args.num)]
    sheet = contact_sheet(records, class_names=source.class_names, num_columns=args.columns)
    path = save_png(args.out, sheet)
    print(f"wrote {path}: {args.num} clips of {source.config.variant!r} ({args.split}), {sheet.shape[1]}x"
          f"{sheet.shape[0]} px; green = actor box, orange bar = action segment, magenta = context cue")
    return 0


def _build(args) -> int:
    from jaxvx.data import build_synthetic_tfds

    path = build_synthetic_tfds(args.config, data_dir=args.data_dir)
    print(f"built {args.config} in {path}")
    return 0


def _card_synthetic_config(card) -> dict:
    """The synthetic benchmark's settings a checkpoint was trained on (its card's ``data.config``), so that clips are
    rendered as in training and brought to the model's input by the card's ``preprocess``; a card without them
    gets clips rendered at the model's input size."""
    t_model, h_model, w_model = (int(v) for v in card["input_shape"][:3])
    config = dict(card.get("data", {}).get("config") or {})
    if not config:
        config = {"height": h_model, "width": w_model}
    config["num_frames"] = t_model
    return config


def _truth_on_model_grid(record, card) -> dict:
    """A synthetic record's ground truth mapped through the card's resize / crop onto the model's input grid."""
    from jaxvx.io import input_geometry

    h, w = np.asarray(record["video"]).shape[1:3]
    geo = input_geometry(h, w, card.get("preprocess"))
    truth = dict(record)
    truth["boxes"] = geo.boxes(np.asarray(record["boxes"]))
    truth["motion"] = geo.grid(np.asarray(record["motion"], dtype=bool))
    for key in ("actor", "distractors"):
        if key in record:
            truth[key] = geo.grid(np.asarray(record[key], dtype=bool))
    truth.pop("flow", None)
    return truth


def _explain(args) -> int:
    from jaxvx import checkpoints, data, io
    from jaxvx.explain import LRP_METHODS, explain_clip, write_outputs

    card = checkpoints.load_card(args.checkpoint)
    t_model = int(card["input_shape"][0])
    ground_truth = None
    if args.video is None:
        config = _card_synthetic_config(card)
        source = data.synthetic("test", num_clips=args.index + 1, **config)
        record = source[args.index]
        frames, ground_truth, fps = record["video"], _truth_on_model_grid(record, card), 8.0
        what = f"synthetic test clip #{args.index} ({source.class_names[record['label']]})"
        clip = {"source": repr(source), "index": args.index}
    else:
        info = io.video_info(args.video)
        video = io.read_video(args.video, max_frames=io.snippet_span(t_model, args.step, args.offset))
        indices = io.snippet_indices(len(video), t_model, args.step, args.offset, pad=args.pad)
        frames, fps = video[indices], info.fps or 8.0
        what = f"{args.video} frames {indices.tolist()}"
        clip = {"path": os.path.abspath(args.video), "frames": indices.tolist(), "step": args.step,
                "offset": args.offset, "pad": args.pad}
    result = explain_clip(args.checkpoint, frames, method=args.method, target=args.target,
                          selective_sigma=None if args.selective <= 0 else args.selective,
                          ground_truth=ground_truth, clip=clip)
    paths = write_outputs(result, args.out, fps=fps)
    n = result.numbers
    ratio = n["relevance_sum_over_logit"]
    # a sum-decomposition of the logit (LRP) is checked by this ratio; other methods' maps have no such sum
    conservation = ("" if args.method not in LRP_METHODS else
                    f"; relevance sum / logit = {ratio if ratio is None else round(ratio, 4)}")
    print(f"{what}: predicted {n['predicted']['name']} (p={n['predicted']['probability']:.3f}); "
          f"{args.method} took {n['seconds']['explanation'] * 1e3:.1f} ms "
          f"({n['seconds']['ratio']:.1f}x the forward pass){conservation}")
    print("  top 5: " + ", ".join(f"{c['name']} {c['probability']:.3g}" for c in n["top5"]))
    if "ground_truth" in n:
        for key, value in n["ground_truth"].items():
            if isinstance(value, dict):  # NaN: undefined, e.g. the motion precision of an empty selection
                print(f"  {key}: " + ", ".join(f"{k} {v:.3f}" if v == v else f"{k} undefined (empty map)"
                                               for k, v in value.items()))
    for kind, path in paths.items():
        print(f"  wrote {kind}: {path}")
    return 0


def _folder_source(where: str, card):
    """A folder data set labelled in the checkpoint's classes when its class folders name them all (a folder of
    Kinetics clips for the I3D); otherwise labelled by its own sorted folders, as :func:`jaxvx.data.folder` does,
    with a note on stderr when the checkpoint has class names (its accuracy is then against the folder order)."""
    from jaxvx import data

    names = card.get("class_names")
    if names:
        try:
            return data.folder(where, class_names=names)
        except ValueError as err:
            if "match none" not in str(err):
                raise
            print(f"jaxvx run: {err}; the folder's own classes label the clips, so the accuracy compares the "
                  "model's class indices with the folder's order", file=sys.stderr)
    return data.folder(where)


_RUN_KEYS = ("checkpoint", "method", "data", "split", "num_clips", "num_frames", "title_frames", "action_frames",
             "batch_size", "selective", "out", "limit", "step", "offset", "pad", "metrics", "save_maps", "resume")


def _values(value, name: str) -> list:
    """A flag or TOML value that may hold several: ``"1/4,1/2,1"``, ``[0, 4]``, ``2`` -> a list of its items."""
    items = value if isinstance(value, list) else [v.strip() for v in str(value).split(",")]
    items = [v for v in items if v != ""]
    if not items:
        raise ValueError(f"{name} needs at least one value, got {value!r}")
    return items


def _offsets(value) -> list[int]:
    out = []
    for v in _values(value, "offset"):
        ok = is_int(v, numpy=False) or isinstance(v, str) and v.lstrip("+").isdigit()
        if not ok:
            raise ValueError(f"offset must be one or several ints >= 0 (comma-separated), got {value!r}")
        out.append(int(v))
    return out


def _run(args) -> int:
    import tomllib

    import jax

    from jaxvx import checkpoints, data, pipeline
    from jaxvx.explain import build_method
    from jaxvx.transforms import selective, sum_channels

    if args.distributed or args.coordinator or args.num_processes or args.process_id is not None:
        pipeline.initialize(args.coordinator, args.num_processes, args.process_id)
    config = {}
    if args.config is not None:
        with open(args.config, "rb") as f:
            config = tomllib.load(f)
        unknown = sorted(set(config) - set(_RUN_KEYS))
        if unknown:
            raise ValueError(f"{args.config}: unknown keys {unknown}; known keys are {list(_RUN_KEYS)}")
    given = {key: getattr(args, key) for key in _RUN_KEYS if getattr(args, key) is not None}
    settings = {**args.run_defaults, **config, **given}  # flags given win over the file, the file over the defaults
    model, variables, card = checkpoints.load(settings["checkpoint"])
    t_model = int(card["input_shape"][0])
    kind, _, where = str(settings["data"]).partition(":")
    # how to render synthetic clips (e.g. longer ones, for steps > 1)
    rendering = {k: settings[k] for k in ("num_frames", "title_frames", "action_frames") if settings[k] is not None}
    if rendering and kind != "synthetic":
        raise ValueError(f"{', '.join(rendering)} render synthetic clips; data {settings['data']!r} is not synthetic")
    if kind == "synthetic":
        config = {**_card_synthetic_config(card), **rendering}
        source = data.synthetic(settings["split"], num_clips=settings["num_clips"], **config)
    elif kind == "folder":
        source = _folder_source(where, card)
    elif kind == "tfds":
        source = data.tfds(where, settings["split"])
    else:
        raise ValueError(f"data must be synthetic, folder:PATH or tfds:NAME, got {settings['data']!r}")
    methods = {}
    for name in [m.strip() for m in str(settings["method"]).split(",") if m.strip()]:
        method, model_m, variables_m = build_method(name, model, variables, card)
        if model_m is not model:  # LRP folds BatchNorm: same logits, so the folded model serves every method
            model, variables = model_m, variables_m
        methods[name] = method
    transforms = [sum_channels()]
    if settings["selective"] and settings["selective"] > 0:
        transforms.append(selective(settings["selective"]))
    metrics = settings["metrics"]
    metrics = "auto" if metrics in (None, "auto") else [m.strip() for m in str(metrics).split(",")]
    steps, offsets = _values(settings["step"], "step"), _offsets(settings["offset"])
    sampling = pipeline.Sampling(length=t_model, pad=settings["pad"])
    common = dict(variables=variables, transforms=transforms, metrics=metrics, batch_size=settings["batch_size"],
                  preprocess=dict(card.get("preprocess", {})), limit=settings["limit"],
                  output=pipeline.OutputOptions(save_maps=settings["save_maps"], provenance={
                      "checkpoint": str(settings["checkpoint"]), "checkpoint_sha256": card.get("sha256"),
                      "data": str(settings["data"])}))
    out = settings["out"]
    if len(steps) == 1 and len(offsets) == 1:
        results = pipeline.run(source, model, methods, out=out, resume=settings["resume"],
                               sampling=dataclasses.replace(sampling, step=steps[0], offset=offsets[0]), **common)
        files = ", ".join(p.name for p in pipeline.results_paths(out)) if out else ""
        if results.markdown:
            print(results.markdown)
            if out:
                print(f"rows: {out} ({files}), summary: {out}/{pipeline.SUMMARY_FILE}")
        else:  # another process than 0 of several: process 0 summarises every process's rows
            print(f"process {jax.process_index()} of {jax.process_count()}: {results.computed} clips computed, "
                  f"rows in {out}; process 0 writes the summary")
        return 0
    from jaxvx import viz

    swept = pipeline.sweep(source, model, methods, steps=steps, offsets=offsets, out=out, resume=settings["resume"],
                           sampling=sampling, **common)
    print(swept.markdown)
    if out:
        figure = viz.save_figure(f"{out}/sweep.png", viz.sweep_figure(
            swept, title=f"{settings['checkpoint']}", chance=1 / len(card["class_names"]) if card.get("class_names")
            else None, training_step=config["num_frames"] / t_model if kind == "synthetic" else 1), also=("svg",))[0]
        print(f"runs: {out}/step-*-offset-*/, table: {out}/{pipeline.SWEEP_FILE} and {out}/sweep.json, "
              f"figure: {figure}")
    return 0


def _summarize(args) -> int:
    from jaxvx import pipeline

    results = pipeline.summarize_folder(args.out)
    print(results.markdown)
    print(f"{len(results.rows)} rows from {', '.join(p.name for p in pipeline.results_paths(args.out))}; summary: "
          f"{args.out}/{pipeline.SUMMARY_FILE}")
    return 0


def _stream(args) -> int:
    from jaxvx.explain import stream

    r = stream(args.checkpoint, args.source, args.out, method=args.method, max_frames=args.max_frames,
               selective_sigma=None if args.selective <= 0 else args.selective)
    print(f"wrote {r['out']}: {r['frames']} frames, {r['explained']} explained windows in {r['seconds']:.1f} s "
          f"= {r['fps']:.1f} frames/s")
    return 0


def _methods(args) -> int:
    """``jaxvx methods``: the registry as a table, one method a line."""
    from jaxvx.methods import REGISTRY

    rows = [("method", "family", "needs", "map", "conserves", "details", "")]
    for name, e in REGISTRY.items():
        rows.append((name, e.family, ",".join(e.needs) or "-", "[B,T,H,W,C]" if e.channels == "input" else
                     "[B,T,H,W,1]", "yes" if e.conserves else "-", "yes" if e.details else "-", e.summary))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:6], widths)) + "  " + row[6])
    return 0


def _without_defaults(parser: argparse.ArgumentParser, keys) -> dict:
    """Sets the defaults of ``parser``'s options ``keys`` to ``None`` and returns the ones they had, ``{dest:
    default}``: an option left out then reads ``None``, so that one given equal to its default still overrides a
    TOML file's value."""
    defaults = {a.dest: a.default for a in parser._actions if a.dest in keys}
    parser.set_defaults(**dict.fromkeys(defaults))
    return defaults


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxvx", description="Explain video classifiers with JAX.")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="the synthetic benchmark and datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    preview = data_sub.add_parser("preview", help="draw a contact sheet of synthetic clips with their ground truth")
    preview.add_argument("--out", default="preview.png", help="PNG to write (default: preview.png)")
    preview.add_argument("--num", type=int, default=10, help="clips, one row each (default: 10)")
    preview.add_argument("--columns", type=int, default=8, help="frames per row (default: 8)")
    _synthetic_options(preview)
    preview.set_defaults(func=_preview)
    build = data_sub.add_parser("build", help="build the synthetic benchmark as a TFDS dataset (array_record)")
    build.add_argument("--config", default="motion_16x64", help="builder config (default: motion_16x64)")
    build.add_argument("--data-dir", default=None, help="TFDS data dir (default: TFDS's, ~/tensorflow_datasets)")
    build.set_defaults(func=_build)

    sub.add_parser("train", help="train a model on the synthetic benchmark (jaxvx train -h)", add_help=False)

    from jaxvx.explain import METHODS

    listing = sub.add_parser("methods", help="list the methods by name: what each needs, its map, whether it "
                                             "conserves the logit")
    listing.set_defaults(func=_methods)

    explain = sub.add_parser("explain", help="predict and explain one snippet; write overlay, sheet, plot, JSON")
    explain.add_argument("video", nargs="?", default=None,
                         help="a video file (default: a synthetic test clip, with ground truth)")
    explain.add_argument("--checkpoint", default="c3d-small", help="shipped name or path (default: c3d-small)")
    explain.add_argument("--method", default="deep_taylor", choices=list(METHODS))
    explain.add_argument("--selective", type=float, default=4.0, metavar="SIGMA",
                         help="selective relevance threshold in standard deviations (0: off; default 4)")
    explain.add_argument("--target", type=int, default=None, help="class to explain (default: the predicted one)")
    explain.add_argument("--index", type=int, default=0, help="synthetic test clip index (default 0)")
    explain.add_argument("--step", default="1", help="snippet step, a rational such as 2 or 1/4 (default 1)")
    explain.add_argument("--offset", type=int, default=0, help="first frame of the snippet (default 0)")
    explain.add_argument("--pad", default="loop", choices=["loop", "edge", "error"])
    explain.add_argument("--out", default="jaxvx-explain", help="output folder (default: jaxvx-explain)")
    explain.set_defaults(func=_explain)

    run = sub.add_parser("run", help="explain and score a whole dataset (pipeline): results.jsonl, summary.md")
    run.add_argument("config", nargs="?", default=None, help="a TOML file with any of the options below")
    run.add_argument("--checkpoint", default="c3d-small")
    run.add_argument("--method", default="deep_taylor", help=f"one or several, comma-separated, of {list(METHODS)}")
    run.add_argument("--data", default="synthetic", help="synthetic (default), folder:PATH or tfds:NAME")
    run.add_argument("--split", default="test")
    run.add_argument("--num-clips", type=int, default=200, help="synthetic clips (default 200)")
    run.add_argument("--num-frames", type=int, default=None,
                     help="synthetic clip length (default: the model's input length; longer for steps > 1)")
    run.add_argument("--title-frames", type=int, default=None,
                     help="synthetic clips open with a title card of this many frames (Anders et al.'s lookahead)")
    run.add_argument("--action-frames", type=int, default=None,
                     help="synthetic clips confine the action to a segment of this many frames (Li et al.)")
    run.add_argument("--limit", type=int, default=None, help="only the first N clips")
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--selective", type=float, default=0.0, metavar="SIGMA", help="filter maps (0: off)")
    run.add_argument("--metrics", default="auto", help="auto, or comma-separated names (see jaxvx.pipeline.run)")
    run.add_argument("--step", default="1", help="snippet step, a rational such as 2 or 1/4; several, comma-separated "
                     "(1/16,1/8,...,32), run a sweep: one run per setting, sweep.md and sweep.png (default 1)")
    run.add_argument("--offset", default="0", help="first frame of the snippets; several, comma-separated, run a "
                     "sweep (default 0)")
    run.add_argument("--pad", default="loop", choices=["loop", "edge", "error"])
    run.add_argument("--save-maps", action="store_true")
    run.add_argument("--no-resume", dest="resume", action="store_false")
    run.add_argument("--out", default="jaxvx-run")
    run.set_defaults(func=_run, run_defaults=_without_defaults(run, _RUN_KEYS))
    several = run.add_argument_group("several processes (docs/scaling.md): start one jaxvx run per host, or several "
                                     "on one machine, with the same options")
    several.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                         help="process 0's address, reachable by every process (jax.distributed)")
    several.add_argument("--num-processes", type=int, default=None, metavar="N")
    several.add_argument("--process-id", type=int, default=None, metavar="I", help="0 .. N-1")
    several.add_argument("--distributed", action="store_true",
                         help="take the three from the cluster (TPU metadata, SLURM, Open MPI, JAX_* variables)")

    summary = sub.add_parser("summarize", help="merge the results files of a run folder (one per process) and "
                                               "write its summary")
    summary.add_argument("out", help="the run's output folder")
    summary.set_defaults(func=_summarize)

    streaming = sub.add_parser("stream", help="explain a sliding window of frames as they arrive (Hiley et al.)")
    streaming.add_argument("source", help="a video file, or a camera index such as 0")
    streaming.add_argument("--checkpoint", default="c3d-small")
    streaming.add_argument("--method", default="deep_taylor", choices=list(METHODS))
    streaming.add_argument("--selective", type=float, default=0.0, metavar="SIGMA")
    streaming.add_argument("--max-frames", type=int, default=None)
    streaming.add_argument("--out", default="stream.mp4")
    streaming.set_defaults(func=_stream)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train":
        from jaxvx.train import cli as train_cli

        return train_cli(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    from jaxvx._distributed import PeerLost, Terminated

    try:
        return args.func(args)
    except (ValueError, OSError, KeyError) as error:
        print(f"jaxvx: error: {error}", file=sys.stderr)
        return 2
    except (PeerLost, Terminated) as error:
        print(f"jaxvx: stopped: {error}", file=sys.stderr)
        import jax

        if jax.process_count() > 1:  # JAX's shutdown barrier would wait for the lost peer: leave at once
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(3)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
