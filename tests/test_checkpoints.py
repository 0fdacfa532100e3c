"""jaxvx.checkpoints: msgpack + model card round trips, discovery, and every corruption / mismatch failure mode.

The models here are tiny and their variables are filled with NumPy random values from ``jax.eval_shape`` (no
``model.init`` compilation): the checkpoint format does not care how the values were made.
"""

import hashlib
import json
import os
import shlex
from pathlib import Path

import jax
import msgpack
import numpy as np
import pytest

import jaxvx
from jaxvx import checkpoints, models
from jaxvx.checkpoints import CheckpointError

REPO = Path(__file__).resolve().parents[1]
SHIPPED_DIR = REPO / "jaxvx" / "shipped_checkpoints"
TINY_SHAPE = [4, 16, 16, 3]


def _random_variables(model, input_shape, seed=0):
    """Variables of the right shapes with random float32 values (batch variances positive)."""
    x = jax.ShapeDtypeStruct((1, *input_shape), np.float32)
    kw = {"train": False}
    shapes = jax.eval_shape(lambda r, v: model.init(r, v, **kw), {"params": jax.random.key(0)}, x)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 0.1 + (0.5 if s.shape else 0)).astype(s.dtype),
                        {k: dict(v) for k, v in shapes.items()})


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[prefix + k] = np.asarray(v)
    return out


@pytest.fixture
def tiny():
    model = models.create("lstm", 3, frontend="small", width=0.25, hidden=4)
    return model, _random_variables(model, TINY_SHAPE)


@pytest.fixture
def saved(tmp_path, tiny):
    model, variables = tiny
    path = checkpoints.save(tmp_path / "tiny.msgpack", model, variables,
                            {"input_shape": TINY_SHAPE, "class_names": ["a", "b", "c"]})
    return path, model, variables


def _rewrite(path: Path, data: bytes, fix_sha: bool):
    path.write_bytes(data)
    if fix_sha:
        card_path = path.with_suffix(".json")
        card = json.loads(card_path.read_text())
        card["sha256"] = hashlib.sha256(data).hexdigest()
        card_path.write_text(json.dumps(card))


# ------------------------------------------------------------------------------------------------------- round trips
def test_roundtrip_is_exact_and_card_is_complete(saved):
    path, model, variables = saved
    model2, variables2, card = checkpoints.load(path)
    assert models.config(model2) == models.config(model)
    a, b = _flat(variables), _flat(jax.device_get(variables2))
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    data = path.read_bytes()
    assert card["sha256"] == hashlib.sha256(data).hexdigest()
    assert card["param_count"] == sum(v.size for k, v in a.items() if k.startswith("params/"))
    assert card["input_shape"] == TINY_SHAPE and card["num_classes"] == 3
    assert card["class_names"] == ["a", "b", "c"] and card["jaxvx_version"] == jaxvx.__version__
    assert card["architecture"] == models.config(model)
    # The file is plain msgpack (no pickle): the generic msgpack reader sees nested maps with "params" on top.
    raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
    assert set(raw) == {"params"}
    # Same function, same numbers: the rebuilt model on the loaded variables matches the original.
    x = np.random.default_rng(1).standard_normal((2, *TINY_SHAPE)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(model.apply(variables, x)), np.asarray(model2.apply(variables2, x)))


def test_roundtrip_with_batch_stats(tmp_path):
    model = models.create("r2plus1d18", 4, width=1 / 16)
    shape = [8, 16, 16, 3]
    variables = _random_variables(model, shape, seed=3)
    assert "batch_stats" in variables
    path = checkpoints.save(tmp_path / "bn", model, variables, {"input_shape": shape})
    assert path == tmp_path / "bn.msgpack" and path.with_suffix(".json").is_file()
    _, loaded, card = checkpoints.load(tmp_path / "bn")  # the stem works as well as either file
    a, b = _flat(variables), _flat(jax.device_get(loaded))
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert set(card["variables"]) == {"params", "batch_stats"}


@pytest.mark.parametrize("written", ["c3d-v1.5", "c3d-v1.5.msgpack"])
def test_a_name_with_dots_saves_loads_and_lists(tmp_path, monkeypatch, tiny, written):
    model, variables = tiny
    path = checkpoints.save(tmp_path / written, model, variables, {"input_shape": TINY_SHAPE})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c3d-v1.5.json", "c3d-v1.5.msgpack"]
    assert path == tmp_path / "c3d-v1.5.msgpack"
    monkeypatch.setenv("JAXVX_CHECKPOINT_DIR", str(tmp_path))
    assert "c3d-v1.5" in checkpoints.list()
    for name in ("c3d-v1.5", tmp_path / "c3d-v1.5", tmp_path / "c3d-v1.5.msgpack", tmp_path / "c3d-v1.5.json"):
        assert checkpoints.resolve(name) == (path, tmp_path / "c3d-v1.5.json"), name
        _, loaded, card = checkpoints.load(name)
        assert card["name"] == "c3d-v1.5", name
        want = _flat(variables)
        assert all(np.array_equal(v, want[k]) for k, v in _flat(loaded).items()) and _flat(loaded).keys() == want.keys()


