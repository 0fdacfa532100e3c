"""R(2+1)D-18 (Tran et al., CVPR 2018) in torchvision's ``r2plus1d_18`` layout."""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax

from jaxvx._checks import check_int
from jaxvx.models._c3d import _check_width
from jaxvx.models._layers import GlobalAvgPool, ReLU, Sum, conv_general_dilated, scaled

__all__ = ["R2Plus1D18", "Conv2Plus1D", "BasicBlock", "midplanes"]

BN_EPSILON = 1e-5  # torch.nn.BatchNorm3d's default

# torchvision's init: kaiming normal (fan_out, relu gain) for convs, N(0, 0.01) for the classifier
_conv_init = jax.nn.initializers.variance_scaling(2.0, "fan_out", "normal")
_fc_init = jax.nn.initializers.normal(0.01)
_CONV = dict(kernel_init=_conv_init, conv_general_dilated=conv_general_dilated)


def midplanes(inplanes: int, planes: int) -> int:
    """Channels between the spatial and the temporal conv of a (2+1)D block: ``(i*p*27) // (i*9 + 3*p)``.

    The count that gives the factorised conv the parameters of a full 3x3x3 conv (torchvision's formula).
    """
    return (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)


def _bn(train: bool, name: str):
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=BN_EPSILON, name=name)


