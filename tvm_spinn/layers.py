"""Float description of an offloaded subgraph, independent of Relax and of the board."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

ACTIVATIONS = ("none", "relu", "tanh", "sigmoid")


@dataclass
class DenseLayer:
    """``y = activation(x @ weight.T + bias)`` for x of shape (batch, in_features).

    weight: float32 array (out_features, in_features); bias: float32 (out_features,) or None.
    name: a human readable name used in error messages (e.g. "dense_2 (784->1024)").
    """

    weight: np.ndarray
    bias: Optional[np.ndarray]
    activation: str = "none"
    name: str = "dense"

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
        if self.activation == "relu":
            y = np.maximum(y, 0)
        elif self.activation == "tanh":
            y = np.tanh(y)
        elif self.activation == "sigmoid":
            y = 1.0 / (1.0 + np.exp(-y))
        return y.astype(np.float32)