def test_save_is_atomic_and_overwrites(tmp_path, tiny):
    model, variables = tiny
    checkpoints.save(tmp_path, model, variables, {"name": "m", "input_shape": TINY_SHAPE})
    other = jax.tree.map(lambda a: a + 1, variables)
    checkpoints.save(tmp_path / "m.msgpack", model, other, {"input_shape": TINY_SHAPE})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.msgpack"]  # no temporary files left
    _, loaded, _ = checkpoints.load(tmp_path / "m.json")
    a, b = _flat(other), _flat(jax.device_get(loaded))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_save_rejects_bad_input(tmp_path, tiny):
    model, variables = tiny
    with pytest.raises(ValueError, match="name"):
        checkpoints.save(tmp_path, model, variables, {"input_shape": TINY_SHAPE})
    with pytest.raises(ValueError, match="input_shape"):
        checkpoints.save(tmp_path / "x.msgpack", model, variables, {})
    wrong = models.create("lstm", 3, frontend="small", width=0.25, hidden=5)
    with pytest.raises(CheckpointError, match="params/lstm/recurrent"):
        checkpoints.save(tmp_path / "x.msgpack", wrong, variables, {"input_shape": TINY_SHAPE})
    assert list(tmp_path.iterdir()) == []  # nothing written


# ------------------------------------------------------------------------------------------------------- discovery
def test_list_env_dir_and_unknown_name(tmp_path, monkeypatch, tiny):
    model, variables = tiny
    shipped = checkpoints.list()
    assert shipped == sorted({p.stem for p in SHIPPED_DIR.glob("*.json")} | set(checkpoints.CONVERTED))
    extra = tmp_path / "extra"
    extra.mkdir()
    checkpoints.save(extra, model, variables, {"name": "my-tiny", "input_shape": TINY_SHAPE})
    monkeypatch.setenv("JAXVX_CHECKPOINT_DIR", os.pathsep.join([str(tmp_path / "missing"), str(extra)]))
    assert checkpoints.list() == sorted(set(shipped) | {"my-tiny"})
    _, _, card = checkpoints.load("my-tiny")
    assert card["name"] == "my-tiny"
    with pytest.raises(CheckpointError) as e:
        checkpoints.load("no-such-model")
    msg = str(e.value)
    assert "no-such-model" in msg and all(name in msg for name in shipped + ["my-tiny"])
    with pytest.raises(CheckpointError, match="does not exist"):
        checkpoints.load(tmp_path / "nowhere.msgpack")


