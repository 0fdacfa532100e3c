"""``jaxvx train``: the command line over :func:`jaxvx.train.train`."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from jaxvx.train._loop import train
from jaxvx.train._recipes import RECIPES, recipes

__all__ = ["cli"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jaxvx train",
        description="Train a model recipe on the synthetic benchmark and write OUT/NAME.msgpack + OUT/NAME.json.",
    )
    p.add_argument("--model", help=f"recipe name, one of {recipes()}")
    p.add_argument("--data", default="synthetic", help="data source (only 'synthetic')")
    p.add_argument("--out", help="output folder for the checkpoint (and the resumable training state)")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int)
    p.add_argument("--optimizer", choices=["adamw", "sgd"])
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--warmup-steps", type=int)
    p.add_argument("--train-clips", type=int)
    p.add_argument("--test-clips", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--checkpoint-every", type=int)
    p.add_argument("--resume", action="store_true", help="continue from OUT/NAME.state.msgpack")
    p.add_argument("--keep-state", action="store_true", help="keep the training state file at the end")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--list", action="store_true", help="list the recipes and exit")
    return p


def cli(argv: Sequence[str] | None = None) -> int:
    """``jaxvx train`` entry point: parse ``argv`` (without the program name), train, print a summary; return the
    exit status (0 ok, 2 bad arguments)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = _parser()
    try:
        a = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    if a.list:
        for name in recipes():
            r = RECIPES[name]
            print(f"{name:24s} {r.model} {dict(r.model_kwargs)} on '{r.variant}' "
                  f"[{r.num_frames}x{r.height}x{r.width}], {r.steps} steps")
        return 0
    if a.model is None or a.out is None:
        p.print_usage(sys.stderr)
        print("jaxvx train: error: --model and --out are required", file=sys.stderr)
        return 2
    if a.data != "synthetic":
        print(f"jaxvx train: error: --data must be 'synthetic', got {a.data!r}", file=sys.stderr)
        return 2
    if a.model not in RECIPES:
        print(f"jaxvx train: error: unknown recipe {a.model!r}: available recipes are {recipes()}", file=sys.stderr)
        return 2
    over = {k: v for k, v in dict(optimizer=a.optimizer, weight_decay=a.weight_decay, warmup_steps=a.warmup_steps,
                                     train_clips=a.train_clips, test_clips=a.test_clips).items() if v is not None}
    try:
        res = train(
            a.model, out=a.out, steps=a.steps, batch_size=a.batch_size, seed=a.seed, lr=a.lr,
            eval_every=a.eval_every, checkpoint_every=a.checkpoint_every, resume=a.resume,
            progress=not a.no_progress, keep_state=a.keep_state, **over,
        )
    except ValueError as e:
        print(f"jaxvx train: error: {e}", file=sys.stderr)
        return 2
    c = res.card
    tr = "n/a" if c["train_accuracy"] is None else f"{c['train_accuracy']:.4f}"
    print(f"wrote {res.checkpoint} ({res.checkpoint.stat().st_size / 1e6:.2f} MB, {c['param_count']} parameters): "
          f"train accuracy {tr}, test accuracy {c['test_accuracy']:.4f} on {c['test_accuracy_clips']} clips, "
          f"{c['wall_time_s']:.1f} s")
    return 0
