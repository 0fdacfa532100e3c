"""Recurrent video classifiers: CNN-LSTM (Li et al.) and LSTM / input-cell attention LSTM (Ismail et al.)."""

from __future__ import annotations

from typing import ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvx._checks import check_int
from jaxvx.models._c3d import _check_width
from jaxvx.models._layers import Flatten, MaxPool2D, ReLU, TemporalMean, conv_general_dilated, scaled

__all__ = ["SmallCNN", "VGG16", "InputCellAttention", "LSTM", "CNNLSTM", "LSTMClassifier", "BACKBONES", "CELLS"]

BACKBONES = ("vgg16", "small")
CELLS = ("lstm", "input_cell_attention")

_xavier = jax.nn.initializers.xavier_uniform()
_zeros = jax.nn.initializers.zeros


class SmallCNN(nn.Module):
    """A small per-frame 2D CNN for CPUs: ``[N, H, W, C] -> [N, features]``.

    ``conv1`` (3x3, 16 channels), ``relu1``, ``pool1`` (2x2 max); ``conv2`` 32, ``relu2``, ``pool2``; ``conv3`` 64,
    ``relu3``, ``pool3``; ``flatten`` (:class:`Flatten`, ``[N, H/8 * W/8 * 64]``); ``fc`` (``features``),
    ``relu_fc``. Conv channel counts and ``features`` are multiplied by ``width``. Any H, W >= 8 works; ``fc``'s
    input size is fixed by the frame size at initialisation.

    The features keep where things are in the frame (a flatten, not a global average): the LSTM above must tell
    an actor moving right from one moving left, which a per-frame global average hides.
    """

    width: float = 1.0
    features: int = 128

    @property
    def out_features(self) -> int:
        return scaled(self.features, self.width)

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.ndim != 4:
            raise ValueError(f"x: SmallCNN expects frames [N, H, W, C], got shape {tuple(x.shape)}")
        for i, c in enumerate((16, 32, 64), start=1):
            x = nn.Conv(scaled(c, self.width), (3, 3), padding=((1, 1), (1, 1)),
                        conv_general_dilated=conv_general_dilated, name=f"conv{i}")(x)
            x = ReLU(name=f"relu{i}")(x)
            x = MaxPool2D((2, 2), name=f"pool{i}")(x)
        x = Flatten(name="flatten")(x)
        x = nn.Dense(self.out_features, name="fc")(x)
        return ReLU(name="relu_fc")(x)


_VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


class VGG16(nn.Module):
    """VGG16's conv layers and fc6/fc7 per frame: ``[N, H, W, C] -> [N, 4096 * width]``.

    ``conv1_1``, ``conv1_2``, ``pool1``, ..., ``conv5_3``, ``pool5`` (3x3 convs, padding 1, each with ``reluX_Y``;
    2x2 max pools), ``flatten`` (channels-first order, as PyTorch's ``x.view(N, -1)``), ``fc6``, ``relu6``,
    ``drop6``, ``fc7``, ``relu7``, ``drop7``. Frames of 224 x 224 give fc6 512 * 7 * 7 inputs; any H, W >= 32 works.
    """

    width: float = 1.0
    dropout: float = 0.5

    @property
    def out_features(self) -> int:
        return scaled(4096, self.width)

    @nn.compact
    def __call__(self, x, train: bool = False):
        if x.ndim != 4:
            raise ValueError(f"x: VGG16 expects frames [N, H, W, C], got shape {tuple(x.shape)}")
        if x.shape[1] < 32 or x.shape[2] < 32:
            raise ValueError(f"x: VGG16 needs H, W >= 32 (five 2x2 pools), got shape {tuple(x.shape)}")
        for b, block in enumerate(_VGG16, start=1):
            for j, c in enumerate(block, start=1):
                x = nn.Conv(scaled(c, self.width), (3, 3), padding=((1, 1), (1, 1)),
                            conv_general_dilated=conv_general_dilated, name=f"conv{b}_{j}")(x)
                x = ReLU(name=f"relu{b}_{j}")(x)
            x = MaxPool2D((2, 2), name=f"pool{b}")(x)
        x = Flatten(channels_first=True, name="flatten")(x)
        for i in (6, 7):
            x = nn.Dense(self.out_features, name=f"fc{i}")(x)
            x = ReLU(name=f"relu{i}")(x)
            x = nn.Dropout(self.dropout, deterministic=not train, name=f"drop{i}")(x)
        return x


def _backbone(name: str, width: float, dropout: float):
    if name == "vgg16":
        return VGG16(width=width, dropout=dropout)
    if name == "small":
        return SmallCNN(width=width)
    raise ValueError(f"backbone: expected one of {BACKBONES}, got {name!r}")


def _per_frame(cnn, x, train):
    """Apply a 2D CNN to every frame at once: ``[B, T, H, W, C] -> [B*T, H, W, C] -> [B, T, F]``."""
    if x.ndim != 5:
        raise ValueError(f"x: expected a clip batch [B, T, H, W, C], got shape {tuple(x.shape)}")
    b, t = x.shape[:2]
    f = cnn(x.reshape((b * t,) + x.shape[2:]), train)
    return f.reshape(b, t, -1)


