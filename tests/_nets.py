"""Small networks and a deterministic initialiser shared by the method tests (imported as ``_nets``)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvx.models import Flatten, ReLU


def init(model, x, seed=0, *, bias_std=0.1, zero_bias=False, mean_std=0.2, scale_range=(0.5, 1.5)):
    """Variables of ``model`` for input ``x`` drawn with NumPy on ``jax.eval_shape(model.init)``'s shapes.

    Compiling ``model.init`` (jax's partitionable threefry on the CPU) takes seconds per parameter shape: 45 s for
    R(2+1)D-18 at width 1/16. Kernels are He-normal, biases N(0, bias_std) (zero with ``zero_bias``, as flax
    initialises them), BatchNorm means N(0, mean_std) and variances and scales U(scale_range): non-trivial statistics,
    so that folding them is tested.
    """
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(seed)

    def draw(path, s):
        name = getattr(path[-1], "key", None)
        if name == "mean":
            v = mean_std * rng.standard_normal(s.shape)
        elif name in ("var", "scale"):
            v = rng.uniform(*scale_range, s.shape)
        elif name == "bias" or len(s.shape) == 1:
            v = np.zeros(s.shape) if zero_bias else bias_std * rng.standard_normal(s.shape)
        else:
            v = rng.standard_normal(s.shape) * np.sqrt(2 / np.prod(s.shape[:-1]))
        return jnp.asarray(v, s.dtype)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def planned_temp_bytes(method, forward, video, target) -> int:
    """Bytes of temporaries XLA plans for ``jax.jit`` of ``method(forward, video, target)``: its buffer assignment,
    deterministic, so memory bounds are testable without measuring."""
    run = jax.jit(lambda v, t: method(forward, v, t))
    return run.lower(video, target).compile().memory_analysis().temp_size_in_bytes


class MLP(nn.Module):
    """flatten, Dense 6, ReLU, Dense 5, ReLU, Dense 4."""

    @nn.compact
    def __call__(self, x):
        x = Flatten()(x)
        x = ReLU(name="relu1")(nn.Dense(6, name="fc1")(x))
        x = ReLU(name="relu2")(nn.Dense(5, name="fc2")(x))
        return nn.Dense(4, name="fc3")(x)
