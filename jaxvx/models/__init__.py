"""Video classifiers as Flax linen modules, built so that explanation rules can intercept every layer.

Models (input ``[B, T, H, W, C]`` float32 channels-last, output logits ``[B, num_classes]``; ``__call__(x,
train=False)``):

- :class:`C3D` (Tran et al.), :class:`R2Plus1D18` (torchvision's ``r2plus1d_18``),
- :class:`CNNLSTM` (per-frame VGG16 or small CNN, LSTM, per-step classifier averaged over time),
- :class:`LSTMClassifier` (LSTM or input-cell attention LSTM over ``[B, T, F]`` features, or over video with a
  per-frame ``frontend``),
- :class:`I3D` (DeepMind's Kinetics-400 I3D; checkpoint ``"i3d-kinetics400"``). Unlike the others it is written as
  a user writes a Flax model (``nn.relu``, ``nn.max_pool``, ``nn.avg_pool`` called as functions, plain
  ``flax.linen.Conv``), takes no ``train`` flag, and its layers are not the interceptable Modules below;
  :func:`kinetics400_class_names` gives its 400 class names.

Layers of the other models: convolutions and dense layers are ``flax.linen.Conv`` / ``flax.linen.Dense``. Every 3D
conv computes with :func:`conv_general_dilated` (its ``conv_general_dilated`` attribute):
``lax.conv_general_dilated``'s result, on the CPU by oneDNN's kernels (or as 2D convolutions, which XLA's CPU
backend does 2 to 6 times faster than its 3D ones; :func:`conv_form`); a rule that re-applies a conv with modified
weights can call ``module.conv_general_dilated or lax.conv_general_dilated`` to keep that. BatchNorm is
``flax.linen.BatchNorm`` (inference mode unless ``train=True``); every parameter-free operation an explanation rule
must see is one of the Modules exported here: :class:`ReLU`, :class:`MaxPool3D` / :class:`MaxPool2D` (both
:class:`MaxPool`), :class:`AvgPool3D` / :class:`AvgPool2D` (both :class:`AvgPool`), :class:`Sum` (residual sums),
:class:`Flatten`, :class:`GlobalAvgPool`, :class:`TemporalMean`. Intercept them with
``flax.linen.intercept_methods`` (act on ``context.method_name == "__call__"``).

Utilities: :func:`fold_batchnorm` (BatchNorm merged into convs, for LRP), :func:`create` / :func:`config` /
:func:`from_config` (build by name, JSON-able model cards).
"""

from jaxvx.models._c3d import C3D
from jaxvx.models._fold import fold_batchnorm
from jaxvx.models._i3d import I3D, InceptionBlock, Unit3D, kinetics400_class_names
from jaxvx.models._layers import (
    AvgPool,
    AvgPool2D,
    AvgPool3D,
    Flatten,
    GlobalAvgPool,
    MaxPool,
    MaxPool2D,
    MaxPool3D,
    ReLU,
    Sum,
    TemporalMean,
    conv_general_dilated,
    conv_form,
)
from jaxvx.models._lstm import CNNLSTM, LSTM, VGG16, InputCellAttention, LSTMClassifier, SmallCNN
from jaxvx.models._r2plus1d import BasicBlock, Conv2Plus1D, R2Plus1D18, midplanes
from jaxvx.models._registry import ARCHITECTURES, config, create, from_config

__all__ = [
    # models
    "C3D",
    "R2Plus1D18",
    "CNNLSTM",
    "LSTMClassifier",
    "I3D",
    # building blocks
    "Conv2Plus1D",
    "BasicBlock",
    "midplanes",
    "SmallCNN",
    "VGG16",
    "LSTM",
    "InputCellAttention",
    "Unit3D",
    "InceptionBlock",
    "kinetics400_class_names",
    # interceptable parameter-free layers
    "ReLU",
    "MaxPool",
    "MaxPool2D",
    "MaxPool3D",
    "AvgPool",
    "AvgPool2D",
    "AvgPool3D",
    "Sum",
    "Flatten",
    "GlobalAvgPool",
    "TemporalMean",
    "conv_general_dilated",
    "conv_form",
    # utilities
    "fold_batchnorm",
    "ARCHITECTURES",
    "create",
    "config",
    "from_config",
]
