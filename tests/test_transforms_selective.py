"""Selective relevance against direct references: scipy.ndimage.correlate and a NumPy loop over the 3x3x3 kernel."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import ndimage

from jaxvx.transforms import SOBEL_T, selective, selective_mask, temporal_gradient

KERNEL = np.asarray(SOBEL_T, dtype=np.float64)


def test_kernel_is_the_papers():
    s = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]])
    np.testing.assert_array_equal(KERNEL[0], s)
    np.testing.assert_array_equal(KERNEL[1], 0)
    np.testing.assert_array_equal(KERNEL[2], -s)


def _loop_gradient(r, padding):
    """|G| by an explicit loop over voxels and kernel taps (float64), the definition written out."""
    t, h, w = r.shape
    mode = "constant" if padding == "zeros" else "edge"
    p = np.pad(r.astype(np.float64), 1, mode=mode)
    g = np.zeros((t, h, w))
    for i in range(t):
        for j in range(h):
            for k in range(w):
                g[i, j, k] = np.sum(KERNEL * p[i:i + 3, j:j + 3, k:k + 3])
    return np.abs(g)


@pytest.mark.parametrize("padding", ["zeros", "edge"])
def test_gradient_matches_loop(padding):
    rng = np.random.default_rng(0)
    r = rng.normal(size=(2, 4, 5, 6, 3)).astype(np.float32)
    got = np.asarray(temporal_gradient(r, padding=padding))
    for b in range(2):
        np.testing.assert_allclose(got[b], _loop_gradient(r[b].sum(-1), padding), rtol=1e-5, atol=1e-4)


def _scipy_selective(r, sigma, padding):
    """Reference: scipy's correlate (cross-correlation, no flip) on the channel sum, population std in float64."""
    mode = "constant" if padding == "zeros" else "nearest"
    out, margin = [], []
    for clip in r:
        g = np.abs(ndimage.correlate(clip.sum(-1).astype(np.float64), KERNEL, mode=mode, cval=0.0))
        thr = sigma * g.std()
        out.append(clip * (g > thr)[..., None])
        margin.append(np.abs(g - thr))
    return np.stack(out), np.stack(margin)


@pytest.mark.parametrize("padding", ["zeros", "edge"])
@pytest.mark.parametrize("sigma", [1.0, 2.0, 4.0])
def test_selective_matches_scipy(padding, sigma):
    rng = np.random.default_rng(1)
    # a moving blob on noise: enough structure that every sigma keeps something and drops something
    t, h, w = 8, 20, 24
    yy, xx = np.mgrid[:h, :w]
    blob = np.stack([np.exp(-((xx - 4 - 2 * i) ** 2 + (yy - 10) ** 2) / 8.0) for i in range(t)])
    r = (blob[None, ..., None] * rng.uniform(0.5, 2.0, size=(3, 1, 1, 1, 3))
         + 0.05 * rng.normal(size=(3, t, h, w, 3))).astype(np.float32)
    want, margin = _scipy_selective(r, sigma, padding)
    got = np.asarray(selective(sigma, padding=padding)(r))
    assert got.shape == r.shape and got.dtype == np.float32
    decided = np.broadcast_to((margin > 1e-3)[..., None], r.shape)  # float32 vs float64 may differ at the threshold
    assert decided.mean() > 0.99
    np.testing.assert_allclose(got[decided], want[decided], rtol=0, atol=0)
    kept = (got != 0).mean()
    assert 0 < kept < 1


def test_zero_padding_artefact_and_edge_padding():
    # relevance constant over time: nothing moves. Zero padding lights up the first and last frames only;
    # edge padding selects nothing.
    rng = np.random.default_rng(2)
    frame = rng.uniform(0.1, 1.0, size=(12, 14)).astype(np.float32)
    r = np.broadcast_to(frame, (1, 6, 12, 14)).copy()
    zeros = np.asarray(selective_mask(r, 1.0, padding="zeros"))[0]
    assert zeros[0].any() and zeros[-1].any()
    assert not zeros[1:-1].any()
    assert not np.asarray(selective_mask(r, 1.0, padding="edge")).any()
    np.testing.assert_array_equal(np.asarray(selective(1.0, padding="edge")(r)), 0)


def test_keeps_moving_relevance_drops_static():
    # a static blob and a moving blob of the same strength: selective keeps (part of) the moving one only
    t, h, w = 10, 32, 32
    yy, xx = np.mgrid[:h, :w]
    static = np.exp(-((xx - 8) ** 2 + (yy - 8) ** 2) / 6.0)
    moving = np.stack([np.exp(-((xx - 4 - 2.5 * i) ** 2 + (yy - 24) ** 2) / 6.0) for i in range(t)])
    r = (static[None] + moving)[None].astype(np.float32)
    out = np.asarray(selective(2.0, padding="edge")(r))[0]
    assert np.abs(out[:, :16, :16]).sum() == 0
    assert np.abs(out[:, 16:, :]).sum() > 0


def test_signed_raw_output_and_rank4():
    rng = np.random.default_rng(3)
    r = rng.normal(size=(2, 6, 9, 10)).astype(np.float32)
    out = np.asarray(selective(1.0)(r))
    mask = np.asarray(selective_mask(r, 1.0))
    np.testing.assert_array_equal(out, r * mask)
    assert (out < 0).any() and (out > 0).any()


def test_jit_and_vmap():
    rng = np.random.default_rng(4)
    r = jnp.asarray(rng.normal(size=(3, 2, 6, 8, 8, 3)).astype(np.float32))
    sel = selective(2.0, padding="edge")
    eager = np.stack([np.asarray(sel(x)) for x in r])
    np.testing.assert_array_equal(np.asarray(jax.jit(sel)(r[0])), eager[0])
    np.testing.assert_array_equal(np.asarray(jax.vmap(sel)(r)), eager)


def test_bad_arguments():
    with pytest.raises(ValueError, match="padding"):
        selective(4.0, padding="reflect")
    with pytest.raises(ValueError, match="sigma"):
        selective(-1.0)
    with pytest.raises(ValueError, match=r"relevance must be .*got shape \(2, 3, 4\)"):
        selective(4.0)(np.zeros((2, 3, 4), np.float32))
    assert "selective(sigma=4" in selective(4.0).__name__
