"""The option records of :func:`jaxvx.pipeline.run` and :func:`jaxvx.pipeline.sweep`: small frozen dataclasses that
check their fields when they are made.

- :class:`Sampling`: which frames of a clip the model sees (snippet or segment sampling).
- :class:`MetricOptions`: the settings of the built-in metrics (pointing game, motion precision, key frames,
  deletion / insertion).
- :class:`OutputOptions`: what a run writes besides its rows: maps, the summary, the provenance in the header.

Each field's check raises a ``ValueError`` (or ``TypeError`` for a value of the wrong kind) that names the field,
what it must be and the value given, e.g. ``length must be an int >= 1, got 0``. Change a record with
:func:`dataclasses.replace`, which checks again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from fractions import Fraction

from jaxvx._checks import check_float, check_int
from jaxvx.io import PAD_MODES, step_fraction

__all__ = ["MetricOptions", "OutputOptions", "POINTING_SHAPES", "SAMPLING_MODES", "Sampling", "check_record"]

#: Sampling modes: strided snippets (:func:`jaxvx.io.snippet_indices`) or one frame per equal segment
#: (:func:`jaxvx.io.segment_indices`).
SAMPLING_MODES = ("snippet", "segment")
#: The shapes :func:`jaxvx.metrics.spatial_pointing_game` takes (tests/test_pipeline_options.py holds it to them).
POINTING_SHAPES = ("disk", "box")


def _check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def _check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _check_mapping(name: str, value) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be None or a dict, got {type(value).__name__} {value!r}")
    return dict(value)


def check_record(name: str, value, kind: type):
    """``value`` if it is a ``kind`` record, else a TypeError naming the argument, the record type and the value."""
    if not isinstance(value, kind):
        raise TypeError(f"{name} must be a jaxvx.pipeline.{kind.__name__}, got {type(value).__name__} {value!r}")
    return value


def _set(record, name: str, value) -> None:
    object.__setattr__(record, name, value)  # a frozen dataclass's own normalisation of a checked field


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Which frames of a clip the model sees.

    Attributes:
        length: frames per clip, T of the model's input ``[B, T, H, W, C]``, an int >= 1. Default 16.
        step: the snippet's stride in frames: an int, a float, a string such as ``"1/4"`` or a Fraction, exact as
            a rational (:func:`jaxvx.io.step_fraction`; steps below 1 repeat frames). Default 1.
        offset: the snippet's first frame, an int >= 0. Default 0.
        pad: what a snippet that runs past the clip's end takes: ``"loop"`` (default), ``"edge"`` or ``"error"``
            (:func:`jaxvx.io.snippet_indices`).
        mode: ``"snippet"`` (default: frames ``offset + floor(i * step)``, ``i < length``) or ``"segment"`` (the
            clip cut into ``length`` equal segments, the centre frame of each, :func:`jaxvx.io.segment_indices`;
            ``step``, ``offset`` and ``pad`` unused).
    """

    length: int = 16
    step: int | float | str | Fraction = 1
    offset: int = 0
    pad: str = "loop"
    mode: str = "snippet"

    def __post_init__(self):
        _set(self, "length", check_int("length", self.length, 1))
        step_fraction(self.step)  # the step keeps the spelling it was given (the results header records it)
        _set(self, "offset", check_int("offset", self.offset, 0))
        _check_choice("pad", self.pad, PAD_MODES)
        _check_choice("mode", self.mode, SAMPLING_MODES)


