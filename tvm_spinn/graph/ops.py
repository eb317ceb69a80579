"""The operators of the graph IR: float descriptions of what the board computes,
independent of Relax and of the board (shapes and forward pass: :mod:`.network`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple, Union

import numpy as np

from ..kernels import ACTIVATIONS


def apply_activation(name: str, params: Tuple[float, ...], y: np.ndarray) -> np.ndarray:
    """Float activation: none, relu, tanh, sigmoid, clip (params lo, hi), leaky_relu (alpha)."""
    if name == "relu":
        return np.maximum(y, 0)
    if name == "tanh":
        return np.tanh(y)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-y))
    if name == "clip":
        return np.clip(y, params[0], params[1])
    if name == "leaky_relu":
        return np.where(y < 0, y * params[0], y)
    return y


@dataclass
class DenseLayer:
    """``y = activation(x @ weight.T + bias)`` for x of shape (batch, in_features).

    weight: float32 array (out_features, in_features); bias: float32 (out_features,) or None.
    name: a human readable name used in error messages (e.g. "dense_2 (784->1024)").
    inputs: in a network of tensor operators (below), the index of the op it reads.
    """

    weight: np.ndarray
    bias: Optional[np.ndarray]
    activation: str = "none"
    name: str = "dense"
    inputs: Tuple[int, ...] = ()
    act_params: Tuple[float, ...] = ()  # clip: (lo, hi); leaky_relu: (alpha,)

    def __post_init__(self) -> None:
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"{self.name}: unknown activation {self.activation!r}")
        self.weight = np.ascontiguousarray(self.weight, dtype=np.float32)
        if self.bias is not None:
            self.bias = np.ascontiguousarray(self.bias, dtype=np.float32)

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Float32 reference forward pass (numpy)."""
        y = x.astype(np.float32) @ self.weight.T
        if self.bias is not None:
            y = y + self.bias
        return apply_activation(self.activation, self.act_params, y).astype(np.float32)


# ---------------------------------------------------------------------------
# Tensor operators (convolutional networks). Tensors are (C, H, W) per sample,
# float32; 1D tensors (C, L) are (C, 1, L); dense vectors (N,) are (1, 1, N).
# A network is a list of ops in topological order; ``inputs`` are indices of
# earlier ops, NETWORK_INPUT for the network's input; empty = the previous op
# (the network input for the first op).
# ---------------------------------------------------------------------------
NETWORK_INPUT = -1


@dataclass
class Conv2D:
    """``y = act(conv2d(x, weight, stride, padding) + bias)``; groups 1 or depthwise
    (groups == in_c > 1, out_c = k * in_c: output channel o reads input channel o // k).

    weight: float32 (out_c, in_c // groups, kh, kw); padding: (top, left, bottom, right).
    """

    weight: np.ndarray
    bias: Optional[np.ndarray]
    stride: Tuple[int, ...] = (1, 1)
    padding: Tuple[int, ...] = (0, 0, 0, 0)
    groups: int = 1
    activation: str = "none"
    name: str = "conv2d"
    inputs: Tuple[int, ...] = ()
    act_params: Tuple[float, ...] = ()  # clip: (lo, hi); leaky_relu: (alpha,)

    @property
    def channel_multiplier(self) -> int:
        """0 for a dense conv (groups 1), else the depthwise channel multiplier out_c // groups."""
        return 0 if self.groups == 1 else self.weight.shape[0] // self.groups


@dataclass
class Pool2D:
    """Max or average pooling; padding (top, left, bottom, right); output size given
    explicitly (it encodes ceil_mode). count_include_pad: avg divides by kh*kw."""

    kind: str  # "max" | "avg"
    kernel: Tuple[int, ...]
    stride: Tuple[int, ...]
    padding: Tuple[int, ...]
    out_hw: Tuple[int, ...]
    count_include_pad: bool = True
    name: str = "pool2d"
    inputs: Tuple[int, ...] = ()


@dataclass
class Add:
    """Residual add of two on-board tensors of the same shape, then activation."""

    activation: str = "none"
    name: str = "add"
    inputs: Tuple[int, ...] = ()  # two indices
    act_params: Tuple[float, ...] = ()  # clip: (lo, hi); leaky_relu: (alpha,)


@dataclass
class Flatten:
    """(C, H, W) -> (1, 1, C*H*W) in C order (torch.flatten)."""

    name: str = "flatten"
    inputs: Tuple[int, ...] = ()


@dataclass
class Concat:
    """Channel concatenation (torch.cat(..., 1)) of tensors of the same H and W: a view of
    its inputs, which the board gets by routing (no core computes it)."""

    name: str = "concat"
    inputs: Tuple[int, ...] = ()


Op = Union[DenseLayer, Conv2D, Pool2D, Add, Flatten, Concat]