class InputCellAttention(nn.Module):
    """The attention of Ismail et al.'s input-cell attention, for every step at once: ``[B, T, N] -> [B, T, N]``.

    Scores ``e_s = W2 tanh(W1 x_s + b1) + b2`` (``w1``: N -> d_a, ``w2``: d_a -> r; Xavier-uniform matrices,
    biases zero at init); at step t the weights of hop j are a softmax over the inputs so far,
    ``A_t[j, s] = exp(e_s[j]) / sum_{s' <= t} exp(e_s'[j])`` for s <= t (0 for s > t: a causal mask), and the
    output is ``m_t = mean_j sum_s A_t[j, s] x_s``, i.e. the mean over the r hops of ``M_t = A_t X_{1..t}``.

    The scores of x_s do not depend on t, so this is Ismail et al.'s cell (which recomputes them over the growing
    history at every step) evaluated in parallel with a ``[T, T]`` causal mask: fixed shapes, no loop, jittable.
    """

    r: int = 20
    d_a: int = 50

    @nn.compact
    def __call__(self, x):
        if x.ndim != 3:
            raise ValueError(f"x: expected features [B, T, N], got shape {tuple(x.shape)}")
        t = x.shape[1]
        e = nn.Dense(self.r, kernel_init=_xavier, bias_init=_zeros, name="w2")(
            jnp.tanh(nn.Dense(self.d_a, kernel_init=_xavier, bias_init=_zeros, name="w1")(x)))  # [B, T(s), r]
        causal = jnp.tril(jnp.ones((t, t), dtype=bool))  # [t, s]: s <= t
        logits = jnp.where(causal[None, :, :, None], e[:, None, :, :], jnp.finfo(e.dtype).min)  # [B, t, s, r]
        a = jax.nn.softmax(logits, axis=2)
        a = jnp.where(causal[None, :, :, None], a, 0.0)
        return jnp.einsum("btsr,bsn->btn", a, x) / self.r


class LSTM(nn.Module):
    """A one-layer LSTM over ``[B, T, N]``, returning every hidden state ``[B, T, hidden]``.

    With ``cell="lstm"`` the step input is ``u_t = x_t``; with ``cell="input_cell_attention"`` it is
    ``u_t = m_t`` of :class:`InputCellAttention` (submodule ``attention``). Then, from ``h_0 = c_0 = 0``:
    ``(i, f, g, o) = u_t W + b + h_{t-1} U`` (gate order i, f, g, o as in PyTorch; ``input`` is the Dense with W
    ``[N, 4H]`` and b, ``recurrent`` the parameter U ``[H, 4H]``; Xavier-uniform, zero bias),
    ``c_t = sigmoid(f) c_{t-1} + sigmoid(i) tanh(g)``, ``h_t = sigmoid(o) tanh(c_t)``.

    ``u_t W + b`` is computed for all steps at once; only the recurrence runs in a ``lax.scan`` over time.
    """

    hidden: int
    cell: str = "lstm"
    r: int = 20
    d_a: int = 50

    @nn.compact
    def __call__(self, x):
        if x.ndim != 3:
            raise ValueError(f"x: expected features [B, T, N], got shape {tuple(x.shape)}")
        if self.cell == "input_cell_attention":
            x = InputCellAttention(self.r, self.d_a, name="attention")(x)
        elif self.cell != "lstm":
            raise ValueError(f"cell: expected one of {CELLS}, got {self.cell!r}")
        h_dim = self.hidden
        zx = nn.Dense(4 * h_dim, kernel_init=_xavier, bias_init=_zeros, name="input")(x)  # [B, T, 4H]
        u = self.param("recurrent", _xavier, (h_dim, 4 * h_dim), zx.dtype)

        def step(carry, z):
            c, h = carry
            i, f, g, o = jnp.split(z + h @ u, 4, axis=-1)
            c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h = jax.nn.sigmoid(o) * jnp.tanh(c)
            return (c, h), h

        zeros = jnp.zeros((x.shape[0], h_dim), zx.dtype)
        _, hs = jax.lax.scan(step, (zeros, zeros), jnp.swapaxes(zx, 0, 1))
        return jnp.swapaxes(hs, 0, 1)


