"""Video classifiers as Flax linen modules.

Models (input ``[B, T, H, W, C]`` float32 channels-last, output logits ``[B, num_classes]``; ``__call__(x,
train=False)``):

- :class:`C3D` (Tran et al.), :class:`R2Plus1D18` (torchvision's ``r2plus1d_18``),
- :class:`CNNLSTM` (per-frame VGG16 or small CNN, LSTM, per-step classifier averaged over time),
- :class:`LSTMClassifier` (LSTM or input-cell attention LSTM over ``[B, T, F]`` features, or over video with a
  per-frame ``frontend``),
- :class:`I3D` (DeepMind's Kinetics-400 I3D; checkpoint ``"i3d-kinetics400"``), written as a user writes a Flax
  model (``nn.relu``, ``nn.max_pool``, ``nn.avg_pool`` called as functions, plain ``flax.linen.Conv``); it takes no
  ``train`` flag; :func:`kinetics400_class_names` gives its 400 class names.

Explanation methods read any model as a traced program (:mod:`jaxvx.program`), so nothing here is needed to
explain a model. The other models' 3D convolutions compute with :func:`conv_general_dilated` (their
``conv_general_dilated`` attribute): ``lax.conv_general_dilated``'s result, on the CPU by oneDNN's kernels (or as
2D convolutions, which XLA's CPU backend runs several times faster than its 3D ones; :func:`conv_form`); the
methods compute every model's convolutions that way. BatchNorm is ``flax.linen.BatchNorm`` (inference mode unless
``train=True``); the parameter-free layers are Modules (:class:`ReLU`, :class:`MaxPool3D` / :class:`MaxPool2D`,
:class:`AvgPool3D` / :class:`AvgPool2D`, :class:`Sum`, :class:`Flatten`, :class:`GlobalAvgPool`,
:class:`TemporalMean`), which gives each a module path (``"relu1"``, ``"pool5"``).

Utilities: :func:`fold_batchnorm` (BatchNorm merged into convs; LRP does it by itself), :func:`create` / :func:`config` /
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
    # parameter-free layers
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
