"""Small networks and a deterministic initialiser shared by the method tests (imported as ``_nets``)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvx.models import Flatten, ReLU


def init(model, x, seed=0):
    """Variables of ``model`` for input ``x``: biases N(0, 0.1), kernels He-normal, from a NumPy generator."""
    shapes = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    rng = np.random.default_rng(seed)

    def draw(s):
        if len(s.shape) == 1:
            return jnp.asarray(rng.normal(0, 0.1, s.shape), jnp.float32)
        return jnp.asarray(rng.normal(0, np.sqrt(2 / np.prod(s.shape[:-1])), s.shape), jnp.float32)

    return jax.tree.map(draw, shapes)


class MLP(nn.Module):
    """flatten, Dense 6, ReLU, Dense 5, ReLU, Dense 4."""

    @nn.compact
    def __call__(self, x):
        x = Flatten()(x)
        x = ReLU(name="relu1")(nn.Dense(6, name="fc1")(x))
        x = ReLU(name="relu2")(nn.Dense(5, name="fc2")(x))
        return nn.Dense(4, name="fc3")(x)