class Conv2Plus1D(nn.Module):
    """A (2+1)D convolution: spatial conv, BatchNorm, ReLU, temporal conv, BatchNorm.

    ``spatial``: ``Conv(mid, (1, k, k), stride (1, s, s), padding (0, k//2, k//2))``, ``spatial_bn``,
    ``spatial_relu``, ``temporal``: ``Conv(out, (kt, 1, 1), stride (s_t, 1, 1), padding (kt//2, 0, 0))``,
    ``temporal_bn``. No conv bias; with ``fold_bn=True`` the BatchNorms are absent and the convs have biases.
    (torchvision's ``Conv2Plus1D`` is the part up to ``temporal``; its BatchNorm after it lives in the enclosing
    ``Sequential`` and is ``temporal_bn`` here, so that every BatchNorm is named ``<conv>_bn`` beside its conv.)

    Input / output channels-last ``[B, T, H, W, C]``.
    """

    features: int
    mid: int
    spatial_kernel: int = 3
    temporal_kernel: int = 3
    stride: int = 1
    temporal_stride: int | None = None
    fold_bn: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        k, kt, s = self.spatial_kernel, self.temporal_kernel, self.stride
        st = s if self.temporal_stride is None else self.temporal_stride
        bias = self.fold_bn
        x = nn.Conv(self.mid, (1, k, k), (1, s, s), padding=((0, 0), (k // 2, k // 2), (k // 2, k // 2)),
                    use_bias=bias, **_CONV, name="spatial")(x)
        if not self.fold_bn:
            x = _bn(train, "spatial_bn")(x)
        x = ReLU(name="spatial_relu")(x)
        x = nn.Conv(self.features, (kt, 1, 1), (st, 1, 1), padding=((kt // 2, kt // 2), (0, 0), (0, 0)),
                    use_bias=bias, **_CONV, name="temporal")(x)
        if not self.fold_bn:
            x = _bn(train, "temporal_bn")(x)
        return x


class BasicBlock(nn.Module):
    """torchvision's video ``BasicBlock`` with (2+1)D convs.

    ``conv1`` (:class:`Conv2Plus1D`, stride ``stride``), ``relu1``, ``conv2`` (:class:`Conv2Plus1D`, stride 1),
    ``downsample`` (1x1x1 conv, stride ``stride`` in T, H and W, no bias) + ``downsample_bn`` when ``stride != 1``
    or the channel count changes, ``sum`` (:class:`Sum` of the residual and the block), ``relu``. Both (2+1)D convs
    use ``midplanes(inplanes, planes)`` middle channels, as torchvision does.
    """

    planes: int
    stride: int = 1
    fold_bn: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        inplanes = x.shape[-1]
        mid = midplanes(inplanes, self.planes)
        out = Conv2Plus1D(self.planes, mid, stride=self.stride, fold_bn=self.fold_bn, name="conv1")(x, train)
        out = ReLU(name="relu1")(out)
        out = Conv2Plus1D(self.planes, mid, fold_bn=self.fold_bn, name="conv2")(out, train)
        if self.stride != 1 or inplanes != self.planes:
            s = self.stride
            x = nn.Conv(self.planes, (1, 1, 1), (s, s, s), padding="VALID", use_bias=self.fold_bn,
                        **_CONV, name="downsample")(x)
            if not self.fold_bn:
                x = _bn(train, "downsample_bn")(x)
        out = Sum(name="sum")(out, x)
        return ReLU(name="relu")(out)


class R2Plus1D18(nn.Module):
    """R(2+1)D-18, torchvision's ``r2plus1d_18`` (31,505,325 parameters at 400 classes).

    Input ``[B, T, H, W, C]`` float32 (Kinetics: 16 x 112 x 112), output logits ``[B, num_classes]``.

    Submodules (named after torchvision's, ``.`` becoming ``_`` or ``/``):
      - ``stem``: :class:`Conv2Plus1D` with a (1,7,7) spatial conv, stride (1,2,2), padding (0,3,3), to
        ``scaled(45)`` channels, then a (3,1,1) temporal conv to ``scaled(64)``; then ``stem_relu``.
      - ``layer1_0``, ``layer1_1``, ..., ``layer4_1``: :class:`BasicBlock` s of 64, 128, 256, 512 planes (scaled);
        stride 2 in the first block of layers 2 to 4. For Grad-CAM on the last block use ``layer="layer4_1"``.
      - ``avgpool``: :class:`GlobalAvgPool` (``[B, C]``), ``fc``: Dense to ``num_classes``.

    BatchNorm (eps 1e-5, momentum 0.1 in PyTorch's convention) normalises with ``batch_stats`` unless
    ``train=True``, which normalises with the batch's statistics and needs ``mutable=["batch_stats"]``.

    Attributes:
        num_classes: number of output logits.
        width: multiplies every channel count (rounded half up, at least 1); middle channels of the (2+1)D convs
            follow from the scaled counts with :func:`midplanes`.
        fold_bn: if True the model has no BatchNorm and its convs have biases: the form
            :func:`jaxvx.models.fold_batchnorm` rewrites a trained model into (needed by LRP).
    """

    num_classes: int
    width: float = 1.0
    fold_bn: bool = False
    # the last convolution's block and the Dense head on its global average (saliency tubes by name)
    tube_layers: ClassVar[tuple[str, str]] = ("layer4_1", "fc")

    def __post_init__(self):
        check_int("num_classes", self.num_classes, numpy=False)
        _check_width(self.width)
        super().__post_init__()

    @nn.compact
    def __call__(self, x, train: bool = False):
        """Logits ``[B, num_classes]`` of a clip batch ``x`` ``[B, T, H, W, C]``."""
        if x.ndim != 5:
            raise ValueError(f"x: expected a clip batch [B, T, H, W, C], got shape {tuple(x.shape)}")
        w = self.width
        x = Conv2Plus1D(scaled(64, w), scaled(45, w), spatial_kernel=7, temporal_kernel=3, stride=2,
                        temporal_stride=1, fold_bn=self.fold_bn, name="stem")(x, train)
        x = ReLU(name="stem_relu")(x)
        for i, planes in enumerate((64, 128, 256, 512), start=1):
            for j in range(2):
                stride = 2 if (i > 1 and j == 0) else 1
                x = BasicBlock(scaled(planes, w), stride, self.fold_bn, name=f"layer{i}_{j}")(x, train)
        x = GlobalAvgPool(name="avgpool")(x)
        return nn.Dense(self.num_classes, kernel_init=_fc_init, name="fc")(x)