# ------------------------------------------------------------------------------------------------- failure modes
def test_truncated_file(saved):
    path = saved[0]
    data = path.read_bytes()
    _rewrite(path, data[: len(data) // 2], fix_sha=False)
    with pytest.raises(CheckpointError, match="sha256") as e:
        checkpoints.load(path)
    assert str(path) in str(e.value)
    # With a matching checksum the truncation is caught by the msgpack reader.
    _rewrite(path, data[: len(data) // 2], fix_sha=True)
    with pytest.raises(CheckpointError, match="not a valid msgpack") as e:
        checkpoints.load(path)
    assert str(path) in str(e.value)


def test_not_msgpack(saved):
    path = saved[0]
    _rewrite(path, b"\x80\x04 this is a pickle, not msgpack \xc1\xc1", fix_sha=True)
    with pytest.raises(CheckpointError, match="not a valid msgpack"):
        checkpoints.load(path)
    _rewrite(path, msgpack.packb([1, 2, 3]), fix_sha=True)  # valid msgpack, wrong content
    with pytest.raises(CheckpointError, match="no 'params' collection"):
        checkpoints.load(path)


def test_sha_mismatch_same_length(saved):
    path = saved[0]
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last float
    _rewrite(path, bytes(data), fix_sha=False)
    with pytest.raises(CheckpointError, match="sha256 is [0-9a-f]{64}"):
        checkpoints.load(path)


def test_architecture_mismatch_names_path_and_shapes(saved):
    path = saved[0]
    card_path = path.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card["architecture"]["hidden"] = 5  # the file holds hidden = 4
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError) as e:
        checkpoints.load(path)
    msg = str(e.value)
    # LSTM recurrent matrix U is [hidden, 4 * hidden]; the classifier kernel is [hidden, num_classes].
    assert "shape mismatch at params/lstm/recurrent: expected (5, 20) from the architecture, file has (4, 16)" in msg
    assert "params/classifier/kernel: expected (5, 3)" in msg and "file has (4, 3)" in msg
    assert str(path) in msg


def test_missing_and_extra_parameters(saved):
    path, _, variables = saved
    v = jax.tree.map(np.asarray, variables)
    del v["params"]["classifier"]["bias"]
    v["params"]["classifier"]["gain"] = np.ones((3,), np.float32)
    from flax import serialization

    _rewrite(path, serialization.msgpack_serialize(v), fix_sha=True)
    with pytest.raises(CheckpointError) as e:
        checkpoints.load(path)
    msg = str(e.value)
    assert "missing variables params/classifier/bias (expected shape (3,))" in msg
    assert "unexpected variables params/classifier/gain (shape (3,))" in msg


def test_dtype_mismatch(saved):
    path, _, variables = saved
    v = jax.tree.map(np.asarray, variables)
    v["params"]["classifier"]["bias"] = v["params"]["classifier"]["bias"].astype(np.float64)
    from flax import serialization

    _rewrite(path, serialization.msgpack_serialize(v), fix_sha=True)
    with pytest.raises(CheckpointError, match="dtype mismatch at params/classifier/bias: expected float32"):
        checkpoints.load(path)


def test_card_problems(saved):
    path = saved[0]
    card_path = path.with_suffix(".json")
    good = card_path.read_text()
    card_path.write_text(good[:40])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        checkpoints.load(path)
    card = json.loads(good)
    del card["sha256"]
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="lacks the required key 'sha256'"):
        checkpoints.load(path)
    card = json.loads(good)
    card["architecture"]["arch"] = "resnet-9000"
    card_path.write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="cannot be built"):
        checkpoints.load(path)
    card_path.write_text(good)
    path.unlink()
    with pytest.raises(CheckpointError, match="variables file .* is missing"):
        checkpoints.load(card_path)
    card_path.unlink()
    with pytest.raises(CheckpointError):
        checkpoints.load(path)


# ------------------------------------------------------------------------------------------------ shipped ones
SHIPPED = sorted(p.stem for p in SHIPPED_DIR.glob("*.json"))
# The models issue asks for 90 % test accuracy of every trained checkpoint; the analysis checkpoints are held to
# what makes them useful instead (ANALYSIS below).
TARGET_TEST_ACCURACY = 0.9
# c3d-small-titles is tested on snippets that may hold 8 title frames and only 8 of action; c3d-small-cue on
# clips whose badge is random, where a model that leans on the badge must lose accuracy.
ANALYSIS = {"c3d-small-titles": 0.75, "c3d-small-cue": 0.0}
REQUIRED = ("architecture", "num_classes", "class_names", "input_shape", "preprocess", "data", "seed", "optimizer",
            "steps", "train_accuracy", "test_accuracy", "train_time_s", "wall_time_s", "machine", "param_count",
            "command", "jaxvx_version", "sha256")


def test_shipped_cards_match_the_training_script():
    script = (REPO / "scripts" / "train_checkpoints.sh").read_text()
    readme = (REPO / "README.md").read_text()
    assert SHIPPED, "no shipped checkpoints found"
    for name in SHIPPED:
        card = checkpoints.load_card(name)
        missing = [k for k in REQUIRED if k not in card]
        assert not missing, (name, missing)
        lines = script.splitlines()
        assert card["command"] in lines, f"{name}: recorded command not in train_checkpoints.sh"
        source = card["recipe"].get("init_from")
        if source:  # a pretrained backbone: the script trains (and the repository ships) its source first
            assert source in SHIPPED, (name, source)
            assert lines.index(checkpoints.load_card(source)["command"]) < lines.index(card["command"]), name
        argv = shlex.split(card["command"])
        assert argv[:4] == ["jaxvx", "train", "--model", name]
        size = (SHIPPED_DIR / f"{name}.msgpack").stat().st_size
        assert size < 8e6, (name, size)  # "a few MB"
        assert card["param_count"] * 4 <= size < card["param_count"] * 4 * 1.2 + 1e5
        assert len(card["class_names"]) == card["num_classes"]
        if card.get("trained", True):
            floor = ANALYSIS.get(name, TARGET_TEST_ACCURACY)
            assert card["test_accuracy"] >= floor and card["test_accuracy_clips"] >= 500, name
            assert card["train_time_s"] <= 20 * 60, name
        else:
            assert card["steps"] == 0 and "untrained" in card["notes"].lower()
        assert f"`{name}`" in readme and f"{100 * card['test_accuracy']:.1f} %" in readme, f"{name}: not in README"


@pytest.mark.slow
@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_loads_and_classifies(name):
    """Load, preprocess test clips exactly as the card says, and re-measure accuracy on 60 held-out clips."""
    model, variables, card = checkpoints.load(name)
    cfg = dict(card["data"]["config"])
    ds = jaxvx.data.synthetic("test", num_clips=60, **cfg)
    batch = ds.batch(range(60), keys=["video", "label"])
    x = jaxvx.io.preprocess(batch["video"], **card["preprocess"])
    x = jaxvx.train.snippets(jaxvx.train.Recipe.from_dict(card["recipe"]), "test", x)  # as the card's test split
    assert list(x.shape[1:]) == card["input_shape"]
    logits = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
    acc = float(np.mean(np.argmax(np.asarray(logits), -1) == batch["label"]))
    if card.get("trained", True):
        assert acc >= min(card["test_accuracy"], TARGET_TEST_ACCURACY) - 0.1, (name, acc)  # 60 clips: some slack
    else:
        assert acc <= 0.5, (name, acc)  # chance is 1 / num_classes


def _predict(name, videos):
    """The shipped checkpoint ``name``'s predicted classes for uint8 clips, preprocessed as its card says."""
    model, variables, card = checkpoints.load(name)
    x = jaxvx.io.preprocess(videos, **card["preprocess"])
    return np.argmax(np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, x)), -1)


