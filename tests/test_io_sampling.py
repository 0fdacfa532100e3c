"""Snippet and segment index maths, checked against exact Fraction references with hypothesis."""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxvx.io import segment_indices, snippet_indices

SETTINGS = settings(max_examples=150, deadline=None)

steps = st.one_of(
    st.integers(1, 40),
    st.fractions(min_value=Fraction(1, 64), max_value=Fraction(40), max_denominator=64).filter(lambda f: f > 0),
)


@st.composite
def snippet_args(draw):
    n = draw(st.integers(1, 300))
    return n, draw(st.integers(1, 64)), draw(steps), draw(st.integers(0, n - 1))


def reference(n, length, step, offset):
    """Unpadded indices from the definition, in exact rational arithmetic (Python ints and Fractions)."""
    step = Fraction(step)
    return [offset + math.floor(i * step) for i in range(length)]


@SETTINGS
@given(snippet_args(), st.sampled_from(["loop", "edge", "error"]))
def test_snippet_matches_definition(args, pad):
    n, length, step, offset = args
    ref = reference(n, length, step, offset)
    if pad == "error" and ref[-1] >= n:
        with pytest.raises(ValueError) as exc:
            snippet_indices(n, length, step, offset, pad=pad)
        msg = str(exc.value)
        for part in (f"num_frames={n}", f"length={length}", f"step={Fraction(step)}", f"offset={offset}", str(ref[-1])):
            assert part in msg
        return
    idx = snippet_indices(n, length, step, offset, pad=pad)
    assert idx.dtype == np.int64 and idx.shape == (length,)
    assert idx.min() >= 0 and idx.max() < n
    expected = {"loop": [r % n for r in ref], "edge": [min(r, n - 1) for r in ref], "error": ref}[pad]
    assert idx.tolist() == expected
    if pad != "loop" or ref[-1] < n:  # monotone unless wrapping
        assert np.all(np.diff(idx) >= 0)
    if ref[-1] < n:  # inside the video every pad mode agrees
        assert idx.tolist() == ref


@SETTINGS
@given(snippet_args())
def test_step_spellings_agree(args):
    n, length, step, offset = args
    frac = Fraction(step)
    a = snippet_indices(n, length, frac, offset)
    b = snippet_indices(n, length, f"{frac.numerator}/{frac.denominator}", offset)
    c = snippet_indices(n, length, frac.numerator / frac.denominator, offset)  # float, recovered exactly
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


