"""Training recipes: everything that defines a trained checkpoint (architecture, benchmark, hyper-parameters).

A :class:`Recipe` is a frozen record; :data:`RECIPES` holds the built-in ones by name (the shipped checkpoints),
:func:`get_recipe` looks one up.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

__all__ = ["Recipe", "RECIPES", "recipes", "get_recipe", "KINETICS_MEAN", "KINETICS_STD"]

KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Everything that defines a trained checkpoint.

    Attributes:
      name: checkpoint name (the files are ``NAME.msgpack`` / ``NAME.json``).
      model: :func:`jaxvx.models.create` registry name; ``model_kwargs`` its constructor kwargs (besides
        ``num_classes``, which comes from the data).
      variant, num_frames, height, width, data_kwargs, data_seed: arguments of :func:`jaxvx.data.synthetic`; the
        model's input is ``[num_frames, height, width, 3]``.
      render_scale: clips are rendered at ``render_scale`` times the input size and brought down to it by
        :func:`jaxvx.io.preprocess`'s antialiased resize (the card's ``preprocess``), so that the model sees what a
        user sees when they preprocess the benchmark's clips as the card says. At 32 x 32 the renderer's point
        sampling aliases the actor's checker texture into spurious motion (a rotating "T" then looks like it turns
        either way); rendering at 64 x 64 and resizing removes it. The resized clips are stored rounded to uint8.
      snippet_offsets: when ``k > 0``, clips are rendered ``num_frames + k`` frames long and each contributes the
        ``num_frames``-frame snippet starting at its own offset, drawn uniformly from ``[0, k]`` by
        ``numpy.random.default_rng([data_seed, split, index])`` (split 0 train, 1 test, 2 curriculum): a model
        trained on snippets cut at random places in longer clips, as C3D was trained on Sports-1M. With
        ``data_kwargs={"title_frames": k}`` some snippets open with up to ``k`` title-card frames and some have none.
      train_clips, test_clips: sizes of the in-memory training set and of the evaluated test split.
      steps, batch_size, optimizer ("adamw" | "sgd"), lr (peak), weight_decay, warmup_steps, momentum: optimisation.
      seed: initialisation, batch order and dropout.
      kernel_gain: every ``kernel`` parameter (convolutions and dense layers) is multiplied by this factor after
        the model's own initialisation. ``sqrt(2)`` turns Flax's default LeCun-normal init into He init, which
        keeps the signal's variance through deep ReLU stacks without normalisation (C3D): with the default the
        logits of an 8-conv C3D hardly depend on the input and Adam drives the network to a constant output.
      mean, std: per-channel normalisation of ``v / 255``.
      zero_init: parameter paths (``"/"``-joined, e.g. ``"fc8"``) whose values start at zero: a zero classifier
        head gives zero initial logits, so the first updates do not shrink the whole network to silence random
        logits (the plateau of un-normalised ReLU networks).
      init_from, init_modules: start the parameters named by ``init_modules`` (top-level submodule names, e.g.
        ``("cnn",)``) from those of the checkpoint ``init_from`` (a shipped name or a path), the rest from the
        model's own initialisation: a pretrained backbone, as Li et al. start their VGG16-LSTM from an ImageNet
        VGG16. Shapes must match (a ``ValueError`` names the parameter and both shapes otherwise).
      curriculum_steps, curriculum_data: during the first ``curriculum_steps`` steps the batches come from a second
        training set of ``min(train_clips, curriculum_steps * batch_size)`` clips rendered with ``data_kwargs``
        updated by ``curriculum_data`` (e.g. ``{"distractors": 0}``: the actor alone, whose motion a network
        finds many times faster than among distractors that move alike); afterwards from the main training set.
      trained: False for a random-initialisation baseline (``steps`` must then be 0).
      notes: free text copied into the card.
    """

    name: str
    model: str
    model_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    variant: str = "motion"
    num_frames: int = 16
    height: int = 64
    width: int = 64
    data_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    data_seed: int = 0
    render_scale: int = 1
    snippet_offsets: int = 0
    train_clips: int = 2000
    test_clips: int = 500
    steps: int = 1000
    batch_size: int = 32
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 50
    momentum: float = 0.9
    seed: int = 0
    kernel_gain: float = 1.0
    zero_init: tuple[str, ...] = ()
    init_from: str = ""
    init_modules: tuple[str, ...] = ()
    curriculum_steps: int = 0
    curriculum_data: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    mean: tuple[float, ...] = KINETICS_MEAN
    std: tuple[float, ...] = KINETICS_STD
    trained: bool = True
    notes: str = ""

    def to_dict(self) -> dict:
        """JSON-able dict of all fields (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["model_kwargs"] = dict(self.model_kwargs)
        d["data_kwargs"] = dict(self.data_kwargs)
        d["curriculum_data"] = dict(self.curriculum_data)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["zero_init"] = list(self.zero_init)
        d["init_modules"] = list(self.init_modules)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Recipe":
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - fields)
        if unknown:
            raise ValueError(f"recipe config has unknown keys {unknown}; known keys are {sorted(fields)}")
        d = dict(d)
        for k in ("mean", "std"):
            if k in d:
                d[k] = tuple(float(v) for v in d[k])
        for k in ("zero_init", "init_modules"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def validate(self) -> "Recipe":
        """Raise ``ValueError`` naming the first out-of-range field; return self."""
        for k in ("num_frames", "height", "width", "train_clips", "test_clips", "batch_size", "render_scale"):
            if int(getattr(self, k)) < 1:
                raise ValueError(f"recipe {self.name!r}: {k} must be >= 1, got {getattr(self, k)}")
        if int(self.snippet_offsets) < 0:
            raise ValueError(f"recipe {self.name!r}: snippet_offsets must be >= 0, got {self.snippet_offsets}")
        if self.steps < 0:
            raise ValueError(f"recipe {self.name!r}: steps must be >= 0, got {self.steps}")
        if self.trained and self.batch_size > self.train_clips:
            raise ValueError(
                f"recipe {self.name!r}: batch_size ({self.batch_size}) must not exceed train_clips ({self.train_clips})"
            )
        if not self.trained and self.steps != 0:
            raise ValueError(f"recipe {self.name!r} is an untrained baseline: steps must be 0, got {self.steps}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"recipe {self.name!r}: optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if self.curriculum_steps < 0 or (self.curriculum_steps and not self.curriculum_data):
            raise ValueError(f"recipe {self.name!r}: curriculum_steps must be >= 0 and come with curriculum_data")
        if bool(self.init_from) != bool(self.init_modules):
            raise ValueError(f"recipe {self.name!r}: init_from and init_modules come together, got "
                             f"{self.init_from!r} and {self.init_modules!r}")
        if not self.kernel_gain > 0:
            raise ValueError(f"recipe {self.name!r}: kernel_gain must be > 0, got {self.kernel_gain}")
        if not self.lr > 0:
            raise ValueError(f"recipe {self.name!r}: lr must be > 0, got {self.lr}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"recipe {self.name!r}: mean and std must be 3 values (std > 0), got {self.mean}, {self.std}")
        return self


_SQRT2 = 1.4142135623730951
# C3D at width 1/8 on 16 x 32 x 32 clips (rendered at 64 x 64 and resized, see Recipe.render_scale): He-scaled init (no normalisation layers), no dropout, a short curriculum
# on clips without distractors (the actor's motion alone), then the benchmark's own clips (two distractors).
_C3D = dict(
    model="c3d", model_kwargs=dict(width=0.125, dropout=0.0), variant="motion", num_frames=16, height=32, width=32,
    render_scale=2, data_kwargs=dict(flow=False), kernel_gain=_SQRT2, train_clips=8000, test_clips=500, batch_size=8, lr=1e-3,
    warmup_steps=30, steps=4000, curriculum_steps=300, curriculum_data=dict(distractors=0),
)
_C3D_MODULES = ("conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b", "fc6", "fc7", "fc8")
_C3D_UNTRAINED = {**_C3D, "steps": 0, "curriculum_steps": 0, "curriculum_data": {}}

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in [
        Recipe(name="c3d-small", **_C3D),
        Recipe(
            name="c3d-small-untrained",
            **_C3D_UNTRAINED,
            trained=False,
            notes=(
                "Untrained baseline: the c3d-small architecture and initialisation (same seed, same He-scaled "
                "init), no training: the DTD-u / randomised-model baseline of Anders et al. Its accuracy is chance "
                "level by design."
            ),
        ),
        Recipe(
            name="c3d-small-titles",
            **{**_C3D, "data_kwargs": dict(flow=False, title_frames=8), "steps": 1500, "lr": 5e-4,
               "curriculum_steps": 0, "curriculum_data": {}},
            snippet_offsets=8,
            init_from="c3d-small",
            init_modules=_C3D_MODULES,
            notes=(
                "c3d-small trained on: 16-frame snippets cut at random offsets (0 to 8) from 24-frame clips that "
                "open with an 8-frame title card, so that the model sees snippets with 0 to 8 title frames, as C3D "
                "saw the title cards of Sports-1M videos. Every parameter starts from c3d-small's: with c3d-small's "
                "recipe from scratch the loss stayed at 2.30 (chance) for 2243 steps. For Anders et al.'s lookahead "
                "L, whose sign on c3d-small (never shown a title card) may be the clips' rather than the model's."
            ),
        ),
        Recipe(
            name="c3d-small-cue",
            **{**_C3D, "data_kwargs": dict(flow=False, context_cue=1.0)},
            notes=(
                "c3d-small's recipe with a static context cue: in every training clip a badge whose colour is the "
                "class's (random in the test split), a known spatial bias for Hiley et al.'s question whether "
                "selective relevance removes it; its test accuracy is on clips whose badge is random. Two weaker "
                "cues gave no biased model: at a rate of 0.8 the loss stayed at 2.30 (chance) for 1700 steps, and "
                "c3d-small trained on for 1500 steps with the cue (rate 0.8 or 1.0) kept 89.6 % test accuracy and "
                "followed a mismatched badge in 0.6 % of the clips: it ignored the cue."
            ),
        ),
        Recipe(name="r2plus1d-small", model="r2plus1d18", model_kwargs=dict(width=0.125), variant="motion",
               height=32, width=32, render_scale=2, data_kwargs=dict(flow=False), steps=4000, batch_size=8, lr=3e-3,
               train_clips=8000, warmup_steps=30, curriculum_steps=300, curriculum_data=dict(distractors=0),
               notes=("lr 3e-3 (BatchNorm): after 1200 steps 69.8 % test against 52.6 % with c3d-small's 1e-3.")),
        Recipe(name="cnnlstm-small", model="cnnlstm", model_kwargs=dict(backbone="small", hidden=64),
               variant="walk_run", height=32, width=32, data_kwargs=dict(flow=False), steps=1500, batch_size=8,
               lr=1e-3, train_clips=4000, init_from="lstm-small", init_modules=("cnn",),
               notes=("Per-frame CNN started from lstm-small's (a pretrained backbone, as Li et al. start from an "
                      "ImageNet VGG16); LSTM and classifier from scratch. From scratch the time-averaged logits "
                      "learned walk vs run too slowly for 20 minutes on 2 CPU cores (chance after 1200 steps), and "
                      "on the ten-class 'motion' variant 16 % after 600 steps.")),
        Recipe(name="lstm-ica-small", model="lstm",
               model_kwargs=dict(cell="input_cell_attention", hidden=32, frontend="small"), variant="walk_run",
               height=32, width=32, data_kwargs=dict(flow=False), steps=1500, batch_size=8, lr=1e-3,
               train_clips=4000, init_from="lstm-small", init_modules=("cnn",),
               notes=("Per-frame CNN started from lstm-small's (the same frame features for the LSTM and the "
                      "input-cell attention LSTM, as in Jayawardhana et al.'s comparison); attention, LSTM and "
                      "classifier from scratch. From scratch it reached 74.2 % after 2000 steps (405 s).")),
        Recipe(name="lstm-small", model="lstm", model_kwargs=dict(cell="lstm", hidden=32, frontend="small"),
               variant="walk_run", height=32, width=32, data_kwargs=dict(flow=False), steps=2000, batch_size=8,
               lr=1e-3, train_clips=4000),
    ]
}


def recipes() -> list[str]:
    """Sorted names of the built-in recipes."""
    return sorted(RECIPES)


def get_recipe(name: str) -> Recipe:
    """The built-in recipe called ``name``; ``ValueError`` listing the recipes if there is none."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: available recipes are {recipes()}")
    return RECIPES[name]