class CNNLSTM(nn.Module):
    """CNN-LSTM video classifier (Li et al.'s VGG16-LSTM): per-frame CNN, LSTM, per-step classifier, time mean.

    Input ``[B, T, H, W, C]`` float32, output logits ``[B, num_classes]``.

    Submodules: ``cnn`` (:class:`VGG16` conv layers + fc6/fc7, or :class:`SmallCNN`), applied to all ``B*T``
    frames at once (it sees ``[B*T, H, W, C]``, so a Grad-CAM on ``cnn/conv5_3`` gets ``[B*T, h, w, C]``);
    ``lstm`` (:class:`LSTM`, ``hidden`` units) over the frame features ``[B, T, F]``; ``classifier`` (Dense)
    applied to every hidden state, giving per-step logits ``[B, T, K]`` (:meth:`step_logits`); ``mean``
    (:class:`TemporalMean`) averages them over time.

    Attributes:
        num_classes: number of output logits.
        backbone: ``"vgg16"`` (the paper's; 224 x 224 frames) or ``"small"`` (for CPUs).
        hidden: LSTM units (512 in the paper).
        width: multiplies the backbone's channel counts and feature size.
        dropout: dropout after VGG16's fc6 and fc7 when ``train=True``.
    """

    num_classes: int
    backbone: str = "vgg16"
    hidden: int = 512
    width: float = 1.0
    dropout: float = 0.5
    # the per-frame feature module feeding the LSTM and the classifier after it (contrastive EB by name)
    lstm_layers: ClassVar[tuple[str, str]] = ("cnn", "classifier")

    def __post_init__(self):
        check_int("num_classes", self.num_classes, numpy=False)
        check_int("hidden", self.hidden, numpy=False)
        _check_width(self.width)
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone: expected one of {BACKBONES}, got {self.backbone!r}")
        super().__post_init__()

    def setup(self):
        self.cnn = _backbone(self.backbone, self.width, self.dropout)
        self.lstm = LSTM(self.hidden)
        self.classifier = nn.Dense(self.num_classes)
        self.mean = TemporalMean()

    def frame_features(self, x, train: bool = False):
        """Per-frame CNN features ``[B, T, F]`` of a clip batch ``[B, T, H, W, C]``."""
        return _per_frame(self.cnn, x, train)

    def step_logits(self, x, train: bool = False):
        """Per-time-step logits ``[B, T, num_classes]`` (the classifier on every LSTM hidden state)."""
        return self.classifier(self.lstm(self.frame_features(x, train)))

    def __call__(self, x, train: bool = False):
        """Logits ``[B, num_classes]``: the per-step logits averaged over time."""
        return self.mean(self.step_logits(x, train))


class LSTMClassifier(nn.Module):
    """LSTM or input-cell attention LSTM classifier (Ismail et al.) reading the last hidden state.

    Input: features ``[B, T, F]`` when ``frontend`` is None, or a clip batch ``[B, T, H, W, C]`` when a per-frame
    ``frontend`` (``"small"``: :class:`SmallCNN`, ``"vgg16"``: :class:`VGG16`; submodule ``cnn``) turns frames
    into features first. Output logits ``[B, num_classes]`` = ``classifier`` (Dense) of ``h_T``, the hidden state
    after the last step (as in Ismail et al.; for input-cell attention ``h_T`` has seen every input through the
    attention at every step).

    Attributes:
        num_classes: number of output logits.
        cell: ``"lstm"`` or ``"input_cell_attention"`` (see :class:`LSTM`).
        r, d_a: attention hops and attention width of the input-cell attention (20 and 50 in the paper).
        hidden: LSTM units.
        frontend: None, ``"small"`` or ``"vgg16"``.
        width: multiplies the frontend's channel counts and feature size.
    """

    num_classes: int
    cell: str = "lstm"
    r: int = 20
    d_a: int = 50
    hidden: int = 128
    frontend: str | None = None
    width: float = 1.0

    def __post_init__(self):
        check_int("num_classes", self.num_classes, numpy=False)
        check_int("hidden", self.hidden, numpy=False)
        check_int("r", self.r, numpy=False)
        check_int("d_a", self.d_a, numpy=False)
        _check_width(self.width)
        if self.cell not in CELLS:
            raise ValueError(f"cell: expected one of {CELLS}, got {self.cell!r}")
        if self.frontend is not None and self.frontend not in BACKBONES:
            raise ValueError(f"frontend: expected None or one of {BACKBONES}, got {self.frontend!r}")
        super().__post_init__()

    def setup(self):
        if self.frontend == "vgg16":
            self.cnn = VGG16(width=self.width)
        elif self.frontend == "small":
            self.cnn = SmallCNN(width=self.width)
        self.lstm = LSTM(self.hidden, self.cell, self.r, self.d_a)
        self.classifier = nn.Dense(self.num_classes)

    def features(self, x, train: bool = False):
        """The LSTM's input ``[B, T, F]``: ``x`` itself, or the frontend's per-frame features of a clip batch."""
        if self.frontend is None:
            if x.ndim != 3:
                raise ValueError(f"x: expected features [B, T, F] (no frontend), got shape {tuple(x.shape)}")
            return x
        return _per_frame(self.cnn, x, train)

    def hidden_states(self, x, train: bool = False):
        """Every hidden state ``[B, T, hidden]``."""
        return self.lstm(self.features(x, train))

    def __call__(self, x, train: bool = False):
        """Logits ``[B, num_classes]`` from the last hidden state."""
        return self.classifier(self.hidden_states(x, train)[:, -1])
