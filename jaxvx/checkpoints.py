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

Shipped checkpoints live in the repository's top-level ``checkpoints/`` folder. The environment variable
``JAXVX_CHECKPOINT_DIR`` (one folder, or several joined by ``os.pathsep``) is searched first, so it can add
checkpoints or shadow shipped ones of the same name.

Every problem with a file raises :class:`jaxvx.CheckpointError` naming the file and what is wrong: missing files,
unreadable JSON, a truncated or non-msgpack variables file, a sha256 mismatch, a card whose architecture cannot be
built, and variables that do not fit the architecture (missing or extra parameters, or a shape mismatch, each
named by its path with the expected and the actual shape).
"""

from __future__ import annotations

import builtins
import hashlib
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
    "save", "load", "load_card", "list", "checkpoint_dirs", "resolve", "param_count", "abstract_variables", "CARD_FORMAT"
]

CARD_FORMAT = "jaxvx-checkpoint/1"
_SHIPPED_DIR = Path(__file__).resolve().parents[1] / "checkpoints"


# ----------------------------------------------------------------------------------------------------------- paths
def checkpoint_dirs() -> builtins.list[Path]:
    """Folders searched for checkpoints by name, in order: each entry of ``$JAXVX_CHECKPOINT_DIR`` (split on
    ``os.pathsep``), then the repository's shipped ``checkpoints/`` folder."""
    dirs = [Path(p).expanduser() for p in os.environ.get("JAXVX_CHECKPOINT_DIR", "").split(os.pathsep) if p]
    dirs.append(_SHIPPED_DIR)
    return dirs


def list() -> builtins.list[str]:  # noqa: A001 - the public name asked for is ``jaxvx.checkpoints.list``
    """Sorted names of the checkpoints found in :func:`checkpoint_dirs` (a name counts when ``NAME.json`` and
    ``NAME.msgpack`` both exist)."""
    names = set()
    for d in checkpoint_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.json") if p.with_suffix(".msgpack").is_file())
    return sorted(names)


def resolve(name_or_path: str | os.PathLike) -> tuple[Path, Path]:
    """Paths ``(NAME.msgpack, NAME.json)`` of a checkpoint given by name or by path.

    A path may name the ``.msgpack`` file, the ``.json`` card, or their common stem. A bare name (no folder, no
    suffix) that is not a file is looked up in :func:`checkpoint_dirs`. Raises :class:`jaxvx.CheckpointError`
    listing the available names when nothing is found.
    """
    p = Path(name_or_path).expanduser()
    if p.suffix in (".msgpack", ".json"):
        stem = p.with_suffix("")
        if not p.is_file():
            raise CheckpointError(f"checkpoint file {str(p)!r} does not exist")
        return stem.with_suffix(".msgpack"), stem.with_suffix(".json")
    if p.with_suffix(".json").is_file() or p.with_suffix(".msgpack").is_file():
        return p.with_suffix(".msgpack"), p.with_suffix(".json")
    text = str(name_or_path)
    if os.sep not in text and "/" not in text:
        for d in checkpoint_dirs():
            if (d / f"{text}.json").is_file() or (d / f"{text}.msgpack").is_file():
                return d / f"{text}.msgpack", d / f"{text}.json"
    shipped = list()
    raise CheckpointError(
        f"no checkpoint named {text!r}: available checkpoints are {shipped} "
        f"(searched {[str(d) for d in checkpoint_dirs()]}; a path to a .msgpack or .json file also works)"
    )


# ------------------------------------------------------------------------------------------------------- helpers
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


def _check_fit(expected: Mapping, actual: Mapping, where: str) -> None:
    """Raise CheckpointError naming every missing, extra or mis-shaped variable."""
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
        raise CheckpointError(f"{where}: variables do not fit the card's architecture: " + "; ".join(problems))


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
    elif p.suffix != ".msgpack":
        p = p.with_name(p.name + ".msgpack") if p.suffix == "" else p.with_suffix(".msgpack")
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
    """Load a checkpoint by name (see :func:`list`) or path; return ``(model, variables, card)``.

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
