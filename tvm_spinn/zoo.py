"""Reference models (PyTorch): the MSc thesis's models and standard small CNNs, as used
by the tests, the benchmarks and the tutorials (shared/notes/benchmarks.md).

Keras-style "same" padding of the thesis models is asymmetric when the total is odd:
it is written with explicit ``F.pad``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

L = nn.Linear


def mlp64() -> nn.Module:
    """Thesis MLP-64: 64 -> Dense 128 -> Dense 128 relu -> Dense 10 softmax."""
    return nn.Sequential(L(64, 128), L(128, 128), nn.ReLU(), L(128, 10), nn.Softmax(-1))


def board_filling_mlp() -> nn.Module:
    """Thesis board-filling MLP: 224 -> 50 relu -> 50 softmax -> 300 tanh -> 50 sigmoid -> 25 -> 17 softmax."""
    return nn.Sequential(L(224, 50), nn.ReLU(), L(50, 50), nn.Softmax(-1), L(50, 300), nn.Tanh(),
                         L(300, 50), nn.Sigmoid(), L(50, 25), L(25, 17), nn.Softmax(-1))


def mlp_784() -> nn.Module:
    """Classic MNIST MLP 784-300-100-10 (relu)."""
    return nn.Sequential(L(784, 300), nn.ReLU(), L(300, 100), nn.ReLU(), L(100, 10))


def same_pad(k: int, s: int, n: int) -> tuple:
    """Keras "same" padding (left, right) of a length-n axis: asymmetric for even totals."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
        self.f1, self.f2, self.f3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(torch.relu(self.c1(x)), 2)
        x = F.max_pool2d(torch.relu(self.c2(x)), 2)
        x = torch.flatten(x, 1)
        return self.f3(torch.relu(self.f2(torch.relu(self.f1(x)))))


class ResBlock(nn.Module):
    """MLPerf Tiny ResNet-8 stack: Keras "same" convs (asymmetric pad when strided), BN,
    1x1 strided shortcut conv when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, size: int):
        super().__init__()
        self.pad = same_pad(3, stride, size)
        self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride), nn.BatchNorm2d(cout)
        self.c2, self.b2 = nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout)
        self.short = nn.Conv2d(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        left, right = self.pad
        y = torch.relu(self.b1(self.c1(F.pad(x, (left, right, left, right)))))
        y = self.b2(self.c2(y))
        return torch.relu((x if self.short is None else self.short(x)) + y)


class ResNet8(nn.Module):
    def __init__(self):
        super().__init__()
        self.c, self.b = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.s1, self.s2, self.s3 = ResBlock(16, 16, 1, 32), ResBlock(16, 32, 2, 32), ResBlock(32, 64, 2, 16)
        self.fc = nn.Linear(64, 10)

    def logits(self, x):
        x = torch.relu(self.b(self.c(x)))
        x = self.s3(self.s2(self.s1(x)))
        return self.fc(torch.flatten(F.avg_pool2d(x, 8), 1))

    def forward(self, x):
        return torch.softmax(self.logits(x), -1)


class Conv1DSmall(nn.Module):
    """Thesis Conv1D-small: 4 x 64 -> Conv1D(20, 3) valid -> Conv1D(5, 3, relu, same, /2)
    -> flatten -> Dense 10 -> softmax (on the host)."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.fc = nn.Conv1d(4, 20, 3), nn.Conv1d(20, 5, 3, stride=2), nn.Linear(155, 10)

    def logits(self, x):
        x = self.c1(x)
        x = torch.relu(self.c2(F.pad(x, same_pad(3, 2, 62))))
        return self.fc(torch.flatten(x, 1))

    def forward(self, x):
        return torch.softmax(self.logits(x), -1)


class BoardFillingCNN(nn.Module):
    """3 x 224 -> Conv1D(1, 3, same) -> Conv1D(5, 12, same) -> Conv1D(16, 3, same, /2)
    -> flatten -> Dense 16."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(3, 1, 3, padding="same")
        self.c2 = nn.Conv1d(1, 5, 12, padding="same")  # even kernel: imported as pad(0, 1) + conv pad 5
        self.c3 = nn.Conv1d(5, 16, 3, stride=2)
        self.fc = nn.Linear(16 * 112, 16)

    def logits(self, x):
        x = self.c2(self.c1(x))
        x = self.c3(F.pad(x, same_pad(3, 2, 224)))
        return self.fc(x.view(x.size(0), -1))

    forward = logits


class PoolNet1D(nn.Module):
    """conv1d + max/avg pool1d with strides, explicit and implicit padding, ceil_mode."""

    def __init__(self):
        super().__init__()
        self.c = nn.Conv1d(4, 8, 4, stride=2)
        self.fc = nn.Linear(8 * 6, 6)

    def logits(self, x):
        x = torch.relu(self.c(F.pad(x, (1, 2))))                                         # 50 -> 25
        x = F.max_pool1d(F.pad(x, (1, 1), value=float("-inf")), 3, 2)                     # -> 13
        x = F.avg_pool1d(x, 3, 2, padding=1, ceil_mode=True, count_include_pad=False)     # -> 7
        x = F.max_pool1d(x, 2, 2, padding=1)                                              # -> 4
        x = F.avg_pool1d(F.pad(x, (0, 1)), 2, 1, padding=1, ceil_mode=True)              # -> 6
        return self.fc(x.flatten(1))

    forward = logits


class WideConv1D(nn.Module):
    """A Conv1D over 256 x 64: its input rows for even one output channel (4 samples in
    flight) do not fit a core's DTCM, so it is cut by input-channel groups (partial sums
    and reducers); BN folded, tanh on the reducers, then max pool and dense."""

    def __init__(self):
        super().__init__()
        self.c, self.b = nn.Conv1d(256, 8, 5, padding=2), nn.BatchNorm1d(8)
        self.fc = nn.Linear(8 * 32, 10)

    def forward(self, x):
        return self.fc(F.max_pool1d(torch.tanh(self.b(self.c(x))), 2).flatten(1))


class WideConv2D(nn.Module):
    """A Conv2D over 128 x 20 x 20 (cut by input-channel groups as WideConv1D), sigmoid,
    then a 3x3 conv and dense."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(128, 4, 3), nn.Conv2d(4, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.c2(torch.sigmoid(self.c1(x)))).flatten(1))


class DSCNN(nn.Module):
    """MLPerf Tiny keyword spotting DS-CNN: 1 x 49 x 10 MFCCs -> Conv2d 64 (10 x 4, stride 2,
    "same") + BN + ReLU -> 4 x (depthwise 3 x 3 + BN + ReLU, pointwise 64 + BN + ReLU) ->
    global average pool -> Linear 12. 2.66 M MACs."""

    def __init__(self):
        super().__init__()
        layers = [nn.Conv2d(1, 64, (10, 4), stride=2, padding=(5, 1)), nn.BatchNorm2d(64), nn.ReLU()]
        for _ in range(4):
            layers += [nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.BatchNorm2d(64), nn.ReLU(),
                       nn.Conv2d(64, 64, 1), nn.BatchNorm2d(64), nn.ReLU()]
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(64, 12)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.features(x), 1).flatten(1))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so that folding is tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.3)
    return model