@pytest.mark.slow
def test_the_cue_checkpoint_leans_on_its_cue_and_the_titles_one_has_seen_title_cards():
    """c3d-small-cue: on test clips whose badge names another class it follows the badge far more often than
    c3d-small does (which never saw a meaningful badge); c3d-small-titles: on snippets opening with 8 title frames
    it is more accurate than c3d-small, which was never shown one."""
    cue_card = checkpoints.load_card("c3d-small-cue")
    ds = jaxvx.data.synthetic("test", num_clips=100, **dict(cue_card["data"]["config"]))
    batch = ds.batch(range(100), keys=["video", "label", "cue_label"])
    differs = batch["cue_label"] != batch["label"]
    follows = {}
    for name in ("c3d-small-cue", "c3d-small"):
        pred = _predict(name, batch["video"])
        follows[name] = float(np.mean(pred[differs] == batch["cue_label"][differs]))
    assert follows["c3d-small-cue"] >= 0.5 and follows["c3d-small"] <= 0.1, follows

    titles = jaxvx.data.synthetic("test", num_clips=100, num_frames=16, title_frames=8, height=64, width=64,
                                  variant="motion", flow=False)
    batch = titles.batch(range(100), keys=["video", "label"])
    acc = {name: float(np.mean(_predict(name, batch["video"]) == batch["label"]))
           for name in ("c3d-small-titles", "c3d-small")}
    assert acc["c3d-small-titles"] > acc["c3d-small"] + 0.1, acc


@pytest.mark.slow
@pytest.mark.parametrize("name", ["c3d-small", "r2plus1d-small"])
def test_shipped_motion_models_tell_the_rotation_directions_apart(name):
    """The pair that both models once got at chance (README, "Shipped checkpoints"): among held-out clips of
    rotate_cw and rotate_ccw, one taken for the other at most 1 time in 10 (chance: 1 in 2)."""
    model, variables, card = checkpoints.load(name)
    cfg = dict(card["data"]["config"])
    ds = jaxvx.data.synthetic("test", num_clips=300, **cfg)
    cw, ccw = card["class_names"].index("rotate_cw"), card["class_names"].index("rotate_ccw")
    everything = ds.batch(range(300), keys=["video", "label"])
    keep = np.flatnonzero((everything["label"] == cw) | (everything["label"] == ccw))
    assert len(keep) == 60  # each class once in every block of ten
    batch = {k: v[keep] for k, v in everything.items()}
    x = jaxvx.io.preprocess(batch["video"], **card["preprocess"])
    pred = np.argmax(np.asarray(jax.jit(lambda v, x: model.apply(v, x))(variables, x)), -1)
    swapped = np.sum((pred == cw) & (batch["label"] == ccw)) + np.sum((pred == ccw) & (batch["label"] == cw))
    assert swapped <= 6, (name, swapped)
