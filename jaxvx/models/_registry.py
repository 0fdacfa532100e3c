"""Build models by name and describe them as JSON-able configs (for model cards and checkpoints)."""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from jaxvx.models._c3d import C3D
from jaxvx.models._i3d import I3D
from jaxvx.models._lstm import CNNLSTM, LSTMClassifier
from jaxvx.models._r2plus1d import R2Plus1D18

__all__ = ["ARCHITECTURES", "create", "config", "from_config"]

#: architecture name -> model class
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "c3d": C3D,
    "r2plus1d18": R2Plus1D18,
    "cnnlstm": CNNLSTM,
    "lstm": LSTMClassifier,
    "i3d": I3D,
}

_SKIP = ("parent", "name")


def _fields(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in _SKIP and f.init]


def create(name: str, num_classes: int, **overrides) -> nn.Module:
    """A model by architecture name: ``create("c3d", 101, width=0.25)``.

    Args:
        name: one of ``"c3d"`` (:class:`C3D`), ``"r2plus1d18"`` (:class:`R2Plus1D18`), ``"cnnlstm"``
            (:class:`CNNLSTM`), ``"lstm"`` (:class:`LSTMClassifier`), ``"i3d"`` (:class:`I3D`).
        num_classes: number of output logits.
        **overrides: other constructor arguments of that class (``width``, ``backbone``, ``cell``, ...).

    Returns:
        The (unbound) Flax module.
    """
    if name not in ARCHITECTURES:
        raise ValueError(f"name: unknown architecture {name!r}; expected one of {sorted(ARCHITECTURES)}")
    cls = ARCHITECTURES[name]
    unknown = sorted(set(overrides) - set(_fields(cls)))
    if unknown:
        raise TypeError(f"overrides: {cls.__name__} has no argument(s) {unknown}; it takes {_fields(cls)}")
    return cls(num_classes=num_classes, **overrides)


def _jsonable(v):
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    return v


def config(model: nn.Module) -> dict:
    """A JSON-able description of ``model``: ``{"arch": name, **every constructor argument}``.

    E.g. ``{"arch": "c3d", "num_classes": 101, "width": 1.0, "dropout": 0.5}``; :func:`from_config` inverts it.
    """
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return {"arch": name, **{f: _jsonable(getattr(model, f)) for f in _fields(cls)}}
    raise TypeError(f"model: expected one of {[c.__name__ for c in ARCHITECTURES.values()]}, "
                    f"got {type(model).__name__}")


def from_config(cfg: dict) -> nn.Module:
    """Rebuild a model from :func:`config`'s dict: ``{"arch": name, "num_classes": K, **kwargs}``."""
    if not isinstance(cfg, dict) or "arch" not in cfg or "num_classes" not in cfg:
        raise ValueError(f"cfg: expected a dict with 'arch' and 'num_classes', got {cfg!r}")
    kwargs = {k: v for k, v in cfg.items() if k not in ("arch", "num_classes")}
    return create(cfg["arch"], cfg["num_classes"], **kwargs)
