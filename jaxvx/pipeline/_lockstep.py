"""Several processes running the pipeline's step in lockstep, so that shares of unequal size never hang.

Before each step every process sends what it holds (how many clips, their shapes, an error) to every other
(:func:`jaxvx._distributed.allgather_json`); all dispatch the step (one with no clips left on zeros of the agreed
shapes) until none holds clips. An error of any process stops every process with it.
"""

from __future__ import annotations

import itertools
import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jaxvx.pipeline._clips import Clip


def template_of(clip: Clip) -> dict:
    """The shapes of a clip's arrays, as JSON: what another process needs to send zeros of the same shapes."""
    return {"video": list(clip.video.shape),
            "gt": [[k, list(v.shape), v.dtype.str] for k, v in sorted(clip.gt.items())]}


def lockstep(batches, dispatch, finish, process_index: int) -> None:
    """Run the step on every process in step: before each step the processes exchange what they hold (clips, their
    shapes, an error), every process dispatches (zeros where it has no clips left) until none has clips, and an
    error of any process (a clip that does not fit, NaN logits) stops every process with that error."""
    from jaxvx._distributed import allgather_json

    error = None
    for step_index in itertools.count():
        item = None
        if error is None:
            item = next(batches, None)
            if isinstance(item, ValueError):
                error, item = str(item), None
        plan = allgather_json({"n": len(item or ()), "template": template_of(item[0]) if item else None,
                               "error": error})
        errors = [f"process {q}: {p['error']}" for q, p in enumerate(plan) if p["error"]]
        if errors:
            finish()
            raise ValueError("; ".join(errors))
        shapes = {json.dumps(p["template"]) for p in plan if p["n"]}
        if not shapes:
            return
        if len(shapes) > 1:
            finish()
            detail = "; ".join(f"process {q}: {p['template']}" for q, p in enumerate(plan) if p["n"])
            raise ValueError("with several processes every batch must have one shape (preprocess the clips to one "
                             f"size and give them one number of frames): {detail}")
        template = next(p["template"] for p in plan if p["n"])
        try:
            dispatch(item or [], template, step_index)
        except ValueError as err:  # from writing the batch before (NaN logits): every process stops at the next step
            error = str(err)

