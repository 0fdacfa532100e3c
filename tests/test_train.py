"""jaxvx.train: recipes, the jitted step against a hand-written reference, determinism, resume, the CLI.

Every run uses one tiny recipe (a per-frame CNN + LSTM on 8 x 16 x 16 walk/run clips) so that the compiled step is
shared between the tests through jaxvx.train's compilation cache.
"""

import dataclasses
import json
import shlex

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization

from _nets import init

import jaxvx
from jaxvx import checkpoints, models
from jaxvx import train as T
from jaxvx.train._data import batch_indices
from jaxvx.train._state import init_from_checkpoint

TINY = T.Recipe(
    name="tiny", model="lstm", model_kwargs=dict(frontend="small", width=0.25, hidden=8), variant="walk_run",
    num_frames=8, height=16, width=16, train_clips=16, test_clips=8, steps=6, batch_size=4, warmup_steps=2,
)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def _same(a, b):
    la, lb = _leaves(a), _leaves(b)
    return len(la) == len(lb) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(la, lb))


# ----------------------------------------------------------------------------------------------------- recipes
def test_recipes_are_small_and_on_the_right_benchmark():
    assert set(T.recipes()) >= {"c3d-small", "r2plus1d-small", "cnnlstm-small", "lstm-ica-small", "lstm-small",
                                "c3d-small-untrained"}
    variants = {"c3d-small": "motion", "r2plus1d-small": "motion", "cnnlstm-small": "walk_run",
                "lstm-ica-small": "walk_run", "lstm-small": "walk_run", "c3d-small-untrained": "motion"}
    for name, variant in variants.items():
        r = T.get_recipe(name).validate()
        assert r.variant == variant and r.test_clips >= 500
        model = models.create(r.model, len(jaxvx.data.CLASS_NAMES[variant]), **r.model_kwargs)
        shapes = checkpoints.abstract_variables(model, [r.num_frames, r.height, r.width, 3])
        n = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
        assert 4 * n < 8e6, (name, n)  # a few MB of float32
    u, c = T.get_recipe("c3d-small-untrained"), T.get_recipe("c3d-small")
    assert not u.trained and u.steps == 0 and (u.model, dict(u.model_kwargs)) == (c.model, dict(c.model_kwargs))
    assert (u.num_frames, u.height, u.width, u.seed) == (c.num_frames, c.height, c.width, c.seed)
    assert T.get_recipe("lstm-ica-small").model_kwargs["cell"] == "input_cell_attention"
    for name in ("cnnlstm-small", "lstm-ica-small"):  # their backbone starts from a shipped checkpoint's
        r = T.get_recipe(name)
        assert r.init_from in T.recipes() and r.init_modules == ("cnn",) and r.variant == T.get_recipe(r.init_from).variant


