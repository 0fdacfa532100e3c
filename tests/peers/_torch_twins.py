"""PyTorch twins of jaxvx's C3D and R(2+1)D-18, for the peer tests and the benchmarks.

A twin has the parameter names of the weights users convert (the common C3D Sports-1M port: ``conv1``, ``conv2``,
``conv3a`` ... ``fc8``; torchvision's ``r2plus1d_18``), so that ``jaxvx.convert`` turns its ``state_dict`` into
the same network in Flax, and the two can be run side by side on identical weights. Not part of the package (the
benchmarks in scripts/bench/ import it from here); the caller passes the ``torch`` module (torch is an optional
dependency, the ``peers`` extra).
"""

from __future__ import annotations

from jaxvx.models._layers import scaled

__all__ = ["c3d", "c3d_fc_in", "r2plus1d_18"]

_C3D_CONVS = ("conv1", "conv2", "conv3a", "conv3b", "conv4a", "conv4b", "conv5a", "conv5b")
_C3D_CHANNELS = (64, 128, 256, 256, 512, 512, 512, 512)


def c3d_fc_in(frames: int = 16, size: int = 112) -> int:
    """Positions after ``pool5`` for ``[frames, size, size]`` clips: ``frames / 16`` in time and
    ``(size / 16) // 2 + 1`` per side (pool5 pads one pixel on each side); 16 for 16 x 112 x 112."""
    return (frames // 16) * ((size // 16) // 2 + 1) ** 2


def c3d(torch, num_classes: int, width: float = 1.0, *, fc_in: int | None = None, frames: int = 16,
        size: int = 112):
    """The common PyTorch C3D port (Tran et al.'s layout, pool5 padded (0, 1, 1)), channels scaled by ``width``.

    One ``ReLU`` module per use (``relu1`` ... ``relu5b``, ``relu6``, ``relu7``), so that zennit's and captum's
    module hooks see each of them; dropout after fc6 and fc7 as in the port (inactive in ``eval()``). ``fc_in``:
    the positions after pool5 (default :func:`c3d_fc_in` of ``frames`` and ``size``). Input ``[N, 3, T, H, W]``.
    """
    nn = torch.nn
    chans = [3] + [scaled(c, width) for c in _C3D_CHANNELS]
    hidden = scaled(4096, width)
    fc_in = c3d_fc_in(frames, size) if fc_in is None else fc_in
    pools = {"conv1": ((1, 2, 2), (0, 0, 0)), "conv2": ((2, 2, 2), (0, 0, 0)), "conv3b": ((2, 2, 2), (0, 0, 0)),
             "conv4b": ((2, 2, 2), (0, 0, 0)), "conv5b": ((2, 2, 2), (0, 1, 1))}

    class C3DPort(nn.Module):
        def __init__(self):
            super().__init__()
            for i, name in enumerate(_C3D_CONVS):
                setattr(self, name, nn.Conv3d(chans[i], chans[i + 1], kernel_size=3, padding=1))
                setattr(self, "relu" + name[4:], nn.ReLU())
                if name in pools:
                    window, pad = pools[name]
                    setattr(self, "pool" + name[4], nn.MaxPool3d(window, window, padding=pad))
            self.fc6 = nn.Linear(chans[-1] * fc_in, hidden)
            self.relu6 = nn.ReLU()
            self.drop6 = nn.Dropout(p=0.5)
            self.fc7 = nn.Linear(hidden, hidden)
            self.relu7 = nn.ReLU()
            self.drop7 = nn.Dropout(p=0.5)
            self.fc8 = nn.Linear(hidden, num_classes)

        def forward(self, x):
            for name in _C3D_CONVS:
                x = getattr(self, "relu" + name[4:])(getattr(self, name)(x))
                if name in pools:
                    x = getattr(self, "pool" + name[4])(x)
            x = x.reshape(x.shape[0], -1)
            x = self.drop6(self.relu6(self.fc6(x)))
            x = self.drop7(self.relu7(self.fc7(x)))
            return self.fc8(x)

    return C3DPort()


def r2plus1d_18(torch, num_classes: int, width: float = 1.0):
    """torchvision's ``r2plus1d_18`` layout (stem (1, 7, 7) to 45 mid-planes then (3, 1, 1) to 64; four stages of
    two BasicBlocks of (2+1)D convolutions with mid-planes ``(cin cout 27) // (9 cin + 3 cout)``; BatchNorm;
    global average pool; fc), channels scaled by ``width``. Input ``[N, 3, T, H, W]``."""
    nn = torch.nn

    def conv2plus1d(cin, cout, mid, stride=1):
        return nn.Sequential(
            nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False),
        )

    class BasicBlock(nn.Module):
        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            mid = (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)
            self.conv1 = nn.Sequential(conv2plus1d(inplanes, planes, mid, stride), nn.BatchNorm3d(planes),
                                       nn.ReLU(inplace=True))
            self.conv2 = nn.Sequential(conv2plus1d(planes, planes, mid), nn.BatchNorm3d(planes))
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            residual = x if self.downsample is None else self.downsample(x)
            return self.relu(self.conv2(self.conv1(x)) + residual)

    class VideoResNet(nn.Module):
        def __init__(self):
            super().__init__()
            s0, c0 = scaled(45, width), scaled(64, width)
            self.stem = nn.Sequential(
                nn.Conv3d(3, s0, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
                nn.BatchNorm3d(s0), nn.ReLU(inplace=True),
                nn.Conv3d(s0, c0, (3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
                nn.BatchNorm3d(c0), nn.ReLU(inplace=True))
            self.inplanes = c0
            self.layer1 = self._make_layer(scaled(64, width), 1)
            self.layer2 = self._make_layer(scaled(128, width), 2)
            self.layer3 = self._make_layer(scaled(256, width), 2)
            self.layer4 = self._make_layer(scaled(512, width), 2)
            self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
            self.fc = nn.Linear(scaled(512, width), num_classes)

        def _make_layer(self, planes, stride):
            downsample = None
            if stride != 1 or self.inplanes != planes:
                downsample = nn.Sequential(nn.Conv3d(self.inplanes, planes, 1, stride=stride, bias=False),
                                           nn.BatchNorm3d(planes))
            blocks = [BasicBlock(self.inplanes, planes, stride, downsample), BasicBlock(planes, planes)]
            self.inplanes = planes
            return nn.Sequential(*blocks)

        def forward(self, x):
            x = self.stem(x)
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    return VideoResNet()