@dataclasses.dataclass(frozen=True)
class MetricOptions:
    """The settings of the built-in metrics (:func:`jaxvx.pipeline.run`'s ``metrics``).

    Attributes:
        tolerance: the spatial pointing game's tolerance in pixels of the model's grid, a number >= 0. Default 7.
        pointing_shape: ``"disk"`` (default: some box pixel within ``tolerance`` of the maximum, TorchRay's game) or
            ``"box"`` (the maximum in the box grown by ``tolerance``, Li et al.'s), see
            :func:`jaxvx.metrics.spatial_pointing_game`.
        flow_threshold: ``motion_precision_flow``'s motion threshold in pixels per frame, a number >= 0.
            Default 0.5.
        perturbation_steps: deletion / insertion curve points, None (default: one per frame or per voxel
            fraction as :func:`jaxvx.metrics.perturbation_curve` chooses) or an int >= 1.
        perturbation_baseline: the value deleted voxels take (in the model's input units), a finite number.
            Default 0.
        flow_options: keyword arguments of :func:`jaxvx.flow.farneback` for ``motion_precision_flow`` (None: its
            defaults).
        keyframe_options: keyword arguments of :func:`jaxvx.metrics.keyframes` for ``keyframe_correlation``
            (None: the 30 % detector).

    The first five are traced into the run's compiled step (:meth:`in_step`); the two option dicts are used on
    the host, where the flow and the key frames of the sampled frames are computed.
    """

    tolerance: float = 7.0
    pointing_shape: str = "disk"
    flow_threshold: float = 0.5
    perturbation_steps: int | None = None
    perturbation_baseline: float = 0.0
    flow_options: Mapping | None = None
    keyframe_options: Mapping | None = None

    def __post_init__(self):
        _set(self, "tolerance", check_float("tolerance", self.tolerance, 0.0))
        _check_choice("pointing_shape", self.pointing_shape, POINTING_SHAPES)
        _set(self, "flow_threshold", check_float("flow_threshold", self.flow_threshold, 0.0))
        if self.perturbation_steps is not None:
            _set(self, "perturbation_steps", check_int("perturbation_steps", self.perturbation_steps, 1))
        _set(self, "perturbation_baseline", check_float("perturbation_baseline", self.perturbation_baseline))
        _set(self, "flow_options", _check_mapping("flow_options", self.flow_options))
        _set(self, "keyframe_options", _check_mapping("keyframe_options", self.keyframe_options))

    def in_step(self) -> tuple[tuple[str, object], ...]:
        """``(("tolerance", 7.0), ("pointing_shape", "disk"), ...)``: the five fields the compiled step closes over,
        as ``(name, value)`` pairs (hashable: they key the cache of compiled steps)."""
        names = ("tolerance", "pointing_shape", "flow_threshold", "perturbation_steps", "perturbation_baseline")
        return tuple((name, getattr(self, name)) for name in names)

    __hash__ = None  # the option dicts make it unhashable; in_step() is the hashable part


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """What a run writes besides its rows (:func:`jaxvx.pipeline.run`'s ``out`` and ``resume`` say where, and
    whether an earlier results file is continued).

    Attributes:
        save_maps: also write each clip's final map as ``out/maps/<method>/<clip index>.npy`` (float32). Default
            False.
        summary: summarise the results file at the end (bootstrap intervals; ``summary.md``, ``summary.json``).
            False skips it (``Results.summary`` empty, ``markdown`` ""), for a caller that runs again before it
            reads one, as :func:`jaxvx.pipeline.sweep` does between chunks. Default True.
        confidence: the level of the summary's percentile-bootstrap intervals, in (0, 1). Default 0.95.
        num_classes: the classes of the per-class pointing-game mean, an int >= 1; None (default): the model's
            number of outputs.
        provenance: what else identifies the run, recorded in the results header and checked on resume, e.g.
            ``{"checkpoint": name, "checkpoint_sha256": ...}`` (``jaxvx run`` passes the checkpoint's); its
            ``"checkpoint"`` names the model in errors. None: nothing else.
    """

    save_maps: bool = False
    summary: bool = True
    confidence: float = 0.95
    num_classes: int | None = None
    provenance: Mapping | None = None

    def __post_init__(self):
        _check_bool("save_maps", self.save_maps)
        _check_bool("summary", self.summary)
        confidence = check_float("confidence", self.confidence)
        if not 0 < confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence!r}")
        _set(self, "confidence", confidence)
        if self.num_classes is not None:
            _set(self, "num_classes", check_int("num_classes", self.num_classes, 1))
        _set(self, "provenance", _check_mapping("provenance", self.provenance))

    __hash__ = None  # provenance is a dict