@SETTINGS
@given(st.integers(1, 500), st.integers(1, 64), st.integers(1, 20))
def test_unit_fraction_steps_repeat_each_frame(n, length, k):
    """step 1/k holds every frame exactly k times (1/3 included: no float drift at i = 3j)."""
    idx = snippet_indices(n, length, 1 / k, 0, pad="loop")
    expected = [(i // k) % n for i in range(length)]
    assert idx.tolist() == expected


def test_known_cases():
    np.testing.assert_array_equal(snippet_indices(100, 16, "1/16", 7), np.full(16, 7))
    np.testing.assert_array_equal(snippet_indices(100, 8, 2, 3), [3, 5, 7, 9, 11, 13, 15, 17])
    np.testing.assert_array_equal(snippet_indices(100, 6, 1 / 3), [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(snippet_indices(100, 4, 0.75), [0, 0, 1, 2])
    np.testing.assert_array_equal(snippet_indices(5, 8), [0, 1, 2, 3, 4, 0, 1, 2])  # short video looped
    np.testing.assert_array_equal(snippet_indices(5, 8, pad="edge"), [0, 1, 2, 3, 4, 4, 4, 4])
    np.testing.assert_array_equal(snippet_indices(1, 3, 5), [0, 0, 0])
    np.testing.assert_array_equal(snippet_indices(np.int64(10), np.int32(2), np.int64(3)), [0, 3])
    # Anders et al.'s sweep 1/16 ... 32: consecutive indices differ by exactly the step when it is >= 1
    for e in range(-4, 6):
        step = Fraction(2) ** e
        idx = snippet_indices(10_000, 16, step, 0, pad="error")
        assert idx[-1] == math.floor(15 * step)
        if step >= 1:
            assert set(np.diff(idx)) == {int(step)}
        else:
            assert np.bincount(idx).max() == int(1 / step)


def test_huge_step_exact():
    idx = snippet_indices(7, 3, 10**20, 1, pad="loop")
    assert idx.tolist() == [1, (1 + 10**20) % 7, (1 + 2 * 10**20) % 7]


@pytest.mark.parametrize(
    "args, kw, err, match",
    [
        ((0, 16), {}, ValueError, "num_frames"),
        ((10, 0), {}, ValueError, "length"),
        ((10, 16, 1, -1), {}, ValueError, "offset"),
        ((10, 16, 1, 10), {}, ValueError, "offset"),
        ((10, 16, 0), {}, ValueError, "step"),
        ((10, 16, -2), {}, ValueError, "step"),
        ((10, 16, "0/3"), {}, ValueError, "step"),
        ((10, 16, "abc"), {}, ValueError, "step"),
        ((10, 16, "1/0"), {}, ValueError, "step"),
        ((10, 16, float("nan")), {}, ValueError, "step"),
        ((10, 16, float("inf")), {}, ValueError, "step"),
        ((10, 16, 1e-9), {}, ValueError, "step"),
        ((10, 16, None), {}, TypeError, "step"),
        ((10, 16, True), {}, TypeError, "step"),
        ((10.0, 16), {}, TypeError, "num_frames"),
        ((10, 2.0), {}, TypeError, "length"),
        ((10, 16, 1, 1.0), {}, TypeError, "offset"),
        ((10, 16), {"pad": "wrap"}, ValueError, "pad"),
    ],
)
def test_snippet_errors(args, kw, err, match):
    with pytest.raises(err, match=match):
        snippet_indices(*args, **kw)


# ---------------------------------------------------------------------------------------------------------------
# Segments


def segment_bounds(n, length):
    """Direct per-segment loop from the definition."""
    out = []
    for i in range(length):
        s = math.floor(Fraction(i * n, length))
        e = math.floor(Fraction((i + 1) * n, length))
        out.append((s, max(e, s + 1)))
    return out


@SETTINGS
@given(st.integers(1, 400), st.integers(1, 64), st.sampled_from(["center", "start", "random"]), st.integers(0, 2**32))
def test_segments_match_definition(n, length, position, seed):
    idx = segment_indices(n, length, position=position, rng=np.random.default_rng(seed))
    assert idx.dtype == np.int64 and idx.shape == (length,)
    assert idx.min() >= 0 and idx.max() < n
    assert np.all(np.diff(idx) >= 0)
    bounds = segment_bounds(n, length)
    for k, (s, e) in zip(idx.tolist(), bounds):
        assert s <= k < e
    if position == "start":
        assert idx.tolist() == [s for s, _ in bounds]
    if position == "center":
        assert idx.tolist() == [s + (e - s) // 2 for s, e in bounds]
    if n >= length:
        assert np.all(np.diff(idx) > 0)  # one distinct frame per segment
        # the segments tile the video exactly
        assert bounds[0][0] == 0 and bounds[-1][1] == n
        assert all(bounds[j][1] == bounds[j + 1][0] for j in range(length - 1))


@SETTINGS
@given(st.integers(1, 50), st.integers(1, 20))
def test_center_matches_tsn_formula_when_divisible(k, length):
    """With N = k * length, TSN's test-time offsets floor((i + 1/2) * N / length) are our centres."""
    n = k * length
    tsn = [math.floor((i + Fraction(1, 2)) * Fraction(n, length)) for i in range(length)]
    assert segment_indices(n, length).tolist() == tsn


def test_segments_short_video_repeats():
    assert segment_indices(5, 16, position="start").tolist() == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert segment_indices(1, 4).tolist() == [0, 0, 0, 0]


def test_random_segments_reproducible_and_cover():
    a = segment_indices(48, 16, position="random", rng=np.random.default_rng(3))
    b = segment_indices(48, 16, position="random", rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    rng = np.random.default_rng(0)
    draws = np.stack([segment_indices(48, 16, position="random", rng=rng) for _ in range(400)])
    assert set(np.unique(draws).tolist()) == set(range(48))  # every frame of every 3-frame segment is reachable
    counts = np.bincount(draws.ravel(), minlength=48)
    assert counts.min() > 400 / 3 * 0.6  # roughly uniform within segments


@pytest.mark.parametrize(
    "args, kw, err, match",
    [
        ((0,), {}, ValueError, "num_frames"),
        ((10, 0), {}, ValueError, "length"),
        ((10, 4), {"position": "middle"}, ValueError, "position"),
        ((10, 4), {"position": "random"}, TypeError, "rng"),
        ((10, 4), {"position": "random", "rng": 3}, TypeError, "Generator"),
        ((10.5, 4), {}, TypeError, "num_frames"),
    ],
)
def test_segment_errors(args, kw, err, match):
    with pytest.raises(err, match=match):
        segment_indices(*args, **kw)
