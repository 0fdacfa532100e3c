"""C3D (Tran et al., ICCV 2015), layer for layer as the common Sports-1M PyTorch port."""

from __future__ import annotations

import flax.linen as nn

from jaxvx._checks import check_int
from jaxvx.models._layers import Flatten, MaxPool3D, ReLU, conv_general_dilated, scaled

__all__ = ["C3D"]

# (name, output channels at width 1, pooling after it: (name, window, padding) or None)
_CONVS = (
    ("conv1", 64, ("pool1", (1, 2, 2), "VALID")),
    ("conv2", 128, ("pool2", (2, 2, 2), "VALID")),
    ("conv3a", 256, None),
    ("conv3b", 256, ("pool3", (2, 2, 2), "VALID")),
    ("conv4a", 512, None),
    ("conv4b", 512, ("pool4", (2, 2, 2), "VALID")),
    ("conv5a", 512, None),
    ("conv5b", 512, ("pool5", (2, 2, 2), ((0, 0), (1, 1), (1, 1)))),
)


def _check_width(width):
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width: expected a positive number, got {width!r}")


class C3D(nn.Module):
    """C3D: eight 3x3x3 convolutions, five max pools, three dense layers.

    Input ``[B, T, H, W, C]`` float32 (the paper: 16 x 112 x 112 RGB), output logits ``[B, num_classes]``.

    Layers (convs are ``flax.linen.Conv`` 3x3x3, stride 1, zero padding 1, with bias, computed by
    :func:`conv_general_dilated`, each followed by a :class:`ReLU` ``reluX``; pools are :class:`MaxPool3D`):
    conv1 64, pool1 (1,2,2); conv2 128, pool2 (2,2,2); conv3a, conv3b 256, pool3 (2,2,2); conv4a, conv4b 512,
    pool4 (2,2,2); conv5a, conv5b 512, pool5 (2,2,2) with spatial padding (0,1,1) (``-inf`` padding, as the PyTorch
    port's ``MaxPool3d(padding=(0, 1, 1))``); ``flatten``; fc6 4096, relu6, drop6; fc7 4096, relu7, drop7; fc8.
    At 16 x 112 x 112 the flattened pool5 output has 512 * 1 * 4 * 4 = 8192 features.

    Flatten order: ``flatten`` is ``Flatten(channels_first=True)``: the features are ordered ``(C, T, H, W)`` as in
    PyTorch's ``x.view(-1, 8192)`` of an NCDHW tensor, so ``fc6``'s weights convert from the PyTorch port by a plain
    transpose (see :func:`jaxvx.convert.c3d_from_torch`).

    Attributes:
        num_classes: number of output logits.
        width: multiplies every conv channel count and the fc6/fc7 sizes (rounded half up, at least 1); 1.0 is the
            paper's network, smaller values give cheap variants for tests and CPUs.
        dropout: dropout rate after fc6 and fc7, applied only when ``train=True`` (needs a ``"dropout"`` rng).

    Other input sizes work as long as T >= 16 and H, W >= 16 (every pool keeps at least one position).
    """

    num_classes: int
    width: float = 1.0
    dropout: float = 0.5

    def __post_init__(self):
        check_int("num_classes", self.num_classes, numpy=False)
        _check_width(self.width)
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout: expected a rate in [0, 1), got {self.dropout!r}")
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Logits ``[B, num_classes]`` of a clip batch ``x`` ``[B, T, H, W, C]``."""
        if x.ndim != 5:
            raise ValueError(f"x: expected a clip batch [B, T, H, W, C], got shape {tuple(x.shape)}")
        _, t, h, w, _ = x.shape
        if t < 16 or h < 16 or w < 16:
            raise ValueError(f"x: C3D needs T >= 16 and H, W >= 16 (five pools), got shape {tuple(x.shape)}")
        for name, channels, pool in _CONVS:
            x = nn.Conv(scaled(channels, self.width), (3, 3, 3), padding=((1, 1),) * 3,
                        conv_general_dilated=conv_general_dilated, name=name)(x)
            x = ReLU(name="relu" + name[4:])(x)
            if pool is not None:
                pname, window, padding = pool
                x = MaxPool3D(window, window, padding, name=pname)(x)
        x = Flatten(channels_first=True, name="flatten")(x)
        for i in (6, 7):
            x = nn.Dense(scaled(4096, self.width), name=f"fc{i}")(x)
            x = ReLU(name=f"relu{i}")(x)
            x = nn.Dropout(self.dropout, deterministic=not train, name=f"drop{i}")(x)
        return nn.Dense(self.num_classes, name="fc8")(x)
