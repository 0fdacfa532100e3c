"""jaxvx.pipeline's option records: defaults, the checks of every field (naming it, what it must be and the value),
frozen, re-checked by dataclasses.replace, and refused by run when of another type."""

import dataclasses

import numpy as np
import pytest

from jaxvx import metrics, pipeline
from jaxvx.pipeline import MetricOptions, OutputOptions, Sampling
from jaxvx.pipeline._options import POINTING_SHAPES


def test_defaults_are_run_s_former_keyword_defaults():
    assert Sampling() == Sampling(length=16, step=1, offset=0, pad="loop", mode="snippet")
    assert MetricOptions().in_step() == (("tolerance", 7.0), ("pointing_shape", "disk"), ("flow_threshold", 0.5),
                                         ("perturbation_steps", None), ("perturbation_baseline", 0.0))
    assert MetricOptions().flow_options is None and MetricOptions().keyframe_options is None
    assert OutputOptions() == OutputOptions(save_maps=False, summary=True, confidence=0.95, num_classes=None,
                                            provenance=None)


@pytest.mark.parametrize("make, error, message", [
    (lambda: Sampling(length=0), ValueError, "length must be an int >= 1, got 0"),
    (lambda: Sampling(length=True), ValueError, "length must be an int >= 1, got True"),
    (lambda: Sampling(step=0), ValueError, "step must be > 0, got 0"),
    (lambda: Sampling(step="a/b"), ValueError, "step must be a positive int"),
    (lambda: Sampling(offset=-1), ValueError, "offset must be an int >= 0, got -1"),
    (lambda: Sampling(pad="wrap"), ValueError, r"pad must be one of \('loop', 'edge', 'error'\), got 'wrap'"),
    (lambda: Sampling(mode="frames"), ValueError, r"mode must be one of \('snippet', 'segment'\), got 'frames'"),
    (lambda: MetricOptions(tolerance=-1), ValueError, "tolerance must be a finite number >= 0.0, got -1"),
    (lambda: MetricOptions(tolerance="7"), ValueError, "tolerance must be a finite number >= 0.0, got '7'"),
    (lambda: MetricOptions(pointing_shape="circle"), ValueError, "pointing_shape must be one of"),
    (lambda: MetricOptions(flow_threshold=float("nan")), ValueError, "flow_threshold must be a finite number"),
    (lambda: MetricOptions(perturbation_steps=0), ValueError, "perturbation_steps must be an int >= 1, got 0"),
    (lambda: MetricOptions(perturbation_baseline=float("inf")), ValueError, "perturbation_baseline must be a finite"),
    (lambda: MetricOptions(flow_options=[("a", 1)]), TypeError, "flow_options must be None or a dict, got list"),
    (lambda: OutputOptions(save_maps="yes"), TypeError, "save_maps must be True or False, got 'yes'"),
    (lambda: OutputOptions(summary=1), TypeError, "summary must be True or False, got 1"),
    (lambda: OutputOptions(confidence=1.0), ValueError, r"confidence must be in \(0, 1\), got 1.0"),
    (lambda: OutputOptions(num_classes=0), ValueError, "num_classes must be an int >= 1, got 0"),
    (lambda: OutputOptions(provenance="ckpt"), TypeError, "provenance must be None or a dict, got str"),
])
def test_every_field_is_checked_when_the_record_is_made(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_records_are_frozen_and_replace_checks_again():
    s = Sampling(length=8, step="1/2")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.length = 4
    assert dataclasses.replace(s, offset=3) == Sampling(length=8, step="1/2", offset=3)
    assert s.step == "1/2"  # kept as spelled: the results header records str(step)
    with pytest.raises(ValueError, match="offset must be an int >= 0, got -2"):
        dataclasses.replace(s, offset=-2)
    opts = MetricOptions(tolerance=3, keyframe_options={"threshold": 0.2})
    assert opts.tolerance == 3.0 and isinstance(opts.tolerance, float)
    assert opts.keyframe_options == {"threshold": 0.2}


def test_pointing_shapes_are_the_metric_s():
    rel = np.zeros((1, 2, 8, 8), np.float32)
    boxes = np.tile(np.array([[0, 0, 3, 3]], np.float32), (1, 2, 1))
    for shape in POINTING_SHAPES:
        metrics.spatial_pointing_game(rel, boxes, shape=shape)
    with pytest.raises(ValueError, match="shape must be one of"):
        metrics.spatial_pointing_game(rel, boxes, shape="circle")


@pytest.mark.parametrize("name, value, kind", [("sampling", {"length": 8}, "Sampling"),
                                                ("metric_options", None, "MetricOptions"),
                                                ("output", OutputOptions, "OutputOptions")])
def test_run_and_sweep_refuse_another_type(name, value, kind):
    with pytest.raises(TypeError, match=rf"{name} must be a jaxvx.pipeline.{kind}, got"):
        pipeline.run([], lambda x: x, lambda f, v, t=None, *, key=None: v, **{name: value})
    if name != "metric_options":
        with pytest.raises(TypeError, match=rf"{name} must be a jaxvx.pipeline.{kind}, got"):
            pipeline.sweep([], lambda x: x, lambda f, v, t=None, *, key=None: v, **{name: value})