def test_unknown_recipe_lists_the_recipes(tmp_path, capsys):
    with pytest.raises(ValueError) as e:
        T.train("c3d-huge", out=tmp_path)
    assert all(name in str(e.value) for name in T.recipes())
    assert T.cli(["--model", "c3d-huge", "--data", "synthetic", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "c3d-huge" in err and all(name in err for name in T.recipes())
    assert T.cli(["--model", "c3d-small", "--data", "kinetics", "--out", str(tmp_path)]) == 2
    assert T.cli(["--steps", "x"]) == 2
    assert T.cli(["--list"]) == 0 and "lstm-ica-small" in capsys.readouterr().out


def test_recipe_validation():
    with pytest.raises(ValueError, match="batch_size"):
        dataclasses.replace(TINY, batch_size=32).validate()
    with pytest.raises(ValueError, match="steps must be 0"):
        dataclasses.replace(TINY, trained=False).validate()
    with pytest.raises(ValueError, match="unknown keys"):
        T.Recipe.from_dict({**TINY.to_dict(), "colour": "red"})
    assert T.Recipe.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY


def test_normalisation_matches_io_preprocess():
    clip = jaxvx.data.synthetic("test", variant="walk_run", num_frames=8, height=16, width=16, flow=False)[0]["video"]
    ours = np.asarray(T.normalize(jnp.asarray(clip), TINY.mean, TINY.std))
    card_preprocess = {"size": [16, 16], "resize": "direct", "crop": "none", "mean": list(TINY.mean),
                       "std": list(TINY.std)}
    theirs = np.asarray(jaxvx.io.preprocess(clip, **card_preprocess))
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    # and against float64 arithmetic
    ref = (clip.astype(np.float64) / 255 - np.array(TINY.mean)) / np.array(TINY.std)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)


def test_batch_indices_are_distinct_and_reproducible():
    a = batch_indices(3, 17, 50, 10)
    assert len(set(a.tolist())) == 10 and a.min() >= 0 and a.max() < 50
    assert np.array_equal(a, batch_indices(3, 17, 50, 10))
    assert not np.array_equal(a, batch_indices(3, 18, 50, 10))


# ------------------------------------------------------------------------------------------------- train step
@pytest.mark.slow
def test_snippets_cut_each_clip_at_its_own_reproducible_offset():
    """snippet_offsets = k: clips of T + k frames rendered, clip i cut at a start in [0, k] drawn from (data_seed,
    split, i): the snippet equals the clip's frames there, starts differ between clips and splits, reruns agree."""
    recipe = dataclasses.replace(TINY, snippet_offsets=5, data_kwargs={"title_frames": 5})
    ds = T._data.dataset(recipe, "train", 12)
    assert ds.config.num_frames == 8 + 5
    v = ds.batch(np.arange(12), keys=["video"])["video"]
    cut = T.snippets(recipe, "train", v)
    starts = T._data.snippet_starts(recipe, "train", 12)
    assert cut.shape == (12, 8, 16, 16, 3) and starts.min() >= 0 and starts.max() <= 5
    assert len(set(starts.tolist())) > 1
    for i, s0 in enumerate(starts):
        np.testing.assert_array_equal(cut[i], v[i, s0:s0 + 8])
    np.testing.assert_array_equal(starts, T._data.snippet_starts(recipe, "train", 12))
    assert not np.array_equal(starts, T._data.snippet_starts(recipe, "test", 12))
    assert T.snippets(TINY, "train", v) is v  # k = 0: the clips unchanged
    with pytest.raises(ValueError, match="num_frames \\+ snippet_offsets = 13"):
        T.snippets(recipe, "train", v[:, :9])
    with pytest.raises(ValueError, match="snippet_offsets must be >= 0"):
        dataclasses.replace(TINY, snippet_offsets=-1).validate()


def test_train_step_matches_hand_written_sgd():
    """One SGD step (no warm-up, no decay in the first step, Nesterov) against a direct gradient + formula."""
    recipe = dataclasses.replace(TINY, optimizer="sgd", lr=0.05, warmup_steps=0, weight_decay=0.0, steps=1000)
    model = models.create(recipe.model, 2, **recipe.model_kwargs)
    x_u8 = np.random.default_rng(0).integers(0, 256, (4, 8, 16, 16, 3), dtype=np.uint8)
    y = np.array([0, 1, 1, 0], np.int32)
    shapes = checkpoints.abstract_variables(model, [8, 16, 16, 3])["params"]
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape) * 0.3, s.dtype), shapes)
    tx = T.make_optimizer(recipe)
    state = T.TrainState(jnp.asarray(0, jnp.int32), params, {}, tx.init(params))
    step = T.make_train_step(model, tx, recipe)
    new_state, metrics = step(jax.tree.map(jnp.copy, state), x_u8, y, jax.random.key(1, impl="rbg"))

    x = (x_u8.astype(np.float32) / 255 - np.array(recipe.mean, np.float32)) / np.array(recipe.std, np.float32)

    def loss(p):  # cross-entropy written out: -mean(logit_y - logsumexp(logits))
        z = model.apply({"params": p}, x)
        return -jnp.mean(z[jnp.arange(4), y] - jax.scipy.special.logsumexp(z, axis=-1))

    value, g = jax.jit(jax.value_and_grad(loss))(params)
    norm = np.sqrt(sum(float(jnp.sum(v**2)) for v in jax.tree.leaves(g)))
    scale = min(1.0, 1.0 / norm)
    # Nesterov SGD from a zero trace: trace = g, update = -lr * (g + momentum * trace) = -lr * 1.9 * g
    expected = jax.tree.map(lambda p, gi: p - recipe.lr * (1 + recipe.momentum) * scale * gi, params, g)
    assert abs(float(metrics["loss"]) - float(value)) < 1e-5
    for a, b in zip(_leaves(new_state.params), _leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert int(new_state.step) == 1
    assert float(metrics["accuracy"]) == float(np.mean(np.argmax(model.apply({"params": params}, x), -1) == y))


# ---------------------------------------------------------------------------------------- determinism, resume
@pytest.mark.slow
def test_same_seed_gives_bit_identical_params(tmp_path):
    a = T.train(TINY, out=tmp_path / "a", progress=False)
    b = T.train(TINY, out=tmp_path / "b", progress=False)
    c = T.train(TINY, out=tmp_path / "c", seed=1, progress=False)
    assert _same(a.variables, b.variables)
    assert not _same(a.variables, c.variables)
    # The checkpoint on disk is the returned variables, and its card describes the run.
    _, loaded, card = checkpoints.load(a.checkpoint)
    assert _same(a.variables, loaded)
    assert card["steps"] == 6 and card["seed"] == 0 and card["recipe"] == TINY.to_dict()
    assert 0.0 <= card["test_accuracy"] <= 1.0 and card["test_accuracy_clips"] == 8
    assert card["class_names"] == ["walk", "run"] and card["input_shape"] == [8, 16, 16, 3]
    assert card["data"]["config"]["variant"] == "walk_run" and card["data"]["train_clips"] == 16
    assert [h["step"] for h in card["history"]] == [1, 2, 3, 4, 5, 6]  # eval_every defaults to steps // 5
    assert not (tmp_path / "a" / "tiny.state.msgpack").exists()  # the state file goes once the run is complete


@pytest.mark.slow
def test_resume_after_crash_gives_the_same_final_params(tmp_path):
    full = T.train(TINY, out=tmp_path / "full", checkpoint_every=2, progress=False, keep_state=True)

    class Crash(RuntimeError):
        pass

    def crash_at_5(step, metrics):
        assert np.isfinite(metrics["loss"]) and 0 <= metrics["accuracy"] <= 1
        if step == 5:
            raise Crash

    out = tmp_path / "crashed"
    with pytest.raises(Crash):
        T.train(TINY, out=out, checkpoint_every=2, progress=False, callback=crash_at_5)
    state_file = out / "tiny.state.msgpack"
    payload = serialization.msgpack_restore(state_file.read_bytes())
    assert int(payload["state"]["step"]) == 4  # the last checkpoint before the crash
    assert not (out / "tiny.msgpack").exists()
    with pytest.raises(ValueError, match="resume"):  # refusing to clobber an unfinished run
        T.train(TINY, out=out, checkpoint_every=2, progress=False)
    with pytest.raises(ValueError, match="lr"):  # resuming with other settings is refused, naming them
        T.train(TINY, out=out, lr=0.5, checkpoint_every=2, progress=False, resume=True)
    steps_seen = []
    resumed = T.train(TINY, out=out, checkpoint_every=2, progress=False, resume=True,
                      callback=lambda s, m: steps_seen.append(s), keep_state=True)
    assert steps_seen == [5, 6]
    assert _same(full.variables, resumed.variables)
    assert resumed.card["resumed_from_step"] == 4
    # optimiser state too
    fs = serialization.msgpack_restore((tmp_path / "full" / "tiny.state.msgpack").read_bytes())["state"]
    rs = serialization.msgpack_restore(state_file.read_bytes())["state"]
    assert _same(fs, rs)


# --------------------------------------------------------------------------------------------------------- cli
@pytest.mark.slow
def test_cli_writes_a_reproducible_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(T.RECIPES, "tiny", TINY)
    out = tmp_path / "run"
    assert T.cli(["--model", "tiny", "--data", "synthetic", "--steps", "4", "--seed", "2", "--out", str(out),
                  "--no-progress"]) == 0
    assert "tiny.msgpack" in capsys.readouterr().out
    model, variables, card = checkpoints.load(out / "tiny.msgpack")
    assert card["command"] == shlex.join(["jaxvx", "train", "--model", "tiny", "--data", "synthetic", "--steps", "4",
                                          "--batch-size", "4", "--lr", "0.001", "--seed", "2", "--out", str(out)])
    assert card["steps"] == 4 and card["seed"] == 2
    # The recorded command, run again into another folder, reproduces the parameters bit for bit.
    argv = shlex.split(card["command"])[2:]
    argv[argv.index("--out") + 1] = str(tmp_path / "again")
    assert T.cli(argv + ["--no-progress"]) == 0
    _, again, _ = checkpoints.load(tmp_path / "again" / "tiny.msgpack")
    assert _same(variables, again)


@pytest.mark.slow
def test_init_from_copies_the_named_submodules_and_checks_shapes(tmp_path):
    """A recipe's ``init_from``/``init_modules`` start a CNN-LSTM's backbone from another checkpoint's ``cnn``."""
    source = T.train(TINY, out=tmp_path / "src", progress=False).checkpoint
    recipe = dataclasses.replace(
        TINY, name="tiny-cnnlstm", model="cnnlstm", model_kwargs=dict(backbone="small", width=0.25, hidden=8),
        init_from=str(source), init_modules=("cnn",)).validate()
    model = models.create(recipe.model, 2, **recipe.model_kwargs)
    fresh = init(model, jnp.zeros((1, 8, 16, 16, 3)))["params"]
    got, sha = init_from_checkpoint(fresh, recipe)
    _, src, _ = checkpoints.load(source)
    assert _same(got["cnn"], src["params"]["cnn"])  # copied ...
    assert sha == checkpoints.load_card(source)["sha256"]
    assert _same(got["lstm"], fresh["lstm"]) and _same(got["classifier"], fresh["classifier"])  # ... and only it
    with pytest.raises(ValueError, match="init_modules names 'head'"):
        init_from_checkpoint(fresh, dataclasses.replace(recipe, init_modules=("head",)))
    wide = models.create(recipe.model, 2, backbone="small", width=0.5, hidden=8)
    wide_params = init(wide, jnp.zeros((1, 8, 16, 16, 3)))["params"]
    with pytest.raises(ValueError, match=r"cnn\['conv1'\]\['bias'\] has shape \(8,\).*has \(4,\)"):
        init_from_checkpoint(wide_params, recipe)
    with pytest.raises(ValueError, match="come together"):
        dataclasses.replace(recipe, init_modules=()).validate()
    # a run from the recipe starts from the copy: zero steps of learning rate leave it unchanged
    run = T.train(dataclasses.replace(recipe, lr=1e-12, weight_decay=0.0), out=tmp_path / "dst", progress=False)
    np.testing.assert_allclose(np.asarray(run.variables["params"]["cnn"]["conv1"]["kernel"]),
                               np.asarray(src["params"]["cnn"]["conv1"]["kernel"]), atol=1e-8)
    source_sha = checkpoints.load_card(source)["sha256"]
    assert f"['cnn'] copied from checkpoint {str(source)!r} (sha256 {source_sha})" in run.card["init"]
    assert run.card["recipe"]["init_from"] == str(source) and run.card["recipe"]["init_modules"] == ["cnn"]
